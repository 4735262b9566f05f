"""Prometheus metrics of one node: requests, errors and latency per operation.

The request figures are kept as plain counters and rendered by a collector at scrape time:
prometheus-client's own Counter and Histogram take a lock per increment, three times per
request, which cost more than the rest of a read's bookkeeping.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


class _OpStats:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound


class _RequestCollector:
    """Renders the counters of a Metrics as dynakv_requests, _request_errors, _seconds."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        ops = self.metrics.ops
        requests = CounterMetricFamily("dynakv_requests", "Client requests served", labels=["op"])
        latency = HistogramMetricFamily(
            "dynakv_request_seconds", "Client request latency, from arrival to reply", labels=["op"]
        )
        for op, stats in sorted(ops.items()):
            requests.add_metric([op], stats.count)
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([op], buckets, sum_value=stats.sum)
        errors = CounterMetricFamily(
            "dynakv_request_errors", "Client requests that ended in an error", labels=["op", "code"]
        )
        for (op, code), n in sorted(self.metrics.errors.items()):
            errors.add_metric([op, code], n)
        yield requests
        yield errors
        yield latency


class Metrics:
    """A registry per node (not the global one), so several nodes can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recent: list[float] = []
        self.ops: dict[str, _OpStats] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.registry.register(_RequestCollector(self))

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
        stats = self.ops.get(op)
        if stats is None:
            stats = self.ops[op] = _OpStats()
        stats.count += 1
        stats.sum += seconds
        stats.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        if error_code is not None:
            key = (op, error_code)
            self.errors[key] = self.errors.get(key, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
