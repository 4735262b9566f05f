"""Failed logins per source address, on every client port (HTTP Basic and Bearer, RESP AUTH,
the binary client's login, DynamoDB's SigV4): a token bucket per address that each failure
drains, so password guessing from one address slows to the refill rate while clients from
other addresses are not touched. The counts of failures by port and reason for Prometheus.

Bounded memory: at most MAX_ADDRESSES buckets, the least recently failed forgotten first (a
forgotten address starts again with a full bucket: no worse than its first guesses).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from dynakv.config import SecurityConfig
from dynakv.runtime.logs import NodeLog
from dynakv.runtime.metrics import Metrics

MAX_ADDRESSES = 65536
LOG_EVERY = 10.0  # s: at most one login_limited line this often, with the count between
RATE_LIMITED = "rate_limited"  # the reason counted for an attempt refused unchecked


class LoginLimiter:
    """Token buckets of failed logins by address, and the failure counts."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        log: NodeLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0  # tokens back per second
        self._log = log
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self.failures: Counter[tuple[str, str]] = Counter()  # (port, reason) -> count
        self._last_line = -math.inf
        self._unlogged = 0

    def retry_after(self, address: str) -> float | None:
        """None if address may try a login now; else the seconds until it may."""
        tokens = self._tokens(address, self._clock())
        if tokens >= 1:
            return None
        return (1 - tokens) / self.rate

    def refused(self, port: str, address: str, retry_after: float) -> None:
        """An attempt from a limited address, refused without checking its credentials."""
        self.failures[(port, RATE_LIMITED)] += 1
        now = self._clock()
        self._unlogged += 1
        if now - self._last_line >= LOG_EVERY:
            self._log.event(
                logging.WARNING, "login_limited", address=address, port=port,
                refused=self._unlogged, retry_after=round(retry_after, 1),
                burst=self.burst, per_minute=round(self.rate * 60, 3),
            )  # fmt: skip
            self._last_line = now
            self._unlogged = 0

    def failed(self, port: str, reason: str, address: str) -> None:
        """One failed login from address: counted, and one token taken."""
        self.failures[(port, reason)] += 1
        now = self._clock()
        tokens = self._tokens(address, now)
        self._buckets[address] = (tokens - 1, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)

    def _tokens(self, address: str, now: float) -> float:
        found = self._buckets.get(address)
        if found is None:
            return float(self.burst)
        tokens, when = found
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def collector(self) -> _FailureCollector:
        return _FailureCollector(self.failures)


def login_limiter(security: SecurityConfig, log: NodeLog, metrics: Metrics) -> LoginLimiter:
    """A node's limiter, from its [security] table, its counts in the node's /metrics."""
    limiter = LoginLimiter(security.failed_login_burst, security.failed_logins_per_minute, log)
    metrics.registry.register(limiter.collector())
    return limiter


def source_of(transport: object) -> str:
    """The client's address (no port: one client has many) of a connection's transport."""
    get = getattr(transport, "get_extra_info", None)
    peer = get("peername") if get is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class _FailureCollector:
    """dynakv_auth_failures_total{port, reason}: failed and refused client logins."""

    def __init__(self, failures: Counter[tuple[str, str]]) -> None:
        self.failures = failures

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "dynakv_auth_failures",
            "Client authentications that failed or were refused unchecked (rate_limited), "
            "by port (http, resp, binary, dynamodb) and reason",
            labels=["port", "reason"],
        )
        for (port, reason), count in sorted(self.failures.items()):
            family.add_metric([port, reason], count)
        yield family
