"""Quorum bookkeeping for one read or one write: pure values fed replica answers.

Modelled on riak_kv_get_core: `add`/`fail` record answers, `enough` says whether the client
can be answered, `outcome` gives the answer, `stale` names replicas that need read repair.
No I/O, no clock: the node decides when time is up.

A quorum counts answers from anywhere (`r`, `w`: the common case, kept to a count), or
meets `requirements` that must all hold, each a count of answers from a set of replicas:
one per data center for the levels that name them (levels.py), and, while a transfer
changes a key's replicas, what the level needs of the old list and of the new one (joint
quorum). A fallback that stands in for a replica counts wherever that replica does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from dynakv import versions
from dynakv.errors import Unavailable
from dynakv.levels import Need
from dynakv.versions import Clock

_UNMERGED = object()

# Which list of primaries a requirement comes from, during a transfer (index in `lists`).
_WHEN = (" (before the transfer)", " (after the transfer)")


@dataclass(slots=True)
class Requirement:
    """`count` answers from `members` (replicas, and the fallbacks standing in for them);
    `label` names them in an error: `in dc1`, `of n1, n2, n3 (before the transfer)`."""

    members: set[str]
    count: int
    label: str


Requirements = tuple[Requirement, ...]


def requirements(
    lists: Sequence[tuple[Need, Sequence[str]]],
    targets: Sequence[str],
    hints: Mapping[str, str],
    datacenter_of: Callable[[str], str],
) -> Requirements:
    """What a request must meet, for each list of primaries with what its level needs of it:
    one list, or two during a transfer (before, after), whose every requirement must hold so
    that it meets whatever a coordinator counting over either list alone would. Members are
    the `targets` standing for the list's primaries (`hints`: fallback -> primary). A
    requirement both lists make counts once."""
    made: list[tuple[Requirement, set[int]]] = []
    for index, (need, primaries) in enumerate(lists):
        members = {node for node in targets if hints.get(node, node) in primaries}
        if need.by_dc:
            wanted = [
                Requirement(
                    {x for x in members if datacenter_of(hints.get(x, x)) == site},
                    count,
                    f"in {site}",
                )
                for site, count in need.by_dc
            ]
        else:
            count = min(need.total, len(primaries))
            wanted = [Requirement(members, count, f"of {', '.join(primaries)}")]
        for requirement in wanted:
            same = next(
                (
                    whose
                    for made_one, whose in made
                    if made_one.count == requirement.count
                    and made_one.members == requirement.members
                ),
                None,
            )
            if same is None:
                made.append((requirement, {index}))
            else:
                same.add(index)
    if len(lists) > 1:
        for requirement, whose in made:
            if len(whose) == 1:
                requirement.label += _WHEN[min(whose)]
    return tuple(requirement for requirement, _ in made)


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
    _encoded: list[tuple[bytes | memoryview, Clock]] = field(
        default_factory=list, repr=False, compare=False
    )
    # Counts that must all hold instead of `r` (see requirements()); () in the common case.
    requirements: Requirements = ()

    def add(
        self, node: str, state: Clock | None, encoded: bytes | memoryview | None = None
    ) -> None:
        """Record `node`'s answer; `encoded` is the state's encoding, when the caller has it."""
        if node in self.replicas and node not in self.failed:
            self.replies[node] = state
            self._merged = _UNMERGED
            if encoded is not None and state is not None:
                self._encoded.append((encoded, state))

    def known(self, encoded: bytes | memoryview) -> Clock | None:
        """The state of an answer already in whose encoding is `encoded`, if any: the same
        object, so merging it with itself costs nothing."""
        for seen, state in self._encoded:
            if type(seen) is bytes and type(encoded) is bytes:
                same = seen == encoded  # no call: one shows in a 1 KiB read
            else:
                same = versions.same_encoding(seen, encoded)
            if same:
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
            _stand_in(self.requirements, node, substitute)

    def enough(self) -> bool:
        """R answers arrived, or R never can and no replica asked is still to answer."""
        if self.requirements:
            return _settled(self.requirements, self.replicas, self.replies, self.failed)
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
        error = missing(self.r, self.requirements, self.replies)
        if error is not None:
            raise error
        return self.merged()

    def error(self) -> Unavailable:
        """What is missing, for a read that ends without its answers."""
        error = missing(self.r, self.requirements, self.replies)
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
    requirements: Requirements = ()  # as GetQuorum's

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
            _stand_in(self.requirements, node, substitute)

    def enough(self) -> bool:
        if self.requirements:
            return _settled(self.requirements, self.replicas, self.acked, self.failed)
        # As GetQuorum's: a W that has become impossible still waits for the replicas the
        # write was sent to, so the error counts every one that stored it.
        return len(self.acked) >= self.w or self.complete()

    def complete(self) -> bool:
        return len(self.acked) + len(self.failed) >= len(self.replicas)

    def succeeded(self) -> bool:
        return missing(self.w, self.requirements, self.acked) is None

    def error(self) -> Unavailable:
        error = missing(self.w, self.requirements, self.acked)
        return error or Unavailable(needed=self.w, got=len(self.acked))


def missing(
    count: int, requirements: Requirements, answered: Collection[str]
) -> Unavailable | None:
    """What is missing, naming each requirement that is short (`needed 2 in dc2, got 0`);
    None when nothing is. Without requirements: `count` answers from anywhere."""
    if requirements:
        short = [
            (requirement, got)
            for requirement in requirements
            if (got := sum(1 for node in requirement.members if node in answered))
            < requirement.count
        ]
        if not short:
            return None
        text = "; ".join(f"needed {r.count} {r.label}, got {got}" for r, got in short)
        return Unavailable(text, needed=short[0][0].count, got=short[0][1])
    if len(answered) < count:
        return Unavailable(needed=count, got=len(answered))
    return None


def _stand_in(requirements: Requirements, node: str, substitute: str) -> None:
    """`substitute` answers for `node` from now on, in every requirement `node` is in."""
    for requirement in requirements:
        if node in requirement.members:
            requirement.members.add(substitute)


def _settled(
    requirements: Requirements,
    asked: list[str],
    answered: Collection[str],
    failed: Collection[str],
) -> bool:
    """Every requirement met, or one that the replicas still asked can no longer meet."""
    met = True
    for requirement in requirements:
        got = open_ = 0
        for node in requirement.members:
            if node in answered:
                got += 1
            elif node not in failed and node in asked:
                open_ += 1
        if got + open_ < requirement.count:
            return True
        if got < requirement.count:
            met = False
    return met
