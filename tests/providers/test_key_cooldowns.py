"""Each adapter's cooldown class (what the router rests, and for how long) from the real providers'
error answers, as the fakes send them (bodies from shared/provider-formats)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from app.config import HttpConfig
from app.errors import RateLimited, UpstreamAuthError, UpstreamBadRequest, UpstreamError
from app.http import SessionPool
from app.providers import build_provider, cloudflare, cohere, gemini
from app.providers.openai import compatible_error, stream_error
from tests.fakes import cloudflare as fake_cloudflare
from tests.fakes import cohere as fake_cohere
from tests.fakes import gemini as fake_gemini
from tests.fakes import openai as fake_openai
from tests.fakes.gigachat import FakeGigaChat

NOW = datetime(2026, 3, 10, 18, 0, tzinfo=UTC).timestamp()  # 18:00 UTC = 11:00 in Los Angeles (PDT)
MODEL = "m"


def compatible(kind: str, flavor: str = "openai", **kwargs: Any) -> Any:
    answer = fake_openai.error_response(kind, flavor=flavor, **kwargs)
    headers = CaseInsensitiveDict(answer.headers)
    return compatible_error(answer.status, json.dumps(answer.json).encode(), headers, MODEL, NOW)


def class_of(error: Any) -> tuple[str | None, float | None]:
    return (error.cooldown.kind, error.cooldown.seconds) if error.cooldown else (None, None)


@pytest.mark.parametrize(
    ("kind", "flavor", "expected"),
    [
        ("invalid_api_key", "openai", ("auth", None)),
        ("invalid_api_key", "groq", ("auth", None)),
        ("invalid_api_key", "openrouter", ("auth", None)),
        ("missing_api_key", "openrouter", ("auth", None)),
        ("insufficient_quota", "openai", ("credit", None)),
        ("insufficient_credits", "openrouter", ("credit", None)),
        ("model_not_found", "openai", ("unavailable", None)),
        ("model_not_found", "groq", ("unavailable", None)),
        ("rate_limit", "openai", ("rate", 7.0)),
        ("rate_limit", "groq", ("rate", 7.0)),
        ("daily_limit", "groq", ("daily", 7.0)),
        ("server_error", "openai", (None, None)),
        ("invalid_request", "openai", (None, None)),
    ],
)
def test_openai_compatible_classes(kind: str, flavor: str, expected: tuple[str | None, float | None]) -> None:
    assert class_of(compatible(kind, flavor, retry_after=7)) == expected


def test_openrouter_free_models_per_day_rests_until_its_reset() -> None:
    error = fake_openai.error_body("daily_limit", flavor="openrouter", retry_after=600)
    reset_ms = int((NOW + 5400) * 1000)
    error["error"]["metadata"]["headers"]["X-RateLimit-Reset"] = str(reset_ms)
    failure = compatible_error(429, json.dumps(error).encode(), CaseInsensitiveDict(), MODEL, NOW)
    assert class_of(failure) == ("daily", 5400.0)
    # the same body inside a 200 stream (OpenRouter sends errors mid-stream too) is still daily
    assert stream_error(error["error"], MODEL).cooldown.kind == "daily"


def test_openrouter_per_minute_and_upstream_provider_429s_are_rates() -> None:
    body = fake_openai.error_body(
        "daily_limit", flavor="openrouter", message="Rate limit exceeded: free-models-per-min."
    )
    assert compatible_error(429, json.dumps(body).encode(), {}, MODEL, NOW).cooldown.kind == "rate"
    assert class_of(compatible("upstream_rate_limit", "openrouter"))[0] == "rate"


@pytest.mark.parametrize("kind", ["upstream_rate_limit", "upstream_quota"])
def test_openrouter_provider_returned_error_429_rests_the_key_as_a_rate(kind: str) -> None:
    """ "Provider returned error": the provider OpenRouter routed to is rate limited, whatever its own
    words in `raw` (here even its per-day quota): the key is neither spent for the day nor invalid."""
    failure = compatible(kind, "openrouter", retry_after=12)
    assert class_of(failure) == ("rate", 12.0)
    assert (
        failure.cooldown.reason
        == "upstream 429: the provider behind OpenRouter (Google AI Studio) is rate limited"
    )
    assert class_of(compatible(kind, "openrouter")) == ("rate", None)  # no Retry-After: the config's
    # the same error inside a 200 answer or stream
    error = fake_openai.error_body(kind, flavor="openrouter")["error"]
    assert class_of(stream_error(error, MODEL)) == ("rate", None)


def test_a_403_for_the_content_or_the_region_is_not_the_keys() -> None:
    moderated = compatible("forbidden", "openrouter")
    assert isinstance(moderated, UpstreamBadRequest) and moderated.cooldown is None
    region = compatible("forbidden", "openai")
    assert type(region) is UpstreamError and region.retryable and region.cooldown is None
    assert class_of(compatible("forbidden", "groq"))[0] == "auth"  # Groq's bare 403: the key's


def test_a_402_may_fall_back() -> None:
    failure = compatible("insufficient_credits", "openrouter")
    assert failure.retryable and failure.cooldown.kind == "credit"


def gemini_error(kind: str, **kwargs: Any) -> Any:
    body = json.dumps(fake_gemini.error_body(kind, **kwargs)).encode()
    return gemini.gemini_error(fake_gemini.error_body(kind, **kwargs)["error"]["code"], body, {}, MODEL, NOW)


def test_gemini_classes() -> None:
    assert class_of(gemini_error("bad_key")) == ("auth", None)  # a 400 API_KEY_INVALID
    assert class_of(gemini_error("missing_key")) == ("auth", None)  # 403 PERMISSION_DENIED
    assert class_of(gemini_error("rate_limit", retry_delay="14s")) == ("rate", 14.0)
    assert class_of(gemini_error("rate_limit", retry_delay=None)) == ("rate", pytest.approx(14.925851614))
    kind, seconds = class_of(gemini_error("rate_limit", daily=True, retry_delay="38s"))
    assert kind == "daily" and seconds == 13 * 3600, "until Pacific midnight, not RetryInfo's 38 s"
    assert class_of(gemini_error("rate_limit", limit=0)) == ("unavailable", None)
    assert class_of(gemini_error("rate_limit", limit=0, daily=True)) == ("unavailable", None)
    assert class_of(gemini_error("not_found")) == (None, None)
    assert class_of(gemini_error("internal")) == (None, None)


def test_gemini_compat_list_wrapped_daily_quota() -> None:
    body = [{"error": fake_gemini.error_body("rate_limit", daily=True)["error"]}]
    assert gemini.gemini_error(429, json.dumps(body).encode(), {}, MODEL, NOW).cooldown.kind == "daily"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("auth", "auth"),
        ("forbidden", "auth"),
        ("daily_limit", "daily"),
        ("account_limited", "daily"),
        ("model_rate_limit", "rate"),
        ("capacity", "rate"),
        ("capacity_500", "rate"),
        ("bad_input", None),
    ],
)
def test_cloudflare_classes(kind: str, expected: str | None) -> None:
    status, code, message = fake_cloudflare.ERRORS[kind]
    body = json.dumps(fake_cloudflare.error_body(code, message)).encode()
    failure = cloudflare.parse_error(status, body, {}, MODEL, NOW)
    assert class_of(failure)[0] == expected
    if expected == "daily":
        assert failure.cooldown.seconds == 6 * 3600  # until 00:00 UTC


@pytest.mark.parametrize("kind", ["capacity", "capacity_500"])
def test_cloudflare_capacity_rests_the_key_as_a_rate(kind: str) -> None:
    """Code 3040, capacity temporarily exceeded (a 429, or a 500 as captured): Cloudflare is busy,
    the key is fine; it rests as long as Retry-After says, else routing.cooldown_seconds."""
    status, code, message = fake_cloudflare.ERRORS[kind]
    body = json.dumps(fake_cloudflare.error_body(code, message)).encode()
    failure = cloudflare.parse_error(status, body, {"retry-after": "3"}, MODEL, NOW)
    assert class_of(failure) == ("rate", 3.0) and failure.retry_after == 3.0
    assert failure.cooldown.reason == "upstream code 3040: capacity temporarily exceeded"
    assert class_of(cloudflare.parse_error(status, body, {}, MODEL, NOW)) == ("rate", None)
    # inside a 200 answer (`success: false`) too
    with pytest.raises(RateLimited) as inside:
        cloudflare.parse_completion(fake_cloudflare.error_body(code, message), MODEL)
    assert class_of(inside.value) == ("rate", None)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("invalid_api_token", ("auth", None)),
        ("trial_rate_limit", ("rate", None)),
        ("rate_limit", ("rate", None)),
        ("trial_monthly_limit", ("daily", None)),
        ("bad_request", (None, None)),
    ],
)
def test_cohere_classes(kind: str, expected: tuple[str | None, None]) -> None:
    status, message = fake_cohere.ERRORS[kind]
    body = json.dumps(fake_cohere.error_body(message)).encode()
    assert class_of(cohere.cohere_error(status, body, {}, MODEL)) == expected


@pytest.mark.parametrize(
    ("status", "expected"), [(401, "auth"), (402, "credit"), (403, "unavailable"), (500, None)]
)
def test_gigachat_classes(status: int, expected: str | None) -> None:
    """A GigaChat API error answer (the adapter's parse_error; its tokens come from the fake's OAuth)."""
    with FakeGigaChat() as fake:
        sessions = SessionPool(HttpConfig())
        try:
            provider = build_provider(fake.model_config(), sessions, HttpConfig())
            body = json.dumps({"status": status, "message": "x"}).encode()
            assert class_of(provider.parse_error(status, body, {}))[0] == expected
        finally:
            sessions.close()


def test_gigachat_oauth_refusal_rests_the_key() -> None:
    with FakeGigaChat() as fake:
        fake.push("oauth", FakeGigaChat.error(401, "credentials doesn't match db data"))
        sessions = SessionPool(HttpConfig())
        try:
            provider = build_provider(fake.model_config(), sessions, HttpConfig())
            with pytest.raises(UpstreamAuthError) as info:
                provider.complete({"model": "GigaChat-2", "messages": [{"role": "user", "content": "hi"}]})
        finally:
            sessions.close()
    assert class_of(info.value)[0] == "auth"
