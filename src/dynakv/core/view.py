"""What every component of a node reads: the membership and ring it has adopted, which
peers it treats as down, where a key's replicas go now (its placement), and the properties
of a bucket (from the cluster's bucket types).

Pure: no I/O beyond persisting an adopted membership in the engine's metadata, no clock.
Gossip and transfers adopt states; the failure detector replaces the down set.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynakv import bucket_types as bt
from dynakv.bucket_types import ResolvedProps
from dynakv.config import NodeConfig
from dynakv.core import membership as ms
from dynakv.core import moves as mv
from dynakv.core.membership import Membership, RingRecord
from dynakv.errors import Unavailable
from dynakv.item_keys import storage_key
from dynakv.ring import Ring, partition_of_digest
from dynakv.storage.engine import Engine


@dataclass(slots=True)  # not frozen (made per request; see events.Received); never changed
class Placement:
    """Where one key's replicas go now: the N primaries, or fallbacks for those down."""

    digest: bytes
    primaries: list[str]  # during a transfer that changes them: the old ones and the new
    targets: list[str]  # the nodes asked: healthy primaries, fallbacks for down ones
    hints: dict[str, str]  # fallback -> the primary it stands in for (sloppy quorum)
    spare: list[str]  # the healthy rest of the walk, for replicas that turn out to be down
    # During a transfer that changes the key's primaries: (the installed ring's, ring.next's),
    # a level to be met in each (joint quorum); () otherwise.
    lists: tuple[list[str], ...]


# A key's placement as _place computes it: primaries, targets, hints, spare, lists.
Place = tuple[list[str], list[str], dict[str, str], list[str], tuple[list[str], ...]]


class RequestIds:
    """One counter per node for the rids of its requests to peers, shared by every
    component, so a reply's rid names exactly one pending request."""

    def __init__(self, first: int) -> None:
        self._next = first

    def next(self) -> int:
        rid = self._next
        self._next += 1
        return rid

    @property
    def upcoming(self) -> int:
        """The rid the next request will get (read-only: takes none)."""
        return self._next


