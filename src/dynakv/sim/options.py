"""Every fault the simulator can inject, as named fields of one frozen dataclass.

TigerBeetle style: the whole fault space is visible here, and a seed plus these options fix
a run completely. Pure data: no randomness is drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

DelayDistribution = Literal["uniform", "exponential"]
PartitionMode = Literal["isolate", "halves", "bridge", "one_way", "links", "datacenter"]

PARTITION_MODES: tuple[PartitionMode, ...] = ("isolate", "halves", "bridge", "one_way", "links")
# With several data centers `run` adds "datacenter" (one data center cut from the rest).
ALL_PARTITION_MODES: tuple[PartitionMode, ...] = (*PARTITION_MODES, "datacenter")
FAULTS = ("partition", "crash", "wipe", "loss", "skew")


@dataclass(frozen=True)
class SimOptions:
    """Fault knobs and fault timing of one simulated run (all off by default).

    Times are virtual seconds. Network faults apply to node-to-node messages; clients talk
    to their coordinator over a link that only delays (as Jepsen's clients do), but a request
    that reaches a stopped node is refused.
    """

    # --- the network: one-way delay of every message ---------------------------------------
    delay_distribution: DelayDistribution = "uniform"  # uniform in [min, max] | exponential
    delay_min: float = 0.0005
    delay_mean: float = 0.00125  # exponential: min + Exp(mean - min), capped at delay_max
    delay_max: float = 0.002
    # Between two nodes in different data centers the delay is uniform in this range instead
    # (a WAN link: tens of milliseconds; the intra-data-center figures above are a LAN's).
    inter_dc_delay_min: float = 0.030
    inter_dc_delay_max: float = 0.080
    # --- message faults (node to node) ------------------------------------------------------
    drop_probability: float = 0.0  # a message is silently lost
    duplicate_probability: float = 0.0  # a message arrives twice (independent delays)
    reorder_probability: float = 0.0  # a message is held back so later ones overtake it
    reorder_delay: float = 0.05  # ... by up to this much extra delay
    # --- partitions ---------------------------------------------------------------------------
    # Each nemesis tick without a partition starts one with this probability. Modes:
    # isolate (one node from the rest), halves (two sides), bridge (two sides and one node
    # that sees both), one_way (a side can send to the other but not hear back), links
    # (random node pairs cut both ways), datacenter (one data center from the others: only
    # with several data centers).
    partition_probability: float = 0.0
    partition_modes: tuple[PartitionMode, ...] = PARTITION_MODES
    partition_min: float = 0.5
    partition_max: float = 6.0
    # --- crashes ------------------------------------------------------------------------------
    # Each tick crashes an up node with this probability (while fewer than max_crashed are
    # down); it restarts after crash_min..crash_max, having lost what it had not committed.
    crash_probability: float = 0.0
    max_crashed: int = 1
    crash_min: float = 0.2
    crash_max: float = 4.0
    # A restart of the run's wipe victim (one node, drawn at the start) comes back with an
    # empty disk and a new incarnation with this probability. One victim only: every
    # acknowledged write is on W >= 2 replicas, so at most one of its copies can be wiped.
    wipe_probability: float = 0.0
    victim_crash_share: float = 0.0  # share of crashes aimed at the wipe victim
    # Each tick without one crashes every node of one data center with this probability
    # (a power or network loss of a site); they restart after crash_min..dc_crash_max, on
    # their own disks (a wiped data center could lose writes acknowledged by its quorum).
    datacenter_crash_probability: float = 0.0
    dc_crash_max: float = 6.0
    # A crash of the run's victim data center (one, drawn at the start) comes back with every
    # node of it on an empty disk with this probability. Only for runs whose writes wait for
    # a quorum in every data center (each_quorum): what a single site's quorum acknowledged is
    # lost with it. The single-node wipe victim is then drawn from that data center too, so
    # the other sites' copies of every acknowledged write are never wiped.
    datacenter_wipe_probability: float = 0.0
    # --- durability ---------------------------------------------------------------------------
    # 0: commit after every handled event, before its effects leave. > 0: the runtime's
    # pipelined group commit: peer requests leave at once, acknowledgements and replies to
    # clients wait for a commit this much later; a crash in between loses the writes.
    commit_delay: float = 0.0
    # --- clocks -------------------------------------------------------------------------------
    # Each node's clock runs ahead of virtual time by a skew drawn from [0, clock_skew_max]
    # at start and at every restart (so a restart can move a clock backwards).
    clock_skew_max: float = 0.0
    # --- schedule -----------------------------------------------------------------------------
    nemesis_interval: float = 0.5  # how often the nemesis considers a new fault

    def __post_init__(self) -> None:
        for name in (
            "drop_probability",
            "duplicate_probability",
            "reorder_probability",
            "partition_probability",
            "crash_probability",
            "wipe_probability",
            "victim_crash_share",
            "datacenter_crash_probability",
            "datacenter_wipe_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.delay_min <= self.delay_mean <= self.delay_max:
            raise ValueError("need 0 <= delay_min <= delay_mean <= delay_max")
        if not 0.0 <= self.inter_dc_delay_min <= self.inter_dc_delay_max:
            raise ValueError("need 0 <= inter_dc_delay_min <= inter_dc_delay_max")
        if self.delay_distribution not in ("uniform", "exponential"):
            raise ValueError(f"unknown delay distribution {self.delay_distribution!r}")
        unknown = set(self.partition_modes) - set(ALL_PARTITION_MODES)
        if unknown:
            raise ValueError(f"unknown partition modes {sorted(unknown)}")
        if min(self.max_crashed, self.clock_skew_max, self.commit_delay) < 0:
            raise ValueError("max_crashed, clock_skew_max and commit_delay must be >= 0")
        if self.nemesis_interval <= 0:
            raise ValueError("nemesis_interval must be > 0")

    def with_faults(self, faults: str | set[str] | frozenset[str] | tuple[str, ...]) -> SimOptions:
        """These options with the named fault groups switched on (see `FAULTS`; "all")."""
        names = set(parse_faults(faults) if isinstance(faults, str) else faults)
        changes: dict[str, object] = {}
        if "loss" in names:
            changes.update(
                delay_distribution="exponential",
                delay_mean=0.003,
                delay_max=0.2,
                drop_probability=0.02,
                duplicate_probability=0.02,
                reorder_probability=0.05,
            )
        if "partition" in names:
            changes.update(partition_probability=0.15)
        if "crash" in names or "wipe" in names:
            changes.update(crash_probability=0.1, max_crashed=2, commit_delay=0.003)
        if "wipe" in names:
            changes.update(wipe_probability=0.5, victim_crash_share=0.5)
        if "skew" in names:
            changes.update(clock_skew_max=2.0)
        return replace(self, **changes)

    def with_datacenters(self, count: int, wipe_sites: bool = False) -> SimOptions:
        """With several data centers, the faults switched on also strike whole ones: the
        partitions may cut a data center off, and the crashes may take one down — and, with
        `wipe_sites` (writes at each_quorum) and wipes on, bring it back wiped."""
        if count < 2:
            return self
        changes: dict[str, object] = {}
        if self.partition_probability and "datacenter" not in self.partition_modes:
            changes["partition_modes"] = (*self.partition_modes, "datacenter")
        if self.crash_probability and not self.datacenter_crash_probability:
            changes["datacenter_crash_probability"] = 0.04
        if wipe_sites and self.wipe_probability and not self.datacenter_wipe_probability:
            changes["datacenter_wipe_probability"] = 0.5
        return replace(self, **changes)


def parse_faults(text: str) -> frozenset[str]:
    """ "partition,crash,loss" -> that set; "all" -> every fault group; "" or "none" -> none."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    if names <= {"none"}:
        return frozenset()
    if "all" in names:
        names = (names - {"all"}) | set(FAULTS)
    unknown = names - set(FAULTS)
    if unknown:
        raise ValueError(
            f"unknown faults {', '.join(sorted(unknown))}; choose from {', '.join(FAULTS)}, all"
        )
    return frozenset(names)
