"""Deliberate bugs the simulator's tests switch on to prove the checker catches them.

Off by default. They are a constructor argument of core.Node only: no config file, flag,
environment variable or message can turn one on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InjectedBugs:
    # The coordinator acknowledges a put at once and stores and replicates it later.
    ack_before_store: bool = False
    # Merging replica states keeps only one of several siblings.
    drop_sibling_on_merge: bool = False
    # Read repair replaces the stale replica's state instead of merging into it.
    read_repair_overwrites: bool = False
    # The actor id leaves out the incarnation, so a node that lost its disk reuses dots.
    reuse_dots_after_restart: bool = False

    # Tombstones are reaped once the grace period passes, without asking the other members.
    reap_unchecked: bool = False

    def any(self) -> bool:
        return any(vars(self).values())


NO_BUGS = InjectedBugs()
