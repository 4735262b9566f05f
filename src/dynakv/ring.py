"""Consistent hashing: keys to Q equal partitions, partitions to owner nodes, and the walks
that pick a partition's replicas. Who owns what is decided by `dynakv.claim`.

Pure (no I/O, clock or randomness); a Ring is an immutable value that membership gossips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import msgspec

__all__ = [
    "DEFAULT_PLACE",
    "MAX_RING_SIZE",
    "Place",
    "Ring",
    "key_digest",
    "log2_size",
    "partition_of_digest",
    "partition_range",
    "spread",
]

MAX_RING_SIZE = 65536
Place = tuple[str, str]  # (data center, rack)
DEFAULT_PLACE: Place = ("dc1", "rack1")  # a member's place when none is given

_DIGEST_BYTES = 16
_DIGEST_BITS = 8 * _DIGEST_BYTES
_LOG2 = {1 << bits: bits for bits in range(MAX_RING_SIZE.bit_length())}


def log2_size(size: int) -> int:
    """log2 of a valid ring size, or ValueError."""
    bits = _LOG2.get(size) if type(size) is int else None
    if bits is None:
        raise ValueError(f"ring size must be a power of two in 1..{MAX_RING_SIZE}, got {size!r}")
    return bits


@lru_cache(maxsize=1 << 15)
def key_digest(bucket: str, key: str) -> bytes:
    """The 16-byte MD5 of bucket, NUL, key (UTF-8): the key's ring position and its storage key.

    Cached: one request asks for it several times (placement, store read and write, hints),
    and a hit costs a third of the hash.
    """
    return hashlib.md5(bucket.encode() + b"\0" + key.encode(), usedforsecurity=False).digest()


def partition_of_digest(digest: bytes, size: int) -> int:
    """The partition of a digest: its top log2(size) bits, read as a big-endian integer."""
    bits = log2_size(size)
    if len(digest) != _DIGEST_BYTES:
        # A table item's storage key (item_keys.storage_key): its first 16 bytes place it.
        if len(digest) < _DIGEST_BYTES:
            raise ValueError(f"a digest has {_DIGEST_BYTES} bytes, got {len(digest)}")
        digest = digest[:_DIGEST_BYTES]
    return int.from_bytes(digest, "big") >> (_DIGEST_BITS - bits)


def partition_range(partition: int, size: int) -> tuple[bytes, bytes]:
    """[start, end) of the digests in a partition; end is b"" (unbounded) for the last one."""
    bits = log2_size(size)
    if not 0 <= partition < size:
        raise ValueError(f"partition {partition} is not in 0..{size - 1}")
    shift = _DIGEST_BITS - bits
    start = (partition << shift).to_bytes(_DIGEST_BYTES, "big")
    if partition == size - 1:
        return start, b""
    return start, ((partition + 1) << shift).to_bytes(_DIGEST_BYTES, "big")


class Ring(msgspec.Struct, frozen=True, array_like=True, cache_hash=True):
    """Q partitions and the owner of each; build one with `dynakv.claim.claim`.

    Validated on construction and on decode (a bad ring from the wire is a ValidationError).
    """

    size: int  # Q, a power of two in 1..MAX_RING_SIZE
    owners: tuple[str, ...]  # owner node name of each partition, len == size
    # (data center, rack) of each member, in the order of members(); () when all share one.
    # Part of the ring, so a change of place moves data through the claimant like any other.
    places: tuple[Place, ...] = ()

    def __post_init__(self) -> None:
        log2_size(self.size)
        if len(self.owners) != self.size:
            raise ValueError(
                f"a ring of size {self.size} needs {self.size} owners, got {len(self.owners)}"
            )
        if not all(self.owners):
            raise ValueError("owner names must be non-empty")
        if self.places and len(self.places) != len(set(self.owners)):
            raise ValueError(
                f"a ring with places needs one per member ({len(set(self.owners))}), "
                f"got {len(self.places)}"
            )

    def place_map(self) -> Mapping[str, Place]:
        """Member name -> its (data center, rack); empty without places. Cached per ring:
        shared, never to be changed."""
        return _places(self) if self.places else {}

    def placed(self, places: Mapping[str, Place]) -> Ring:
        """This ring with each member's (data center, rack) from `places` (default
        DEFAULT_PLACE); with no places when every member shares one."""
        chosen = tuple(places.get(name, DEFAULT_PLACE) for name in _members(self))
        if len(set(chosen)) <= 1:
            chosen = ()
        return Ring(self.size, self.owners, chosen)

    def partition(self, bucket: str, key: str) -> int:
        """The partition a key lives in."""
        from dynakv.item_keys import storage_key  # it builds on key_digest, defined here

        return partition_of_digest(storage_key(bucket, key), self.size)

    def walk(self, partition: int) -> list[str]:
        """Distinct owners from partition p on: in ring order (owners of p, p+1, ... mod Q,
        each once), except that with places each next one is the first in ring order from a
        data center not chosen yet, else from a (data center, rack) not chosen yet, else the
        first left (Cassandra's NetworkTopologyStrategy, across data centers too)."""
        return list(_walk(self, partition))

    def preference_list(self, partition: int, n: int) -> list[str]:
        """The first n nodes of the walk: the partition's primary replicas."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return list(_walk(self, partition)[:n])

    def fallbacks(self, partition: int, n: int) -> list[str]:
        """The walk after the first n nodes: where sloppy quorum goes when primaries are down."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return list(_walk(self, partition)[n:])

    def preference_lists_by_dc(
        self, partition: int, counts: Mapping[str, int]
    ) -> dict[str, list[str]]:
        """Each data center's replicas of a partition, for per-data-center replication counts.

        For each data center in `counts` (in its order): that data center's nodes in ring
        order from the partition, each next one the first from a rack of that data center not
        used yet, else the first left: Cassandra's NetworkTopologyStrategy. So the replicas
        are on distinct racks while the data center has racks to spare, then on distinct
        nodes; a count above the data center's nodes gives all of them, a data center without
        members gets []. Without places every member is in one data center whose name the
        ring does not record, so `counts` must then name exactly one. Cached per ring.
        """
        for dc, count in counts.items():
            if type(count) is not int or count < 0:
                raise ValueError(
                    f"the count of data center {dc!r} must be an int >= 0, got {count!r}"
                )
        chosen = _by_datacenter(self, partition, tuple(counts.items()))
        return {dc: list(names) for dc, names in chosen}

    def replicas(self, partition: int, n: int, counts: Sequence[tuple[str, int]] = ()) -> list[str]:
        """The first n nodes of the walk and, for each (data center, count) of `counts`, that
        data center's list (preference_lists_by_dc), in the order of the walk. Without places
        (one data center the ring does not name) the counts add up along the walk. A list of
        a data center grows by its tail as its count grows (each next node is chosen from
        those chosen before), so a set at smaller counts lies within one at larger counts."""
        if not counts:
            return self.preference_list(partition, n)
        return list(_replicas(self, partition, n, tuple(counts)))

    def members(self) -> list[str]:
        """The sorted distinct owner names."""
        return list(_members(self))

    def owned(self, name: str) -> list[int]:
        """The partitions name owns, ascending."""
        return [p for p, owner in enumerate(self.owners) if owner == name]

    def ownership(self) -> dict[str, int]:
        """Owner name -> number of partitions it owns, in name order."""
        counts: dict[str, int] = {}
        for owner in self.owners:
            counts[owner] = counts.get(owner, 0) + 1
        return dict(sorted(counts.items()))


@lru_cache(maxsize=256)
def _members(ring: Ring) -> tuple[str, ...]:
    return tuple(sorted(set(ring.owners)))


@lru_cache(maxsize=1 << 16)
def _walk(ring: Ring, partition: int) -> tuple[str, ...]:
    """One partition's walk, cached: a Ring is immutable and hashes in O(1) (cache_hash)."""
    plain = _plain_walk(ring, partition)
    if not ring.places:
        return plain
    return spread(plain, _places(ring))


def _plain_walk(ring: Ring, partition: int) -> tuple[str, ...]:
    """The distinct owners of partition, partition + 1, ... (mod Q), each at its first place."""
    size = ring.size
    if type(partition) is not int or not 0 <= partition < size:
        raise ValueError(f"partition {partition!r} is not in 0..{size - 1}")
    owners = ring.owners
    total = len(_members(ring))
    seen: dict[str, None] = {}
    for i in range(partition, partition + size):
        name = owners[i - size] if i >= size else owners[i]
        if name not in seen:
            seen[name] = None
            if len(seen) == total:
                break
    return tuple(seen)


@lru_cache(maxsize=256)
def _places(ring: Ring) -> dict[str, Place]:
    return dict(zip(_members(ring), ring.places, strict=True))


def spread(
    walk: Sequence[str], places: Mapping[str, Place], limit: int | None = None
) -> tuple[str, ...]:
    """Reorder a plain walk: each next node the first of a new data center, else of a new
    rack, else the first left; the first `limit` of them (all by default). With a single
    place it is the walk itself."""
    chosen: list[str] = []
    datacenters: set[str] = set()
    racks: set[Place] = set()
    left = list(walk)
    wanted = len(left) if limit is None else min(limit, len(left))
    while len(chosen) < wanted:
        pick = next((n for n in left if places[n][0] not in datacenters), None)
        if pick is None:
            pick = next((n for n in left if places[n] not in racks), left[0])
        left.remove(pick)
        chosen.append(pick)
        datacenters.add(places[pick][0])
        racks.add(places[pick])
    return tuple(chosen)


@lru_cache(maxsize=1 << 14)
def _replicas(
    ring: Ring, partition: int, n: int, counts: tuple[tuple[str, int], ...]
) -> tuple[str, ...]:
    walk = _walk(ring, partition)
    if not ring.places:
        return walk[: max(n, sum(count for _, count in counts))]
    chosen = set(walk[:n])
    for _, names in _by_datacenter(ring, partition, counts):
        chosen.update(names)
    return tuple(name for name in walk if name in chosen)


@lru_cache(maxsize=1 << 14)
def _by_datacenter(
    ring: Ring, partition: int, counts: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    plain = _plain_walk(ring, partition)
    if not ring.places:
        if len(counts) > 1:
            raise ValueError(
                "a ring without places has its members in one data center, which it does not "
                f"name: counts must name one data center, got {[dc for dc, _ in counts]}"
            )
        return tuple((dc, plain[:count]) for dc, count in counts)
    places = _places(ring)
    # Within one data center, spread() is NetworkTopologyStrategy: a new rack first, else
    # the first left in ring order.
    return tuple(
        (dc, spread([name for name in plain if places[name][0] == dc], places, count))
        for dc, count in counts
    )
