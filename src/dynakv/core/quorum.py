"""Quorum bookkeeping for one read or one write: pure values fed replica answers.

Modelled on riak_kv_get_core: `add`/`fail` record answers, `enough` says whether the client
can be answered, `outcome` gives the answer, `stale` names replicas that need read repair.
No I/O, no clock: the node decides when time is up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynakv import versions
from dynakv.errors import Unavailable
from dynakv.versions import Clock

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

    def enough(self) -> bool:
        """R answers arrived, or so many replicas failed that R never can."""
        got = len(self.replies)
        return got >= self.r or got + self.remaining() < self.r

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
        if len(self.replies) < self.r:
            raise Unavailable(needed=self.r, got=len(self.replies))
        return self.merged()

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

    def enough(self) -> bool:
        got = len(self.acked)
        remaining = len(self.replicas) - got - len(self.failed)
        return got >= self.w or got + remaining < self.w

    def complete(self) -> bool:
        return len(self.acked) + len(self.failed) >= len(self.replicas)

    def succeeded(self) -> bool:
        return len(self.acked) >= self.w

    def error(self) -> Unavailable:
        return Unavailable(needed=self.w, got=len(self.acked))
