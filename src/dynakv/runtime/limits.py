"""Limits on the connections of one listening port (node, HTTP or RESP): how many may be open,
how long one may sit silent, how long a request may take to arrive.

`PortGuard.factory` wraps a port's protocol factory: past `max_connections` a new connection
is closed at once (counted, one log line per LOG_EVERY seconds); every other one is a
`GuardedConnection` that forwards to the real protocol and counts its reads. A sweep once a
second looks at each connection's `Activity` (what the port's protocol says about it) and
closes one that sent nothing for `idle_timeout` with nothing in flight, or that has held an
unfinished request for `request_read_timeout` (a slowloris). Checking on a sweep costs the
data path nothing but a counter; a deadline is kept to within a sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dynakv.config import NodeConfig
from dynakv.runtime.metrics import Metrics

log = logging.getLogger("dynakv")

SWEEP_INTERVAL = 1.0
LOG_EVERY = 10.0  # s between two log lines about one port's refused or closed connections


class Activity(NamedTuple):
    """What a port's protocol says about one of its connections at a sweep."""

    exempt: bool  # a peer node's link: never timed out
    busy: bool  # requests of it are in flight (being answered): it is not idle
    partial: bool  # it holds the start of a request not yet whole
    requests: int  # requests it has sent whole so far (a new one restarts the read clock)


# The port's protocol -> its Activity (or, with wraps_connection, the GuardedConnection's)
Probe = Callable[[Any], Activity]


class GuardedConnection(asyncio.Protocol):
    """A connection the guard admitted: forwards every event to the port's own protocol."""

    def __init__(self, guard: PortGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.reads = 0
        self.last_active = time.monotonic()
        self.partial_since: float | None = None
        self.requests_seen = 0
        self.reads_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.guard.connections.add(self)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.connections.discard(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Refused(asyncio.Protocol):
    """A connection past the limit: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class PortGuard:
    """The limits of one port and the connections it admitted."""

    def __init__(
        self,
        port: str,
        config: NodeConfig,
        metrics: Metrics,
        probe: Probe,
        wraps_connection: bool = False,
    ) -> None:
        self.port = port
        self.wraps_connection = wraps_connection
        self.max_connections = config.max_connections
        self.idle_timeout = config.idle_timeout
        self.read_timeout = config.request_read_timeout
        self.probe = probe
        self.connections: set[GuardedConnection] = set()
        self.refused = 0
        self.closed_idle = 0
        self.closed_slow = 0
        self._unlogged = {"refused": 0, "idle": 0, "slow": 0}
        self._logged_at = float("-inf")
        self._sweep: asyncio.TimerHandle | None = None
        _collector(metrics).guards.append(self)

    def factory(
        self,
        make: Callable[[], asyncio.Protocol],
        wrapper: type[GuardedConnection] = GuardedConnection,
    ) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory to listen with: `make`'s protocols, guarded, within the
        limit; past it, connections closed at once."""

        def guarded() -> asyncio.BaseProtocol:
            if len(self.connections) >= self.max_connections:
                self.refused += 1
                self._note("refused")
                return _Refused()
            return wrapper(self, make())

        return guarded

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweep = loop.call_later(SWEEP_INTERVAL, self._sweep_once)

    def stop(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _sweep_once(self) -> None:
        try:
            self.sweep(time.monotonic())
        finally:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(SWEEP_INTERVAL, self._sweep_once)

    def sweep(self, now: float) -> None:
        """Close the connections past a deadline: a slow request, or idle too long."""
        for conn in list(self.connections):
            if conn.transport is None or conn.transport.is_closing():
                continue
            activity = self.probe(conn if self.wraps_connection else conn.inner)
            if activity.exempt:
                continue
            if conn.reads != conn.reads_seen or activity.busy:
                conn.reads_seen = conn.reads
                conn.last_active = now
            if not activity.partial:
                conn.partial_since = None
            elif conn.partial_since is None or activity.requests != conn.requests_seen:
                conn.partial_since = now  # a new request began since the last sweep
            conn.requests_seen = activity.requests
            if conn.partial_since is not None and now - conn.partial_since > self.read_timeout:
                self.closed_slow += 1
                self._note("slow")
                conn.transport.abort()  # no lingering on its unread bytes
            elif (
                self.idle_timeout
                and not activity.busy
                and conn.partial_since is None
                and now - conn.last_active > self.idle_timeout
            ):
                self.closed_idle += 1
                self._note("idle")
                conn.transport.close()

    def _note(self, what: str) -> None:
        """Count for the next log line; write one at most every LOG_EVERY seconds, so a
        flood of connections costs the log one line per port per LOG_EVERY."""
        self._unlogged[what] += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        counts = " ".join(f"{k}={v}" for k, v in self._unlogged.items() if v)
        log.warning(
            "connections_limited port=%s %s open=%d max_connections=%d idle_timeout=%s "
            "request_read_timeout=%s",
            self.port,
            counts,
            len(self.connections),
            self.max_connections,
            self.idle_timeout,
            self.read_timeout,
        )
        self._unlogged = dict.fromkeys(self._unlogged, 0)


class _LimitsCollector(Collector):
    """The guards' figures, by port, for /metrics."""

    def __init__(self) -> None:
        self.guards: list[PortGuard] = []

    def collect(self) -> Iterator[Any]:
        open_ = GaugeMetricFamily(
            "dynakv_connections_open", "Client connections open, by port", labels=["port"]
        )
        refused = CounterMetricFamily(
            "dynakv_connections_refused",
            "Connections closed at once because the port had max_connections open",
            labels=["port"],
        )
        closed = CounterMetricFamily(
            "dynakv_connections_timed_out",
            "Connections closed idle (idle_timeout) or slow (request_read_timeout)",
            labels=["port", "reason"],
        )
        for guard in self.guards:
            open_.add_metric([guard.port], len(guard.connections))
            refused.add_metric([guard.port], guard.refused)
            closed.add_metric([guard.port, "idle"], guard.closed_idle)
            closed.add_metric([guard.port, "slow"], guard.closed_slow)
        yield from (open_, refused, closed)


_collectors: weakref.WeakKeyDictionary[Metrics, _LimitsCollector] = weakref.WeakKeyDictionary()


def _collector(metrics: Metrics) -> _LimitsCollector:
    """One collector per node's registry, shared by its ports (a name registers once)."""
    collector = _collectors.get(metrics)
    if collector is None:
        collector = _collectors[metrics] = _LimitsCollector()
        metrics.registry.register(collector)
    return collector
