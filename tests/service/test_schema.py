"""schemathesis against the service's own OpenAPI spec: generated requests to every operation
never get a 5xx, and every response matches the spec (status code, content type, body schema).
A live server on loopback, cheap limits (tiny sizes, few iterations) so generated jobs run fast."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (test extra)")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

from stylegrad import StyleConfig  # noqa: E402
from stylegrad.service import Limits, ServiceSettings, create_app  # noqa: E402

from .helpers import ENGINE, LiveServer  # noqa: E402

LIMITS = Limits(max_size=16, max_iters=3, max_active_jobs=10_000, rate_per_second=10_000, rate_burst=10_000,
                sync_seconds=20, max_upload_bytes=200_000)


def _settings(data, tokens=None) -> ServiceSettings:
    return ServiceSettings(data=Path(data), config=StyleConfig(**ENGINE, size=16, iters=3), limits=LIMITS,
                           tokens=tokens)


# the spec as the app itself publishes it (no server needed to collect the tests)
_SPEC_DIR = tempfile.mkdtemp(prefix="stylegrad-spec-")
schema = schemathesis.openapi.from_dict(create_app(_settings(_SPEC_DIR), start_workers=False).openapi())
# valid requests (they must succeed or be refused as declared) and invalid ones (refused, never a 5xx)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@pytest.fixture(scope="module", params=["no-tokens", "tokens"])
def live(request, tmp_path_factory):
    # with tokens, generated Authorization headers are wrong: every /v1 answer is a declared 401
    tokens = {"schema-token-0123456789abcdef": "t"} if request.param == "tokens" else None
    with LiveServer(_settings(tmp_path_factory.mktemp("schema") / "data", tokens)) as s:
        yield s


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_no_5xx_and_responses_match_schema(case, live):
    case.call_and_validate(base_url=live.url, timeout=30,
                           checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
