"""The load generator's latency histogram: log-linear buckets, 3 significant digits, mergeable
across worker processes (HdrHistogram's layout, in Python)."""

from __future__ import annotations

import math

# --- latency histogram --------------------------------------------------------------------

SUB_BITS = 11  # 2048 exact values, then 1024 buckets per power of two: relative error < 0.1%
HALF = 1 << (SUB_BITS - 1)
MAX_TRACKED = (1 << 36) - 1  # microseconds, about 19 hours; larger values are clipped


def bucket_index(value: int) -> int:
    if value < (1 << SUB_BITS):
        return value
    shift = value.bit_length() - SUB_BITS
    return (shift << (SUB_BITS - 1)) + (value >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest and highest value that land in bucket `index`."""
    if index < (1 << SUB_BITS):
        return index, index
    shift = (index >> (SUB_BITS - 1)) - 1
    low = (index - (shift << (SUB_BITS - 1))) << shift
    return low, low + (1 << shift) - 1


BUCKETS = bucket_index(MAX_TRACKED) + 1


class Histogram:
    """HDR-style log-linear histogram of non-negative integers (here: microseconds).

    Values below 2048 are kept exactly; above, each power of two is split into 1024 equal
    buckets, so any reported percentile is within 0.1% of a value that was recorded.
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        elif value > MAX_TRACKED:
            value = MAX_TRACKED
        if value < 2048:
            self.counts[value] += 1
        else:
            shift = value.bit_length() - SUB_BITS
            self.counts[(shift << (SUB_BITS - 1)) + (value >> shift)] += 1
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentiles(self, ps: list[float]) -> list[int]:
        """Nearest-rank percentiles (the value at rank ceil(p/100 * count)), 0 when empty."""
        if self.count == 0:
            return [0 for _ in ps]
        ranks = sorted((max(1, math.ceil(p / 100 * self.count)), i) for i, p in enumerate(ps))
        out = [0] * len(ps)
        seen = 0
        j = 0
        for index, n in enumerate(self.counts):
            if not n:
                continue
            seen += n
            while j < len(ranks) and ranks[j][0] <= seen:
                low, high = bucket_range(index)
                value = (low + high) // 2
                out[ranks[j][1]] = min(max(value, self.min), self.max)
                j += 1
            if j == len(ranks):
                break
        return out

    def percentile(self, p: float) -> int:
        return self.percentiles([p])[0]
