"""The service through HTTP (a live uvicorn server in this process, loopback only) and the client."""
from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from stylegrad import StyleConfig  # noqa: E402
from stylegrad.service import Limits, ServiceSettings, check_bind, is_loopback, read_tokens  # noqa: E402
from stylegrad.service.client import AuthError, Client, InvalidRequestError, LimitError, NotFoundError  # noqa: E402
from stylegrad.service.options import CLIENT_FIELDS, JobOptions  # noqa: E402

from .helpers import ENGINE, LiveServer, png_bytes, write_png  # noqa: E402
from tests.helpers import bit_exact_needs_fixed_reductions

TOKEN_A = "alice-token-0123456789abcdef"
TOKEN_B = "bob-token-0123456789abcdef00"
SMALL = {"size": 32, "iters": 8}


def settings(tmp_path, **kw):
    limits = kw.pop("limits", Limits(max_size=64, max_iters=2000, max_pixels=1_000_000, max_upload_bytes=200_000,
                                      max_active_jobs=8, rate_per_second=200, rate_burst=400, sync_seconds=60))
    return ServiceSettings(data=tmp_path / "data", config=StyleConfig(**ENGINE), limits=limits, **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc")
    tokens = {TOKEN_A: "alice", TOKEN_B: "bob"}
    with LiveServer(settings(tmp, tokens=tokens, max_batch=3)) as s:
        yield s


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    return {"content": write_png(d / "c.png", 1), "content2": write_png(d / "c2.png", 3),
            "content3": write_png(d / "c3.png", 4), "style": write_png(d / "s.png", 2, 40, 40)}


def _files(content=None, style=None):
    return [("content", ("c.png", content or png_bytes(1))), ("style", ("s.png", style or png_bytes(2, 40, 40)))]


def assert_json_error(resp, status, code=None, field=None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"code", "message", "field"} and body["code"] and body["message"]
    if code is not None:
        assert body["code"] == code
    if field is not None:
        assert body["field"] == field
    return body


def test_options_schema_is_derived_from_styleconfig():
    names = {f.name for f in dataclasses.fields(StyleConfig)}
    assert set(JobOptions.model_fields) == set(CLIENT_FIELDS) <= names
    from stylegrad.cli.serve import CLIENT_FIELDS as CLI_FIELDS
    assert tuple(CLI_FIELDS) == tuple(CLIENT_FIELDS)
    # the server owns these: a request naming them is refused
    for owned in ("weights", "device", "model", "save_every", "max_memory"):
        assert owned not in JobOptions.model_fields
    # choices come from StyleConfig
    schema = JobOptions.model_json_schema()["properties"]
    assert {"lbfgs", "adam"} <= set(json.dumps(schema["optimizer"]).replace('"', " ").split())
    # init never takes a path
    assert "PATH" not in json.dumps(schema["init"])
    assert schema["init"]["anyOf"][0]["enum"] == ["content", "noise"]


def test_round_trip_through_client(server, images):
    with Client(server.url, TOKEN_A) as c:
        img = c.stylize(images["content"], images["style"], **SMALL)
        assert isinstance(img, Image.Image) and img.size == (32, 24)
        job = c.submit(Image.open(images["content"]), [images["style"]], **SMALL)
        events = list(c.events(job.id))
        assert events[-1]["status"] == "done"
        assert all(e["status"] in ("queued", "running", "done") for e in events)
        assert c.wait(job.id, 60)["status"] == "done"
        assert c.result(job.id).size == (32, 24)
        assert job.id in [j["id"] for j in c.jobs()]
        # a finished job's uploads are removed; its result stays
        assert not list((server.service.data / "inputs").glob(job.id + "*"))
        assert (server.service.data / "results" / f"{job.id}.png").is_file()


def test_tokens_enforced_and_other_tokens_job_is_404(server):
    r = httpx.get(server.url + "/v1/jobs")
    body = assert_json_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_json_error(httpx.get(server.url + "/v1/jobs", headers={"Authorization": "Bearer " + TOKEN_A[:-1] + "x"}),
                      401, "unauthorized")
    with Client(server.url, "wrong-token-wrong-token") as c, pytest.raises(AuthError) as e:
        c.jobs()
    assert e.value.code == "unauthorized" and e.value.status == 401
    with Client(server.url, TOKEN_A) as a, Client(server.url, TOKEN_B) as b:
        job = a.submit(png_bytes_image(), png_bytes_image(2), **SMALL)
        for call in (lambda: b.get(job.id), lambda: b.cancel(job.id), lambda: b.result(job.id)):
            with pytest.raises(NotFoundError) as e:
                call()
            assert e.value.code == "job_not_found"
        assert job.id not in [j["id"] for j in b.jobs()]
        a.wait(job.id, 60)
    assert body["message"]


def png_bytes_image(seed=1):
    return Image.open(io.BytesIO(png_bytes(seed)))


def test_every_error_is_json_with_a_code(server):
    h = {"Authorization": "Bearer " + TOKEN_A}
    assert_json_error(httpx.get(server.url + "/no/such/path", headers=h), 404, "not_found")
    assert_json_error(httpx.put(server.url + "/v1/jobs", headers=h), 405, "method_not_allowed")
    assert_json_error(httpx.get(server.url + "/v1/jobs/" + "0" * 32, headers=h), 404, "job_not_found")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h), 422, "invalid")
    assert_json_error(httpx.get(server.url + "/v1/jobs?limit=0", headers=h), 422, "invalid", "limit")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": "{not json"}), 422, "invalid_options", "options")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"weights": "/etc/passwd"})}),
                      422, "invalid_option", "options.weights")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"optimizer": "sgd"})}),
                      422, "invalid_option", "options.optimizer")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"init": "/etc/passwd"})}),
                      422, "invalid_option", "options.init")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"style_layers": "relu9_9"})}),
                      422, "invalid_option", "options.style_layers")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=[("content", ("c.png", png_bytes(1)))]),
                      422, "no_style", "style")
    # not done yet: 409 with a JSON body
    r = httpx.post(server.url + "/v1/jobs", headers=h, files=_files(), data={"options": json.dumps(
        {"size": 32, "iters": 1500})})
    jid = r.json()["id"]
    assert_json_error(httpx.get(server.url + f"/v1/jobs/{jid}/result", headers=h), 409, "not_done", "status")
    httpx.delete(server.url + f"/v1/jobs/{jid}", headers=h)


