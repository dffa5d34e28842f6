"""``stylegrad serve`` and ``stylegrad submit`` (registered in ``stylegrad.cli.main``).

The parsers are built without importing FastAPI (``--help`` works without the ``serve``
extra); running either command without it is a one-line error naming the extra.
"""
from __future__ import annotations

import math
import signal
import sys
from pathlib import Path

from stylegrad.cli.options import add_config_options, config_from_args, given_options
from stylegrad.config import parse_list
from stylegrad.errors import ConfigError

SERVER_FIELDS = ("model", "weights", "pool", "preprocess", "backend", "precision", "max_memory")
# the options a job may set: stylegrad.service.options.CLIENT_FIELDS (kept equal by a test)
CLIENT_FIELDS = (
    "size", "iters", "min_size", "iters_last", "optimizer", "lr", "lbfgs_history", "content_weight",
    "style_weight", "tv_weight", "normalize_gradients", "content_layers", "style_layers",
    "style_blend_weights", "style_scale", "original_colors", "init", "pool", "seed",
)


def add_commands(sub) -> None:
    s = sub.add_parser("serve", help="run the style-transfer service (HTTP API, web page; needs the serve extra)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s; anything but "
                   "loopback needs --tokens)")
    s.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    s.add_argument("--data", default="stylegrad-data", metavar="DIR",
                   help="job store, inputs and results (default ./%(default)s)")
    s.add_argument("--tokens", default=None, metavar="FILE",
                   help="bearer tokens, one a line, optionally name:token; without it: loopback only")
    s.add_argument("--devices", default="cpu", help="one worker per device: cpu | cuda:0,cuda:1 (default cpu); "
                   "with --ray, the actors' device type: cpu or cuda")
    s.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the queue's batches on a Ray cluster (auto, local, HOST:PORT) through the job "
                   "executor; needs the ray extra")
    s.add_argument("--max-batch", type=int, default=4, help="compatible queued jobs run together (default 4)")
    s.add_argument("--max-size", type=int, default=1024, help="largest options.size a job may ask (default 1024)")
    s.add_argument("--max-iters", type=int, default=1000, help="most iterations a job may ask (default 1000)")
    s.add_argument("--max-upload", default="20M", help="largest request body (default 20M)")
    s.add_argument("--max-jobs-per-token", type=int, default=16, help="queued+running jobs per token (default 16)")
    s.add_argument("--rate", type=float, default=20.0, help="requests per second per token (default 20)")
    s.add_argument("--sync-timeout", type=float, default=60.0, help="POST /v1/stylize waits this long (default 60 s)")
    add_config_options(s, SERVER_FIELDS)

    m = sub.add_parser("submit", help="stylise on a stylegrad server (same options as stylize)")
    m.add_argument("content", metavar="CONTENT", help="content image")
    m.add_argument("--style", action="append", default=[], metavar="S", help="style image (repeat to blend)")
    m.add_argument("--style-id", action="append", default=[], metavar="ID", help="a registered style of the server")
    m.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    m.add_argument("--server", required=True, metavar="URL", help="http://host:port of stylegrad serve")
    m.add_argument("--token-file", default=None, metavar="F", help="file holding the bearer token")
    m.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default never)")
    m.add_argument("--quiet", action="store_true", help="no progress")
    add_config_options(m, CLIENT_FIELDS)


def _need_extra():
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the service needs the serve extra: pip install 'stylegrad[serve]' ({e.name} missing)") \
            from None


