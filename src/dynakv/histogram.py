"""A histogram with fixed bucket bounds as plain counters, for /metrics.

No lock and no I/O: each one has a single writer (the event loop, or one storage thread),
and a scrape reads it as it stands. prometheus-client's own Histogram takes a lock per
observation, which costs more than the work measured on the hot paths that feed these.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
# Writes per commit: 1 when idle, hundreds under load with a group-commit window.
BATCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


class Histogram:
    """Counts of observations at or below each bound, their number and their sum."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(bounds) + 1)  # the last one: above every bound

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.buckets[bisect_left(self.bounds, value)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, observations at or below it) per bucket, as Prometheus lists them."""
        total, rows = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.buckets, strict=True):
            total += n
            rows.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return rows
