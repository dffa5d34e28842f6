"""``stylegrad bench --peers``: the plumbing at tiny sizes on random weights (fast), and the
arithmetic of its summary (warnings, ratios, targets, compare, plot) on made-up records."""
import json
import os
import subprocess
import sys

import pytest

from stylegrad.benchmark import contest
from stylegrad.cli.main import main
from stylegrad.errors import ConfigError

needs_pt = pytest.mark.skipif(contest.peer_available("neural-style-pt") is not None,
                              reason="pip install --no-deps neural-style==0.5.7")


def _rec(ms, losses, setup=1.0, rss=100, phases=None):
    """A child's record: iterations ms apart, with these losses."""
    r = {"iterations": [{"iter": i, "loss": l, "t": i * ms / 1e3} for i, l in enumerate(losses)],
         "setup_s": setup, "peak_rss_bytes": rss * 2**20, "version": "x"}
    if phases is not None:
        r["phases_ms_per_iter"] = phases
    return r


def test_summary_warns_on_spread_and_on_a_ratio_that_includes_1():
    sg, pt = contest.Contestant("stylegrad", "torch", "fp32"), contest.Contestant("neural-style-pt")
    losses = [10.0, 5.0, 2.0, 1.0]
    runs = {sg.name: [_rec(100, losses, phases={"forward": 40.0, "backward": 50.0}),
                      _rec(7, losses, phases={"forward": 40.0, "backward": 50.0}),    # a 0.07x outlier
                      _rec(101, losses, phases={"forward": 40.0, "backward": 50.0})],
            pt.name: [_rec(100, losses), _rec(102, losses), _rec(99, losses)]}
    rows, target, warnings = contest.summarise([sg, pt], runs, contest.Target.parse("neural-style-pt:2"), 1e9, 100.0)
    assert target == 2.0
    by = {r["contestant"]: r for r in rows}
    assert by[sg.name]["ms_per_iter"] == pytest.approx(100.0) and by[sg.name]["spread"] > 0.9
    assert any("spread" in w and sg.name in w for w in warnings)
    assert any("includes 1" in w for w in warnings)                 # 100/101 .. 102/7: no difference shown
    assert not any("spread" in w and w.startswith("neural-style-pt") for w in warnings)
    # phases + other = the measured ms/iteration
    ph = by[sg.name]["phases_ms_per_iter"]
    assert sum(ph.values()) == pytest.approx(by[sg.name]["ms_per_iter"]) and ph["other"] == pytest.approx(10.0)
    # seconds to the target: setup + time of the first loss <= 2 (iteration 2)
    assert by[pt.name]["seconds_to_loss"] == pytest.approx(1.0 + 2 * 0.1, rel=0.03)
    assert by[sg.name]["gflops_achieved"] == pytest.approx(1e9 / 0.1 / 1e9) and by[sg.name]["fraction_of_gemm"] == pytest.approx(0.1)


def test_a_clear_difference_is_not_warned():
    sg, pt = contest.Contestant("stylegrad", "torch", "fp32"), contest.Contestant("neural-style-pt")
    runs = {sg.name: [_rec(50, [3, 2, 1]), _rec(51, [3, 2, 1])], pt.name: [_rec(100, [3, 2, 1]), _rec(101, [3, 2, 1])]}
    rows, _, warnings = contest.summarise([sg, pt], runs, contest.Target.parse("1.5"), 1e9, 100.0)
    assert warnings == [w for w in warnings if "too few" in w] and len(warnings) == 1     # 2 repeats: said
    q = rows[0]["speed_vs_neural-style-pt"]
    assert q["ratio"] == pytest.approx(100.5 / 50.5) and not q["includes_1"]
    assert rows[0]["time_to_loss_vs_neural-style-pt"]["ratio"] > 1


@pytest.mark.parametrize("text,needle", [("abc", "PEER:ITERS"), ("-3", "> 0"), ("neural-style-pt:0", "whole number")])
def test_to_loss_refuses_what_it_cannot_read(text, needle):
    with pytest.raises(ConfigError, match=needle):
        contest.Target.parse(text)


