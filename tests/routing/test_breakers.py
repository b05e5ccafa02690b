"""Circuit breakers: pybreaker counts failures, the storage mirrors its state for acquire."""

from __future__ import annotations

import pytest

from app.errors import (
    RateLimited,
    ServiceUnavailable,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
)
from tests.routing.conftest import FakeClock, model


def fail(router, m, error, clock: FakeClock) -> None:
    router.failed(router.acquire([m], length=1, tokens=1), error)
    clock.advance(1)  # past the 1 s cooldown, so only the breaker can refuse


def state(router, m) -> str:
    return next(e for e in router.snapshot() if e["name"] == m.name)["breaker"]


def test_opens_after_fail_max_faults(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=3, reset_timeout=30)
    fail(router, m, UpstreamError("502"), clock)
    fail(router, m, UpstreamTimeout("no answer"), clock)  # (a 401 rests the key instead: test_key_pools)
    assert state(router, m) == "closed"
    fail(router, m, UpstreamError("502"), clock)
    assert state(router, m) == "open"
    with pytest.raises(ServiceUnavailable, match="groq/a: circuit breaker open") as refused:
        router.acquire([m], length=1, tokens=1)
    assert refused.value.retry_after == 29.0


def test_client_errors_and_429s_are_not_failures(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=2)
    for _ in range(5):
        fail(router, m, UpstreamBadRequest("unknown parameter"), clock)
        fail(router, m, RateLimited("429", retry_after=1), clock)
    assert state(router, m) == "closed"
    fail(router, m, UpstreamError("502"), clock)
    fail(router, m, UpstreamBadRequest("a 400 proves the upstream answers"), clock)
    fail(router, m, UpstreamError("502"), clock)
    assert state(router, m) == "closed"
    fail(router, m, UpstreamError("502"), clock)
    assert state(router, m) == "open"


def test_a_success_resets_the_failure_count(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=3)
    fail(router, m, UpstreamError("502"), clock)
    fail(router, m, UpstreamError("502"), clock)
    ok = router.acquire([m], length=1, tokens=1)
    assert ok.failing
    router.succeeded(ok, {}, 1)
    assert not router.acquire([m], length=1, tokens=1).failing
    fail(router, m, UpstreamError("502"), clock)
    fail(router, m, UpstreamError("502"), clock)
    assert state(router, m) == "closed"


def test_half_open_lets_one_trial_through_and_closes_on_success(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=1, reset_timeout=30)
    fail(router, m, UpstreamError("502"), clock)
    clock.advance(29)
    assert state(router, m) == "half-open"
    trial = router.acquire([m], length=1, tokens=1)
    assert trial.trial
    with pytest.raises(ServiceUnavailable, match="half-open, its trial request is in flight"):
        router.acquire([m], length=1, tokens=1)
    router.succeeded(trial, {}, 1)
    assert state(router, m) == "closed"
    assert not router.acquire([m], length=1, tokens=1).trial
    router.acquire([m], length=1, tokens=1)


def test_a_failed_trial_opens_the_breaker_again(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=1, reset_timeout=30)
    fail(router, m, UpstreamError("502"), clock)
    clock.advance(29)
    router.failed(router.acquire([m], length=1, tokens=1), UpstreamError("still 502"))
    assert state(router, m) == "open"
    clock.advance(29)
    with pytest.raises(ServiceUnavailable, match="circuit breaker open"):
        router.acquire([m], length=1, tokens=1)
    clock.advance(1)
    trial = router.acquire([m], length=1, tokens=1)
    assert trial.trial
    router.failed(trial, UpstreamBadRequest("the upstream answers"))
    assert state(router, m) == "closed"


def test_a_lost_trial_is_retried_after_its_lease(make_router, clock: FakeClock) -> None:
    m = model()
    router = make_router([m], cooldown=1, fail_max=1, reset_timeout=30)
    fail(router, m, UpstreamError("502"), clock)
    clock.advance(29)
    assert router.acquire([m], length=1, tokens=1).trial  # its worker dies: no outcome reported
    clock.advance(30)
    assert router.acquire([m], length=1, tokens=1).trial


def test_open_breakers_send_traffic_to_the_next_model(make_router, clock: FakeClock) -> None:
    a, b = model("groq/a", model_size="small"), model("groq/b", model_size="small", priority=1)
    router = make_router([a, b], cooldown=1, fail_max=1)
    fail(router, a, UpstreamError("502"), clock)
    assert router.acquire([a, b], length=1, tokens=1).model is b


def test_breaker_state_is_shared_between_routers(make_router, clock: FakeClock) -> None:
    m = model()
    one = make_router([m], cooldown=1, fail_max=2, reset_timeout=30)
    two = make_router([m], cooldown=1, fail_max=2, reset_timeout=30)
    fail(one, m, UpstreamError("502"), clock)
    fail(two, m, UpstreamError("502"), clock)  # the count is shared: this second failure trips it
    with pytest.raises(ServiceUnavailable, match="circuit breaker open"):
        one.acquire([m], length=1, tokens=1)
    assert state(two, m) == "open"
    assert two._breakers[m.name].current_state == "open"
    clock.advance(30)
    trial = two.acquire([m], length=1, tokens=1)
    assert trial.trial
    with pytest.raises(ServiceUnavailable, match="trial request is in flight"):
        one.acquire([m], length=1, tokens=1)
    two.succeeded(trial, {}, 1)
    assert one._breakers[m.name].current_state == "closed"
    one.acquire([m], length=1, tokens=1)