def cmd_serve(args) -> int:
    _need_extra()
    import uvicorn

    from stylegrad.config import parse_bytes
    from stylegrad.run.stylizer import parse_device
    from stylegrad.service.app import Limits, ServiceSettings, check_bind, create_app, read_tokens

    tokens = read_tokens(args.tokens) if args.tokens else None
    check_bind(args.host, tokens)
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be 1 to 65535, got {args.port}")
    devices = parse_list(args.devices)
    if not devices or len(set(devices)) != len(devices):
        raise ConfigError(f"--devices takes distinct devices like cpu or cuda:0,cuda:1, got {args.devices!r}")
    if args.ray:
        if devices not in (["cpu"], ["cuda"]):
            raise ConfigError(f"with --ray, --devices is the actors' device type, cpu or cuda; got {args.devices!r}")
        from stylegrad.jobs.ray_pool import import_ray
        import_ray()
    else:
        for d in devices:
            parse_device(d)
    for name in ("max_batch", "max_size", "max_iters", "max_jobs_per_token"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if not (args.rate > 0 and math.isfinite(args.rate)) or not (args.sync_timeout > 0):
        raise ConfigError("--rate and --sync-timeout must be numbers > 0")
    config = config_from_args(args)
    limits = Limits(max_upload_bytes=parse_bytes(args.max_upload), max_size=args.max_size, max_iters=args.max_iters,
                    max_active_jobs=args.max_jobs_per_token, rate_per_second=args.rate,
                    rate_burst=max(1, int(2 * args.rate)), sync_seconds=args.sync_timeout)
    settings = ServiceSettings(data=Path(args.data), config=config, devices=tuple(devices), tokens=tokens,
                               host=args.host, limits=limits, max_batch=args.max_batch, ray=args.ray)
    app = create_app(settings)
    svc = app.state.service

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):   # SIGTERM/SIGINT: stop taking jobs, checkpoint running ones
            svc.begin_stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                   timeout_graceful_shutdown=10, access_log=False))
    who = (f"{len(tokens)} token(s) from {args.tokens}" if tokens else "no tokens: loopback only")
    print(f"stylegrad: serving on http://{args.host}:{args.port} ({who}); data in {args.data}; "
          f"{config.model} weights {config.weights} on "
          + (f"Ray ({args.ray}, {devices[0]} actors)" if args.ray else ", ".join(devices))
          + (f"; {svc.requeued_at_start} interrupted job(s) queued again" if svc.requeued_at_start else ""),
          file=sys.stderr, flush=True)
    # uvicorn re-raises the signal it caught once it has stopped: SIGTERM or SIGINT then means
    # "stopped as asked", exit 0
    previous = {sig: signal.signal(sig, lambda s, f: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ConfigError(f"could not serve on {args.host}:{args.port} (address in use, or the weights failed "
                          "to load: see above)")
    print("stylegrad: stopped", file=sys.stderr, flush=True)
    return 0


def _options_from_args(args) -> dict:
    config = config_from_args(args)
    out = {}
    for name in given_options(args):
        if name in ("content_layers", "style_layers"):
            weights = getattr(config, name.replace("layers", "layer_weights"))
            layers = getattr(config, name)
            out[name] = ",".join(f"{l}:{w:g}" for l, w in zip(layers, weights)) if weights else ",".join(layers)
        else:
            v = getattr(config, name)
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def cmd_submit(args) -> int:
    _need_extra()
    from stylegrad.io import images as imgs
    from stylegrad.service.client import Client, JobFailedError

    out = imgs.check_output_path(args.output)
    for inp in [args.content, *args.style]:
        if imgs.same_file(inp, out):
            raise ConfigError(f"output {out} is an input; choose another -o")
    if not args.style and not args.style_id:
        raise ConfigError("give --style S or --style-id ID")
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            raise ConfigError(f"cannot read a token from --token-file {args.token_file}: "
                              f"{getattr(e, 'strerror', None) or e or 'empty file'}") from None
        if ":" in token:          # a line of the server's tokens file, name:token
            token = token.partition(":")[2].strip()
    options = _options_from_args(args)
    with Client(args.server, token) as client:
        job = client.submit(args.content, list(args.style), style_ids=list(args.style_id), **options)
        bar = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=1, desc=f"{Path(args.content).name} on {args.server}", unit="it", file=sys.stderr)
        final = None
        last_line = 0.0
        import time
        try:
            for ev in client.events(job.id):
                final = ev
                if bar is not None:
                    bar.total = max(1, ev.get("iters") or 1)
                    bar.n = ev.get("iteration") or 0
                    bar.set_postfix_str(f"loss {ev['loss']:.4g}" if ev.get("loss") is not None else ev["status"])
                    bar.refresh()
                elif not args.quiet and time.monotonic() - last_line > 10:
                    last_line = time.monotonic()
                    eta = ev.get("eta_seconds")
                    print(f"stylegrad: job {job.id} {ev['status']}: iter {ev.get('iteration')}/{ev.get('iters')}"
                          + (f" loss {ev['loss']:.4g}" if ev.get("loss") is not None else "")
                          + (f", ETA {eta:.0f}s" if eta is not None else ""), file=sys.stderr, flush=True)
        finally:
            if bar is not None:
                bar.close()
        if final is None or final["status"] not in ("done", "failed", "cancelled"):
            final = client.wait(job.id, args.timeout)
        if final["status"] != "done":
            raise JobFailedError(f"job {job.id} {final['status']}: {final.get('error') or ''}".strip(), final)
        image = client.result(job.id)
        imgs.save_image(imgs.to_tensor(image), out)
    if not args.quiet:
        print(f"stylegrad: job {job.id} done, written to {out}", file=sys.stderr)
    return 0
