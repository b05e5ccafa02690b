"""Pure window math: durations, token estimates, calendar days, windows from a model's config."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.routing import estimate_tokens
from app.routing.limits import US, DayClock, go_duration, parse_duration, plan_for, to_us
from tests.routing.conftest import model


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-3, "0s"), (12, "12s"), (11.2, "12s"), (90, "1m30s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("8.64s", 8.64),
        ("6m0s", 360.0),
        ("1h2m3s", 3723.0),
        ("120ms", 0.12),
        ("2m59.56s", 179.56),
        ("12", 12.0),
        (" 1.5 ", 1.5),
        ("", None),
        ("soon", None),
        ("5 minutes", None),
        ("-1", None),
        ("nan", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    got = parse_duration(text)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_estimate_tokens() -> None:
    assert estimate_tokens(400, 100) == 200
    assert estimate_tokens(401, None) == 101 + 256
    assert estimate_tokens(0, 0) == 256


def _us(text: str, tz: str) -> int:
    return to_us(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp())


def test_day_clock_resets_at_local_time() -> None:
    day = DayClock("00:00", "America/Los_Angeles")
    now = _us("2024-06-01T23:59:00", "America/Los_Angeles")
    assert day.bounds(now) == (
        _us("2024-06-01T00:00:00", "America/Los_Angeles"),
        _us("2024-06-02T00:00:00", "America/Los_Angeles"),
    )
    start, _ = day.bounds(_us("2024-06-02T00:00:00", "America/Los_Angeles"))
    assert start == _us("2024-06-02T00:00:00", "America/Los_Angeles")


def test_day_clock_before_reset_time_belongs_to_yesterday_and_handles_dst() -> None:
    day = DayClock("03:30", "Europe/Berlin")
    now = _us("2024-03-31T02:00:00", "UTC")  # 04:00 CEST, just after the spring-forward night
    start, end = day.bounds(now)
    assert start == _us("2024-03-31T03:30:00", "Europe/Berlin")
    assert end - start == 24 * 3600 * US
    start, end = day.bounds(_us("2024-03-31T00:30:00", "UTC"))  # 01:30 CET: still the 30th's day
    assert start == _us("2024-03-30T03:30:00", "Europe/Berlin")
    assert end - start == 23 * 3600 * US  # the day that lost an hour


def test_plan_keeps_only_configured_windows() -> None:
    plan = plan_for(model(requests_per_minute=30, tokens_per_day=1000))
    assert [(s.id, s.requests, s.tokens) for s in plan.spans] == [("m", 30, 0), ("d", 0, 1000)]
    assert plan.counts_tokens and plan.counts_requests
    assert plan_for(model()).spans == ()
    assert plan_for(model(requests_per_day=5, day_resets_at="07:00")).spans[0].day is not None
