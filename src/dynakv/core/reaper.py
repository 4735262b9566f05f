"""Tombstone reaping: remove a deleted key for good once no copy anywhere can bring it back.

A tombstone is the memory of a delete; drop it too early and a replica that missed the
delete (down, partitioned, or holding a stale fallback copy or hint) hands the old value
back and it lives again — the zombie. So a tombstone-only state S of a key is reaped only
when all of these hold:

- the grace period has passed since the newest tombstone of S was written (its hybrid
  clock timestamp), so no message from before the delete can still be on its way;
- every member of the cluster is up and answers a check for S: no member holds a hint for
  the key; a primary replica holds exactly S, unchanged for two request timeouts (so a
  push from a replica that held the old value a moment ago has landed); any other member
  holds no copy that S does not cover, and deletes a covered one (an old fallback copy, or
  one left behind by ownership transfer) right there, while the asking primary holds S;
- no ownership transfer is under way and the members agree on the ring epoch.

Then every member deletes its copy if S covers it (compare-and-delete: a write that came
in after the check is never removed). A primary that misses the commit keeps S, which
anti-entropy spreads back and a later round reaps again: harmless; the other members
already hold nothing that could bring the value back. Removed members are not asked; the
members refuse their replica writes should they come back on an old disk.

One primary per partition (the first of its preference list) drives the sweep, a bounded
batch of stored records per tick, so the scan of a large store is spread out and costs
little.

Pure bookkeeping: the node sends the messages and touches the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynakv import versions
from dynakv.versions import Clock, HybridClock

ROUND_ITEMS = 256  # tombstones checked in one round
# The first bytes of a tombstone sibling in msgpack (an array of 4: empty value, deleted).
# A record without them holds no tombstone, so the sweep skips decoding it: most records
# are live values, and decoding each one made a sweep of 512 take ~10 ms of the loop.
_TOMBSTONE_MARK = versions.encode(versions.Sibling(b"", deleted=True))[:4]


def may_hold_tombstone(raw: bytes) -> bool:
    """False only when these bytes (an encoded state, or a record holding one) cannot hold a
    tombstone written by this code (tombstones have empty values)."""
    return _TOMBSTONE_MARK in raw


def tombstone_age(clock: Clock, now: float) -> float | None:
    """Seconds since the newest tombstone of an all-tombstone state; None if any value lives."""
    if clock.anonymous:
        return None
    newest = -1
    for entry in clock.entries:
        for sibling in entry.values:
            if not sibling.deleted:
                return None
            if sibling.timestamp > newest:
                newest = sibling.timestamp
    if newest < 0:
        return None  # no values at all: nothing a tombstone would record
    return now - HybridClock.seconds(newest)


def covers(tombstone: Clock, local: Clock) -> bool:
    """True when deleting `local` loses nothing the tombstone state does not supersede."""
    return not local.anonymous and versions.descends(tombstone, local)


@dataclass
class ReapRound:
    """One check of a batch of tombstones with every other member."""

    epoch: int
    items: list[tuple[str, str, bytes]]  # (bucket, key, encoded tombstone state)
    waiting: set[str]
    deadline: float
    ok: list[bool] = field(default_factory=list)  # per item: every answer so far said yes

    def __post_init__(self) -> None:
        self.ok = [True] * len(self.items)

    def answer(self, member: str, oks: list[bool]) -> bool:
        """Record one member's answers; True when every member has answered."""
        if member not in self.waiting:
            return False
        self.waiting.discard(member)
        if len(oks) != len(self.items):
            oks = [False] * len(self.items)
        self.ok = [a and b for a, b in zip(self.ok, oks, strict=True)]
        return not self.waiting


@dataclass
class Reaper:
    """The sweep's cursor and the counters an operator sees in /v1/status."""

    partition_index: int = 0  # position in the list of partitions this node drives
    after: bytes = b""  # the last digest scanned in the current partition
    scanned: int = 0
    reaped: int = 0  # tombstones this node deleted (as driver or member)
    rounds: int = 0
    refused: int = 0  # tombstones a round found not yet safe to reap
    timed_out: int = 0  # rounds a member did not answer in time
    blocked: str = ""  # why the last tick did not sweep, for the operator

    def status(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "reaped": self.reaped,
            "rounds": self.rounds,
            "refused": self.refused,
            "timed_out": self.timed_out,
            "blocked": self.blocked,
        }
