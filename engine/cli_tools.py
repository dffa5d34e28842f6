"""``stylegrad export``, ``stylegrad bench`` and ``stylegrad kernels check``."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .fileio import write_json_atomic

from .errors import ConfigError


def cmd_export(args) -> int:
    from .cli_config import config_from_args
    from .weights import load_vgg, weights_identity
    from stylegrad.export import export_onnx

    cfg = config_from_args(args)   # validates the model, pooling and layer names
    vgg = load_vgg(cfg.weights, cfg.model, cfg.pool, preprocess=cfg.preprocess)
    manifest = export_onnx(vgg, Path(args.out), cfg.content_layers, cfg.style_layers, opset=args.opset,
                           weights_id=weights_identity(cfg.weights, cfg.model))
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
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), reports[0] if len(reports) == 1 else reports)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
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