def test_compare_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    sg = contest.Contestant("stylegrad", "torch", "fp32")
    runs = {sg.name: [_rec(50, [3.0, 2.0, 1.0])]}
    rows, _, _ = contest.summarise([sg], runs, None, 1e9, 100.0)
    base = {"kind": "contest", "date": "2026-12-05", "cpu": "c", "commit": "a", "threads": 1, "results": rows,
            "target": None, "objective": {"width": 8, "height": 8, "model": "vgg16", "weights": "random"}}
    faster = json.loads(json.dumps(base))
    faster["results"][0]["ms_per_iter"] = 25.0
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(faster))
    assert main(["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "stylegrad torch fp32" in out and "2.00x" in out
    assert main(["bench", "compare", str(tmp_path / "a.json")]) == 2
    png = contest.plot(base, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_contestants_skip_precisions_a_backend_does_not_run():
    names = [c.name for c in contest.stylegrad_contestants(["reference", "torch"], ["fp32", "bf16"])]
    assert "stylegrad reference fp32" in names and "stylegrad torch fp32" in names
    assert "stylegrad reference bf16" not in names          # the autograd reference is fp32 only


def test_contestants_that_would_run_the_same_run_once(monkeypatch):
    from stylegrad.backends import registry

    monkeypatch.setattr(registry, "native_bf16", lambda device: True)
    names = [c.name for c in contest.stylegrad_contestants(["auto", "torch", "reference"], ["auto", "fp32", "bf16"])]
    # auto auto = torch bf16 (the default run); auto fp32 = torch fp32; reference auto = reference fp32
    assert names == ["stylegrad auto auto", "stylegrad auto fp32", "stylegrad reference auto"]
    monkeypatch.setattr(registry, "native_bf16", lambda device: False)
    names = [c.name for c in contest.stylegrad_contestants(["auto", "torch"], ["auto", "bf16"])]
    assert names == ["stylegrad auto auto", "stylegrad auto bf16"]      # auto is fp32 here


def test_contestants_may_change_options_that_leave_the_objective_alone():
    cs = contest.stylegrad_contestants(["torch", "torch+lbfgs_direction=compact+tol=1e-3"], ["fp32"])
    assert [c.name for c in cs] == ["stylegrad torch fp32", "stylegrad torch fp32 lbfgs_direction=compact tol=1e-3"]
    assert contest.option_value("tol", "none") is None and contest.option_value("lbfgs_history", "5") == 5
    for spec, needle in (("torch+tv_weight=0", "objective is shared"), ("torch+lbfgs_direction=fast", "must be one of"),
                         ("torch+lbfgs_history=x", "expected int"), ("torch+tol", r"\+FIELD=VALUE")):
        with pytest.raises(ConfigError, match=needle):
            contest.parse_backend_spec(spec)
    from stylegrad.config import StyleConfig
    from stylegrad.optim import make_optimizer
    import torch
    x = torch.zeros(1, 3, 4, 4)
    assert make_optimizer(x, StyleConfig(lbfgs_direction="compact")).direction == "compact"
    assert make_optimizer(x, StyleConfig(lbfgs_direction="two_loop")).direction == "two_loop"
    assert make_optimizer(x, StyleConfig()).direction == "compact"      # auto, on the CPU


def test_options_that_need_peers_are_refused(capsys):
    assert main(["bench", "--to-loss", "3", "--size", "8"]) == 2
    assert "--to-loss goes with --peers" in capsys.readouterr().err
    assert main(["bench", "--peers", "nope"]) == 2
    assert "unknown peer" in capsys.readouterr().err
    if contest.peer_available("pystiche") is not None:
        assert main(["bench", "--peers", "pystiche", "--size", "8"]) == 2
        assert "pystiche" in capsys.readouterr().err


@needs_pt
def test_bench_peers_end_to_end(tmp_path):
    """Two contestants, two rotated repeats, each its own process; the results file says what
    ran where, with units, and the plot and trace are written."""
    out, plot, trace = tmp_path / "r.json", tmp_path / "p.png", tmp_path / "trace"
    cmd = [sys.executable, "-m", "stylegrad.cli.main", "bench", "--peers", "neural-style-pt,pystiche", "--backends", "torch",
           "--weights", "random", "--model", "vgg16", "--size", "24", "--iters", "3", "--repeat", "2",
           "--to-loss", "neural-style-pt:2", "--out", str(out), "--trace", str(trace)]
    if contest.peer_available("neural-style-pt") is None:
        try:
            import matplotlib  # noqa: F401
            cmd += ["--plot", str(plot)]
        except ImportError:
            pass
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    for key in ("command", "commit", "cpu", "threads", "versions", "gemm_gflops", "units", "run_order"):
        assert r[key] not in (None, "", {}), key
    assert r["gemm_gflops"] > 0 and r["versions"]["neural-style"] == "0.5.7"
    # a peer that cannot run here is named with its reason; the others still ran
    why = contest.peer_available("pystiche")
    assert r["peers_not_run"] == ({"pystiche": why} if why else {})
    assert (f"--peers pystiche not run: {why}" in r["warnings"]) == bool(why)
    assert r["run_order"] == [["stylegrad torch fp32", "neural-style-pt"], ["neural-style-pt", "stylegrad torch fp32"]]
    by = {x["contestant"]: x for x in r["results"]}
    assert set(by) == {"stylegrad torch fp32", "neural-style-pt"}
    for x in by.values():
        assert x["repeats"] == 2 and x["iterations"] == 3 and len(x["loss_per_iter"]) == 4
        assert x["ms_per_iter"] > 0 and x["peak_rss_mib_median"] > 50
    # both start from the same image on the same objective: the same first loss
    assert by["stylegrad torch fp32"]["loss_per_iter"][0] == pytest.approx(by["neural-style-pt"]["loss_per_iter"][0], rel=2e-3)
    assert r["target"]["loss"] == by["neural-style-pt"]["loss_per_iter"][2]
    ph = by["stylegrad torch fp32"]["phases_ms_per_iter"]
    assert sum(ph.values()) == pytest.approx(by["stylegrad torch fp32"]["ms_per_iter"], rel=0.10)
    assert list(trace.glob("trace-torch-fp32.json"))
    if "--plot" in cmd:
        assert plot.read_bytes()[:4] == b"\x89PNG"
