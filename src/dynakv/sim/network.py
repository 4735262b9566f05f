"""The simulated network: seeded delays, loss, duplication, reordering and partitions.

It decides the fate of each message (when its copies arrive, if ever); the cluster delivers
them. Every choice comes from the injected `random.Random`; sets are sorted before any
choice, so a seed gives the same run in every process whatever PYTHONHASHSEED is.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from dynakv.sim.options import PartitionMode, SimOptions

Link = tuple[str, str]  # (from, to): a direction


class Network:
    """Delays and faults between named endpoints; client endpoints ("#...") only get delays."""

    def __init__(
        self,
        options: SimOptions,
        rng: random.Random,
        datacenters: dict[str, str] | None = None,
    ) -> None:
        self.options = options
        self.rng = rng
        self.datacenters = datacenters or {}  # node name -> its data center (clients: none)
        self.cut: set[Link] = set()  # directed links that silently drop every message
        self.calm = False  # faults stopped: delays only, no loss, duplication or reordering

    def delay(self, source: str = "", target: str = "") -> float:
        """One message's delay: a WAN's between two data centers, else a LAN's."""
        o = self.options
        if self.datacenters:
            here, there = self.datacenters.get(source), self.datacenters.get(target)
            if here is not None and there is not None and here != there:
                return self.rng.uniform(o.inter_dc_delay_min, o.inter_dc_delay_max)
        if o.delay_distribution == "exponential" and o.delay_mean > o.delay_min:
            extra = self.rng.expovariate(1.0 / (o.delay_mean - o.delay_min))
            return min(o.delay_min + extra, o.delay_max)
        return self.rng.uniform(o.delay_min, o.delay_max)

    def fates(self, source: str, target: str) -> list[float]:
        """The delays after which copies of one message arrive: [] lost, two duplicated."""
        if source.startswith("#") or target.startswith("#"):
            return [self.delay()]
        if (source, target) in self.cut:
            return []
        if self.calm:
            return [self.delay(source, target)]
        o = self.options
        rng = self.rng
        if o.drop_probability and rng.random() < o.drop_probability:
            return []
        copies = 2 if o.duplicate_probability and rng.random() < o.duplicate_probability else 1
        delays = []
        for _ in range(copies):
            delay = self.delay(source, target)
            if o.reorder_probability and rng.random() < o.reorder_probability:
                delay += rng.uniform(0.0, o.reorder_delay)
            delays.append(delay)
        return delays

    def partition(self, cut: set[Link]) -> None:
        self.cut = set(cut)

    def heal(self) -> None:
        self.cut.clear()


def partition_links(
    mode: PartitionMode,
    names: Sequence[str],
    rng: random.Random,
    datacenters: dict[str, str] | None = None,
) -> tuple[str, set[Link]]:
    """A partition of `names` in the given mode: (a description for the trace, its cut links).
    `datacenters` (name -> data center) is needed by the "datacenter" mode only."""
    nodes = sorted(names)
    rng.shuffle(nodes)
    if mode == "datacenter":
        places = datacenters or {}
        site = rng.choice(sorted({places.get(name, "dc1") for name in nodes}))
        inside = sorted(n for n in nodes if places.get(n, "dc1") == site)
        outside = sorted(n for n in nodes if places.get(n, "dc1") != site)
        return f"datacenter {site} {inside} | {outside}", _between(inside, outside) | _between(
            outside, inside
        )
    if mode == "isolate":
        alone, rest = nodes[:1], nodes[1:]
        return f"isolate {alone[0]}", _between(alone, rest) | _between(rest, alone)
    if mode == "halves":
        half = len(nodes) // 2
        a, b = sorted(nodes[:half]), sorted(nodes[half:])
        return f"halves {a} | {b}", _between(a, b) | _between(b, a)
    if mode == "bridge":
        bridge, rest = nodes[0], nodes[1:]
        half = len(rest) // 2
        a, b = sorted(rest[:half]), sorted(rest[half:])
        return f"bridge {a} | {bridge} | {b}", _between(a, b) | _between(b, a)
    if mode == "one_way":
        size = rng.randint(1, len(nodes) - 1)
        a, b = sorted(nodes[:size]), sorted(nodes[size:])
        return f"one-way {a} -/-> {b}", _between(a, b)
    if mode == "links":
        cut: set[Link] = set()
        pairs = [(x, y) for i, x in enumerate(sorted(nodes)) for y in sorted(nodes)[i + 1 :]]
        chosen = [pair for pair in pairs if rng.random() < 0.3] or [rng.choice(pairs)]
        for x, y in chosen:
            cut |= {(x, y), (y, x)}
        shown = " ".join(f"{x}-{y}" for x, y in chosen)
        return f"links cut {shown}", cut
    raise ValueError(f"unknown partition mode {mode!r}")


def _between(sources: Sequence[str], targets: Sequence[str]) -> set[Link]:
    return {(s, t) for s in sources for t in targets}
