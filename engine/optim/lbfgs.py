"""L-BFGS on the pixels: one implementation, run eagerly by the CPU backends and captured in a
CUDA graph by the ``cuda`` backend.

One gradient evaluation per iteration and no line search, as Torch's ``optim.lbfgs`` that
jcjohnson/neural-style uses (history 100). Every piece of state lives in preallocated tensors
and every data-dependent branch is a mask, so ``step`` never reads a value back to the host and
never allocates state.

Why not torch.optim.LBFGS as it is (what we did before, and what neural-style does). On trained
VGG weights, from the content photo, the loss is *concave* along -g (s.y < 0 for every first
step up to ~0.1 of the pixel range), so torch rejects the first curvature pair (``ys > 1e-10``),
then takes a raw step with H0 = 1 and t = lr = 1: pixels move by |g|_inf (~4e5 at 128 px), the
loss goes from 1.7e8 to 8e31, the overflowing pair is accepted with y.y = inf, H0 becomes 0 and
every later step is < 1e-12: a fixed point. Random weights and noise starts happen to give
s.y > 0 at once, which is why tests on them never saw it. Our safeguards, each scale-free:

* ``first_step`` (0.01): until a pair is accepted, H0 = first_step / |g|_inf, i.e. a steepest
  descent step in image units that moves no pixel by more than 0.01 (torch: H0 = 1 and a first
  step t = lr * min(1, 1/|g|_1), unitless, then H0 = 1 again if the pair is rejected).
  ``first_step_growth`` (2): while no pair has been accepted, step k may move pixels by
  first_step * 2^(k-1) (capped by max_step below). On trained weights from the photo the loss
  stays concave along -g for the first ~10 steps; with a fixed 0.01 each lowered the loss ~3%
  (4.42e7 -> 3.33e7 in 10 iterations at 256x192 px, VGG16, Tuebingen x Starry Night); growing,
  the loss is 1.8e6 at iteration 10 and 6.3e5 at 20 (1.17e6 before). Random weights and noise
  starts accept a pair at once and never see the growth.
* ``max_step`` (0.25): every step is t = lr * min(1, max_step / |d|_inf), so no pixel moves by
  more than a quarter of its range in one iteration, whatever the curvature model says.
* ``min_cosine`` (1e-6): a pair is accepted when s.y > min_cosine |s| |y| instead of
  s.y > 1e-10; invariant to the loss's scale (style weights span 1e2..1e10), and NaN or
  overflowed pairs fail it.
* a direction that is not a descent direction (g.d >= 0) falls back to the scaled steepest
  descent step (torch would not move at all, and then never again).
Together they make the iterates invariant to multiplying the loss by a constant (up to
rounding). With all three set to ``None`` the class computes torch.optim.LBFGS's iterates
(the tests hold it to that, operation for operation, as the oracle of the machinery below).

How torch's code maps to masks here:

==============================================  ==============================================
torch.optim.LBFGS (lbfgs.py)                    here
==============================================  ==============================================
``if flat_grad.abs().max() <= 0: return``       ``active`` mask; every state write is
                                                ``where(active, new, old)``
``if state["n_iter"] == 1`` (first iteration)   ``first = active & (n_iter == 1)``, n_iter a
                                                device tensor
``if ys > 1e-10:`` append pair, pop oldest      ring buffer (H slots + 1 "discard" slot per
when full, ``ro = 1/ys``, ``H_diag = ys/yy``    image): the pair is written to the next slot
                                                when accepted, to the discard slot when not;
                                                ``H_diag = where(accept, ys/yy, H_diag)``
two-loop recursion over ``len(old_dirs)``       fixed H visits in ring order newest->oldest
pairs                                           and back; the visit order is a device index
                                                tensor; slots not yet filled are zero with
                                                ``ro = 0`` (masked), so they add exactly 0
``t = min(1, 1/|g|_1) * lr`` on iteration 1,    ``where(first, ..., lr)``
else ``lr``
``if gtd > -tolerance_change: break`` (no       ``x = where(take, x + t d, x)``; as in torch,
move, but d, t, prev_flat_grad are kept)        d, t and prev_grad are still stored
==============================================  ==============================================

Differences from torch in the compatible mode, all at rounding level: ``q.add_(y, alpha=-al)``
becomes ``q.addcmul_(y, nal)`` with ``nal`` a device tensor (torch's scalar ``alpha`` needs
``.item()``); per-image mode takes its dot products with ``bmm`` instead of ``torch.dot``. On
CPU the flat mode reproduces torch's iterates bit for bit in every test so far.

``direction="compact"`` computes the same search direction from the compact representation
(Byrd, Nocedal & Schnabel 1994) instead of the two-loop recursion: ~30 ops per step
independent of H (two (2 x n)(n x H) matmuls, two H x H triangular solves, two matmuls back)
instead of ~11 H, same bytes moved; see :meth:`LBFGS._compact`. The arithmetic is
rearranged, so iterates agree with torch's to rounding amplified by the trajectory's own
sensitivity, not bit for bit (measured: as far as torch's from a start perturbed by 1e-15
relative). The default stays ``"two_loop"`` until ``"compact"`` has been measured (and its
capture checked) on a GPU.

"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor

from stylegrad.optim._batched import check_param, grad_view, rowaxpy_, rowdot

__all__ = ["LBFGS", "TORCH_COMPATIBLE", "DIRECTIONS"]

DIRECTIONS = ("two_loop", "compact")
FIRST_STEP = 0.01    # image units: the [0, 1] pixel range
MAX_STEP = 0.25
MIN_COSINE = 1e-6
FIRST_STEP_GROWTH = 2.0   # per iteration while no curvature pair has been accepted
# torch.optim.LBFGS's rules (the test oracle): no safeguard
TORCH_COMPATIBLE = {"first_step": None, "max_step": None, "min_cosine": None}


class LBFGS:
    """L-BFGS, one gradient per iteration, no line search; capturable in a CUDA graph.

    ``opt = LBFGS(x, history=100, lr=1.0)``; then per iteration evaluate the gradient ``g`` at
    the current ``x`` and call ``opt.step(g)``, which updates ``x`` in place.

    Safeguards (see the module docstring for why): ``first_step`` (H0 = first_step / |g|_inf
    until a curvature pair is accepted), ``max_step`` (no element of x moves by more than it in
    one step), ``min_cosine`` (relative curvature test). With all three ``None``
    (:data:`TORCH_COMPATIBLE`) this is ``torch.optim.LBFGS(max_iter=1, line_search_fn=None,
    tolerance_grad=0, tolerance_change=0)`` called once per iteration, to rounding.

    ``per_image=True``: x is (B, ...) and each image x[b] runs its own, independent L-BFGS
    (own history, step, first iteration and curvature-pair tests), i.e. the same as B
    separate optimisers.

    ``direction``: ``"two_loop"`` (default; torch's recursion, ~11 H small ops per step) or
    ``"compact"`` (compact representation, ~30 ops per step whatever H; keeps two extra
    (H+1) x H matrices of history products per image). Same algorithm; see :meth:`_compact`.
    """

    def __init__(self, x: Tensor, history: int = 100, lr: float = 1.0, per_image: bool = False,
                 direction: str = "two_loop", first_step: Optional[float] = FIRST_STEP,
                 max_step: Optional[float] = MAX_STEP, min_cosine: Optional[float] = MIN_COSINE,
                 first_step_growth: float = FIRST_STEP_GROWTH):
        batch, n = check_param(x, per_image)
        for name, v in (("first_step", first_step), ("max_step", max_step), ("min_cosine", min_cosine)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {v!r}")
        self.first_step, self.max_step, self.min_cosine = first_step, max_step, min_cosine
        if not (math.isfinite(first_step_growth) and first_step_growth >= 1.0):
            raise ValueError(f"first_step_growth must be a finite number >= 1, got {first_step_growth!r}")
        self.first_step_growth = float(first_step_growth)
        if int(history) < 1:
            raise ValueError(f"history must be >= 1, got {history!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.x = x
        self.history = H = int(history)
        self.lr = float(lr)
        self.per_image = per_image
        self.batch = B = batch
        self.n = n
        dev, dt = x.device, x.dtype
        self._xv = x.detach().view(B, n)

        def f(*shape):
            return torch.zeros(shape, dtype=dt, device=dev)

        def i64(*shape):
            return torch.zeros(shape, dtype=torch.long, device=dev)

        def b8(*shape):
            return torch.zeros(shape, dtype=torch.bool, device=dev)

        # -- state (torch names in brackets) --
        # ring of curvature pairs: slot H of each image is the discard slot for rejected pairs
        self.s_hist = f(B, H + 1, n)        # [old_stps]
        self.y_hist = f(B, H + 1, n)        # [old_dirs]
        self.ro = f(B, H + 1)               # [ro] 1/ys; 0 in slots not filled yet
        self.head = i64(B)                  # slot the next accepted pair goes to
        self.count = i64(B)                 # number of stored pairs, <= H
        self.n_iter = i64(B)                # [state["n_iter"]]
        self.n_accepted = i64(B)            # pairs accepted so far, uncapped (diagnostics)
        self.h_diag = f(B).fill_(1.0)       # [H_diag] the scaling H0 = h_diag I this step uses
        self.gamma = f(B).fill_(1.0)        # s.y / y.y of the newest accepted pair
        self.n_fallback = i64(B)            # steps that fell back to scaled steepest descent
        self.d = f(B, n)                    # [d] last direction
        self.t = f(B)                       # [t] last step length
        self.prev_grad = f(B, n)            # [prev_flat_grad]
        # safeguarded rules: x before the last step, so that s is the displacement x really made
        # (torch: s = t d, which differs from it once t d is below x's rounding)
        self.prev_x = f(B, n) if first_step is not None else None
        # -- constants --
        self._slot_base = torch.arange(B, device=dev, dtype=torch.long) * (H + 1)
        self._visit = torch.arange(H, device=dev, dtype=torch.long)       # j = 0: newest
        self._visit1 = self._visit + 1
        # -- scratch (n-sized) --
        self._q = f(B, n)
        if direction == "compact":
            # rows [s, g, y]: the new pair (s, y) and a copy of g, so that [g; y] is one (2, n)
            # operand of the history matmuls (see _compact)
            self._sgy = f(B, 3, n)
            self._s, self._y = self._sgy[:, 0], self._sgy[:, 2]
        else:
            self._s = f(B, n)
            self._y = f(B, n)
        # -- scratch (small) --
        self._gmax, self._gsum, self._ys, self._yy, self._ss = f(B), f(B), f(B), f(B), f(B)
        self._h0, self._dmax = f(B), f(B)
        self._tmp, self._tmp2, self._t_new, self._gtd = f(B), f(B), f(B), f(B)
        self._nal = f(H, B)                 # -al per visit (negated: see _two_loop)
        self._nro = f(H, B)                 # -ro per visit
        self._order = i64(H, B)             # flat slot index of visit j for image b
        self._unfilled = b8(H, B)
        self._active, self._first, self._accept, self._bad = b8(B), b8(B), b8(B), b8(B)
        self._take, self._bmask = b8(B), b8(B)
        self._widx, self._widx2 = i64(B), i64(B)
        self._constants = [self._slot_base, self._visit, self._visit1]
        if direction == "compact":
            self._init_compact(f, i64, b8)

    def _init_compact(self, f, i64, b8) -> None:
        B, H, dev = self.batch, self.history, self.x.device
        # -- state: H x H products, written one row per accepted pair (slot H: discard row) --
        self.ys_rows = f(B, H + 1, H)       # ys_rows[k, l] = y_k . s_l, written with pair k
        self.yy_rows = f(B, H + 1, H)       # yy_rows[k, l] = y_k . y_l, written with pair k
        # -- views / constants --
        self._S = self.s_hist[:, :H]        # (B, H, n) history in slot order, no discard slot
        self._Y = self.y_hist[:, :H]
        self._gy = self._sgy[:, 1:]         # (B, 2, n): [g; y_new]
        self._mat_base = torch.arange(B, device=dev, dtype=torch.long) * ((H + 1) * H)
        ones = torch.ones(H, H, dtype=torch.bool, device=dev)
        self._triu = torch.triu(ones)                         # t1 <= t2 (time order)
        self._tril1 = torch.tril(ones, diagonal=-1)           # t1 > t2
        self._constants += [self._mat_base, self._triu, self._tril1]
        # -- scratch (small) --
        self._ps, self._py = f(B, 2, H), f(B, 2, H)           # [S g, S y_new], [Y g, Y y_new]
        self._perm, self._iH = i64(B, H), i64(B, H)
        self._idx = i64(B, H, H)
        self._unf_t = b8(B, H)
        self._R, self._YYq, self._YY = f(B, H, H), f(B, H, H), f(B, H, H)
        self._pt, self._qt = f(B, H, 1), f(B, H, 1)
        self._u, self._w, self._a = f(B, H, 1), f(B, H, 1), f(B, H, 1)
        self._us, self._as = f(B, 1, H), f(B, 1, H)

    # ------------------------------------------------------------------------------------
    def state_tensors(self) -> List[Tensor]:
        """Every tensor the optimiser owns (state, constants and scratch; not x)."""
        return [v for v in vars(self).values()
                if isinstance(v, Tensor) and v is not self.x and v is not self._xv]

    def reset(self) -> None:
        """Forget everything, as a freshly built optimiser; in place, so a captured graph
        stays valid. x is left as it is."""
        for t in self.state_tensors():
            if not any(t is c for c in self._constants):
                t.zero_()
        self.h_diag.fill_(1.0)
        self.gamma.fill_(1.0)

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        """One L-BFGS iteration given the gradient at the current x; updates x in place."""
        g = grad_view(grad, self.x, self.batch, self.n)
        H = self.history
        x = self._xv
        active, first, accept, take = self._active, self._first, self._accept, self._take
        safe = self.first_step is not None
        col = lambda v: v.unsqueeze(1)  # noqa: E731  (B,) -> (B, 1) for broadcasting

        # [opt_cond = flat_grad.abs().max() <= tolerance_grad (0) -> return untouched]
        torch.abs(g, out=self._s)
        torch.amax(self._s, dim=1, out=self._gmax)
        if not safe:
            torch.sum(self._s, dim=1, out=self._gsum)      # |g|_1 for torch's first step length
        torch.le(self._gmax, 0.0, out=active)
        active.logical_not_()                                # NaN gradient: active, as torch

        # [state["n_iter"] += 1; first iteration?]
        self.n_iter.add_(active)
        torch.eq(self.n_iter, 1, out=first)
        first.logical_and_(active)

        # [y = g - prev_g; s = d * t] (not on iteration 1). Curvature test:
        #   torch:  s.y > 1e-10 (absolute: depends on the loss's scale)
        #   ours:   s.y > min_cosine |s| |y| (relative: invariant to scaling the loss; NaN or
        #           overflowed products fail it, so an exploded step never enters the history)
        torch.sub(g, self.prev_grad, out=self._y)
        if safe:
            # the step x really made. Near a minimum in float32, t d can fall below x's rounding:
            # x does not move, y is noise, and a pair (t d, noise) once accepted set H0 = 2e4
            # times too large and threw the iterate far off (the concave toy of tests/test_optim,
            # iteration 10). With the real displacement that pair is s = 0 and is rejected.
            torch.sub(x, self.prev_x, out=self._s)
        else:
            torch.mul(self.d, col(self.t), out=self._s)
        rowdot(self._y, self._s, self._ys)
        rowdot(self._y, self._y, self._yy)
        if self.min_cosine is None:
            torch.gt(self._ys, 1e-10, out=accept)
        else:
            rowdot(self._s, self._s, self._ss)
            torch.sqrt(self._ss, out=self._tmp)
            torch.sqrt(self._yy, out=self._tmp2)
            self._tmp.mul_(self._tmp2).mul_(self.min_cosine)
            torch.gt(self._ys, self._tmp, out=accept)
        accept.logical_and_(active)
        torch.logical_not(first, out=self._bmask)
        accept.logical_and_(self._bmask)

        # [append pair, dropping the oldest when full]: masked write into the ring
        torch.add(self._slot_base, self.head, out=self._widx)
        torch.add(self._slot_base, H, out=self._widx2)       # discard slot
        torch.where(accept, self._widx, self._widx2, out=self._widx)
        self.s_hist.view(-1, self.n).index_copy_(0, self._widx, self._s)
        self.y_hist.view(-1, self.n).index_copy_(0, self._widx, self._y)
        torch.reciprocal(self._ys, out=self._tmp)            # [ro = 1.0 / ys]
        self.ro.view(-1).index_copy_(0, self._widx, self._tmp)
        torch.div(self._ys, self._yy, out=self._tmp)         # [H_diag = ys / y.y]
        torch.where(accept, self._tmp, self.gamma, out=self.gamma)
        self.head.add_(accept).remainder_(H)
        self.count.add_(accept).clamp_(max=H)
        self.n_accepted.add_(accept)
        if safe:
            # H0 before any pair is accepted: first_step / |g|_inf, so that the step moves no
            # element of x by more than first_step * lr (torch: H0 = 1, a unitless step that
            # moves pixels by |g|_inf -- 4e5 on trained VGG weights). After: s.y / y.y.
            torch.reciprocal(self._gmax, out=self._h0).mul_(self.first_step)
            torch.gt(self.n_accepted, 0, out=self._bmask)
            if self.first_step_growth != 1.0:
                # while the loss stays concave along -g (no pair accepted yet), each step may
                # move pixels first_step_growth times further than the last: first_step *
                # growth^(k-1) at iteration k, capped at max_step as every step is (below).
                # The fallback step further down keeps the plain first_step.
                self._tmp2.copy_(self.n_iter).sub_(1)
                torch.pow(self.first_step_growth, self._tmp2, out=self._tmp)
                if self.max_step is not None:
                    self._tmp.clamp_(max=self.max_step / self.first_step)
                self._tmp.mul_(self._h0)
                torch.where(self._bmask, self.gamma, self._tmp, out=self.h_diag)
            else:
                torch.where(self._bmask, self.gamma, self._h0, out=self.h_diag)
        else:
            self.h_diag.copy_(self.gamma)

        # [d = -g on iteration 1 (no pairs, H_diag = 1), else the two-loop recursion]
        # (or the same direction from the compact representation)
        if self.direction == "compact":
            self._compact(g)
        else:
            self._two_loop(g)
        torch.where(col(active), self._q, self.d, out=self.d)
        torch.where(col(active), g, self.prev_grad, out=self.prev_grad)

        rowdot(g, self.d, self._gtd)
        if safe:
            # not a descent direction (rounding in a long history, or NaN): fall back to
            # -first_step / |g|_inf * g, a descent direction whenever g != 0
            torch.lt(self._gtd, 0.0, out=self._bad)
            self._bad.logical_not_().logical_and_(active)
            self.n_fallback.add_(self._bad)
            torch.mul(g, col(self._h0), out=self._q).neg_()
            torch.where(col(self._bad), self._q, self.d, out=self.d)
            # t = lr * min(1, max_step / |d|_inf): no element moves by more than max_step
            self._t_new.fill_(self.lr)
            if self.max_step is not None:
                torch.abs(self.d, out=self._q)
                torch.amax(self._q, dim=1, out=self._dmax)
                torch.reciprocal(self._dmax, out=self._tmp).mul_(self.max_step)
                self._tmp.clamp_(max=1.0)                     # NaN stays NaN: x goes NaN, reported
                self._t_new.mul_(self._tmp)
            torch.where(active, self._t_new, self.t, out=self.t)
            take.copy_(active)
        else:
            # [t = min(1, 1/|g|_1) * lr on iteration 1, else lr]
            torch.reciprocal(self._gsum, out=self._tmp)
            torch.lt(self._tmp, 1.0, out=self._bmask)
            self._tmp.masked_fill_(self._bmask.logical_not_(), 1.0)   # min(1, 1/|g|_1), NaN -> 1
            self._tmp.mul_(self.lr)
            self._t_new.fill_(self.lr)
            torch.where(first, self._tmp, self._t_new, out=self._t_new)
            torch.where(active, self._t_new, self.t, out=self.t)
            # [gtd = g.d; if gtd > -tolerance_change (0): no move]
            torch.gt(self._gtd, 0.0, out=take)
            take.logical_not_().logical_and_(active)
        # x += t d
        if safe:
            self.prev_x.copy_(x)
        torch.addcmul(x, self.d, col(self.t), out=self._s)
        torch.where(col(take), self._s, x, out=x)

    def _two_loop(self, g: Tensor) -> None:
        """q <- -H g by the two-loop recursion over all H slots, newest->oldest and back.

        Visits are in ring order, via the device index tensor ``_order``; unfilled slots are
        zero rows with ``-ro = 0`` (masked again here), so they contribute exactly 0.
        Signs: ``nal = dot * (-ro) = -al`` exactly and ``nbe - nal = al - be`` exactly, so the
        arithmetic is torch's ``q.add_(y, alpha=-al)`` / ``r.add_(s, alpha=al - be)``.
        """
        H = self.history
        q, s, y = self._q, self._s, self._y
        s_flat = self.s_hist.view(-1, self.n)
        y_flat = self.y_hist.view(-1, self.n)
        order, nro, nal = self._order, self._nro, self._nal

        # order[j, b] = b*(H+1) + (head[b] - 1 - j) mod H;  unfilled[j, b] = j >= count[b]
        torch.sub(self.head.unsqueeze(0), self._visit1.unsqueeze(1), out=order)
        order.remainder_(H).add_(self._slot_base.unsqueeze(0))
        torch.ge(self._visit.unsqueeze(1), self.count.unsqueeze(0), out=self._unfilled)
        torch.index_select(self.ro.view(-1), 0, order.view(-1), out=nro.view(-1))
        nro.neg_().masked_fill_(self._unfilled, 0.0)

        torch.neg(g, out=q)                                   # [q = -g]
        for j in range(H):                                    # newest -> oldest
            torch.index_select(s_flat, 0, order[j], out=s)
            rowdot(s, q, self._tmp)                           # [s_i . q]
            torch.mul(self._tmp, nro[j], out=nal[j])          # [-al_i = -(s_i . q) ro_i]
            torch.index_select(y_flat, 0, order[j], out=y)
            rowaxpy_(q, nal[j], y)                            # [q += -al_i y_i]
        q.mul_(self.h_diag.unsqueeze(1))                      # [r = q * H_diag]
        for j in range(H - 1, -1, -1):                        # oldest -> newest
            torch.index_select(y_flat, 0, order[j], out=y)
            rowdot(y, q, self._tmp)                           # [y_i . r]
            torch.mul(self._tmp, nro[j], out=self._tmp2)      # [-be_i]
            torch.sub(self._tmp2, nal[j], out=self._tmp)      # [al_i - be_i]
            torch.index_select(s_flat, 0, order[j], out=s)
            rowaxpy_(q, self._tmp, s)                         # [r += (al_i - be_i) s_i]

    def _compact(self, g: Tensor) -> None:
        """q <- -H g from the compact representation (Byrd, Nocedal & Schnabel 1994, thm 2.2).

        Derivation. With rho_i = 1/(s_i.y_i) and V_i = I - rho_i y_i s_i^T, the L-BFGS matrix
        that the two-loop recursion applies is H = V^T H0 V + sum_i (...) rho_i s_i s_i^T (...)
        with V = V_0 V_1 ... V_{m-1} (pairs oldest..newest, H0 = gamma I, gamma = H_diag).
        BNS lemma 2.1: V = I - Y^T R^{-1} S, where S, Y are (m, n) with rows s_i, y_i and R is
        (m, m) upper triangular, R_ij = s_i.y_j for i <= j (time order); the rank-one sum is
        S^T R^{-T} D R^{-1} S with D = diag(s_i.y_i). Expanding (I - S^T R^{-T} Y) gamma
        (I - Y^T R^{-1} S) + S^T R^{-T} D R^{-1} S:

            H g = gamma g + S^T a - gamma Y^T u,   u = R^{-1} (S g),
                  a = R^{-T} ((D + gamma Y Y^T) u - gamma (Y g)),

        i.e. the block form gamma g + [S^T, gamma Y^T] [[R^{-T}(D + gamma Y Y^T) R^{-1}, -R^{-T}],
        [-R^{-1}, 0]] [S g; gamma Y g], so d = -H g = gamma (Y^T u - g) - S^T a.

        Work per step: one (2 x n)(n x H) matmul against S and one against Y give S g, Y g and
        the new row S y_new, Y y_new; two (1 x H)(H x n) matmuls back; the rest is H x H.
        Bookkeeping (fixed shapes, no branches):
        * S, Y stay in ring-slot order. ys_rows[k] = S y_k and yy_rows[k] = Y y_k are written
          when pair k is accepted (index_copy to the discard row H when not). An entry is exact
          in the row of the newer of its two pairs (the older pair was already stored then);
          entries in the older pair's row can be stale, and are never read.
        * time order t = 0 (oldest) .. H-1 (newest): slot perm[t] = (head + t) mod H. Unfilled
          slots (never written: zero s, y, rows and columns) take t < H - count. R and YY are
          gathered in time order from the newer pair's row: R[t1, t2] = ys_rows[perm t2,
          perm t1] for t1 <= t2 (0 below the diagonal), YY symmetrised the same way.
        * unfilled slots: R diagonal 1 there, S g = Y g = 0 and their R rows/columns are exactly
          0, so u = a = 0 there and they contribute exactly nothing; with no pairs at all,
          d = -gamma g = -g (iteration 1, H_diag = 1), as torch.
        * results go back to slot order with scatter by perm, then the matmuls with S, Y.
        No allocation on CPU (profiled: the triangular solves write in place into out=); on
        CUDA solve_triangular may take small H x H / pointer-array workspace from the caching
        allocator (fine under capture; unverified on a GPU so far). Nothing of size n.
        """
        B, H = self.batch, self.history
        gam = self.h_diag.view(B, 1, 1)
        perm, idx, R, YY = self._perm, self._idx, self._R, self._YY
        u, w, a = self._u, self._w, self._a

        # [S g, S y_new] and [Y g, Y y_new]: (B, 2, n) x (B, n, H)
        self._sgy[:, 1].copy_(g)
        torch.bmm(self._gy, self._S.mT, out=self._ps)
        torch.bmm(self._gy, self._Y.mT, out=self._py)
        # new rows (into the discard row H when the pair was rejected / the step inactive)
        self.ys_rows.view(-1, H).index_copy_(0, self._widx, self._ps[:, 1])
        self.yy_rows.view(-1, H).index_copy_(0, self._widx, self._py[:, 1])

        # time order: perm[b, t] = (head + t) mod H (head = oldest slot once full)
        torch.add(self.head.unsqueeze(1), self._visit.unsqueeze(0), out=perm)
        perm.remainder_(H)
        # idx[b, t1, t2] -> flat element (b, row perm[b, t2], col perm[b, t1])
        torch.add(self._mat_base.unsqueeze(1), perm, alpha=H, out=self._iH)
        torch.add(self._iH.unsqueeze(1), perm.unsqueeze(2), out=idx)
        torch.index_select(self.ys_rows.view(-1), 0, idx.view(-1), out=R.view(-1))
        R.masked_fill_(self._tril1, 0.0)                  # R[t1, t2] = s_t1 . y_t2, t1 <= t2
        torch.index_select(self.yy_rows.view(-1), 0, idx.view(-1), out=self._YYq.view(-1))
        torch.where(self._triu, self._YYq, self._YYq.mT, out=YY)   # y_t1 . y_t2
        # unfilled: t + count < H -> unit diagonal
        torch.add(self._visit.unsqueeze(0), self.count.unsqueeze(1), out=self._iH)
        torch.lt(self._iH, H, out=self._unf_t)
        Dg = R.diagonal(dim1=1, dim2=2)                    # D (1 at unfilled: u = 0 there)
        Dg.masked_fill_(self._unf_t, 1.0)                  # (it was exactly 0 there)
        torch.gather(self._ps[:, 0], 1, perm, out=self._pt.view(B, H))   # S g, time order
        torch.gather(self._py[:, 0], 1, perm, out=self._qt.view(B, H))   # Y g

        torch.linalg.solve_triangular(R, self._pt, upper=True, out=u)   # u = R^-1 S g
        torch.bmm(YY, u, out=w)                            # w = gamma (YY u - Y g) + D u
        w.sub_(self._qt).mul_(gam).addcmul_(Dg.unsqueeze(2), u)
        torch.linalg.solve_triangular(R.mT, w, upper=False, out=a)      # a = R^-T w

        # back to slot order; q = gamma (Y^T u - g) - S^T a
        self._us.view(B, H).scatter_(1, perm, u.view(B, H))
        self._as.view(B, H).scatter_(1, perm, a.view(B, H))
        q3 = self._q.view(B, 1, self.n)
        torch.bmm(self._us, self._Y, out=q3)
        q3.sub_(g.view(B, 1, self.n)).mul_(gam)
        q3.baddbmm_(self._as, self._S, alpha=-1.0)


