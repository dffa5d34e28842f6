"""A Python client of ``stylegrad serve`` (needs the ``serve`` extra: httpx).

>>> from stylegrad.service.client import Client
>>> c = Client("http://127.0.0.1:8000", token=None)                  # doctest: +SKIP
>>> image = c.stylize("photo.jpg", "painting.jpg", size=256, iters=100)   # PIL image  # doctest: +SKIP
>>> job = c.submit("photo.jpg", ["a.jpg", "b.jpg"], iters=300)          # doctest: +SKIP
>>> for ev in c.events(job.id): print(ev["iteration"], ev["loss"])     # doctest: +SKIP
>>> c.wait(job.id, timeout=600); c.result(job.id).save("out.png")      # doctest: +SKIP

Images are given as the engine's API takes them: paths, PIL images, numpy arrays or tensors.
Options are :class:`~stylegrad.StyleConfig` fields a job may set (the server owns the model,
weights and device). Errors raise :class:`ServiceError` subclasses (``StyleGradError``s) that
carry the service's ``code``, the HTTP ``status`` and the ``field`` at fault.
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from PIL import Image

from stylegrad.errors import StyleGradError

FINAL_STATES = ("done", "failed", "cancelled")


class ServiceError(StyleGradError):
    """An error answered by the service (or no answer): ``code``, ``status``, ``field``."""

    def __init__(self, message: str, code: str = "error", status: Optional[int] = None,
                 field: Optional[str] = None, retry_after: Optional[float] = None):
        super().__init__(message)
        self.code, self.status, self.field, self.retry_after = code, status, field, retry_after


class AuthError(ServiceError):
    """401: missing or wrong token."""


class NotFoundError(ServiceError):
    """404: no such job (or another token's)."""


class InvalidRequestError(ServiceError):
    """422 (an option, image or limit at fault; ``field`` says which) or 409 (not done yet)."""


class LimitError(ServiceError):
    """413 (request too large) or 429 (too many requests or jobs; ``retry_after`` seconds)."""


class UnavailableError(ServiceError):
    """503/504, or the server cannot be reached."""


class JobFailedError(ServiceError):
    """A job that ended ``failed`` or ``cancelled`` where a result was expected; ``job``: its state."""

    def __init__(self, message: str, job: dict):
        super().__init__(message, code=f"job_{job.get('status')}")
        self.job = job


def _error_class(status: int):
    if status == 401:
        return AuthError
    if status == 404:
        return NotFoundError
    if status in (409, 422, 400, 405):
        return InvalidRequestError
    if status in (413, 429):
        return LimitError
    if status in (503, 504):
        return UnavailableError
    return ServiceError


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    info: dict


ImageInput = Union[str, os.PathLike, Image.Image, Any]


def _encode(image: ImageInput, what: str):
    """(filename, bytes) of an image to upload: a file as is, anything else as PNG."""
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        try:
            return p.name, p.read_bytes()
        except OSError as e:
            raise StyleGradError(f"cannot read {what} {p}: {e.strerror or e}") from None
    if not isinstance(image, Image.Image):
        from stylegrad.io import images as imgs

        image = imgs.tensor_to_pil(imgs.to_tensor(image))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return f"{what}.png", buf.getvalue()


def _options_json(options: Dict[str, Any]) -> str:
    out = {}
    for k, v in options.items():
        if v is None:
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return json.dumps(out)


class Client:
    """A connection to ``stylegrad serve`` at ``url`` with a bearer ``token`` (None for a
    loopback server without tokens). 429/503 answers are retried ``retries`` times after
    their Retry-After."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 60.0, retries: int = 3):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw):
        import httpx

        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(method, path, **kw)
            except httpx.HTTPError as e:
                raise UnavailableError(f"cannot reach {self.url}: {e}", code="unreachable") from None
            if resp.status_code in (429, 503) and attempt < self.retries and "retry-after" in resp.headers:
                time.sleep(min(30.0, float(resp.headers.get("retry-after", "1"))))
                continue
            break
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            retry = resp.headers.get("retry-after")
            raise _error_class(resp.status_code)(
                f"{resp.status_code} {body.get('code', 'error')}: {body.get('message', resp.text[:200])}",
                code=body.get("code", "error"), status=resp.status_code, field=body.get("field"),
                retry_after=float(retry) if retry else None)
        return resp

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, content: ImageInput, style: Union[ImageInput, Sequence[ImageInput], None] = None, *,
               style_ids: Sequence[str] = (), idempotency_key: Optional[str] = None, **options) -> Job:
        """Submit a job; ``style``: one image or a list (may be empty with ``style_ids``)."""
        styles = [] if style is None else list(style) if isinstance(style, (list, tuple)) else [style]
        files = [("content", _encode(content, "content"))]
        files += [("style", _encode(s, "style")) for s in styles]
        data = {"options": _options_json(options)}
        if style_ids:
            data["style_id"] = list(style_ids)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        info = self._request("POST", "/v1/jobs", files=files, data=data, headers=headers).json()
        return Job(info["id"], info["status"], info)

    def get(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self, limit: int = 50, offset: int = 0) -> List[dict]:
        return self._request("GET", "/v1/jobs", params={"limit": limit, "offset": offset}).json()["jobs"]

    def wait(self, job_id: str, timeout: Optional[float] = None, poll: float = 0.25) -> dict:
        """The job's final state (done, failed or cancelled); UnavailableError after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.get(job_id)
            if info["status"] in FINAL_STATES:
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise UnavailableError(f"job {job_id} not finished after {timeout:g} s (it is {info['status']})",
                                       code="timeout")
            time.sleep(poll)

    def result_bytes(self, job_id: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/result").content

    def result(self, job_id: str) -> Image.Image:
        img = Image.open(io.BytesIO(self.result_bytes(job_id)))
        img.load()
        return img

    def cancel(self, job_id: str) -> dict:
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()

    def events(self, job_id: str) -> Iterator[dict]:
        """The job's server-sent events: progress states, then the final one (the iterator ends)."""
        import httpx

        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for(resp)
                data = []
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        yield json.loads("".join(data))
                        data = []
        except httpx.HTTPError as e:
            raise UnavailableError(f"events of {job_id}: {e}", code="unreachable") from None

    def _raise_for(self, resp) -> None:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        raise _error_class(resp.status_code)(f"{resp.status_code} {body.get('code', 'error')}: "
                                             f"{body.get('message', '')}", code=body.get("code", "error"),
                                             status=resp.status_code, field=body.get("field"))

    def stylize(self, content: ImageInput, style: Union[ImageInput, Sequence[ImageInput], None] = None, *,
                style_ids: Sequence[str] = (), timeout: Optional[float] = None, **options) -> Image.Image:
        """Submit, wait, return the result as a PIL image; JobFailedError if it failed."""
        job = self.submit(content, style, style_ids=style_ids, **options)
        info = self.wait(job.id, timeout)
        if info["status"] != "done":
            raise JobFailedError(f"job {job.id} {info['status']}: {info.get('error') or ''}".strip(), info)
        return self.result(job.id)

    # -- styles --------------------------------------------------------------------------------
    def add_style(self, image: ImageInput, name: str = "") -> str:
        """Register a painting once; returns its id (jobs name it with ``style_ids``)."""
        info = self._request("POST", "/v1/styles", files=[("image", _encode(image, "style"))],
                             data={"name": name}).json()
        return info["id"]

    def styles(self) -> List[dict]:
        return self._request("GET", "/v1/styles").json()["styles"]
