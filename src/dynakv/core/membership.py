"""Cluster membership and the ring as a state-based CRDT that gossip spreads and merges.

Pure values and functions: no I/O, no clock, no randomness. `merge` is commutative,
associative and idempotent, so the order and repetition of gossip never matter.

How a state merges:
- Members are per-name records; of two records for one name the greater wins, ordered by
  (version, status rank, msgpack encoding), the status rank being joining < up < leaving
  < removed. Whoever changes a record bumps its version past the one it saw, so a change
  made after seeing another wins over it; two concurrent changes at one version are settled
  the same way everywhere, the further-along status first (an operator's leave beats the
  claimant's promotion of the same joiner). Removed records stay as tombstones so that an
  old record gossiped late cannot bring a member back; only a rejoin (a newer version) can.
- The ring is one record; the higher epoch wins, ties (two claimants that each installed a
  ring, e.g. on both sides of a partition) by encoding. A member promoted by the losing
  install is then up but owns nothing in the winning ring; `plan_ring` sees that and the
  claimant installs a ring that includes it, so the state heals itself.
- Bucket types (bucket_types.py) are per-name records like members: the higher version
  wins, ties by encoding. Whoever changes a type bumps its version.
- Users (users.py) likewise; a deleted user stays as a tombstone of a higher version.

Who changes what: an operator's join/leave/remove reaches any member, which applies
`request_join` / `request_leave` / `mark_removed` to its state and gossips it. The claimant
(the lowest-named member that is up) runs `plan_ring` on its state; when that is not None,
it applies `install_ring`, which raises the epoch and promotes joiners that now own
partitions. A node that sees its own record carry a stale address or incarnation re-asserts
it with `request_join` (a newer version), as Cassandra and Akka nodes refute stale gossip.

Ownership transfers: while `RingRecord.next` is set, the old owners keep serving a
partition until its data has moved; which pulls a ring change needs, and which are done
(the `transferred` set), is core/moves.py's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import msgspec

from dynakv.bucket_types import BucketType, Datacenters, merge_types, storage_rule, with_type
from dynakv.claim import claim
from dynakv.errors import ClusterError
from dynakv.ring import Ring
from dynakv.users import UserRecord, merge_users, with_user

__all__ = [
    "IN_RING",
    "STATUSES",
    "MemberRecord",
    "Membership",
    "RingRecord",
    "claimant",
    "decode",
    "encode",
    "finish_transfer",
    "install_ring",
    "mark_removed",
    "member",
    "merge",
    "names",
    "new_cluster",
    "plan_ring",
    "refresh_self",
    "request_join",
    "request_leave",
    "set_type",
    "set_user",
    "start_transfer",
]

STATUSES = ("joining", "up", "leaving", "removed")  # in merge order of precedence, low first
IN_RING = ("joining", "up")  # the statuses a planned ring gives partitions to
_RANK = {status: rank for rank, status in enumerate(STATUSES)}


class MemberRecord(msgspec.Struct, frozen=True, array_like=True):
    """One member as the cluster knows it; a newer version replaces an older one."""

    name: str
    node_addr: str
    http_addr: str
    incarnation: str
    status: str  # joining | up | leaving | removed
    version: int  # bumped by whoever changes this record
    # Topology (last, with defaults: a record persisted before they existed still decodes).
    datacenter: str = "dc1"
    rack: str = "rack1"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a member name must be non-empty")
        if not self.datacenter or not self.rack:
            raise ValueError("a member's datacenter and rack must be non-empty")
        if self.status not in _RANK:
            raise ValueError(f"member status must be one of {STATUSES}, got {self.status!r}")
        if self.version < 0:
            raise ValueError(f"a member version must be >= 0, got {self.version}")


class RingRecord(msgspec.Struct, frozen=True, array_like=True):
    """The installed ring, and the ring being moved towards while data is transferred.

    The claimant that changes either raises the epoch. While `next` is set, each key
    partition is served by `ring` until every node that `next` makes its replica has pulled
    it (see `Membership.transferred`), and by `next` after that.
    """

    epoch: int
    ring: Ring
    claimant: str
    next: Ring | None = None
    # The N that ring's data is placed for: every key partition has this many replicas (0
    # in a record from before bucket types: the N of the node's file). `next_replication`
    # is the N of `next` (0: the same); a transfer to the same owners at a higher N fills
    # the new replicas when a bucket type raises n.
    replication: int = 0
    next_replication: int = 0
    # Replicas per data center that ring's data is placed for, beside the N above (sorted;
    # () for none), and those of `next` (only read while `next` is set).
    datacenters: Datacenters = ()
    next_datacenters: Datacenters = ()


class Membership(msgspec.Struct, frozen=True, array_like=True):
    """Everything gossip spreads about the cluster: its members and its ring.

    Canonical: members sorted by name, one record a name (checked on construction and on
    decode, so a malformed state from the wire is a ValidationError).
    """

    cluster: str
    members: tuple[MemberRecord, ...]
    ring: RingRecord
    # (epoch of ring.next, key partition, node): transfers finished towards ring.next; a
    # grow-only set, pruned of entries for other epochs (they describe an abandoned plan).
    transferred: tuple[tuple[int, int, str], ...] = ()
    # Bucket types, sorted by name without repeats (bucket_types.py).
    types: tuple[BucketType, ...] = ()
    # Users and their grants, sorted by name without repeats (users.py); empty while
    # authentication has never been used.
    users: tuple[UserRecord, ...] = ()

    def __post_init__(self) -> None:
        if not self.cluster:
            raise ValueError("a cluster name must be non-empty")
        named: tuple[tuple[str, tuple[MemberRecord | BucketType | UserRecord, ...]], ...] = (
            ("members", self.members),
            ("bucket types", self.types),
            ("users", self.users),
        )
        for what, items in named:
            for i in range(1, len(items)):
                if items[i - 1].name >= items[i].name:
                    raise ValueError(
                        f"{what} must be sorted by name without repeats: "
                        f"{items[i - 1].name!r} before {items[i].name!r}"
                    )


# --- merge -----------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Membership)


def _greater_record(a: MemberRecord, b: MemberRecord) -> MemberRecord:
    """The record that wins for one name: a total order, so the choice is the same anywhere."""
    if a is b or a == b:
        return a
    if a.version != b.version:
        return a if a.version > b.version else b
    if a.status != b.status:
        return a if _RANK[a.status] > _RANK[b.status] else b
    return a if _encoder.encode(a) > _encoder.encode(b) else b


def _greater_ring(a: RingRecord, b: RingRecord) -> RingRecord:
    if a is b or a == b:
        return a
    if a.ring.size != b.ring.size:
        raise ValueError(
            f"rings of {a.ring.size} and {b.ring.size} partitions cannot belong to one cluster"
        )
    if a.epoch != b.epoch:
        return a if a.epoch > b.epoch else b
    return a if _encoder.encode(a) > _encoder.encode(b) else b


def _merge_members(
    a: tuple[MemberRecord, ...], b: tuple[MemberRecord, ...]
) -> tuple[MemberRecord, ...]:
    """Per-name winners of two sorted record tuples; returns a or b itself when it covers both."""
    if a == b:  # tuples compare identical elements by identity first: cheap when shared
        return a
    merged: list[MemberRecord] = []
    from_a = from_b = True  # every winner is (equal to) a's record / b's record
    i = j = 0
    len_a, len_b = len(a), len(b)
    while i < len_a and j < len_b:
        ra, rb = a[i], b[j]
        if ra is rb:
            winner = ra
            i += 1
            j += 1
        elif ra.name == rb.name:
            winner = _greater_record(ra, rb)  # ra itself when they are equal
            if winner is not ra:
                from_a = False
            elif winner != rb:
                from_b = False
            i += 1
            j += 1
        elif ra.name < rb.name:
            winner, from_b = ra, False
            i += 1
        else:
            winner, from_a = rb, False
            j += 1
        merged.append(winner)
    if i < len_a:
        merged.extend(a[i:])
        from_b = False
    if j < len_b:
        merged.extend(b[j:])
        from_a = False
    if from_a:
        return a
    if from_b:
        return b
    return tuple(merged)


def merge(a: Membership, b: Membership) -> Membership:
    """The least state that holds everything a and b know (the CRDT join).

    Returns a (or b) itself when it already covers the other, so states that gossip has made
    equal share their records and compare in time linear in identity checks.
    Raises ValueError when the states belong to different clusters.
    """
    if a is b:
        return a
    if a.cluster != b.cluster:
        raise ValueError(f"cannot merge the state of cluster {b.cluster!r} into {a.cluster!r}")
    ring = _greater_ring(a.ring, b.ring)
    members = _merge_members(a.members, b.members)
    transferred = _merge_transferred(a.transferred, b.transferred, ring.epoch)
    types = merge_types(a.types, b.types)
    users = merge_users(a.users, b.users)
    if (
        members is a.members
        and ring is a.ring
        and transferred == a.transferred
        and types is a.types
        and users is a.users
    ):
        return a
    if (
        members is b.members
        and ring is b.ring
        and transferred == b.transferred
        and types is b.types
        and users is b.users
    ):
        return b
    return Membership(a.cluster, members, ring, transferred, types, users)


def _merge_transferred(
    a: tuple[tuple[int, int, str], ...], b: tuple[tuple[int, int, str], ...], epoch: int
) -> tuple[tuple[int, int, str], ...]:
    if a == b and all(entry[0] == epoch for entry in a):
        return a
    return tuple(sorted(entry for entry in set(a) | set(b) if entry[0] == epoch))


# --- queries ---------------------------------------------------------------------------------


def member(m: Membership, name: str) -> MemberRecord | None:
    """The record of name (whatever its status), or None."""
    members = m.members
    i = bisect_left(members, name, key=_name)
    if i < len(members) and members[i].name == name:
        return members[i]
    return None


def names(m: Membership, statuses: Iterable[str] = IN_RING) -> list[str]:
    """The sorted names of the members whose status is one of statuses."""
    wanted = frozenset(statuses)
    return [record.name for record in m.members if record.status in wanted]


def claimant(m: Membership) -> str:
    """Who installs rings: the lowest-named member that is up.

    Deterministic given the state. Should no member be up (concurrent leaves on both sides
    of a partition can do that), the lowest-named joining member claims instead, so a join
    can always bring the cluster back. ValueError when there is neither.
    """
    for status in IN_RING[::-1]:  # up, then joining
        candidates = names(m, (status,))
        if candidates:
            return candidates[0]
    raise ValueError(f"cluster {m.cluster!r} has no member that is up or joining")


def plan_ring(m: Membership) -> Ring | None:
    """The ring the claimant would install now, or None when installing would change nothing.

    claim() over the members that are up or joining, moving few partitions of the current
    ring, given each member's data center and rack: claim spreads each data center's and
    rack's partitions around the ring, and a change of place plans a new ring too (the
    walk, and so the replicas, depend on places). Not None while a joining member could be
    promoted, even when the owners stay the same (a member that rejoined before its leave
    was installed).
    When concurrent joins pushed the count past the ring size, the up members and then the
    lowest-named joiners get partitions; the rest stay joining.
    """
    current = m.ring.ring
    up = names(m, ("up",))
    joining = names(m, ("joining",))
    if not up and not joining:
        return None
    # A transfer under way is kept unless its target gives partitions to a member that has
    # since left or been removed (then plan afresh from the installed ring).
    if m.ring.next is not None and set(m.ring.next.owners) <= set(up + joining):
        return None
    places = {r.name: (r.datacenter, r.rack) for r in m.members}
    ring = claim((up + joining)[: current.size], current.size, current, places)
    if ring == current and set(joining).isdisjoint(ring.owners):
        return None
    return ring


# --- changes ---------------------------------------------------------------------------------


def new_cluster(
    cluster: str, founder: MemberRecord, ring_size: int, types: tuple[BucketType, ...] = ()
) -> Membership:
    """A one-member cluster: the founder is up and owns every partition (epoch 1), with the
    bucket types it seeds (its ring placed for their largest n)."""
    record = msgspec.structs.replace(founder, status="up")
    ring = claim([founder.name], ring_size)
    replication, datacenters = storage_rule(types)
    ring_record = RingRecord(
        1, ring, founder.name, replication=replication, datacenters=datacenters
    )
    return Membership(cluster, (record,), ring_record, (), types)


def request_join(m: Membership, joiner: MemberRecord) -> Membership:
    """Add joiner with status joining, or update the record of a member that rejoins.

    Only joiner's name, addresses, incarnation, data center and rack are used. A retry of a
    join already recorded (all of those the same, joining or up) changes nothing. A rejoin
    with a new incarnation, address or place bumps the version; a member that is up and still
    owns partitions stays up (a replaced disk: anti-entropy refills it), any other becomes
    joining. Refused with ClusterError when the name is up at another node address, or when
    the ring has no partition left for one more member.
    """
    existing = member(m, joiner.name)
    if existing is None:
        if len(names(m)) >= m.ring.ring.size:
            raise ClusterError(
                f"the ring has {m.ring.ring.size} partitions and as many members: "
                f"{joiner.name!r} cannot join (the ring size is fixed at cluster creation)"
            )
        record = _record(joiner, "joining", 1)
        return _with(m, record)
    if existing.status == "up" and existing.node_addr != joiner.node_addr:
        raise ClusterError(
            f"the name {joiner.name!r} belongs to a member that is up at {existing.node_addr}; "
            f"remove it before it joins from {joiner.node_addr}"
        )
    same = _identity(existing) == _identity(joiner)
    if same and existing.status in IN_RING:
        return m
    if existing.status not in IN_RING and len(names(m)) >= m.ring.ring.size:
        raise ClusterError(
            f"the ring has {m.ring.ring.size} partitions and as many members: "
            f"{joiner.name!r} cannot rejoin"
        )
    owns = joiner.name in set(m.ring.ring.owners)
    status = "up" if existing.status == "up" and owns else "joining"
    return _with(m, _record(joiner, status, existing.version + 1))


def refresh_self(m: Membership, me: MemberRecord) -> Membership:
    """A member re-asserts its own addresses, incarnation, data center and rack (after a
    restart), keeping its status; a newer version so stale gossip cannot undo it."""
    existing = member(m, me.name)
    if existing is None:
        return m
    if _identity(existing) == _identity(me):
        return m
    record = _record(me, existing.status, existing.version + 1)
    return _with(m, record)


def request_leave(m: Membership, name: str) -> Membership:
    """Mark name leaving: the next ring leaves it out. Idempotent.

    Refused with ClusterError for an unknown or removed member, and when no other member
    would be up to install rings (leaving the last node).
    """
    existing = _present(m, name, "leave")
    if existing.status == "leaving":
        return m
    _refuse_if_last(m, name, "leave")
    return _with(
        m, msgspec.structs.replace(existing, status="leaving", version=existing.version + 1)
    )


def mark_removed(m: Membership, name: str) -> Membership:
    """Mark name removed (a dead node taken out, or a leaver whose data has moved). Idempotent.

    Refused with ClusterError for an unknown member, and when no other member would be up.
    """
    existing = member(m, name)
    if existing is not None and existing.status == "removed":
        return m
    existing = _present(m, name, "remove")
    _refuse_if_last(m, name, "remove")
    return _with(
        m, msgspec.structs.replace(existing, status="removed", version=existing.version + 1)
    )


def install_ring(
    m: Membership,
    ring: Ring,
    by: str,
    replication: int = 0,
    datacenters: Datacenters | None = None,
) -> Membership:
    """Install ring as claimant `by`: epoch + 1, and joining members that own partitions are
    up. Its data is placed for `replication` (0: the N the installed ring has) and
    `datacenters` (None: those of the installed ring)."""
    _same_size(m, ring)
    owners = set(ring.owners)
    members = tuple(
        msgspec.structs.replace(record, status="up", version=record.version + 1)
        if record.status == "joining" and record.name in owners
        else record
        for record in m.members
    )
    record = RingRecord(
        m.ring.epoch + 1,
        ring,
        by,
        replication=replication or m.ring.replication,
        datacenters=m.ring.datacenters if datacenters is None else datacenters,
    )
    return Membership(m.cluster, members, record, (), m.types, m.users)


def start_transfer(
    m: Membership,
    target: Ring,
    by: str,
    replication: int = 0,
    datacenters: Datacenters | None = None,
) -> Membership:
    """Begin moving towards `target`, placed for `replication` replicas (0: as many as the
    installed ring) and `datacenters` (None: the installed ring's): the installed ring
    keeps serving until data has moved. `target` may have the installed ring's owners when
    only the replication grows."""
    _same_size(m, target)
    placed = m.ring.replication
    record = RingRecord(
        m.ring.epoch + 1,
        m.ring.ring,
        by,
        target,
        placed,
        replication or placed,
        m.ring.datacenters,
        m.ring.datacenters if datacenters is None else datacenters,
    )
    return Membership(m.cluster, m.members, record, (), m.types, m.users)


def finish_transfer(m: Membership, by: str) -> Membership:
    """Install ring.next as the ring (every move done): joiners that own partitions are up."""
    assert m.ring.next is not None
    return install_ring(m, m.ring.next, by, m.ring.next_replication, m.ring.next_datacenters)


def set_type(m: Membership, bucket_type: BucketType) -> Membership:
    """m with bucket_type in place of the type of its name (or added)."""
    return msgspec.structs.replace(m, types=with_type(m.types, bucket_type))


def set_user(m: Membership, user: UserRecord) -> Membership:
    """m with user in place of the record of its name (or added)."""
    return msgspec.structs.replace(m, users=with_user(m.users, user))


# --- persistence -----------------------------------------------------------------------------


def encode(m: Membership) -> bytes:
    """msgpack bytes of a state, for the engine's metadata and for gossip."""
    return _encoder.encode(m)


def decode(data: bytes) -> Membership:
    """A state from encode(); msgspec.DecodeError / ValidationError on bad input."""
    return _decoder.decode(data)


# --- helpers ---------------------------------------------------------------------------------


def _same_size(m: Membership, ring: Ring) -> None:
    if ring.size != m.ring.ring.size:
        raise ValueError(
            f"the ring size is fixed at cluster creation: {m.ring.ring.size}, got {ring.size}"
        )


def _name(record: MemberRecord) -> str:
    return record.name


def _record(joiner: MemberRecord, status: str, version: int) -> MemberRecord:
    return msgspec.structs.replace(joiner, status=status, version=version)


def _identity(record: MemberRecord) -> tuple[str, str, str, str, str]:
    """What a member asserts about itself: addresses, incarnation, where it runs."""
    return (record.node_addr, record.http_addr, record.incarnation, record.datacenter, record.rack)


def _with(m: Membership, record: MemberRecord) -> Membership:
    """m with record in place of the record of the same name (or added, in name order)."""
    members = m.members
    i = bisect_left(members, record.name, key=_name)
    replaced = i < len(members) and members[i].name == record.name
    updated = (*members[:i], record, *members[i + replaced :])
    return Membership(m.cluster, updated, m.ring, m.transferred, m.types, m.users)


def _present(m: Membership, name: str, verb: str) -> MemberRecord:
    existing = member(m, name)
    if existing is None or existing.status == "removed":
        raise ClusterError(f"cannot {verb} {name!r}: no such member in cluster {m.cluster!r}")
    return existing


def _refuse_if_last(m: Membership, name: str, verb: str) -> None:
    if not [other for other in names(m, ("up",)) if other != name]:
        raise ClusterError(
            f"cannot {verb} {name!r}: no other member is up to take over its partitions"
        )
