"""Tombstone reaping: remove a deleted key for good once no copy anywhere can bring it back.

A tombstone is the memory of a delete; drop it too early and a replica that missed the
delete (down, partitioned, or holding a stale fallback copy or hint) hands the old value
back and it lives again — the zombie. So a tombstone-only state S of a key is reaped only
when all of these hold:

- the grace period has passed since the newest tombstone of S was written (its hybrid
  clock timestamp), so no message from before the delete can still be on its way;
- every member of the cluster is up and answers a check for S: no member holds a hint for
  the key or is handing its copy back (a push in flight could land after the reap); a
  primary replica holds exactly S, unchanged for two request timeouts (so a push from a
  replica that held the old value a moment ago has landed); any other member holds no copy
  that S does not cover, and deletes a covered one (an old fallback copy, or one left
  behind by ownership transfer) right there, while the asking primary holds S;
- no ownership transfer is under way and the members agree on the ring epoch.

Then every member deletes its copy if S covers it (compare-and-delete: a write that came
in after the check is never removed). A primary that misses the commit keeps S, which
anti-entropy spreads back and a later round reaps again: harmless; the other members
already hold nothing that could bring the value back. Removed members are not asked; the
members refuse their replica writes should they come back on an old disk.

One primary per partition (the first of its preference list) drives the sweep, a bounded
batch of stored records per tick, so the scan of a large store is spread out and costs
little. The same sweep finds records whose every value has expired (a TTL; expiry.py) by
their first byte (record_v1.EXPIRY_HEADER; a v2 record by its metadata) and hands them to
the node in `expired`, which deletes each with its own context: a normal delete, whose
tombstone is then reaped as above.

Pure: time is the `now` passed in; storage through synchronous engine and store calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from dynakv import expiry, versions
from dynakv.config import validate_location
from dynakv.core.admission import BackgroundBudget
from dynakv.core.bugs import InjectedBugs
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer
from dynakv.core.handoff import HintStore
from dynakv.core.replica import (
    VIEW_FROM,
    CorruptRecord,
    ReplicaStore,
    may_be_tombstones,
    record_expiry,
    unseal,
)
from dynakv.core.values_apart import is_v2, stored_clock
from dynakv.errors import InvalidRequest
from dynakv.item_keys import storage_key
from dynakv.messages import Message, ReapCheck, ReapCheckReply, ReapCommit
from dynakv.ring import partition_range
from dynakv.storage.engine import Engine
from dynakv.versions import Clock, HybridClock

Item = tuple[str, str, bytes]  # (bucket, key, encoded tombstone state)

ROUND_ITEMS = 256  # tombstones checked in one round
# The first bytes of a tombstone sibling in msgpack (an array of 4: empty value, deleted).
# A record without them holds no tombstone, so the sweep skips decoding it: most records
# are live values, and decoding each one made a sweep of 512 take ~10 ms of the loop.
_TOMBSTONE_MARK = versions.encode(versions.Sibling(b"", deleted=True))[:4]
# The same, as written before siblings had an expiry (an array of 4: 0x94, not 0x95).
_OLD_TOMBSTONE_MARK = bytes((0x94,)) + _TOMBSTONE_MARK[1:]


def may_hold_tombstone(raw: bytes) -> bool:
    """False only when these bytes (an encoded state, or a record holding one) cannot hold
    only tombstones. A small one is searched for a tombstone's bytes (tombstones have empty
    values); a large one is not searched (a megabyte value took the sweep ~50 µs a record,
    6% of a node's CPU under 1 MiB writes) but read through views (replica.py). A record
    with a value stored apart holds a live value (tombstones are empty: never apart)."""
    if is_v2(raw):
        return False
    if len(raw) >= VIEW_FROM:
        return may_be_tombstones(raw)
    return _TOMBSTONE_MARK in raw or _OLD_TOMBSTONE_MARK in raw


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
    items: list[Item]
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
class ReapStats:
    """The sweep's cursor and the counters an operator sees in /v1/status."""

    partition_index: int = 0  # position in the list of partitions this node drives
    after: bytes = b""  # the last digest scanned in the current partition
    scanned: int = 0
    reaped: int = 0  # tombstones this node deleted (as driver or member)
    rounds: int = 0
    refused: int = 0  # tombstones a round found not yet safe to reap
    expired: int = 0  # expired states found, each then deleted (a tombstone to reap)
    timed_out: int = 0  # rounds a member did not answer in time
    blocked: str = ""  # why the last tick did not sweep, for the operator

    def status(self) -> dict[str, object]:
        return {
            "scanned": self.scanned,
            "reaped": self.reaped,
            "rounds": self.rounds,
            "refused": self.refused,
            "expired": self.expired,
            "timed_out": self.timed_out,
            "blocked": self.blocked,
        }


class Reaper(Component):
    """Drives the sweep of the partitions this node is first replica of, asks every other
    member about the tombstones past their grace, and answers the other drivers' checks and
    commits."""

    def __init__(
        self,
        context: Context,
        store: ReplicaStore,
        engine: Engine,
        hints: HintStore,
        budget: BackgroundBudget,
        bugs: InjectedBugs,
        handing_back: Callable[[bytes], bool] = lambda digest: False,
    ) -> None:
        super().__init__(context)
        self.store = store
        self.engine = engine
        self.hints = hints
        # Whether this node is pushing its copy of a key to the key's primaries (handoff.py's
        # hand-back of surplus copies): that push must land before the tombstone may go.
        self.handing_back = handing_back
        self.budget = budget
        self.bugs = bugs
        self.stats = ReapStats()
        self.rounds: dict[int, ReapRound] = {}
        self._driven: tuple[object, list[int]] = (None, [])  # (ring, partitions I drive)
        # When each key last changed here, for the last `_settle` seconds (oldest first).
        # An OrderedDict: popping the oldest of a plain dict again and again is quadratic.
        self._changed: OrderedDict[bytes, float] = OrderedDict()
        self._settle = 2 * context.config.request_timeout
        # Expired states the sweep found, for the node to delete (Node._reap_tick).
        self.expired: list[Item] = []

    def changed(self, digest: bytes, now: float) -> None:
        """A write changed this node's copy of the key with this digest."""
        changed = self._changed
        changed[digest] = now
        changed.move_to_end(digest)  # ordered by time of the last change

    def _forget_settled(self, now: float) -> None:
        changed = self._changed
        horizon = now - self._settle
        while changed:
            when = next(iter(changed.values()))
            if when > horizon:
                break
            changed.popitem(last=False)

    def on_tick(self, now: float) -> list[Effect]:
        """Scan a bounded batch of this node's driven partitions for tombstones past their
        grace period, and ask every other member whether they may go."""
        effects: list[Effect] = [
            SetTimer("reap", now + self.budget.stretch(self.config.reap_interval))
        ]
        self._forget_settled(now)
        blocked = self._blocked()
        self.stats.blocked = blocked
        if blocked or self.rounds:
            return effects
        items = self._candidates(now)
        if not items:
            return effects
        peers = self.view.peers()
        if self.bugs.reap_unchecked or not peers:
            return effects + self._reap_everywhere(items)
        rid = self.ids.next()
        epoch = self.view.epoch
        self.rounds[rid] = ReapRound(epoch, items, set(peers), now + self.config.request_timeout)
        self.stats.rounds += 1
        check = ReapCheck(rid, epoch, items)
        effects.extend(Send(peer, check) for peer in peers)
        return effects

    def expire(self, now: float) -> None:
        for rid, reap in list(self.rounds.items()):
            if reap.deadline <= now:
                del self.rounds[rid]
                self.stats.timed_out += 1

    def _blocked(self) -> str:
        """Why no tombstone may be reaped now ("" when the sweep may run)."""
        view = self.view
        if view.epoch == 0:
            return "not joined"
        if view.stopping:
            return "stopping"
        if view.state.ring.next is not None:
            return "ownership transfer under way"
        if self.bugs.reap_unchecked:
            return ""
        down = [peer for peer in view.peers() if peer in view.down]
        if down:
            return f"members down: {', '.join(down)}"
        return ""

    def _candidates(self, now: float) -> list[Item]:
        """Tombstone-only states older than the grace period, from the next stretch of the
        partitions this node drives (those it is the first replica of)."""
        view = self.view
        ring = view.state.ring.ring
        if self._driven[0] is not ring:  # computed again only when the ring changes
            driven = [p for p in range(ring.size) if view.replicas(p)[0] == view.name]
            self._driven = (ring, driven)
        driven = self._driven[1]
        if not driven:
            return []
        sweep = self.stats
        grace = self.config.tombstone_grace
        budget = self.config.reap_scan
        items: list[Item] = []
        for _ in range(len(driven) + 1):
            if sweep.partition_index >= len(driven):
                sweep.partition_index = 0
                sweep.after = b""
            start, end = partition_range(driven[sweep.partition_index], ring.size)
            finished = True
            for digest, raw in self.engine.scan(sweep.after or start, end):
                if digest == sweep.after:
                    continue
                sweep.after = digest
                sweep.scanned += 1
                budget -= 1
                expires = record_expiry(raw)
                if expires:
                    self._note_expired(raw, expires, now)
                elif may_hold_tombstone(raw):
                    try:
                        bucket, key, state = unseal(raw)
                        age = tombstone_age(versions.decode(state), now)
                    except (CorruptRecord, InvalidRequest):
                        age = None  # anti-entropy and read repair mend it
                    if age is not None and age >= grace:
                        items.append((bucket, key, state))
                if budget <= 0 or len(items) >= ROUND_ITEMS:
                    finished = False
                    break
            if not finished:
                break
            sweep.partition_index += 1
            sweep.after = b""
        return items

    def _note_expired(self, raw: bytes, expires: int, now: float) -> None:
        """Queue a record whose every value has expired by now for deletion, unless it
        changed lately (a write on its way may yet be merged: the next pass sees it)."""
        if expires > expiry.now_ms(now) or len(self.expired) >= ROUND_ITEMS:
            return
        try:
            bucket, key, clock = stored_clock(raw)  # of either format: values apart unread
        except (CorruptRecord, InvalidRequest):
            return  # anti-entropy and read repair mend it
        if expiry.visible(clock, now) or storage_key(bucket, key) in self._changed:
            return
        self.expired.append((bucket, key, versions.encode(clock)))
        self.stats.expired += 1

    def on_check(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCheck)
        agreed = msg.epoch == self.view.epoch and self.view.state.ring.next is None
        ok = [
            agreed and self._may_reap(now, bucket, key, state, clean=True)
            for bucket, key, state in msg.items
        ]
        return [Send(source, ReapCheckReply(msg.rid, ok))]

    def _may_reap(self, now: float, bucket: str, key: str, state: bytes, clean: bool) -> bool:
        """This node's part of the check: no hint held for the key; a primary holds exactly
        the tombstone state, unchanged for a while; any other node holds nothing the
        tombstone does not cover. With `clean`, such a node deletes its covered copy at once
        (the asking primary holds the tombstone), so that a lost ReapCommit can never leave
        an old fallback copy behind to serve once the primaries have reaped."""
        try:
            validate_location(bucket, key)
            tombstone = versions.decode(state)
            local = self.store.get(bucket, key, strict=True)
        except (InvalidRequest, CorruptRecord):
            return False
        if tombstone_age(tombstone, now) is None:
            return False
        digest = storage_key(bucket, key)
        if self.hints.holding(digest) or self.handing_back(digest):
            return False
        ring = self.view.ring
        props = self.view.bucket(bucket)
        n = 0 if props.datacenters else props.n  # a type's own lists, else n along the walk
        primaries = ring.replicas(ring.partition(bucket, key), n, props.datacenters)
        if self.view.name in primaries:
            # Settled: a copy that changed lately may have been pushed on from a replica
            # that still held the old value a moment ago; let such messages land first.
            changed = self._changed.get(digest)
            settled = changed is None or now - changed >= self._settle
            return settled and local == tombstone
        if local is None:
            return True
        if not covers(tombstone, local):
            return False
        if clean:
            self.store.delete(bucket, key, local)
        return True

    def on_check_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCheckReply)
        round_ = self.rounds.get(msg.rid)
        if round_ is None or not round_.answer(source, msg.ok):
            return []
        del self.rounds[msg.rid]
        agreed = [item for item, ok in zip(round_.items, round_.ok, strict=True) if ok]
        if round_.epoch != self.view.epoch or self._blocked():
            agreed = []
        agreed = [item for item in agreed if self._may_reap(now, *item, clean=False)]
        self.stats.refused += len(round_.items) - len(agreed)
        return self._reap_everywhere(agreed) if agreed else []

    def _reap_everywhere(self, items: list[Item]) -> list[Effect]:
        self._reap_locally(items)
        self.logs.append(Log("info", "tombstones_reaped", {"keys": len(items)}))
        commit = ReapCommit(self.view.epoch, items)
        return [Send(peer, commit) for peer in self.view.peers()]

    def on_commit(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCommit)
        self._reap_locally(msg.items)  # compare-and-delete: safe whatever the epoch by now
        return []

    def _reap_locally(self, items: list[Item]) -> None:
        """Delete each key's copy if the tombstone state covers it (compare-and-delete)."""
        for bucket, key, state in items:
            try:
                validate_location(bucket, key)
                tombstone = versions.decode(state)
                local = self.store.get(bucket, key, strict=True)
            except (InvalidRequest, CorruptRecord):
                continue
            if local is None or not covers(tombstone, local):
                continue
            self.store.delete(bucket, key, local)
            for hint in self.hints.holding(storage_key(bucket, key)):
                self.hints.remove(hint)
            self.stats.reaped += 1

    def status(self) -> dict[str, object]:
        return self.stats.status()
