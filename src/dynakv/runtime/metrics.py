"""Prometheus metrics of one node: requests, errors and latency per operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


class Metrics:
    """A registry per node (not the global one), so several nodes can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recent: list[float] = []
        self._children: dict[str, tuple[Any, Any]] = {}  # op -> (requests, latency) children
        self.requests = Counter(
            "dynakv_requests", "Client requests served", ["op"], registry=self.registry
        )
        self.errors = Counter(
            "dynakv_request_errors",
            "Client requests that ended in an error",
            ["op", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dynakv_request_seconds",
            "Client request latency, from arrival to reply",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A value read from the node each time /metrics is scraped."""
        Gauge(name, doc, registry=self.registry).set_function(read)

    def take_recent(self) -> list[float]:
        """The latencies observed since the last call (for admission control)."""
        recent, self.recent = self.recent, []
        return recent

    def observe(self, op: str, seconds: float, error_code: str | None) -> None:
        if len(self.recent) < 100_000:
            self.recent.append(seconds)
        children = self._children.get(op)
        if children is None:  # labels() looks the child up by hashing: once per op name
            children = self._children[op] = (self.requests.labels(op), self.latency.labels(op))
        children[0].inc()
        children[1].observe(seconds)
        if error_code is not None:
            self.errors.labels(op, error_code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
