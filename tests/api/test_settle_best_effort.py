"""Issue 10: an answer already served is never thrown away because the quota storage failed while
recording it; the miss is logged once and counted in /metrics (ai_proxy_settle_failures_total)."""

from __future__ import annotations

import re

from app.errors import ServiceUnavailable
from tests.api.conftest import LogCapture
from tests.builders import config, model
from tests.fakes.openai import FakeOpenAI

HI = [{"role": "user", "content": "hi"}]


def settle_failures(proxy) -> float:
    text = proxy.get("/metrics").get_data(as_text=True)
    found = re.search(r"^ai_proxy_settle_failures_total (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


def test_a_storage_failure_while_settling_keeps_the_answer_and_is_counted(proxy) -> None:
    with FakeOpenAI() as fake:
        app = proxy(config(model(fake.chat_url, "fake/a", tokens_per_minute=100_000)))
        logs = LogCapture()
        storage = app.services.storage
        assert settle_failures(app) == 0

        def broken(*args: object) -> None:
            raise ServiceUnavailable("quota storage unavailable")

        storage.settle = broken  # the storage goes away between the reservation and the settle
        for stream in (False, True):
            answer = app.post("/v1/chat/completions", {"model": "fake/a", "messages": HI, "stream": stream})
            assert answer.status_code == 200
            assert b"Hello" in answer.data
            assert b"error" not in answer.data
            answer.close()  # the request is counted when its response is closed
        assert settle_failures(app) == 2
        lines = [line for line in logs.text().splitlines() if "could not record" in line]
        assert len(lines) == 2 and all("fake/a" in line for line in lines)
