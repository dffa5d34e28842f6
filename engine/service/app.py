"""The HTTP service: FastAPI app, authentication, limits, the jobs and styles API, health,
metrics and the web page. See the README's *Service* section for the API and security model.

Library code: nothing here prints or exits; ``stylegrad serve`` (``stylegrad.cli.serve``)
does.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import math
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

from fastapi import Depends, FastAPI, File, Form, Header, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from stylegrad.config import StyleConfig
from stylegrad.errors import ConfigError
from stylegrad.io import images as imgs
from stylegrad.io.fileio import atomic_write
from stylegrad.service.metrics import ServiceMetrics
from stylegrad.service.options import CLIENT_FIELDS, JobOptions, apply_options, option_changes
from stylegrad.service.store import FINAL, JobStore, dumps, new_id


# -- settings ------------------------------------------------------------------------------------
@dataclass
class Limits:
    """What one request and one token may ask for."""

    max_upload_bytes: int = 20 * 2**20      # a whole request body (413 above)
    max_pixels: int = 40_000_000            # an uploaded image, from its header (422 above; bombs)
    max_size: int = 1024                    # options.size
    max_iters: int = 1000                   # options.iters and iters_last
    max_styles: int = 4                     # style images + style ids of one job
    max_active_jobs: int = 16               # queued + running jobs per token (429 above)
    rate_per_second: float = 20.0           # requests per second per token (token bucket)
    rate_burst: int = 40
    sync_seconds: float = 60.0              # POST /v1/stylize waits this long (504 after)


@dataclass
class ServiceSettings:
    data: Path
    config: StyleConfig = field(default_factory=lambda: StyleConfig())   # server-owned fields
    devices: Tuple[str, ...] = ("cpu",)
    tokens: Optional[Dict[str, str]] = None    # token -> name; None: no tokens (loopback only)
    host: str = "127.0.0.1"
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 4
    ray: Optional[str] = None                  # a Ray cluster address: batches run there (ray_worker.py)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_tokens(path) -> Dict[str, str]:
    """A tokens file: one token a line, optionally ``name:token``; blank lines and ``#``
    comments skipped. Returns token -> name. Raises ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read --tokens {path}: {e.strerror or e}") from None
    tokens: Dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, tok = line.partition(":")
        if not sep:
            name, tok = f"token{n}", line
        name, tok = name.strip(), tok.strip()
        if len(tok) < 16:
            raise ConfigError(f"--tokens {path} line {n}: a token must have at least 16 characters")
        if tok in tokens:
            raise ConfigError(f"--tokens {path} line {n}: the same token appears twice")
        tokens[tok] = name
    if not tokens:
        raise ConfigError(f"--tokens {path} holds no token")
    return tokens


def check_bind(host: str, tokens) -> None:
    """Refuse a non-loopback address without tokens (ConfigError)."""
    if not tokens and not is_loopback(host):
        raise ConfigError(f"refusing to serve on {host} without --tokens: without tokens stylegrad serve "
                          "binds loopback only (127.0.0.1 or ::1); give --tokens FILE to serve a network")


# -- errors ----------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_body(code: str, message: str, field: Optional[str] = None) -> dict:
    return {"code": code, "message": message, "field": field}


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "too_large",
                 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited", 500: "internal",
                 503: "unavailable", 504: "timeout"}


ERROR_SCHEMA = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}}


def _responses(*codes: int) -> dict:
    return {c: {"description": _STATUS_CODES.get(c, "error"), **ERROR_SCHEMA} for c in codes}


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 (from Content-Length up
    front, or counted while it is read)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_large = False
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                too_large = False
        if too_large:
            return await _send_json(send, 413, error_body("too_large", f"request body over {self.limit} bytes"))
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return msg

        return await self.app(scope, counted, send)


async def _send_json(send, status: int, body: dict, headers=()):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


