"""The connection limits' settings and the guard's decisions (runtime/limits.py), without
sockets: the real-process checks are in tests/cluster/test_limits.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from dynakv import config
from dynakv.config import NodeConfig
from dynakv.runtime.limits import Activity, GuardedConnection, PortGuard
from dynakv.runtime.metrics import Metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_connections = 0", "max_connections and max_inflight_per_connection must be"),
        ("max_inflight_per_connection = 0", "max_connections and max_inflight_per_connection"),
        ('max_connections = "many"', 'max_connections must be an integer, got "many"'),
        ("idle_timeout = -1", "idle_timeout must be 0 (never) or more"),
        ("request_read_timeout = 0", "request_read_timeout more than 0"),
        ("request_read_timeout = true", "request_read_timeout must be a number, got true"),
    ],
)
def test_a_bad_limit_is_refused_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"node\.toml") as caught:
        config.load(path)
    assert expected in str(caught.value)


def test_limits_load_and_default() -> None:
    default = NodeConfig()
    assert (default.max_connections, default.idle_timeout) == (4096, 300.0)
    assert (default.request_read_timeout, default.max_inflight_per_connection) == (30.0, 1024)


class FakeTransport:
    def __init__(self) -> None:
        self.closed = self.aborted = False

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class FakeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.activity = Activity(False, False, False, 0)


FACTORIES: dict[int, Callable[[], asyncio.BaseProtocol]] = {}


def guard(**limits: float) -> tuple[PortGuard, list[FakeProtocol]]:
    cfg = NodeConfig(**limits)  # type: ignore[arg-type]
    made: list[FakeProtocol] = []

    def make() -> FakeProtocol:
        made.append(FakeProtocol())
        return made[-1]

    port = PortGuard("test", cfg, Metrics(), lambda p: p.activity)
    FACTORIES[id(port)] = port.factory(make)
    return port, made


def open_one(port: PortGuard) -> tuple[asyncio.BaseProtocol, FakeTransport]:
    proto = FACTORIES[id(port)]()
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


def test_past_max_connections_a_connection_is_closed_at_once_and_counted() -> None:
    port, _ = guard(max_connections=2)
    for _ in range(2):
        proto, transport = open_one(port)
        assert isinstance(proto, GuardedConnection) and not transport.closed
    _, refused = open_one(port)
    assert refused.closed and port.refused == 1
    first = next(iter(port.connections))
    first.connection_lost(None)
    proto, transport = open_one(port)
    assert isinstance(proto, GuardedConnection) and not transport.closed


def test_a_request_that_does_not_arrive_whole_in_time_is_cut_off() -> None:
    port, made = guard(request_read_timeout=2.0, idle_timeout=100.0)
    proto, transport = open_one(port)
    made[0].activity = Activity(False, False, True, 0)
    for second in range(3):  # bytes keep trickling in: still the same request
        proto.data_received(b"x")
        port.sweep(float(second))
        assert not transport.aborted
    port.sweep(3.5)
    assert transport.aborted and port.closed_slow == 1


def test_a_new_request_restarts_the_read_clock_and_a_busy_one_is_not_idle() -> None:
    port, made = guard(request_read_timeout=2.0, idle_timeout=5.0)
    proto, transport = open_one(port)
    for second in range(10):  # a new request each second, each still arriving
        made[0].activity = Activity(False, second % 2 == 0, True, second)
        proto.data_received(b"x")
        port.sweep(float(second))
    assert not transport.aborted
    made[0].activity = Activity(False, True, False, 10)  # waiting for its answer, silent
    port.sweep(20.0)
    assert not transport.closed
    made[0].activity = Activity(False, False, False, 10)
    port.sweep(24.0)
    assert not transport.closed  # idle for 4 s
    port.sweep(26.0)
    assert transport.closed and port.closed_idle == 1


def test_a_peer_link_and_idle_timeout_zero_are_never_timed_out() -> None:
    port, made = guard(idle_timeout=0.0, request_read_timeout=1.0)
    _, silent = open_one(port)
    _, peer = open_one(port)
    made[1].activity = Activity(True, False, True, 0)
    for second in range(100):
        port.sweep(float(second))
    assert not silent.closed and not peer.aborted
