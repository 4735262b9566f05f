"""Quorum bookkeeping for one read or one write: pure values fed replica answers.

Modelled on riak_kv_get_core: `add`/`fail` record answers, `enough` says whether the client
can be answered, `outcome` gives the answer, `stale` names replicas that need read repair.
No I/O, no clock: the node decides when time is up.

A quorum counts answers from anywhere (`r`, `w`) and, for the levels that name data centers
(levels.py), also per data center (`by_dc`, with `dc_of` saying where each replica is;
a fallback that stands in for a replica counts in that replica's data center).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from dynakv import versions
from dynakv.errors import Unavailable
from dynakv.levels import shortfall
from dynakv.versions import Clock

ByDc = tuple[tuple[str, int], ...]

_UNMERGED = object()


@dataclass(slots=True)
class GetQuorum:
    """One read: which of the N replicas answered, and with what state."""

    replicas: list[str]
    r: int
    lww: bool = False
    replies: dict[str, Clock | None] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    # merged() of the replies so far, or _UNMERGED: answer, staleness and read repair
    # each ask for it, and a merge of siblings is the costly part of a read.
    _merged: object = field(default=_UNMERGED, repr=False, compare=False)
    # (encoding, state) of the answers that came with their encoding: replicas in step send
    # the same bytes, and an answer found here needs neither decoding nor merging. A list,
    # not a dict: comparing a few kilobytes costs less than hashing them.
    _encoded: list[tuple[bytes, Clock]] = field(default_factory=list, repr=False, compare=False)
    by_dc: ByDc = ()  # (data center, answers needed there), for levels that name them
    dc_of: dict[str, str] = field(default_factory=dict)  # replica -> its data center

    def add(self, node: str, state: Clock | None, encoded: bytes | None = None) -> None:
        """Record `node`'s answer; `encoded` is the state's encoding, when the caller has it."""
        if node in self.replicas and node not in self.failed:
            self.replies[node] = state
            self._merged = _UNMERGED
            if encoded is not None and state is not None:
                self._encoded.append((encoded, state))

    def known(self, encoded: bytes) -> Clock | None:
        """The state of an answer already in whose encoding is `encoded`, if any: the same
        object, so merging it with itself costs nothing."""
        for seen, state in self._encoded:
            if seen == encoded:
                return state
        return None

    def fail(self, node: str) -> None:
        if node in self.replicas and node not in self.replies:
            self.failed.add(node)

    def waiting_on(self, node: str) -> bool:
        return node in self.replicas and node not in self.replies and node not in self.failed

    def replace(self, node: str, substitute: str) -> None:
        """Ask `substitute` instead of `node`, which is down (sloppy quorum)."""
        if self.waiting_on(node) and substitute not in self.replicas:
            self.replicas[self.replicas.index(node)] = substitute
            if self.dc_of:
                self.dc_of[substitute] = self.dc_of.get(node, "")

    def enough(self) -> bool:
        """R answers arrived, or R never can and no replica asked is still to answer."""
        if self.by_dc:
            return _settled(self.by_dc, self.dc_of, self.replicas, self.replies, self.failed)
        # When R has become impossible, the replicas still asked (believed up) answer within
        # ms: waiting for them makes the error count every replica that answered, rather
        # than "needed 3, got 1" with two up.
        return len(self.replies) >= self.r or self.remaining() == 0

    def remaining(self) -> int:
        return len(self.replicas) - len(self.replies) - len(self.failed)

    def complete(self) -> bool:
        return self.remaining() == 0

    def merged(self) -> Clock | None:
        if self._merged is not _UNMERGED:
            return self._merged  # type: ignore[return-value]
        states = [s for s in self.replies.values() if s is not None]
        if not states:
            merged = None
        else:
            first = states[0]
            # The same object from every replica in step (see known()): nothing to merge.
            same = all(s is first for s in states)
            merged = first if same else versions.sync_all(states)
            if self.lww:
                merged = versions.lww(merged)
        self._merged = merged
        return merged

    def outcome(self) -> Clock | None:
        """The merged state for the client; raises Unavailable when fewer than R answered."""
        error = missing(self.r, self.by_dc, self.dc_of, self.replies)
        if error is not None:
            raise error
        return self.merged()

    def error(self) -> Unavailable:
        """What is missing, for a read that ends without its answers."""
        error = missing(self.r, self.by_dc, self.dc_of, self.replies)
        return error or Unavailable(needed=self.r, got=len(self.replies))

    def stale(self) -> list[str]:
        """Replicas whose answer lacks something the merged state has (read repair targets)."""
        merged = self.merged()
        if merged is None:
            return []
        return [node for node, state in self.replies.items() if state != merged]


@dataclass(slots=True)
class PutQuorum:
    """One write: acknowledgements from the N replicas."""

    replicas: list[str]
    w: int
    acked: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    by_dc: ByDc = ()  # as GetQuorum's
    dc_of: dict[str, str] = field(default_factory=dict)

    def ack(self, node: str) -> None:
        if node in self.replicas and node not in self.failed:
            self.acked.add(node)

    def fail(self, node: str) -> None:
        if node in self.replicas and node not in self.acked:
            self.failed.add(node)

    def waiting_on(self, node: str) -> bool:
        return node in self.replicas and node not in self.acked and node not in self.failed

    def replace(self, node: str, substitute: str) -> None:
        """Write to `substitute` instead of `node`, which is down (sloppy quorum)."""
        if self.waiting_on(node) and substitute not in self.replicas:
            self.replicas[self.replicas.index(node)] = substitute
            if self.dc_of:
                self.dc_of[substitute] = self.dc_of.get(node, "")

    def enough(self) -> bool:
        if self.by_dc:
            return _settled(self.by_dc, self.dc_of, self.replicas, self.acked, self.failed)
        # As GetQuorum's: a W that has become impossible still waits for the replicas the
        # write was sent to, so the error counts every one that stored it.
        return len(self.acked) >= self.w or self.complete()

    def complete(self) -> bool:
        return len(self.acked) + len(self.failed) >= len(self.replicas)

    def succeeded(self) -> bool:
        return missing(self.w, self.by_dc, self.dc_of, self.acked) is None

    def error(self) -> Unavailable:
        error = missing(self.w, self.by_dc, self.dc_of, self.acked)
        return error or Unavailable(needed=self.w, got=len(self.acked))


def missing(
    count: int, by_dc: ByDc, dc_of: dict[str, str], answered: Collection[str]
) -> Unavailable | None:
    """What is missing, naming the data center when one is short (`needed 2 in dc2, got
    0`); None when nothing is."""
    if by_dc:
        short = shortfall(by_dc, list(answered), dc_of)
        if short:
            text = "; ".join(f"needed {needed} in {site}, got {got}" for site, needed, got in short)
            return Unavailable(text, needed=short[0][1], got=short[0][2])
    if len(answered) < count:
        return Unavailable(needed=count, got=len(answered))
    return None


def _settled(
    by_dc: ByDc,
    dc_of: dict[str, str],
    replicas: list[str],
    answered: Collection[str],
    failed: Collection[str],
) -> bool:
    """Per data center: every count met, or one that the replicas left can no longer meet."""
    met = True
    for site, count in by_dc:
        got = open_ = 0
        for node in replicas:
            if dc_of.get(node) != site:
                continue
            if node in answered:
                got += 1
            elif node not in failed:
                open_ += 1
        if got + open_ < count:
            return True
        if got < count:
            met = False
    return met