def test_limits(server, tmp_path):
    h = {"Authorization": "Bearer " + TOKEN_B}
    big = b"x" * 300_000
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(content=big)), 413, "too_large")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"size": 65})}), 422, "over_limit", "options.size")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(),
                                 data={"options": json.dumps({"iters": 2001})}), 422, "over_limit", "options.iters")
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(content=b"GIF89a not really")),
                      422, "not_an_image", "content")
    # a decompression bomb: a tiny file (all zeros compress well) with more pixels than allowed
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 200_000
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=_files(style=buf.getvalue())),
                      422, "too_many_pixels", "style")
    too_many = [("content", ("c.png", png_bytes(1)))] + [("style", ("s.png", png_bytes(k))) for k in range(5)]
    assert_json_error(httpx.post(server.url + "/v1/jobs", headers=h, files=too_many), 422, "over_limit", "style")
    # nothing of the refused requests was kept
    assert not list((server.service.data / "inputs").glob("*")) or all(
        server.service.store.get(p.name.split("-")[0]) is not None for p in (server.service.data / "inputs").iterdir())


def test_rate_and_job_limits_429_with_retry_after(tmp_path):
    lim = Limits(max_active_jobs=2, rate_per_second=2, rate_burst=6, max_size=64)
    with LiveServer(settings(tmp_path, limits=lim)) as s:
        with Client(s.url, retries=0) as c:
            jobs = [c.submit(png_bytes_image(), png_bytes_image(2), size=32, iters=1000) for _ in range(2)]
            with pytest.raises(LimitError) as e:
                c.submit(png_bytes_image(), png_bytes_image(2), **SMALL)
            assert e.value.status == 429 and e.value.code == "too_many_jobs" and e.value.retry_after >= 1
            for j in jobs:
                c.cancel(j.id)
            codes = [httpx.get(s.url + "/v1/jobs").status_code for _ in range(10)]
            assert 429 in codes
            r = next(r for r in (httpx.get(s.url + "/v1/jobs") for _ in range(10)) if r.status_code == 429)
            assert_json_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1


def test_idempotent_resubmission_returns_same_job(server, images):
    h = {"Authorization": "Bearer " + TOKEN_A, "Idempotency-Key": "order-42"}
    r1 = httpx.post(server.url + "/v1/jobs", headers=h, files=_files(), data={"options": json.dumps(SMALL)})
    r2 = httpx.post(server.url + "/v1/jobs", headers=h, files=_files(), data={"options": json.dumps(SMALL)})
    assert r1.status_code == 202 and r2.status_code == 200
    assert r1.json()["id"] == r2.json()["id"]
    # the same key for another request: 409, naming the header
    r4 = httpx.post(server.url + "/v1/jobs", headers=h, files=_files(), data={"options": json.dumps({**SMALL, "seed": 9})})
    assert_json_error(r4, 409, "idempotency_conflict", "Idempotency-Key")
    # the key is per token: another token's same key is another job
    h2 = {"Authorization": "Bearer " + TOKEN_B, "Idempotency-Key": "order-42"}
    r3 = httpx.post(server.url + "/v1/jobs", headers=h2, files=_files(), data={"options": json.dumps(SMALL)})
    assert r3.status_code == 202 and r3.json()["id"] != r1.json()["id"]
    with Client(server.url, TOKEN_A) as c:
        assert c.wait(r1.json()["id"], 60)["status"] == "done"
        same = c.submit(images["content"], images["style"], idempotency_key="order-42", **SMALL)
        assert same.id == r1.json()["id"]
    with Client(server.url, TOKEN_B) as c:
        c.wait(r3.json()["id"], 60)


