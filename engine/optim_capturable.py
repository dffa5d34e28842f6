"""Optimisers whose ``step`` can be captured in a CUDA graph and replayed (issue 5).

``torch.optim.LBFGS`` reads values back to the host on every step (``if ys > 1e-10``,
``float(loss)``, Python lists of history tensors, scalar ``alpha=`` arguments), so it cannot
live inside a CUDA graph. :class:`CapturableLBFGS` computes the same iterates as

    torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=H, line_search_fn=None,
                      tolerance_grad=0, tolerance_change=0)

called once per iteration (the configuration ``engine/optimize.py`` uses), but keeps every
piece of state in preallocated device tensors and turns each data-dependent branch of torch's
code into a mask:

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

Differences from torch, all at rounding level (no difference in the algorithm):

* ``q.add_(y, alpha=-al)`` becomes ``q.addcmul_(y, nal)`` with ``nal`` a 0-d/(B,) device
  tensor (torch's scalar ``alpha`` needs ``.item()``); the CPU kernels may fuse the
  multiply-add differently, so results can differ in the last bit.
* Per-image mode (``per_image=True``) takes its dot products with ``bmm`` instead of
  ``torch.dot`` (different summation order).
* With ``use_kernels=True`` the dot products / axpys go through ``stylegrad.kernels``
  (float32 only; other summation order).
Tests (tests/test_optim_capturable.py) bound the effect at 1e-12 relative in float64 over
150 iterations on an ill-conditioned quadratic; on CPU the flat mode has in fact reproduced
torch's iterates bit for bit in every test so far (float64 and float32).

``direction="compact"`` computes the same search direction from the compact representation
(Byrd, Nocedal & Schnabel 1994) instead of the two-loop recursion: ~30 ops per step
independent of H (two (2 x n)(n x H) matmuls, two H x H triangular solves, two matmuls back)
instead of ~11 H, same bytes moved; see :meth:`CapturableLBFGS._compact`. The arithmetic is
rearranged, so iterates agree with torch's to rounding amplified by the trajectory's own
sensitivity, not bit for bit (measured: as far as torch's from a start perturbed by 1e-15
relative). The default stays ``"two_loop"`` until ``"compact"`` has been measured (and its
capture checked) on a GPU.

``use_kernels`` defaults to False on every device: on CUDA the NVRTC kernels of
``stylegrad.kernels.cuda_ops`` have not been verified on a GPU yet; on CPU the
``stylegrad.kernels`` functions are the same torch math but only float32 and ``lbfgs_dots``
allocates its result. Pass ``use_kernels=True`` to opt in (float32 only).

:class:`CapturableAdam` is torch.optim.Adam (no weight decay, no amsgrad) with the step count
and learning rate in device tensors.

Neither class reads a value back to the host or allocates state inside ``step``; both hold
their state in tensors whose storage never changes, so a CUDA graph captured around
``step`` replays correctly (the caller keeps the gradient in a static buffer).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .config import StyleConfig

__all__ = ["CapturableAdam", "CapturableLBFGS", "make_capturable"]

_DIRECTIONS = ("two_loop", "compact")


def _kernels_module(device: torch.device):
    """The kernel implementation for a device: cuda_ops on CUDA, the torch versions otherwise."""
    from stylegrad import kernels

    return kernels.cuda_ops if device.type == "cuda" else kernels


class _Ops:
    """Batched dot product / axpy over (B, n) rows: torch ops, or stylegrad.kernels."""

    def __init__(self, device: torch.device, dtype: torch.dtype, batch: int, use_kernels: bool):
        self.batch = batch
        self.kernels = None
        if use_kernels:
            if dtype != torch.float32:
                raise ValueError(f"use_kernels=True needs float32 parameters, got {dtype}")
            self.kernels = _kernels_module(device)
            self.cuda = device.type == "cuda"

    def dot(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """out[i] = <a[i], b[i]> for (B, n) a, b; out (B,)."""
        if self.kernels is not None:
            for i in range(self.batch):  # static trip count (B is fixed at construction)
                if self.cuda:
                    self.kernels.lbfgs_dots(a[i:i + 1], b[i], out=out[i:i + 1])
                else:
                    out[i:i + 1].copy_(self.kernels.lbfgs_dots(a[i:i + 1], b[i]))
        elif self.batch == 1:
            torch.dot(a[0], b[0], out=out[0])  # as torch.optim.LBFGS (flat vectors)
        else:
            torch.bmm(a.unsqueeze(1), b.unsqueeze(2), out=out.view(-1, 1, 1))

    def axpy_(self, y: Tensor, alpha: Tensor, x: Tensor) -> None:
        """y[i] += alpha[i] * x[i] in place; alpha (B,)."""
        if self.kernels is not None:
            for i in range(self.batch):
                self.kernels.lbfgs_axpy_(y[i], alpha[i], x[i])
        else:
            y.addcmul_(x, alpha.unsqueeze(1))


def _check_param(x: Tensor, per_image: bool) -> tuple:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous (it is updated in place through a flat view)")
    if per_image:
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(f"per_image=True needs x of shape (B, ...) with B >= 1, got {tuple(x.shape)}")
        batch = x.shape[0]
    else:
        batch = 1
    n = x.numel() // batch if batch else 0
    return batch, n


def _grad_view(grad: Tensor, x: Tensor, batch: int, n: int) -> Tensor:
    if grad.shape != x.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)}, x {tuple(x.shape)}")
    if grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError(f"grad is {grad.dtype} on {grad.device}, x is {x.dtype} on {x.device}")
    # A view when grad is contiguous (the normal case); a non-contiguous gradient is copied.
    return grad.reshape(batch, n)


class CapturableLBFGS:
    """L-BFGS, one gradient per iteration, no line search; capturable in a CUDA graph.

    ``opt = CapturableLBFGS(x, history=100, lr=1.0)``; then per iteration evaluate the
    gradient ``g`` at the current ``x`` and call ``opt.step(g)``, which updates ``x`` in place.
    Equals ``torch.optim.LBFGS(max_iter=1, line_search_fn=None, tolerance_grad=0,
    tolerance_change=0)`` (see the module docstring for the mapping and the rounding-level
    differences).

    ``per_image=True``: x is (B, ...) and each image x[b] runs its own, independent L-BFGS
    (own history, step, first iteration and curvature-pair tests), i.e. the same as B
    separate optimisers.

    ``direction``: ``"two_loop"`` (default; torch's recursion, ~11 H small ops per step) or
    ``"compact"`` (compact representation, ~30 ops per step whatever H; keeps two extra
    (H+1) x H matrices of history products per image). Same algorithm; see :meth:`_compact`.
    """

    def __init__(self, x: Tensor, history: int = 100, lr: float = 1.0, per_image: bool = False,
                 use_kernels: Optional[bool] = None, direction: str = "two_loop"):
        batch, n = _check_param(x, per_image)
        if int(history) < 1:
            raise ValueError(f"history must be >= 1, got {history!r}")
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
        self.direction = direction
        self.x = x
        self.history = H = int(history)
        self.lr = float(lr)
        self.per_image = per_image
        self.batch = B = batch
        self.n = n
        self.use_kernels = bool(use_kernels) if use_kernels is not None else False
        dev, dt = x.device, x.dtype
        self._ops = _Ops(dev, dt, B, self.use_kernels)
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
        self.h_diag = f(B).fill_(1.0)       # [H_diag]
        self.d = f(B, n)                    # [d] last direction
        self.t = f(B)                       # [t] last step length
        self.prev_grad = f(B, n)            # [prev_flat_grad]
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
        self._gmax, self._gsum, self._ys, self._yy = f(B), f(B), f(B), f(B)
        self._tmp, self._tmp2, self._t_new, self._gtd = f(B), f(B), f(B), f(B)
        self._nal = f(H, B)                 # -al per visit (negated: see _two_loop)
        self._nro = f(H, B)                 # -ro per visit
        self._order = i64(H, B)             # flat slot index of visit j for image b
        self._unfilled = b8(H, B)
        self._active, self._first, self._accept = b8(B), b8(B), b8(B)
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

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        """One L-BFGS iteration given the gradient at the current x; updates x in place."""
        g = _grad_view(grad, self.x, self.batch, self.n)
        ops, H = self._ops, self.history
        x = self._xv
        active, first, accept, take = self._active, self._first, self._accept, self._take
        col = lambda v: v.unsqueeze(1)  # noqa: E731  (B,) -> (B, 1) for broadcasting

        # [opt_cond = flat_grad.abs().max() <= tolerance_grad (0) -> return untouched]
        torch.abs(g, out=self._s)
        torch.amax(self._s, dim=1, out=self._gmax)
        torch.sum(self._s, dim=1, out=self._gsum)          # |g|_1 for the first step length
        torch.le(self._gmax, 0.0, out=active)
        active.logical_not_()                                # NaN gradient: active, as torch

        # [state["n_iter"] += 1; first iteration?]
        self.n_iter.add_(active)
        torch.eq(self.n_iter, 1, out=first)
        first.logical_and_(active)

        # [y = g - prev_g; s = d * t; ys = y.s; accept if ys > 1e-10] (not on iteration 1)
        torch.sub(g, self.prev_grad, out=self._y)
        torch.mul(self.d, col(self.t), out=self._s)
        ops.dot(self._y, self._s, self._ys)
        ops.dot(self._y, self._y, self._yy)
        torch.gt(self._ys, 1e-10, out=accept)
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
        torch.where(accept, self._tmp, self.h_diag, out=self.h_diag)
        self.head.add_(accept).remainder_(H)
        self.count.add_(accept).clamp_(max=H)
        self.n_accepted.add_(accept)

        # [d = -g on iteration 1 (no pairs, H_diag = 1), else the two-loop recursion]
        # (or the same direction from the compact representation)
        if self.direction == "compact":
            self._compact(g)
        else:
            self._two_loop(g)
        torch.where(col(active), self._q, self.d, out=self.d)
        torch.where(col(active), g, self.prev_grad, out=self.prev_grad)

        # [t = min(1, 1/|g|_1) * lr on iteration 1, else lr]
        torch.reciprocal(self._gsum, out=self._tmp)
        torch.lt(self._tmp, 1.0, out=self._bmask)
        self._tmp.masked_fill_(self._bmask.logical_not_(), 1.0)   # min(1, 1/|g|_1), NaN -> 1
        self._tmp.mul_(self.lr)
        self._t_new.fill_(self.lr)
        torch.where(first, self._tmp, self._t_new, out=self._t_new)
        torch.where(active, self._t_new, self.t, out=self.t)

        # [gtd = g.d; if gtd > -tolerance_change (0): no move] else x += t d
        ops.dot(g, self.d, self._gtd)
        torch.gt(self._gtd, 0.0, out=take)
        take.logical_not_().logical_and_(active)
        torch.addcmul(x, self.d, col(self.t), out=self._s)
        torch.where(col(take), self._s, x, out=x)

    def _two_loop(self, g: Tensor) -> None:
        """q <- -H g by the two-loop recursion over all H slots, newest->oldest and back.

        Visits are in ring order, via the device index tensor ``_order``; unfilled slots are
        zero rows with ``-ro = 0`` (masked again here), so they contribute exactly 0.
        Signs: ``nal = dot * (-ro) = -al`` exactly and ``nbe - nal = al - be`` exactly, so the
        arithmetic is torch's ``q.add_(y, alpha=-al)`` / ``r.add_(s, alpha=al - be)``.
        """
        ops, H = self._ops, self.history
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
            ops.dot(s, q, self._tmp)                          # [s_i . q]
            torch.mul(self._tmp, nro[j], out=nal[j])          # [-al_i = -(s_i . q) ro_i]
            torch.index_select(y_flat, 0, order[j], out=y)
            ops.axpy_(q, nal[j], y)                           # [q += -al_i y_i]
        q.mul_(self.h_diag.unsqueeze(1))                      # [r = q * H_diag]
        for j in range(H - 1, -1, -1):                        # oldest -> newest
            torch.index_select(y_flat, 0, order[j], out=y)
            ops.dot(y, q, self._tmp)                          # [y_i . r]
            torch.mul(self._tmp, nro[j], out=self._tmp2)      # [-be_i]
            torch.sub(self._tmp2, nal[j], out=self._tmp)      # [al_i - be_i]
            torch.index_select(s_flat, 0, order[j], out=s)
            ops.axpy_(q, self._tmp, s)                        # [r += (al_i - be_i) s_i]

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


class CapturableAdam:
    """torch.optim.Adam (no weight decay, no amsgrad) with all state on the device.

    ``opt = CapturableAdam(x, lr=0.02)``; ``opt.step(grad)`` updates x in place. The step
    count and lr are device tensors (float64 for the torch-ops path, so the bias corrections
    ``1 - beta**step`` are formed in double as torch does on the host; float32 for the
    kernels, which is what ``cuda_ops.adam_step_`` takes). ``per_image`` is accepted for
    symmetry with :class:`CapturableLBFGS`: Adam is elementwise, so a batch already equals
    separate runs.
    """

    def __init__(self, x: Tensor, lr: float = 0.02, betas=(0.9, 0.999), eps: float = 1e-8,
                 per_image: bool = False, use_kernels: Optional[bool] = None):
        _check_param(x, per_image)
        self.x = x
        self.per_image = per_image
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.use_kernels = bool(use_kernels) if use_kernels is not None else False
        dev, dt = x.device, x.dtype
        if self.use_kernels and dt != torch.float32:
            raise ValueError(f"use_kernels=True needs float32 parameters, got {dt}")
        sdt = torch.float32 if self.use_kernels else torch.float64
        self.exp_avg = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.step_count = torch.zeros((), dtype=sdt, device=dev)
        self.lr = torch.full((), float(lr), dtype=sdt, device=dev)
        self._bc1 = torch.zeros((), dtype=torch.float64, device=dev)
        self._bc2 = torch.zeros((), dtype=torch.float64, device=dev)
        self._neg_step_size = torch.zeros((), dtype=dt, device=dev)
        self._bc2_sqrt = torch.zeros((), dtype=dt, device=dev)
        self._scratch = None if self.use_kernels else torch.zeros_like(self.exp_avg)

    def state_tensors(self) -> List[Tensor]:
        return [v for v in vars(self).values() if isinstance(v, Tensor) and v is not self.x]

    def set_lr(self, lr: float) -> None:
        """Change the learning rate in place (a captured graph picks it up)."""
        self.lr.fill_(float(lr))

    def reset(self) -> None:
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.step_count.zero_()

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        x = self.x.detach()
        if grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
            raise ValueError(f"grad is {grad.dtype} {tuple(grad.shape)} on {grad.device}, "
                             f"x is {x.dtype} {tuple(x.shape)} on {x.device}")
        self.step_count.add_(1)
        if self.use_kernels:
            _kernels_module(x.device).adam_step_(x, grad, self.exp_avg, self.exp_avg_sq,
                                                 self.step_count, self.lr, self.beta1, self.beta2,
                                                 self.eps)
            return
        b1, b2 = self.beta1, self.beta2
        # torch (capturable=False): m.lerp_(g, 1-b1); v = b2 v + (1-b2) g^2;
        # bc_k = 1 - b_k**step (double); p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1)
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        torch.pow(b1, self.step_count, out=self._bc1)
        self._bc1.neg_().add_(1.0)                            # 1 - b1**step (exact rewrite)
        torch.pow(b2, self.step_count, out=self._bc2)
        self._bc2.neg_().add_(1.0)
        torch.div(self.lr, self._bc1, out=self._bc1)          # step_size = lr / bc1
        self._neg_step_size.copy_(self._bc1.neg_())           # double -> param dtype, as torch's value=
        self._bc2_sqrt.copy_(self._bc2.sqrt_())
        den = self._scratch
        torch.sqrt(self.exp_avg_sq, out=den)
        den.div_(self._bc2_sqrt).add_(self.eps)
        torch.div(self.exp_avg, den, out=den)
        x.addcmul_(den, self._neg_step_size)


def make_capturable(x: Tensor, config: StyleConfig, per_image: bool = False,
                    use_kernels: Optional[bool] = None, direction: str = "two_loop"):
    """The capturable optimiser ``config`` asks for (as engine.optimize.make_optimizer);
    ``direction`` is passed to :class:`CapturableLBFGS` (ignored for Adam)."""
    if config.optimizer == "lbfgs":
        return CapturableLBFGS(x, history=config.lbfgs_history, lr=config.effective_lr,
                               per_image=per_image, use_kernels=use_kernels,
                               direction=direction)
    return CapturableAdam(x, lr=config.effective_lr, per_image=per_image, use_kernels=use_kernels)