# -- rate limiting ------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per caller."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: Dict[str, Tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> Optional[float]:
        """None if allowed; else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return None
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / self.rate


# -- the service ----------------------------------------------------------------------------------
class Service:
    """The state behind the app: the store, the weights, the workers, live progress."""

    def __init__(self, settings: ServiceSettings):
        # a job's defaults are the server's config, capped at the limits (a request that sets
        # nothing is never refused for the server's own defaults)
        cfg = settings.config
        settings.config = cfg.replace(size=min(cfg.size, settings.limits.max_size),
                                      iters=min(cfg.iters, settings.limits.max_iters))
        self.settings = settings
        self.data = Path(settings.data)
        for sub in ("inputs", "results", "styles"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.data / "jobs.sqlite")
        self.requeued_at_start = self.store.recover()
        self.limits = settings.limits
        self.rate = RateLimiter(self.limits.rate_per_second, self.limits.rate_burst)
        self.metrics = ServiceMetrics(self)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.live: Dict[str, dict] = {}
        self.snapshots: Dict[str, bytes] = {}
        self.cancelled: set = set()
        self.vgg = None
        self.workers: list = []
        self.ready = False
        self._style_cache: Dict[str, Any] = {}
        self._style_lock = threading.Lock()

    # paths: every name is made by the server (ids are uuid hex), never taken from a request
    def input_path(self, name: str) -> Path:
        return self.data / "inputs" / Path(name).name

    def result_path(self, name: str) -> Path:
        return self.data / "results" / Path(name).name

    def style_path(self, name: str) -> Path:
        return self.data / "styles" / Path(name).name

    def style_file(self, name: str) -> Path:
        """The file of a job's style entry: a registered style (``styles/...``) or an upload."""
        return self.style_path(name) if name.startswith("styles/") else self.input_path(name)

    def start(self) -> None:
        from stylegrad.model.weights import load_vgg
        from stylegrad.service.worker import DeviceWorker

        cfg = self.settings.config
        self.vgg = load_vgg(cfg.weights, cfg.model, cfg.pool, None, cfg.preprocess)
        if self.settings.ray:
            from stylegrad.service.ray_worker import RayWorker

            kind = "cuda" if self.settings.devices[0].startswith("cuda") else "cpu"
            w = RayWorker(self, self.settings.ray, kind)
            w.connect()
            w.start()
            self.workers.append(w)
        else:
            for dev in self.settings.devices:
                w = DeviceWorker(self, dev)
                w.start()
                self.workers.append(w)
        self.ready = True

    def begin_stop(self) -> None:
        """Stop taking jobs; running batches stop at their next iteration and go back to the
        queue (they run again after a restart)."""
        self.stopping.set()
        self.wake.set()

    def stop(self, timeout: float = 60.0) -> None:
        self.begin_stop()
        for w in self.workers:
            if hasattr(w, "abort"):
                w.abort()
        for w in self.workers:
            w.join(timeout)
        self.ready = False
        if not any(w.is_alive() for w in self.workers):   # a stuck worker keeps its store
            self.store.close()

    def drop_inputs(self, job: dict) -> None:
        """Remove a finished job's uploaded images (registered styles stay)."""
        for name in [job["content"], *json.loads(job["styles"])]:
            if not name.startswith("styles/"):
                self.input_path(name).unlink(missing_ok=True)

    def job_config(self, job: dict) -> StyleConfig:
        changes = json.loads(job["config"])
        for k in ("content_layers", "style_layers", "content_layer_weights", "style_layer_weights",
                  "style_blend_weights"):
            if changes.get(k) is not None:
                changes[k] = tuple(changes[k])
        return self.settings.config.replace(**changes)

    def style_tensors(self, job: dict) -> list:
        """The decoded style images of a job (registered styles are decoded once and kept)."""
        out = []
        for name in json.loads(job["styles"]):
            if name.startswith("styles/"):
                with self._style_lock:
                    t = self._style_cache.get(name)
                if t is None:
                    t = imgs.load_image(self.style_file(name))
                    with self._style_lock:
                        self._style_cache[name] = t
                out.append(t)
            else:
                out.append(imgs.load_image(self.style_file(name)))
        return out


