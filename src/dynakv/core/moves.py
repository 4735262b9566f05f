"""Which pulls a ring change needs, and which are done.

Replication: the ring record says for which rule its data is placed: N along the walk
(`replication`, and `next_replication` for `next`) and replicas per data center
(`datacenters`, `next_datacenters`). A partition's replicas are the first N of its walk
and each data center's list at its count (`Ring.replicas`). The claimant raises either
with a transfer to the same owners when a bucket type asks for more replicas than the ring
holds (`pending_moves`), and lowers them the same way once the types ask for fewer:
the replicas that remain pull from every old replica first, so they hold everything the
surplus ones held before the lower rule serves (the surplus copies are then handed back
and deleted: core/handoff.py).

Transfers: while `RingRecord.next` is set, the old owners keep serving a
partition until its data has moved. `Membership.transferred` holds the (epoch of `next`,
partition, node) triples whose pull has finished, merged as a grow-only set (union) and
pruned of other epochs; the claimant, once every move of `next` is in it, installs `next`
as `ring` (epoch + 1) and a leaving member that then owns nothing is marked removed. The
same set records, as (epoch, SEEN_NEXT, node), that a member has adopted `next`: until
then it counts a request over the installed ring alone, so the claimant installs `next`
only once every member it does not treat as down has (`next_unseen`), and no two members
ever count over lists that need not intersect (one the old ring's, one the new ring's);
in between, members count over both (joint quorum, core/view.py).

Pure functions over the ring record and the membership's `transferred` set.
"""

from __future__ import annotations

from dynakv.bucket_types import Datacenters
from dynakv.core.membership import Membership, RingRecord
from dynakv.ring import Ring

__all__ = [
    "SEEN_NEXT",
    "datacenters",
    "lowered",
    "mark_transferred",
    "next_unseen",
    "pending_moves",
    "replica_moves",
    "replication",
    "saw_next",
]


def replica_moves(
    old: Ring,
    new: Ring,
    n: int,
    new_n: int = 0,
    datacenters: Datacenters = (),
    new_datacenters: Datacenters | None = None,
) -> list[tuple[int, str]]:
    """(key partition, node) for every node that `new` at `new_n` replicas (0: n) and
    `new_datacenters` (None: `datacenters`) makes a replica of that partition while `old` at
    `n` and `datacenters` does not. Each part on its own: a node new to the first N of the
    walk moves even if it was in a data center's list before, and the other way round, as
    writes to a bucket go only to its own part (anti-entropy alone would fill it).

    When the rule falls (a lower N, a data center's count lowered or dropped), every
    replica `new` keeps of a partition that loses a replica in some part moves too: it
    pulls from the old replicas, so the remaining ones hold everything the surplus ones
    held before the lower rule serves."""
    after = datacenters if new_datacenters is None else new_datacenters
    new_n = new_n or n
    moves: list[tuple[int, str]] = []
    falls = _falls(n, new_n, datacenters, after)
    for partition in range(old.size):
        if falls and _shrinks(old, new, partition, n, new_n, datacenters, after):
            moves.extend((partition, x) for x in new.replicas(partition, new_n, after))
            continue
        walked = set(old.preference_list(partition, n))
        if not datacenters and not after:
            moves.extend(
                (partition, x) for x in new.preference_list(partition, new_n) if x not in walked
            )
            continue
        listed = set(old.replicas(partition, 0, datacenters)) if datacenters else set()
        walking = set(new.preference_list(partition, new_n))
        listing = set(new.replicas(partition, 0, after)) if after else set()
        for node in new.replicas(partition, new_n, after):
            if (node in walking and node not in walked) or (node in listing and node not in listed):
                moves.append((partition, node))
    return moves


def _falls(n: int, new_n: int, datacenters: Datacenters, after: Datacenters) -> bool:
    """Whether the rule (N, counts per data center) asks for fewer replicas somewhere."""
    counts = dict(after)
    return new_n < n or any(counts.get(dc, 0) < count for dc, count in datacenters)


def _shrinks(
    old: Ring,
    new: Ring,
    partition: int,
    n: int,
    new_n: int,
    datacenters: Datacenters,
    after: Datacenters,
) -> bool:
    """Whether some part of the partition's replicas (the walk's first N, a data center's
    list) loses a node from `old` at the old rule to `new` at the new one."""
    if set(old.preference_list(partition, n)) - set(new.preference_list(partition, new_n)):
        return True
    counts = dict(after)
    for dc, count in datacenters:
        before = set(old.replicas(partition, 0, ((dc, count),)))
        kept = counts.get(dc, 0)
        if before - (set(new.replicas(partition, 0, ((dc, kept),))) if kept else set()):
            return True
    return False


def lowered(
    placed: int, wanted: int, placed_dcs: Datacenters, wanted_dcs: Datacenters
) -> bool:
    """Whether the rule the types ask for (`wanted`, `wanted_dcs`) falls below what the
    ring is placed for anywhere: the claimant then lowers it, after a transfer."""
    return _falls(placed, wanted, placed_dcs, wanted_dcs)


def replication(record: RingRecord, legacy: int) -> tuple[int, int]:
    """(N the installed ring is placed for, N of ring.next), `legacy` standing in for a
    record from before bucket types (which says 0)."""
    placed = record.replication or legacy
    return placed, record.next_replication or placed


def datacenters(record: RingRecord) -> tuple[Datacenters, Datacenters]:
    """(replicas per data center the installed ring is placed for, those of ring.next)."""
    placed = record.datacenters
    return placed, placed if record.next is None else record.next_datacenters


def pending_moves(m: Membership, n: int) -> list[tuple[int, str]]:
    """The moves towards ring.next that have not finished yet ([] when nothing moves):
    replicas of ring.next at its replication that the installed ring at its own lacks. `n`
    is the replication of a ring record from before bucket types."""
    target = m.ring.next
    if target is None:
        return []
    done = {(partition, node) for epoch, partition, node in m.transferred if epoch == m.ring.epoch}
    placed, wanted = replication(m.ring, n)
    moves = replica_moves(m.ring.ring, target, placed, wanted, *datacenters(m.ring))
    return [move for move in moves if move not in done]


SEEN_NEXT = -1  # the partition of a `transferred` entry that says its node has seen ring.next


def saw_next(m: Membership, node: str) -> Membership:
    """Record that `node` has adopted ring.next (m itself when there is none, or already)."""
    return mark_transferred(m, SEEN_NEXT, node)


def next_unseen(m: Membership) -> list[str]:
    """Members (not removed) not yet known to have adopted ring.next; [] without one."""
    if m.ring.next is None:
        return []
    seen = {node for epoch, p, node in m.transferred if p == SEEN_NEXT and epoch == m.ring.epoch}
    return [x.name for x in m.members if x.status != "removed" and x.name not in seen]


def mark_transferred(m: Membership, partition: int, node: str) -> Membership:
    """Record that `node` holds key partition `partition` for the transfer under way."""
    entry = (m.ring.epoch, partition, node)
    if m.ring.next is None or entry in m.transferred:
        return m
    transferred = tuple(sorted({*m.transferred, entry}))
    return Membership(m.cluster, m.members, m.ring, transferred, m.types, m.users)
