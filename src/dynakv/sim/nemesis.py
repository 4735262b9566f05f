"""The nemesis: injects partitions, crashes, restarts and disk wipes into a SimCluster.

Every `nemesis_interval` of the fault window it may start a partition (when none is active),
may crash a node and may crash a whole data center (when none is down), each with its
SimOptions probability; partitions heal and crashed nodes restart after a drawn time.
`stop()` ends every fault: heals the network, calms it (no more loss, duplication,
reordering) and restarts every stopped node on its own disk.
"""

from __future__ import annotations

import random

from dynakv.sim.cluster import SimCluster
from dynakv.sim.network import partition_links
from dynakv.sim.options import SimOptions


class Nemesis:
    def __init__(
        self, cluster: SimCluster, options: SimOptions, rng: random.Random, end: float
    ) -> None:
        self.cluster = cluster
        self.options = options
        self.rng = rng
        self.end = end
        names = sorted(cluster.names)
        # The data center whose crashes may wipe it, and then the wipe victim is one of its
        # nodes: every other site keeps its copies of what each_quorum acknowledged.
        self.victim_site: str | None = None
        if options.datacenter_wipe_probability:
            self.victim_site = rng.choice(sorted(set(cluster.datacenters.values())))
            names = [n for n in names if cluster.datacenters[n] == self.victim_site]
        self.victim = rng.choice(names) if options.wipe_probability else None
        self.crashed: list[str] = []
        self.site_down: list[str] = []  # the nodes of the data center crashed, if one is
        self.partitioned = False
        self.stopped = False
        self.partitions = 0
        self.crashes = 0
        self.sites_wiped = 0
        self._partition_token = 0
        cluster.call_at(cluster.now + options.nemesis_interval, self._tick)

    def _tick(self) -> None:
        if self.stopped or self.cluster.now >= self.end:
            return
        o = self.options
        rng = self.rng
        # Draw first, then look at the state: the draws per tick stay the same either way.
        partition = bool(o.partition_probability) and rng.random() < o.partition_probability
        if partition and not self.partitioned:
            self._partition()
        crash = bool(o.crash_probability) and rng.random() < o.crash_probability
        if crash and len(self.crashed) < o.max_crashed:
            self._crash()
        if o.datacenter_crash_probability:
            site = rng.random() < o.datacenter_crash_probability
            if site and not self.site_down:
                self._crash_datacenter()
        self.cluster.call_at(self.cluster.now + o.nemesis_interval, self._tick)

    def _partition(self) -> None:
        o = self.options
        mode = self.rng.choice(o.partition_modes)
        description, cut = partition_links(
            mode, self.cluster.names, self.rng, self.cluster.datacenters
        )
        self.cluster.partition(cut, description)
        self.partitioned = True
        self.partitions += 1
        self._partition_token += 1
        token = self._partition_token
        duration = self.rng.uniform(o.partition_min, o.partition_max)
        self.cluster.call_at(self.cluster.now + duration, lambda: self._heal(token))

    def _heal(self, token: int) -> None:
        if self.partitioned and token == self._partition_token:
            self.cluster.heal()
            self.partitioned = False

    def _crash(self) -> None:
        o = self.options
        up = sorted(self.cluster.up)
        if not up:
            return
        victim = self.victim
        if victim in up and o.victim_crash_share and self.rng.random() < o.victim_crash_share:
            name = victim
        else:
            name = self.rng.choice(up)
        self.cluster.crash(name)
        self.crashed.append(name)
        self.crashes += 1
        wipe = name == victim and self.rng.random() < o.wipe_probability
        downtime = self.rng.uniform(o.crash_min, o.crash_max)
        self.cluster.call_at(self.cluster.now + downtime, lambda: self._restart(name, wipe))

    def _crash_datacenter(self) -> None:
        """Every up node of one data center stops at once; they come back together."""
        cluster = self.cluster
        site = self.rng.choice(sorted(set(cluster.datacenters.values())))
        victims = sorted(n for n in cluster.up if cluster.datacenters[n] == site)
        downtime = self.rng.uniform(self.options.crash_min, self.options.dc_crash_max)
        if not victims:
            return
        wipe = False
        if site == self.victim_site:
            wipe = self.rng.random() < self.options.datacenter_wipe_probability
        cluster.note(f"datacenter {site} down {victims}")
        for name in victims:
            cluster.crash(name)
        self.site_down = victims
        self.crashes += len(victims)
        cluster.call_at(cluster.now + downtime, lambda: self._restart_datacenter(wipe))

    def _restart_datacenter(self, wipe: bool = False) -> None:
        if wipe and self.site_down:
            self.cluster.note(f"datacenter {self.cluster.datacenters[self.site_down[0]]} wiped")
            self.sites_wiped += 1
        for name in self.site_down:
            self.cluster.restart(name, wipe=wipe)
        self.site_down = []

    def _restart(self, name: str, wipe: bool) -> None:
        if name in self.crashed:
            self.crashed.remove(name)
            self.cluster.restart(name, wipe=wipe)

    def stop(self) -> None:
        """End every fault: heal, calm the network, restart stopped nodes (no wipe)."""
        self.stopped = True
        self.cluster.heal()
        self.partitioned = False
        self.cluster.network.calm = True
        for name in sorted(self.crashed):
            self.cluster.restart(name)
        self.crashed.clear()
        self._restart_datacenter()