# -- upload checks -------------------------------------------------------------------------------
def _store_upload(svc: Service, upload: UploadFile, dest: Path, field_name: str) -> Tuple[int, int, str]:
    """Write an upload (atomically) under a server-made name and check it is an image within
    the pixel limit; returns (width, height, sha256). Removes the file and raises ApiError 422
    otherwise."""
    digest = hashlib.sha256()

    def write(f):
        upload.file.seek(0)
        while True:
            chunk = upload.file.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            f.write(chunk)

    atomic_write(dest, write)
    try:
        try:
            with Image.open(dest) as im:    # header only: a decompression bomb is refused here
                h, w = imgs.header_size(im)     # as the image will be loaded (EXIF rotation)
        except Image.DecompressionBombError:
            w = h = None
        except Exception:
            raise ApiError(422, "not_an_image", f"{field_name}: not an image this server can read", field_name)
        if w is None or w * h > svc.limits.max_pixels:
            raise ApiError(422, "too_many_pixels",
                           f"{field_name}: more than {svc.limits.max_pixels} pixels", field_name)
        try:   # decoded once here (8-bit, by Pillow), so that a truncated or corrupt file is refused now
            with Image.open(dest) as im:
                im.load()
        except Exception:
            raise ApiError(422, "not_an_image", f"{field_name}: not an image this server can read", field_name)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return w, h, digest.hexdigest()


