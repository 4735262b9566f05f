"""YCSB's key choice and core workloads for `dynakv bench`: the scrambled zipfian (constant
0.99), uniform keys, and the operation mixes A, B, C, E, F and W."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

# --- key choice ---------------------------------------------------------------------------

ZIPFIAN_CONSTANT = 0.99
# YCSB's ScrambledZipfianGenerator draws from a zipfian over 10^10 items (whose zeta is
# precomputed) and hashes the draw into the record range, so the hot keys are scattered.
SCRAMBLED_ITEM_COUNT = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302
FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 0x100000001B3
MASK_64 = (1 << 64) - 1


def zeta(n: int, theta: float) -> float:
    """sum_{i=1..n} 1 / i^theta."""
    return math.fsum(i**-theta for i in range(1, n + 1))


def fnv1_64(value: int) -> int:
    """YCSB's `Utils.fnvhash64`: FNV-1 over the 8 low bytes, as a non-negative Java long."""
    # Unrolled (it runs once per zipfian draw): h = (h ^ byte) * prime, low byte first.
    p, m = FNV_PRIME_64, MASK_64
    h = ((FNV_OFFSET_BASIS_64 ^ (value & 0xFF)) * p) & m
    h = ((h ^ ((value >> 8) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 16) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 24) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 32) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 40) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 48) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 56) & 0xFF)) * p) & m
    if h >= 1 << 63:  # Math.abs of the signed long
        h = (1 << 64) - h
    return h


class ZipfianGenerator:
    """Items 0..items-1, item 0 the most popular (Gray et al., SIGMOD 1994; as in YCSB)."""

    def __init__(
        self,
        items: int,
        rng: random.Random,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if items < 1:
            raise ValueError("a zipfian needs at least one item")
        self.items = items
        self.theta = theta
        self.zetan = zeta(items, theta) if zetan is None else zetan
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = zeta(2, theta)
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan)
        self.second = 1.0 + 0.5**theta
        self._random = rng.random

    def next(self) -> int:
        u = self._random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.second:
            return 1
        eta = self.eta
        return min(self.items - 1, int(self.items * (eta * u - eta + 1) ** self.alpha))


SCRAMBLED_HEAD = 1 << 16  # draws below this (46% of them) have their key in a table


class ScrambledZipfian:
    """YCSB's ScrambledZipfianGenerator over [0, items): zipfian popularity, hashed placement."""

    next: Callable[[], int]  # a closure made per instance in __init__

    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self._zipf = zipf = ZipfianGenerator(SCRAMBLED_ITEM_COUNT, rng, zetan=SCRAMBLED_ZETAN)
        # `next` runs once per operation: ZipfianGenerator.next inlined with its constants in
        # locals, and the hash of the most popular draws looked up rather than computed.
        head = [fnv1_64(z) % items for z in range(SCRAMBLED_HEAD)]
        draw, zetan, second = zipf._random, zipf.zetan, zipf.second
        eta, alpha, count, top = zipf.eta, zipf.alpha, zipf.items, zipf.items - 1
        first, runner_up = head[0], head[1]

        def next() -> int:
            u = draw()
            uz = u * zetan
            if uz < 1.0:
                return first
            if uz < second:
                return runner_up
            z = min(top, int(count * (eta * u - eta + 1) ** alpha))
            return head[z] if z < SCRAMBLED_HEAD else fnv1_64(z) % items

        self.next = next


class Uniform:
    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self._randrange = rng.randrange

    def next(self) -> int:
        return self._randrange(self.items)


DISTRIBUTIONS: dict[str, type[ScrambledZipfian] | type[Uniform]] = {
    "zipfian": ScrambledZipfian,
    "uniform": Uniform,
}

# --- workloads ----------------------------------------------------------------------------

READ, UPDATE, RMW, INSERT, SCAN = "read", "update", "rmw", "insert", "scan"
# YCSB's workload E: scans of a length drawn uniformly from 1..maxscanlength (100).
MAX_SCAN_LENGTH = 100


@dataclass(frozen=True)
class Workload:
    name: str
    read: float = 0.0
    update: float = 0.0
    rmw: float = 0.0
    scan: float = 0.0  # with `insert`, the rest after the scans (E's mix)
    insert: float = 0.0

    def choose(self, u: float) -> str:
        """The operation for a uniform draw u in [0, 1)."""
        if u < self.read:
            return READ
        if u < self.read + self.update:
            return UPDATE
        if self.scan:
            return SCAN if u < self.read + self.update + self.scan else INSERT
        return RMW if self.rmw else UPDATE


WORKLOADS = {
    "a": Workload("A", read=0.5, update=0.5),
    "b": Workload("B", read=0.95, update=0.05),
    "c": Workload("C", read=1.0),
    # Short ranges: YCSB's E, 95% scans, 5% inserts of new records (bench_query.py).
    "e": Workload("E", scan=0.95, insert=0.05),
    "f": Workload("F", read=0.5, rmw=0.5),
    "w": Workload("W", update=1.0),
}
