"""CLI of large jobs: the job options of ``stylize --out-dir``, ``stylegrad job status`` and
``stylegrad bench --job``. Options are CLI-only (they say how and where to run, not what to
compute), so they are written here by hand; the parser hooks are :func:`add_job_arguments`,
:func:`add_job_command` and :func:`add_bench_job_arguments`.

Heavy imports (torch, the job machinery, Ray) happen inside the commands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stylegrad.run import progress as prog



def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


DEVICE_LIST_FORMAT = ("a device list is all (every GPU), cpu (worker processes, see --workers), or GPUs "
                      "named once each and separated by commas, as cuda:0,cuda:1")


def parse_device_list(text: str):
    """``--devices`` text -> "all", ["cpu"] or ["cuda:0", "cuda:1", ...] (the one parser of
    device lists; argparse turns its error into a usage error, exit 2). Whether those GPUs
    exist is checked when the job starts (:func:`choose_executor`)."""
    spec = str(text).strip()
    if spec in ("all", "cpu"):
        return spec if spec == "all" else ["cpu"]
    parts = [p.strip() for p in spec.split(",")]
    devices = []
    for p in parts:
        kind, sep, index = p.partition(":")
        if p == "":
            why = "an empty entry"
        elif p in ("all", "cpu"):
            why = f"{p} in a list (it stands alone)"
        elif kind != "cuda" or not sep or not index.isdigit() or not index.isascii():
            why = f"{p!r} is not cuda:N"
        elif f"cuda:{int(index)}" in devices:
            why = f"cuda:{int(index)} twice"
        else:
            devices.append(f"cuda:{int(index)}")
            continue
        raise argparse.ArgumentTypeError(f"{spec!r}: {why}; {DEVICE_LIST_FORMAT}")
    return devices


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stylize`` options of job folders (``--out-dir``)."""
    g = parser.add_argument_group("large jobs (with --out-dir; see README \"Large jobs\")")
    g.add_argument("--resume", action="store_true",
                   help="skip images the folder's manifest records as done (same input, styles and settings, "
                        "output unchanged)")
    g.add_argument("--fresh", action="store_true",
                   help="start the folder's job over: its manifest is emptied and every image computed again "
                        "(a folder holding a job needs --resume or --fresh)")
    g.add_argument("--force", action="store_true",
                   help="run even though the folder's job used other settings (its images are redone)")
    g.add_argument("--devices", metavar="LIST", type=parse_device_list,
                   help="cuda:0,cuda:1,... | all | cpu: one worker process per device (cpu: see --workers)")
    g.add_argument("--workers", type=_positive, metavar="N",
                   help="CPU worker processes (default with --devices cpu: cores / --threads); with --ray: most actors")
    g.add_argument("--threads", type=_positive, metavar="T",
                   help="CPU jobs: torch threads per image (default: every core for one process, cores / workers "
                        "for worker processes). The thread count changes the last bits "
                        "of the result, so a job fixes it whatever the number of workers")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run on a Ray cluster: auto | local | HOST:PORT | ray://HOST:PORT (pip install 'stylegrad[ray]')")
    g.add_argument("--ray-bytes", action="store_true",
                   help="with --ray: send inputs and outputs through Ray's object store (no shared filesystem)")


def add_job_command(sub) -> None:
    j = sub.add_parser("job", help="job folders: status")
    jsub = j.add_subparsers(dest="job_command", metavar="SUBCOMMAND", parser_class=type(j))
    st = jsub.add_parser("status", help="done, failed (with reasons), remaining, images/hour so far")
    st.add_argument("dir", metavar="DIR", help="a job folder (stylize --out-dir DIR)")
    st.add_argument("--verify", action="store_true", help="re-hash each done output (default: check it exists)")
    st.add_argument("--json", action="store_true", help="one JSON object on stdout")


def add_bench_job_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("job throughput (--job)")
    g.add_argument("--job", action="store_true",
                   help="run --images small images through the job machinery: one process on one device, "
                        "then every device (CPU: worker processes); report images/hour and the scaling ratio")
    g.add_argument("--images", type=_positive, default=8, metavar="N", help="images per run with --job (default 8)")
    g.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="with --job on the CPU: worker processes (default cores / --threads)")
    g.add_argument("--threads", type=_positive, default=1, metavar="T",
                   help="with --job on the CPU: torch threads per image; with --peers: threads of every "
                        "contestant (default 1)")


