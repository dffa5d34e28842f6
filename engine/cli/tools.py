"""``stylegrad export``, ``stylegrad bench`` and ``stylegrad kernels check``."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from stylegrad.io.fileio import check_writable_folder, write_json_atomic

from stylegrad.errors import ConfigError, error_text
from stylegrad.io import images as imgs


def prepare_folder(folder, flag: str) -> None:
    """Create an output folder and check that it takes a file, before any work (exit 2)."""
    d = Path(folder)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{flag} {d} is a file; it must be a folder (or a path where one can be made)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {flag} {d}: {e.strerror or e}") from None
    why = check_writable_folder(d)
    if why:
        raise ConfigError(f"{flag}: {why}")


def cmd_export(args) -> int:
    from stylegrad.cli.options import config_from_args
    from stylegrad.export import export_onnx
    from stylegrad.model.weights import load_vgg, weights_identity

    cfg = config_from_args(args)   # validates the model, pooling and layer names
    out = Path(args.out)
    created = not out.exists()
    prepare_folder(args.out, "--out")
    try:
        vgg = load_vgg(cfg.weights, cfg.model, cfg.pool, preprocess=cfg.preprocess)
        manifest = export_onnx(vgg, out, cfg.content_layers, cfg.style_layers, opset=args.opset,
                               weights_id=weights_identity(cfg.weights, cfg.model))
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):   # a refused export leaves no empty folder
            out.rmdir()
        raise
    print(f"wrote {args.out}/forward.onnx, backward.onnx, manifest.json (opset {manifest.get('opset', args.opset)}, "
          f"{vgg.preprocess} input convention)")
    return 0


def cmd_bench(args) -> int:
    if args.job:
        from stylegrad.cli.job import cmd_bench_job
        return cmd_bench_job(args)
    if args.peers is not None:
        return cmd_bench_peers(args)
    for flag in ("to_loss", "plot", "trace"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} goes with --peers")
    from stylegrad.benchmark.backends import format_table, run_bench
    from stylegrad.cli.options import config_from_args

    cfg = config_from_args(args)

    try:
        sizes = [int(s) for s in args.size]
        batches = [int(b) for b in args.batch]
    except ValueError:
        raise ConfigError("--size and --batch take comma-separated integers") from None
    if args.out:
        if Path(args.out).is_dir():
            raise ConfigError(f"--out {args.out} is a folder; it must be a file (use --out-dir for a folder)")
        prepare_folder(Path(args.out).parent if str(Path(args.out).parent) else ".", "the folder of --out")
    if args.out_dir:
        prepare_folder(args.out_dir, "--out-dir")
    command = "stylegrad " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    reports = []
    for size in sizes:
        for batch in batches:
            rep = run_bench(args.backends, size, batch, args.iters, args.repeat, args.warmup, cfg.device,
                            args.precision, args.content, args.style, cfg.weights, cfg.model, command)
            reports.append(rep)
            if args.json:
                print(json.dumps(rep), flush=True)
            else:
                print(format_table(rep), flush=True)
    if args.out:
        write_json_atomic(Path(args.out), reports[0] if len(reports) == 1 else reports)
    if args.out_dir:
        for rep in reports:
            dev = "cuda" if cfg.device.startswith("cuda") else "cpu"
            write_json_atomic(Path(args.out_dir) / f"{dev}-{rep['size']}-b{rep['batch']}.json", rep)
    return 0


def cmd_bench_peers(args) -> int:
    from stylegrad.benchmark import contest
    from stylegrad.cli.options import config_from_args

    cfg = config_from_args(args)
    peers = contest.parse_peers(args.peers)
    target = contest.Target.parse(args.to_loss)
    if target is not None and target.peer is not None and target.peer not in peers and target.peer != "stylegrad":
        raise ConfigError(f"--to-loss {args.to_loss}: {target.peer} is not in --peers")
    try:
        sizes = [int(s) for s in args.size]
    except ValueError:
        raise ConfigError("--size takes comma-separated integers") from None
    if args.batch != ("1",):
        raise ConfigError("--peers runs batch 1 only (the peers have no batches)")
    if cfg.device != "cpu":
        raise ConfigError("--peers runs on the CPU only so far")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ConfigError(f"--plot {args.plot}: give a .png file")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install 'stylegrad[bench]'") from None
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a folder; it must be a file (use --out-dir for a folder)")
    out_dir = Path(args.out_dir) if args.out_dir else Path("bench") / "results"
    prepare_folder(Path(args.out).parent if args.out else out_dir, "the results folder")
    content = Path(args.content) if args.content else Path(__file__).parent.parent / "examples" / "content.png"
    style = Path(args.style) if args.style else Path(__file__).parent.parent / "examples" / "style.png"
    for p in (content, style):
        imgs.image_size(p)         # unreadable: one line, exit 2, before any run
    command = "stylegrad " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    backends = [b for b in args.backends if b]
    for b in backends:
        contest.parse_backend_spec(b)       # a bad +FIELD=VALUE: one line, exit 2, before any run
    reports = []
    for size in sizes:
        spec = contest.ContestSpec(content=content.resolve(), style=style.resolve(), size=size, weights=cfg.weights,
                                   model=cfg.model, iters=args.iters, repeat=args.repeat, threads=args.threads,
                                   peers=peers, backends=backends, precisions=list(args.precision),
                                   lbfgs_rules=args.lbfgs_rules, target=target, command=command)
        report = contest.run_contest(spec, progress=lambda m: print(f"stylegrad: bench: {m}", file=sys.stderr,
                                                                     flush=True))
        path = Path(args.out) if args.out and len(sizes) == 1 else (
            contest.results_path(out_dir, report) if len(sizes) == 1 else
            contest.results_path(out_dir, report).with_name(contest.results_path(out_dir, report).stem + f"-{size}px.json"))
        report["results_file"] = str(path)
        write_json_atomic(path, report)
        reports.append(report)
        print(json.dumps(report) if args.json else contest.format_contest(report) + f"\nwritten to {path}", flush=True)
        if args.plot:
            plot_path = Path(args.plot) if len(sizes) == 1 else Path(args.plot).with_name(
                Path(args.plot).stem + f"-{size}px.png")
            contest.plot(report, plot_path)
            if not args.json:
                print(f"plot: {plot_path}")
        if args.trace:
            for p in contest.write_trace(Path(args.trace), spec):
                if not args.json:
                    print(f"trace: {p}")
    return 0


def cmd_bench_compare(argv) -> int:
    from stylegrad.benchmark import contest

    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise ConfigError("usage: stylegrad bench compare A.json B.json")
    docs = []
    for a in argv:
        try:
            d = json.loads(Path(a).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"bench compare: cannot read {a}: {error_text(e)}") from None
        if not isinstance(d, dict) or d.get("kind") != "contest":
            raise ConfigError(f"bench compare: {a} is not a result of stylegrad bench --peers")
        docs.append(d)
    print("\n".join(contest.compare(*docs)))
    return 0


def cmd_kernels_check(args) -> int:
    from stylegrad import kernels

    if getattr(args, "emulate", False):
        return _kernels_check_emulated()
    results = kernels.check_all(list(args.arch))
    print(kernels.format_check_table(results))
    return 0 if all(r.ok for r in results) else 1


def _kernels_check_emulated() -> int:
    import time

    from stylegrad.kernels import KernelUnavailableError
    from stylegrad.kernels.emulator import check

    t0 = time.perf_counter()
    try:
        results = check.run_checks()
    except KernelUnavailableError as e:
        print(f"stylegrad: error: {e}", file=sys.stderr)
        return 2
    print(check.format_table(results))
    print(f"emulated kernel check: {time.perf_counter() - t0:.1f} s wall")
    return 0 if all(r.ok for r in results) else 1