def test_cancel_stops_a_running_job(server):
    with Client(server.url, TOKEN_A) as c:
        job = c.submit(png_bytes_image(), png_bytes_image(2), size=32, iters=1500)
        deadline = time.monotonic() + 60
        while c.get(job.id)["status"] != "running" or c.get(job.id)["iteration"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.cancel(job.id)
        final = c.wait(job.id, 30)
        assert final["status"] == "cancelled" and final["iteration"] < 1500
        assert "cancelled at iteration" in final["error"]
        with pytest.raises(InvalidRequestError) as e:
            c.result(job.id)
        assert e.value.status == 409


@bit_exact_needs_fixed_reductions
def test_batch_through_service_equals_singles_byte_for_byte(server):
    opts = dict(size=32, iters=6, seed=3)
    with Client(server.url, TOKEN_B) as c:
        # a job of other settings keeps the worker busy while three compatible ones queue up
        blocker = c.submit(png_bytes_image(7), png_bytes_image(2), size=32, iters=300)
        while c.get(blocker.id)["status"] == "queued":
            time.sleep(0.05)
        contents = [png_bytes_image(s) for s in (11, 12, 13)]
        style = png_bytes_image(2)
        batched = [c.submit(x, style, **opts) for x in contents]
        c.cancel(blocker.id)
        infos = [c.wait(j.id, 120) for j in batched]
        assert [i["status"] for i in infos] == ["done"] * 3
        assert [i["batch"] for i in infos] == [3, 3, 3]
        together = [c.result_bytes(j.id) for j in batched]
        singles = []
        for x in contents:
            j = c.submit(x, style, **opts)
            info = c.wait(j.id, 60)
            assert info["batch"] == 1
            singles.append(c.result_bytes(j.id))
        assert together == singles
        assert len(set(together)) == 3


def test_sync_stylize_and_timeout(tmp_path):
    lim = Limits(sync_seconds=1.0, max_size=64, max_iters=5000)
    with LiveServer(settings(tmp_path, limits=lim)) as s:
        r = httpx.post(s.url + "/v1/stylize", files=_files(), data={"options": json.dumps({"size": 24, "iters": 3})},
                       timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (24, 18)
        r = httpx.post(s.url + "/v1/stylize", files=_files(), data={"options": json.dumps({"size": 32, "iters": 5000})},
                       timeout=60)
        assert_json_error(r, 504, "timeout")
        jid = None
        with Client(s.url) as c:   # the timed-out job was cancelled, not left running
            jid = c.jobs()[0]["id"]
            assert c.wait(jid, 30)["status"] == "cancelled"


def test_styles_registry(server, images):
    with Client(server.url, TOKEN_A) as a, Client(server.url, TOKEN_B) as b:
        sid = a.add_style(images["style"], "my painting")
        assert {"id": sid, "name": "my painting", "width": 40, "height": 40} in a.styles()
        assert sid not in [s["id"] for s in b.styles()]
        img1 = a.stylize(images["content"], style_ids=[sid], **SMALL)
        img2 = a.stylize(images["content"], images["style"], **SMALL)
        assert img1.tobytes() == img2.tobytes()   # the registered painting is the same painting
        with pytest.raises(InvalidRequestError) as e:
            b.submit(images["content"], style_ids=[sid], **SMALL)
        assert e.value.code == "unknown_style" and e.value.field == "style_id"


def test_health_ready_metrics_and_events(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["devices"] == ["cpu"]
    text = httpx.get(server.url + "/metrics").text
    for name in ("stylegrad_queue_depth", "stylegrad_jobs_running", 'stylegrad_jobs{status="done"}',
                 "stylegrad_iterations_total", "stylegrad_images_per_hour", 'stylegrad_device_busy_fraction{device="cpu"}',
                 'stylegrad_device_memory_bytes{device="cpu"}'):
        assert name in text
    done = [line for line in text.splitlines() if line.startswith('stylegrad_jobs{status="done"}')]
    assert float(done[0].split()[-1]) >= 1
    with Client(server.url, TOKEN_A) as c:
        job = c.submit(png_bytes_image(), png_bytes_image(2), size=32, iters=20)
        with httpx.stream("GET", server.url + f"/v1/jobs/{job.id}/events",
                          headers={"Authorization": "Bearer " + TOKEN_A}, timeout=60) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = list(r.iter_lines())
        kinds = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
        assert kinds[-1] == "state" and "progress" in kinds
        states = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert states[-1]["status"] == "done"
        its = [s["iteration"] for s in states if s["status"] == "running"]
        assert its == sorted(its)


def test_page_is_served(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<form" in r.text and "/v1/jobs" in r.text
    assert httpx.get(server.url + "/docs").status_code == 200
    assert "/v1/jobs" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_tokens_file_and_bind_rules(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# ops\nalice:" + TOKEN_A + "\n\n" + TOKEN_B + "\n")
    assert read_tokens(f) == {TOKEN_A: "alice", TOKEN_B: "token4"}
    f.write_text("alice:short\n")
    with pytest.raises(Exception, match="at least 16"):
        read_tokens(f)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    with pytest.raises(Exception, match="without --tokens"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", {TOKEN_A: "alice"})
    check_bind("127.0.0.1", None)