def _upload_sha256(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while True:
        chunk = upload.file.read(1 << 20)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def _parse_options(svc: Service, text: Optional[str]) -> Tuple[StyleConfig, dict]:
    try:
        raw = json.loads(text) if text not in (None, "") else {}
    except (ValueError, RecursionError):
        raise ApiError(422, "invalid_options", "options: not valid JSON", "options")
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_options", "options: must be a JSON object", "options")
    try:
        opts = JobOptions.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        name = ".".join(str(x) for x in err.get("loc", ()) if not isinstance(x, int)) or None
        raise ApiError(422, "invalid_option", f"options.{name}: {err.get('msg')}", f"options.{name}")
    try:
        changes = option_changes(opts)
        config = apply_options(svc.settings.config, opts)
    except ConfigError as e:
        raise ApiError(422, "invalid_option", str(e), _field_at_fault(svc.settings.config, opts))
    lim = svc.limits
    for name, value, cap in (("size", config.size, lim.max_size), ("iters", config.iters, lim.max_iters),
                             ("iters_last", config.iters_last or 0, lim.max_iters)):
        if value > cap:
            raise ApiError(422, "over_limit", f"options.{name}: {value} is over this server's limit of {cap}",
                           f"options.{name}")
    return config, changes


def _field_at_fault(base: StyleConfig, opts) -> str:
    """The first option that the engine refuses on its own (``options`` when only their
    combination is refused)."""
    for name in CLIENT_FIELDS:
        if getattr(opts, name) is None:
            continue
        try:
            apply_options(base, JobOptions(**{name: getattr(opts, name)}))
        except ConfigError:
            return f"options.{name}"
    return "options"


def _job_view(svc: Service, job: dict) -> dict:
    jid = job["id"]
    live = svc.live.get(jid) if job["status"] == "running" else None
    iteration, iters, loss = job["iteration"], job["iters"], job["loss"]
    eta = None
    if live is not None:
        iteration, iters, loss = live["iteration"], live["iters"], live["loss"]
        elapsed = time.time() - live["started"]
        if live["done"] > 1:
            eta = round(elapsed / live["done"] * max(0, iters - live["done"]), 1)
    if loss is not None and not math.isfinite(loss):
        loss = None
    return {"id": jid, "status": job["status"], "iteration": iteration, "iters": iters, "loss": loss,
            "eta_seconds": eta, "created": job["created"], "started": job["started"], "finished": job["finished"],
            "error": job["error"], "batch": job["batch"], "attempts": job["attempts"],
            "urls": {"self": f"/v1/jobs/{jid}", "events": f"/v1/jobs/{jid}/events",
                     "result": f"/v1/jobs/{jid}/result", "snapshot": f"/v1/jobs/{jid}/snapshot"}}


# -- response models (so that the published schema says what comes back) -----------------------
class JobUrls(BaseModel):
    self: str
    events: str
    result: str
    snapshot: str


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    iteration: int
    iters: int
    loss: Optional[float]
    eta_seconds: Optional[float]
    created: float
    started: Optional[float]
    finished: Optional[float]
    error: Optional[str]
    batch: int
    attempts: int
    urls: JobUrls


class JobList(BaseModel):
    jobs: List[JobView]
    limit: int
    offset: int


class StyleView(BaseModel):
    id: str
    name: str
    width: int
    height: int


class StyleList(BaseModel):
    styles: List[StyleView]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    devices: List[str]
    model: str
    weights: str


# -- the app -------------------------------------------------------------------------------------
def create_app(settings: ServiceSettings, *, start_workers: bool = True) -> FastAPI:
    from contextlib import asynccontextmanager

    svc = Service(settings)

    @asynccontextmanager
    async def lifespan(app):
        if start_workers:
            await asyncio.get_running_loop().run_in_executor(None, svc.start)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, svc.stop)

    app = FastAPI(title="stylegrad", version="1", lifespan=lifespan,
                  description="Neural style transfer as a service. Every error is JSON: "
                              "{\"code\", \"message\", \"field\"}.")
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=settings.limits.max_upload_bytes)
    bearer = HTTPBearer(auto_error=False, description="a token of the server's --tokens file")

    # -- errors: JSON with a code, always --------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "error")
        msg = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(error_body(code, msg), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        errs = exc.errors()
        err = errs[0] if errs else {}
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        name = ".".join(loc) or None
        return JSONResponse(error_body("invalid", f"{name or 'request'}: {err.get('msg', 'invalid')}", name), 422)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc):
        return JSONResponse(error_body("too_large", f"request body over {settings.limits.max_upload_bytes} bytes"), 413)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        return JSONResponse(error_body("internal", f"internal error: {type(exc).__name__}"), 500)

    # -- auth and rate ---------------------------------------------------------------------------
    def caller(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> str:
        tokens = settings.tokens
        if tokens:
            given = creds.credentials if creds is not None else ""
            owner = None
            for tok, name in tokens.items():     # compare with every token, constant time each
                if hmac.compare_digest(tok.encode(), given.encode()):
                    owner = name
            if owner is None:
                raise ApiError(401, "unauthorized", "missing or wrong bearer token",
                               headers={"WWW-Authenticate": "Bearer"})
        else:
            owner = "local"
        wait = svc.rate.take(owner)
        if wait is not None:
            raise ApiError(429, "rate_limited", "too many requests; retry later",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return owner

    def owned_job(job_id: str, owner: str) -> dict:
        job = svc.store.get(job_id, owner) if len(job_id) <= 64 else None
        if job is None:    # another caller's job is "not found" too: its existence is not revealed
            raise ApiError(404, "job_not_found", f"no job {job_id[:64]}", "id")
        return job

    def accepting() -> None:
        if svc.stopping.is_set():
            raise ApiError(503, "shutting_down", "the server is stopping; submit again later",
                           headers={"Retry-After": "5"})
        if not svc.ready and start_workers:
            raise ApiError(503, "not_ready", "the server is starting", headers={"Retry-After": "2"})

    # -- jobs ------------------------------------------------------------------------------------
    def submit(owner: str, content: UploadFile, style: List[UploadFile], style_id: List[str],
               options: Optional[str], idempotency_key: Optional[str]) -> Tuple[dict, bool]:
        accepting()
        if idempotency_key is not None and not (1 <= len(idempotency_key) <= 200):
            raise ApiError(422, "invalid", "Idempotency-Key: 1 to 200 characters", "Idempotency-Key")
        style = [s for s in style if s is not None]
        n_styles = len(style) + len(style_id)
        if n_styles == 0:
            raise ApiError(422, "no_style", "give a style image (style) or a registered style (style_id)", "style")
        if n_styles > svc.limits.max_styles:
            raise ApiError(422, "over_limit", f"{n_styles} styles: this server takes at most {svc.limits.max_styles}",
                           "style")
        config, changes = _parse_options(svc, options)
        if config.style_blend_weights is not None and len(config.style_blend_weights) != n_styles:
            raise ApiError(422, "invalid_option", f"options.style_blend_weights: {len(config.style_blend_weights)} "
                           f"weight(s) for {n_styles} style(s)", "options.style_blend_weights")
        registered = []
        for sid in style_id:
            row = svc.store.get_style(sid, owner) if len(sid) <= 64 else None
            if row is None:
                raise ApiError(422, "unknown_style", f"no registered style {sid[:64]}", "style_id")
            registered.append(row)
        if idempotency_key is not None:
            existing = svc.store.find_idempotent(owner, idempotency_key)
            if existing is not None:
                shas = [_upload_sha256(up) for up in style] + [row["sha256"] for row in registered]
                asked = hashlib.sha256(dumps([changes, _upload_sha256(content), shas]).encode()).hexdigest()
                if asked != existing["request_hash"]:
                    raise ApiError(409, "idempotency_conflict", f"Idempotency-Key {idempotency_key[:200]!r} was used "
                                   f"for another request (job {existing['id']})", "Idempotency-Key")
                return existing, False
        if svc.store.count_owner(owner) >= svc.limits.max_active_jobs:
            raise ApiError(429, "too_many_jobs", f"{svc.limits.max_active_jobs} jobs queued or running for this token; "
                           "wait for some to finish", headers={"Retry-After": "5"})
        jid = new_id()
        made: List[Path] = []
        try:
            cname = f"{jid}-content"
            made.append(svc.input_path(cname))
            cw, ch, csha = _store_upload(svc, content, svc.input_path(cname), "content")
            names, shas = [], []
            for k, up in enumerate(style):
                sname = f"{jid}-style{k}"
                made.append(svc.input_path(sname))
                _, _, ssha = _store_upload(svc, up, svc.input_path(sname), "style")
                names.append(sname)
                shas.append(ssha)
            for row in registered:
                names.append("styles/" + row["file"])
                shas.append(row["sha256"])
            h, w = imgs.scaled_size(ch, cw, config.size, config.resize_filter)
            style_key = hashlib.sha256(dumps(shas).encode()).hexdigest()
            batch_key = hashlib.sha256(dumps([changes, [h, w], style_key]).encode()).hexdigest()
            request_hash = hashlib.sha256(dumps([changes, csha, shas]).encode()).hexdigest()
            job, created = svc.store.add_job({
                "id": jid, "owner": owner, "status": "queued", "created": time.time(), "config": dumps(changes),
                "batch_key": batch_key, "content": cname, "styles": dumps(names), "style_key": style_key,
                "idem_key": idempotency_key, "request_hash": request_hash})
        except BaseException:
            for p in made:
                p.unlink(missing_ok=True)
            raise
        if not created:
            for p in made:
                p.unlink(missing_ok=True)
        svc.wake.set()
        return job, created

    job_responses = _responses(401, 409, 413, 422, 429, 503)

    @app.post("/v1/jobs", status_code=202, tags=["jobs"], response_model=JobView,
              responses={200: {"model": JobView, "description": "the job of an Idempotency-Key used before"},
                         **job_responses},
              summary="Submit a job (multipart: content, style images and/or style ids, options JSON)")
    def post_job(content: UploadFile = File(..., description="the photo"),
                 style: List[UploadFile] = File(default=[], description="style images (paintings)"),
                 style_id: List[str] = Form(default=[], description="ids of registered styles"),
                 options: Optional[str] = Form(default=None, description="JSON object of StyleConfig fields "
                                               "(schema: JobOptions)"),
                 idempotency_key: Optional[str] = Header(default=None, alias="Idempotency-Key"),
                 owner: str = Depends(caller)):
        job, created = submit(owner, content, style, style_id, options, idempotency_key)
        return JSONResponse(_job_view(svc, job), 202 if created else 200,
                            headers={"Location": f"/v1/jobs/{job['id']}"})

    @app.get("/v1/jobs", tags=["jobs"], response_model=JobList, responses=_responses(401, 422, 429))
    def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9),
                  owner: str = Depends(caller)):
        jobs = svc.store.list(owner, limit, offset)
        return {"jobs": [_job_view(svc, j) for j in jobs], "limit": limit, "offset": offset}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobView, responses=_responses(401, 404, 429))
    def get_job(job_id: str, owner: str = Depends(caller)):
        return _job_view(svc, owned_job(job_id, owner))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobView, responses=_responses(401, 404, 429))
    def cancel_job(job_id: str, owner: str = Depends(caller)):
        owned_job(job_id, owner)
        status = svc.store.cancel(job_id)
        if status == "running":
            svc.cancelled.add(job_id)
        elif status == "cancelled":
            svc.drop_inputs(owned_job(job_id, owner))
        return _job_view(svc, owned_job(job_id, owner))

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the image"}, **_responses(401, 404, 409, 429)})
    def get_result(job_id: str, owner: str = Depends(caller)):
        job = owned_job(job_id, owner)
        if job["status"] != "done":
            raise ApiError(409, "not_done", f"job {job_id} is {job['status']}; the result exists once it is done",
                           "status")
        data = svc.result_path(job["result"]).read_bytes()
        return Response(data, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="stylegrad-{job_id}.png"'})

    @app.get("/v1/jobs/{job_id}/snapshot", tags=["jobs"], response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the latest snapshot"},
                        **_responses(401, 404, 409, 429)})
    def get_snapshot(job_id: str, owner: str = Depends(caller)):
        owned_job(job_id, owner)
        data = svc.snapshots.get(job_id)
        if data is None:
            raise ApiError(409, "no_snapshot", "no snapshot yet", None)
        return Response(data, media_type="image/png")

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
                        **_responses(401, 404, 429)})
    async def job_events(job_id: str, owner: str = Depends(caller)):
        owned_job(job_id, owner)

        async def stream():
            last = None
            while True:
                job = svc.store.get(job_id)
                if job is None:
                    return
                view = _job_view(svc, job)
                live = svc.live.get(job_id)
                view["snapshots"] = live["snapshot"] if live else 0
                key = (view["status"], view["iteration"], view["snapshots"])
                if job["status"] in FINAL:
                    yield f"event: state\ndata: {json.dumps(view)}\n\n"
                    return
                if key != last:
                    last = key
                    yield f"event: progress\ndata: {json.dumps(view)}\n\n"
                if svc.stopping.is_set():
                    yield f"event: state\ndata: {json.dumps(view)}\n\n"
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/stylize", tags=["jobs"], response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the image"},
                         **_responses(401, 413, 422, 429, 503, 504)},
              summary="Submit and wait: returns the image (504 past the server's time limit)")
    async def stylize_now(content: UploadFile = File(...), style: List[UploadFile] = File(default=[]),
                          style_id: List[str] = Form(default=[]), options: Optional[str] = Form(default=None),
                          owner: str = Depends(caller)):
        loop = asyncio.get_running_loop()
        job, _ = await loop.run_in_executor(None, submit, owner, content, style, style_id, options, None)
        deadline = time.monotonic() + svc.limits.sync_seconds
        while True:
            job = svc.store.get(job["id"])
            if job["status"] in FINAL:
                break
            if time.monotonic() > deadline:
                if svc.store.cancel(job["id"]) == "running":
                    svc.cancelled.add(job["id"])
                raise ApiError(504, "timeout", f"not done within {svc.limits.sync_seconds:g} s; use POST /v1/jobs "
                               "for longer work")
            await asyncio.sleep(0.1)
        if job["status"] != "done":
            raise ApiError(422, f"job_{job['status']}", job["error"] or job["status"])
        return Response(svc.result_path(job["result"]).read_bytes(), media_type="image/png",
                        headers={"X-Job-Id": job["id"]})

    # -- styles ----------------------------------------------------------------------------------
    @app.post("/v1/styles", status_code=201, tags=["styles"], response_model=StyleView,
              responses=_responses(401, 413, 422, 429, 503))
    def post_style(image: UploadFile = File(...), name: str = Form(default="", max_length=200),
                   owner: str = Depends(caller)):
        accepting()
        sid = new_id()
        fname = f"{sid}.img"
        w, h, sha = _store_upload(svc, image, svc.style_path(fname), "image")
        row = svc.store.add_style({"id": sid, "owner": owner, "name": name or f"style {sid[:8]}", "file": fname,
                                   "width": w, "height": h, "sha256": sha, "created": time.time()})
        return {"id": row["id"], "name": row["name"], "width": w, "height": h}

    @app.get("/v1/styles", tags=["styles"], response_model=StyleList, responses=_responses(401, 429))
    def list_styles(owner: str = Depends(caller)):
        return {"styles": [{"id": r["id"], "name": r["name"], "width": r["width"], "height": r["height"]}
                           for r in svc.store.list_styles(owner)]}

    # -- health, metrics, page -------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Ready, responses=_responses(503))
    def readyz():
        alive = [w.is_alive() for w in svc.workers]
        if not svc.ready or not alive or not all(alive) or svc.stopping.is_set():
            raise ApiError(503, "not_ready", "weights not loaded or a worker is not running")
        devices = [w.device for w in svc.workers]
        return {"status": "ready", "devices": devices, "model": settings.config.model,
                "weights": settings.config.weights}

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def metrics():
        data, ctype = svc.metrics.render()
        return Response(data, media_type=ctype)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(resources.files("stylegrad.service").joinpath("static/index.html").read_text())

    return app
