"""Failed logins limited per source address (runtime/login_limits.py), and the gatekeeper
refusing a limited address unchecked on every door."""

from __future__ import annotations

import asyncio

import pytest

from dynakv import users as us
from dynakv.errors import TooManyLogins, Unauthenticated
from dynakv.runtime import login_limits
from dynakv.runtime.gatekeeper import Gatekeeper
from dynakv.runtime.login_limits import LoginLimiter
from tests.unit.test_gatekeeper import Lines, _state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(burst: int = 3, per_minute: float = 6.0) -> tuple[LoginLimiter, Lines, Clock]:
    lines, clock = Lines(), Clock()
    return LoginLimiter(burst, per_minute, lines, clock), lines, clock  # type: ignore[arg-type]


def test_an_address_is_limited_after_its_burst_and_refills_at_the_rate() -> None:
    limiter, _, clock = _limiter(burst=3, per_minute=6.0)  # a token back every 10 s
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("http", "bad_password", "10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(10.0)
    assert limiter.retry_after("10.0.0.2") is None  # another address is untouched
    clock.now += 10.0
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("http", "bad_password", "10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is not None
    clock.now += 3600.0  # a full bucket, never more than the burst
    for _ in range(3):
        limiter.failed("resp", "bad_password", "10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is not None


def test_memory_is_bounded_by_forgetting_the_least_recent_address(monkeypatch) -> None:
    monkeypatch.setattr(login_limits, "MAX_ADDRESSES", 4)
    limiter, _, _ = _limiter(burst=1)
    for i in range(10):
        limiter.failed("http", "bad_password", f"10.0.0.{i}")
    assert len(limiter._buckets) == 4
    assert limiter.retry_after("10.0.0.9") is not None
    assert limiter.retry_after("10.0.0.0") is None  # forgotten: a fresh bucket


def test_refusals_log_one_line_per_interval_with_the_count_between() -> None:
    limiter, lines, clock = _limiter(burst=1)
    for _ in range(5):
        limiter.refused("dynamodb", "10.0.0.1", 5.0)
    clock.now += login_limits.LOG_EVERY
    limiter.refused("dynamodb", "10.0.0.1", 5.0)
    logged = [fields for event, fields in lines.events if event == "login_limited"]
    assert [f["refused"] for f in logged] == [1, 5]
    assert limiter.failures[("dynamodb", "rate_limited")] == 6


def test_failures_are_counted_by_port_and_reason_for_prometheus() -> None:
    limiter, _, _ = _limiter()
    limiter.failed("resp", "unknown_user", "a")
    limiter.failed("resp", "unknown_user", "b")
    limiter.failed("dynamodb", "bad_signature", "a")
    (family,) = limiter.collector().collect()
    samples = {(s.labels["port"], s.labels["reason"]): s.value for s in family.samples}
    assert samples == {("dynamodb", "bad_signature"): 1, ("resp", "unknown_user"): 2}


def test_a_limited_address_is_refused_even_with_the_right_password() -> None:
    alice = us.changed((), "alice", us.hash_password("right", b"s" * 16), b"", [])
    lines = Lines()
    limiter = LoginLimiter(2, 1.0, lines)  # type: ignore[arg-type]
    gate = Gatekeeper(True, lambda: _state(alice), lines, limiter)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            asyncio.run(gate.login("alice", "wrong", "binary", "10.0.0.1"))
    with pytest.raises(TooManyLogins, match=r"too many failed logins from 10\.0\.0\.1"):
        asyncio.run(gate.login("alice", "right", "binary", "10.0.0.1"))
    with pytest.raises(TooManyLogins):
        gate.bearer("a-token", "10.0.0.1")
    assert asyncio.run(gate.login("alice", "right", "binary", "10.0.0.2")).name == "alice"
    assert limiter.failures == {
        ("binary", "bad_password"): 2,
        ("binary", "rate_limited"): 1,
        ("http", "rate_limited"): 1,
    }