def choose_executor(job, config):
    """(executor, torch threads per image on the CPU) for the options given (the executor knows
    its device type). Threads, when --threads is not given: one process uses every core (as a
    plain run does); CPU worker processes share the cores (cores // workers, at least 1)."""
    import torch

    from stylegrad.errors import ConfigError
    from stylegrad.jobs.local_pool import LocalPool
    from stylegrad.jobs.runner import InlineExecutor
    from stylegrad.system import usable_cores
    from stylegrad.run.stylizer import parse_device

    threads = job.threads or 1
    if job.ray:
        from stylegrad.jobs.ray_pool import RayPool
        try:    # the GPUs may be on other hosts: check the name only, not this machine
            dtype = torch.device(config.device).type
        except (RuntimeError, ValueError):
            dtype = ""
        if dtype not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, got {config.device!r}")
        return RayPool(job.ray, dtype, max_actors=job.workers, ship_bytes=job.ray_bytes), threads
    if job.devices:
        devices = job.devices            # parsed by parse_device_list: "all", ["cpu"] or distinct cuda:N
        if devices == "all":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if n == 0:
                raise ConfigError("--devices all: no CUDA device on this machine; use --devices cpu --workers N")
            devices = [f"cuda:{i}" for i in range(n)]
        else:
            for d in devices:
                parse_device(d)           # present on this machine
        dtype = torch.device(devices[0]).type
        if dtype == "cpu":
            n = job.workers or max(1, usable_cores() // threads)
            return LocalPool(["cpu"] * n), job.threads or max(1, usable_cores() // n)
        if job.workers:
            raise ConfigError("--workers is for CPU jobs; a GPU job runs one worker per device in --devices")
        return LocalPool(devices, max(1, usable_cores() // len(devices))), threads
    dtype = parse_device(config.device).type
    if job.workers:
        if dtype != "cpu":
            raise ConfigError("--workers is for CPU jobs; for GPUs use --devices cuda:0,cuda:1 or all")
        return LocalPool(["cpu"] * job.workers), job.threads or max(1, usable_cores() // job.workers)
    return InlineExecutor(config.device), job.threads or torch.get_num_threads()


def _maybe_fetch_weights(config, executor, note) -> None:
    """Several workers would each download missing ImageNet weights: fetch them once here."""
    from stylegrad.jobs.runner import InlineExecutor
    from stylegrad.model.weights import hub_checkpoint_path, load_vgg, parse_weights

    if isinstance(executor, InlineExecutor) or parse_weights(config.weights).kind != "imagenet":
        return
    if not hub_checkpoint_path(config.model).exists():
        note("downloading the ImageNet weights once for all workers")
        load_vgg(config.weights, config.model, config.pool, preprocess=config.preprocess)


def run_stylize_job(plan) -> int:
    """``stylize --out-dir``: the plan's inputs as a job in that folder (``plan``: a
    ``stylegrad.cli.plan.StylizePlan`` with its ``job`` options)."""
    from stylegrad.cli.report import CliReporter
    from stylegrad.jobs.runner import JobRequest, run_job
    from stylegrad.model.weights import parse_weights

    job, config, report = plan.job, plan.config, plan.report
    executor, threads = choose_executor(job, config)
    if job.resume and job.threads is None and executor.device_type == "cpu":
        # --resume without --threads keeps the job's own thread count (it is a pixel setting)
        from stylegrad.jobs.manifest import load_state

        last = load_state(job.out_dir).last_run if job.out_dir.is_dir() else None
        threads = ((last or {}).get("settings") or {}).get("cpu_threads") or threads
    listener = CliReporter(report, config, plan.outputs, [str(c) for c in plan.contents],
                           parse_weights(config.weights).is_random)
    if job.ray and report.json:
        listener.note("per-iteration progress is not reported from Ray actors; one line per image")
    _maybe_fetch_weights(config, executor, listener.note)
    req = JobRequest(job.out_dir, list(plan.contents), list(plan.outputs), config, list(plan.styles),
                     cpu_threads=threads, pair_styles=plan.pair_styles,
                     resume=job.resume, force=job.force, fresh=job.fresh, ship_bytes=job.ray_bytes,
                     relay_progress=(report.json or report.bar or listener.lines is not None) and not job.ray,
                     command=list(report.command) if report.command else None)
    try:     # SIGTERM raises Terminated here (the command's handler, stylegrad.cli.main): workers stop
        summary = run_job(req, executor, listener)
    finally:
        listener.close()
    s = summary.as_dict()
    rc = 1 if summary.failed else 0
    if report.json:
        extra = {k: v for k, v in s.items() if k not in ("ok", "failed")}
        print(prog.json_line(prog.summary_object("job", summary.ok, listener.failed, str(job.out_dir),
                                                 summary.wall_seconds, rc, **extra)), flush=True)
    elif not report.quiet:
        p = summary.seconds_per_image
        per = (f"; per image p50 {p['p50']:.2f} s, p90 {p['p90']:.2f} s, max {p['max']:.2f} s"
               if p.get("p50") is not None else "")
        rate = f", {summary.images_per_hour:.1f} images/hour" if summary.ok else ""
        print(f"stylegrad: job {summary.job_dir}: ok {summary.ok}, failed {summary.failed}, "
              f"skipped {summary.skipped} (done before) in {summary.wall_seconds:.1f} s{rate}{per} "
              f"[{summary.executor}]", file=sys.stderr)
    return rc


def cmd_job(args) -> int:
    from stylegrad.errors import ConfigError
    from stylegrad.jobs.runner import job_status
    from stylegrad.run.progress import format_duration

    if args.job_command != "status":
        raise ConfigError("usage: stylegrad job status DIR [--verify] [--json]")
    st = job_status(args.dir, verify=args.verify)
    if args.json:
        print(prog.json_line(st))
        return 0

    rate = st["images_per_hour"]
    p = st["seconds_per_image"]
    unit = st.get("unit", "images")
    one = unit[:-1]
    counted = " frames" if unit == "frames" else ""
    now = ""
    if st["running"]:
        now = " (running now" + (f", pid {st['pid']}" if st.get("pid") else "")
        if st["seconds_left"] is not None and st.get("images_per_hour_now"):
            now += f"; about {format_duration(st['seconds_left'])} left at {st['images_per_hour_now']:.1f} {unit}/hour"
        now += ")"
    elif st["seconds_left"] is not None and st["remaining"]:
        now = f", about {format_duration(st['seconds_left'])} left at the measured {one} time"
    lines = [f"job {st['job_dir']}: {st['done']} of {st['inputs']}{counted} done, {len(st['failed'])} failed, "
             f"{st['remaining']} remaining" + now,
             f"  {st['runs']} run(s), {format_duration(st['wall_seconds'])} of running"
             + (f", {rate:.1f} {unit}/hour so far" if rate else "")
             + (f"; per {one} p50 {p['p50']:.2f} s, p90 {p['p90']:.2f} s" if p.get("p50") is not None else "")]
    if st["interrupted"]:
        how = st["resume_command"] or "the same command with --resume"
        lines.append(f"  interrupted at {st['done']}/{st['inputs']} - resume with: {how}")
    for f in st["failed"]:
        lines.append(f"  failed: {f['input']}: {f['error']}")
    if st["unreadable_lines"]:
        bad = st["unreadable_lines"]
        lines.append(f"  warning: {len(bad)} unreadable manifest line(s) skipped (line "
                     + ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "") + ")")
    print("\n".join(lines))
    return 0


def cmd_bench_job(args) -> int:
    from stylegrad.cli.options import config_from_args
    from stylegrad.errors import ConfigError
    from stylegrad.jobs.bench_job import bench_job, format_bench_job

    cfg = config_from_args(args)
    try:
        size = int(args.size[0])
    except ValueError:
        raise ConfigError("--size takes an integer") from None
    report = bench_job(images=args.images, size=size, iters=args.iters, device=cfg.device,
                       workers=args.workers, threads=args.threads, weights=cfg.weights, model=cfg.model,
                       content=args.content, style=args.style)
    print(json.dumps(report) if args.json else format_bench_job(report), flush=True)
    if args.out:
        from stylegrad.io.fileio import write_json_atomic
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), report)
    return 0