class ClusterView:
    """This node's view of the cluster, shared by its components.

    `down` is replaced whole (never changed in place) whenever it changes, and so are the
    membership state and the pending moves: the placement cache keys on their identity.
    """

    def __init__(self, config: NodeConfig, engine: Engine, state: Membership) -> None:
        self.config = config
        self.name = config.name
        self._engine = engine
        # The N of a ring record from before bucket types (its replication says 0).
        self.legacy_replication = max([config.defaults.n, *(b.n for b in config.buckets.values())])
        # What the installed ring and ring.next are placed for; see _refresh.
        self.placed_replication = self.next_replication = self.legacy_replication
        self.wanted_replication = self.legacy_replication
        # Replicas per data center, beside the N above (bucket_types.storage_rule).
        self.placed_datacenters: bt.Datacenters = ()
        self.next_datacenters: bt.Datacenters = ()
        self.wanted_datacenters: bt.Datacenters = ()
        self._types: object = None  # the types tuple the caches below were made from
        self._resolved: dict[str, ResolvedProps] = {}  # type name -> its props
        self._default: ResolvedProps | None = None
        # Peers treated as down: the runtime could not reach them, or phi-accrual suspects
        # them. It only steers sloppy quorum and waits; it never changes ownership.
        self.down: set[str] = set()
        self.stopping = False  # this node left the cluster and is about to stop
        self.state = state
        self.removed = _removed_names(state)
        self.pending_moves: dict[int, set[str]] = {}
        self._refresh()
        # (partition, n, datacenters) -> _place(...)
        self._placed: dict[tuple[int, int, bt.Datacenters], Place] = {}
        self._placed_ring: object = None
        self._placed_down: object = None
        self._placed_moves: object = None
        self._places: dict[str, tuple[str, str]] = {}
        self._places_of: object = None  # the ring record _places was read from
        self._several_sites = False

    # --- membership ------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.state.ring.epoch

    @property
    def ring(self) -> Ring:
        """The installed ring (during a transfer, partitions already moved follow ring.next)."""
        return self.state.ring.ring

    def adopt(self, state: Membership) -> None:
        """Take `state` as this node's membership, and persist it."""
        self.state = state
        self._engine.meta_put("membership", ms.encode(state))
        self._refresh()
        self.removed = _removed_names(state)

    def peers(self) -> list[str]:
        """Members other than this node that are still part of the cluster."""
        return [m.name for m in self.state.members if m.name != self.name and m.status != "removed"]

    @property
    def replication(self) -> int:
        """The N the ring being moved to (or the installed one) is placed for: how many
        replicas each key partition has, whatever the N of a bucket."""
        return self.placed_replication if self.state.ring.next is None else self.next_replication

    def replicas(self, partition: int) -> list[str]:
        """The partition's replicas in the ring being moved to (or the installed one): the
        first N of its walk and each data center's list at its count, in walk order."""
        record = self.state.ring
        if record.next is None:
            return record.ring.replicas(partition, self.placed_replication, self.placed_datacenters)
        return record.next.replicas(partition, self.next_replication, self.next_datacenters)

    def placed_replicas(self, partition: int) -> list[str]:
        """The partition's replicas in the installed ring: where its data is now."""
        ring = self.state.ring.ring
        return ring.replicas(partition, self.placed_replication, self.placed_datacenters)

    def pending_moves_list(self) -> list[tuple[int, str]]:
        """Every (key partition, node) move towards ring.next not finished yet."""
        return sorted((p, node) for p, nodes in self.pending_moves.items() for node in nodes)

    def my_moves(self) -> list[int]:
        """Partitions this node still has to pull for the next ring."""
        return sorted(p for p, nodes in self.pending_moves.items() if self.name in nodes)

    def is_lww(self, bucket: str) -> bool:
        return self.bucket(bucket).policy == "lww"

    def bucket(self, name: str) -> ResolvedProps:
        """The properties bucket `name` has: from its own bucket type, else from the default
        type; from this node's file only while it knows no types (it has not joined yet)."""
        types = self.state.types
        if types is not self._types:
            self._types = types
            self._resolved = {t.name: bt.resolve(t) for t in types}
            self._default = self._resolved.get(bt.DEFAULT)
        props = self._resolved.get(name, self._default)
        if props is None:
            file = self.config.bucket(name)
            limit = file.max_value_bytes or self.config.max_value_bytes
            n = file.n
            r, w = bt.resolve_level(file.r, n), bt.resolve_level(file.w, n)
            props = ResolvedProps(n, r, w, file.policy, limit, "")
        return props

    def _refresh(self) -> None:
        state = self.state
        wanted, self.wanted_datacenters = bt.storage_rule(state.types)
        self.wanted_replication = wanted or self.legacy_replication
        self.placed_replication, self.next_replication = mv.replication(
            state.ring, self.legacy_replication
        )
        self.placed_datacenters, self.next_datacenters = mv.datacenters(state.ring)
        moves: dict[int, set[str]] = {}
        for partition, node in mv.pending_moves(state, self.legacy_replication):
            moves.setdefault(partition, set()).add(node)
        self.pending_moves = moves

    # --- placement -------------------------------------------------------------------------
    def placement(self, bucket: str, key: str) -> Placement:
        """The key's N primaries and, for each one down, the next healthy node of the walk."""
        digest, place = self.placed_for(bucket, key)
        primaries, targets, hints, spare, lists = place
        # The quorums replace down targets in place and spare fallbacks are used up: copies.
        return Placement(digest, primaries, list(targets), hints, list(spare), lists)

    def placed_for(self, bucket: str, key: str) -> tuple[bytes, Place]:
        """The key's digest and its cached placement (shared: callers copy what they change)."""
        if self.epoch == 0:
            raise Unavailable("this node has not joined a cluster yet", needed=1, got=0)
        record = self.state.ring
        digest = storage_key(bucket, key)
        partition = partition_of_digest(digest, record.ring.size)
        props = self.bucket(bucket)
        rule = (partition, props.n, props.datacenters)
        # Every request computes this; it changes only with the ring, the down set or the
        # transfers under way (each replaced whole, never changed in place), so it is cached
        # per partition until one of them is replaced.
        if (
            self._placed_ring is not record
            or self._placed_down is not self.down
            or self._placed_moves is not self.pending_moves
        ):
            self._placed.clear()
            self._placed_ring, self._placed_down = record, self.down
            self._placed_moves = self.pending_moves
        place = self._placed.get(rule)
        if place is None:
            place = self._placed[rule] = self._place(record, partition, *rule[1:])
        return digest, place

    def _place(
        self, record: RingRecord, partition: int, n: int, datacenters: bt.Datacenters = ()
    ) -> Place:
        """A bucket's primaries on the installed ring, or, while a transfer changes them, on
        both rings: a request then meets its level in each list (joint quorum), whether or
        not this node has heard that the partition's moves are done. Other nodes hear it at
        other times, and one counting over the old list alone and one over the new alone
        could miss each other; each list's quorum meets both. A bucket's n (or count in a
        data center) above what the ring is placed for takes effect with the transfer that
        raises the replication. A bucket whose type lists data centers has each one's list
        (in walk order) as primaries; the rest of the walk is spare."""
        ring = record.ring
        lists: tuple[list[str], ...] = ()
        placed = (self.placed_replication, self.placed_datacenters)
        primaries = _primaries(ring, partition, n, datacenters, placed)
        if record.next is not None:
            following = (self.next_replication, self.next_datacenters)
            after = _primaries(record.next, partition, n, datacenters, following)
            if set(after) != set(primaries):
                # Writes go to both lists, so the new replicas also get everything written
                # while they pull. Fallbacks come from the walk of the ring moved to.
                lists = (primaries, after)
                primaries = primaries + [x for x in after if x not in primaries]
                ring = record.next
            elif partition not in self.pending_moves:
                ring, primaries = record.next, after
        walk = ring.walk(partition)
        down = self.down
        if datacenters or lists:
            spare = [node for node in walk if node not in down and node not in primaries]
        else:
            spare = [node for node in walk[len(primaries) :] if node not in down]
        if not down or not any(node in down for node in primaries):
            return primaries, primaries, {}, spare, lists
        targets: list[str] = []
        hints: dict[str, str] = {}
        places = ring.place_map() if ring.places else None
        for node in primaries:
            if node not in down or not spare:
                targets.append(node)  # a down primary with no fallback left counts as failed
                continue
            if places is None:
                fallback: str | None = spare.pop(0)
            else:  # a fallback from the primary's own data center, or none
                fallback = next((x for x in spare if places[x][0] == places[node][0]), None)
                if fallback is None:
                    targets.append(node)
                    continue
                spare.remove(fallback)
            assert fallback is not None
            targets.append(fallback)
            hints[fallback] = node
        return primaries, targets, hints, spare, lists

    def take_spare(self, spare: list[str], instead_of: str) -> str | None:
        """Take from `spare` the first node that is not down and is in the data center of
        `instead_of` (the replica it stands in for), dropping the down ones before it; None
        when there is none. A hint so never crosses from one data center to another."""
        datacenter = self.datacenter(instead_of)
        i = 0
        while i < len(spare):
            node = spare[i]
            if node in self.down:
                del spare[i]
            elif self.datacenter(node) == datacenter:
                del spare[i]
                return node
            else:
                i += 1
        return None

    def datacenter(self, name: str) -> str:
        """The data center the ring (or the ring being moved to) places `name` in."""
        self._refresh_places()
        place = self._places.get(name)
        if place is not None:
            return place[0]
        # Every member in one place (a ring without places), or not in the ring yet.
        record = ms.member(self.state, name)
        return self.config.datacenter if record is None else record.datacenter

    def spans_datacenters(self) -> bool:
        """Whether the ring (or the ring being moved to) places nodes in several data
        centers: only then does a request look at where its replicas are."""
        self._refresh_places()
        return self._several_sites

    def _refresh_places(self) -> None:
        record = self.state.ring
        if self._places_of is record:
            return
        places: dict[str, tuple[str, str]] = {}
        for ring in (record.ring, record.next):
            if ring is not None and ring.places:
                places.update(ring.place_map())
        self._places, self._places_of = places, record
        self._several_sites = len({place[0] for place in places.values()}) > 1


def _primaries(
    ring: Ring,
    partition: int,
    n: int,
    datacenters: bt.Datacenters,
    placed: tuple[int, bt.Datacenters],
) -> list[str]:
    """A bucket's primaries on `ring`, capped at what the ring is `placed` for: the first n
    of the walk, or each data center's list at its count. A data center the ring holds no
    replicas in yet (its type was just made) counts nothing; with none of them placed yet,
    the bucket's n follows the walk until the claimant has raised the replication."""
    placed_n, placed_datacenters = placed
    if datacenters:
        room = dict(placed_datacenters)
        counts = [(dc, min(c, room.get(dc, 0))) for dc, c in datacenters if room.get(dc, 0)]
        if counts:
            return ring.replicas(partition, 0, counts)
    return ring.walk(partition)[: min(n, placed_n)]


def _removed_names(state: Membership) -> frozenset[str]:
    return frozenset(m.name for m in state.members if m.status == "removed")
