"""``stylegrad export``, ``stylegrad bench`` and ``stylegrad kernels check``."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .fileio import check_writable_folder, write_json_atomic

from .errors import ConfigError


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
    from .cli_config import config_from_args
    from .weights import load_vgg, weights_identity
    from stylegrad.export import export_onnx

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
        from .cli_job import cmd_bench_job
        return cmd_bench_job(args)
    from .bench import format_table, run_bench
    from .cli_config import config_from_args

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
