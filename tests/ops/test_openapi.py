"""GET /openapi.json describes the API (public, OpenAPI 3), and a short schemathesis run against a real
server, with valid and invalid inputs, never gets a 5xx or a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from app.api.openapi import load_spec
from tests.fakes.openai import FakeOpenAI
from tests.harness import GunicornServer
from tests.ops.conftest import CLIENT_KEY, FAST_ENV, config, get, model

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory) -> Iterator[GunicornServer]:
    with FakeOpenAI() as fake:
        cfg = config(
            model(fake.chat_url, "fake/chat"),
            server={"heartbeat_seconds": 0.5, "max_body_bytes": 65536},
        )
        with GunicornServer(cfg, env=FAST_ENV, threads=8, workdir=tmp_path_factory.mktemp("fuzz")) as server:
            yield server
        server.log_text()


# (schemathesis' own pytest plugin does not run under pytest 9: the strategies are driven directly.)
SPEC_PATHS = load_spec()["paths"]
# Valid inputs for every operation; invalid ones (negative mode) where there is an input to break.
CASES = [
    pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in SPEC_PATHS.items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "requestBody" in operation or "parameters" in operation
]


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    schema.config.update(base_url=fuzz_server.url)
    return schema


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_input_gives_a_server_error(api_schema, fuzz_server, label, mode):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def check(case):
        response = case.call(headers=AUTH, timeout=15)
        seen.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        assert "Traceback" not in response.text
        assert response.headers.get("x-request-id")  # schemathesis: lower-case names, lists

    check()
    assert seen  # it really sent requests


def test_openapi_json_is_public_and_covers_the_routes(fuzz_server):
    status, headers, body = get(fuzz_server.port, "/openapi.json", key=None)
    assert status == 200 and headers["Content-Type"] == "application/json"
    import json

    spec = json.loads(body)
    assert spec["openapi"].startswith("3.") and spec == load_spec()
    documented = {path for path in spec["paths"]}
    assert documented == {
        "/v1/chat/completions",
        "/v1/images/generations",
        "/image",
        "/v1/embeddings",
        "/v1/audio/transcriptions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/",
        "/v1/quota",
        "/v1/usage",
        "/health",
        "/ping",
        "/metrics",
        "/status",
        "/openapi.json",
    }
    # What the spec says is public is public, and the rest wants the key.
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "get":
                continue
            code = get(fuzz_server.port, path, key=None)[0]
            assert (code == 200) == (operation.get("security") == []), (path, code)


def test_the_log_has_no_traceback_after_fuzzing(fuzz_server, request):
    log = fuzz_server.log_text()
    assert "Traceback" not in log, log[-3000:]
