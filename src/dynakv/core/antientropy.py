"""Active anti-entropy: one Merkle tree per partition this node replicates, kept current as
writes land, and compared top-down with each other replica to repair what diverged for good.

Trees are built from storage one partition per tick (a fresh node serves at once; its
trees follow), updated on every write with the key's old and new causal versions, and an
exchange repairs in both directions: this side pushes its copy of every key the other side
lacks or holds differently, and pulls theirs, so both end with the merge (never
last-writer-wins unless the bucket is lww). Pure bookkeeping over the synchronous store;
the node carries the messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dynakv import versions
from dynakv.core.merkle import (
    DEFAULT_BRANCHING,
    DEFAULT_SEGMENTS,
    Exchange,
    HashTree,
    version_hash,
)
from dynakv.core.replica import CorruptRecord, ReplicaStore, unseal
from dynakv.errors import InvalidRequest
from dynakv.ring import partition_of_digest, partition_range
from dynakv.versions import Clock

KEYS_PER_REQUEST = 256  # segments per key-map request; digests per fetch


@dataclass
class ExchangeRound:
    """One comparison of a partition's tree with one peer's."""

    partition: int
    peer: str
    exchange: Exchange
    deadline: float
    waiting: str = "hashes"  # hashes | keys | fetch
    segments: list[int] = field(default_factory=list)  # differing, not yet compared
    fetching: list[bytes] = field(default_factory=list)  # digests to pull from the peer
    pushed: int = 0
    pulled: int = 0
    requester: tuple[str, int] | None = None  # an operator's repair waiting for this round


class AntiEntropy:
    """The trees of this node and the counters an operator sees in /v1/status."""

    def __init__(
        self,
        store: ReplicaStore,
        ring_size: int,
        segments: int = DEFAULT_SEGMENTS,
        branching: int = DEFAULT_BRANCHING,
    ) -> None:
        self.store = store
        self.ring_size = ring_size
        self.segments = segments
        self.branching = branching
        self.trees: dict[int, HashTree] = {}
        self.keys_repaired = 0
        self.exchanges = 0
        self.exchanges_in_sync = 0

    # --- keeping trees current -------------------------------------------------------------
    def on_write(self, digest: bytes, old: Clock | None, new: Clock | None) -> None:
        tree = self.trees.get(partition_of_digest(digest, self.ring_size))
        if tree is None:
            return  # not built yet: the build scans storage and sees this write
        tree.update(
            digest,
            None if old is None else version_hash(old),
            None if new is None else version_hash(new),
        )

    def build(self, partition: int) -> HashTree:
        """Build a partition's tree from storage (replacing any old one)."""
        tree = HashTree(partition, self.ring_size, self.segments, self.branching)
        start, end = partition_range(partition, self.ring_size)
        tree.rebuild(self._versions(start, end))
        self.trees[partition] = tree
        return tree

    def build_next(self, wanted: Iterable[int]) -> int | None:
        """Build the first partition of `wanted` that has no tree yet; None when all have."""
        for partition in wanted:
            if partition not in self.trees:
                self.build(partition)
                return partition
        return None

    def forget(self, keep: set[int]) -> None:
        for partition in [p for p in self.trees if p not in keep]:
            del self.trees[partition]

    def _versions(self, start: bytes, end: bytes) -> Iterable[tuple[bytes, bytes]]:
        for digest, raw in self.store.engine.scan(start, end):
            try:
                _, _, state = unseal(raw)
                clock = versions.decode(state)
            except (CorruptRecord, InvalidRequest):
                self.store.corrupt_total += 1
                self.store.found_corrupt.append(("?", digest.hex(), "failed its checksum"))
                continue  # left out of the tree: the exchange will fetch the other copy
            yield digest, version_hash(clock)

    # --- answering a peer ------------------------------------------------------------------
    def hashes(
        self, partition: int, shape: tuple[int, int], level: int, indices: list[int]
    ) -> list[bytes] | None:
        tree = self.trees.get(partition)
        if tree is None or (tree.shape.segments, tree.shape.branching) != shape:
            return None
        if not 0 <= level <= tree.depth:
            return None
        if any(not 0 <= i < tree.level_size(level) for i in indices):
            return None
        return tree.level_hashes(level, indices)

    def key_map(self, partition: int, segments: list[int]) -> dict[bytes, bytes] | None:
        tree = self.trees.get(partition)
        if tree is None or any(not 0 <= s < tree.level_size(tree.depth) for s in segments):
            return None
        found: dict[bytes, bytes] = {}
        for segment in segments:
            start, end = tree.segment_range(segment)
            found.update(self._versions(start, end))
        return found

    def records(self, digests: list[bytes]) -> list[bytes]:
        """Stored records for the given digests (those present and sound)."""
        out: list[bytes] = []
        for digest in digests:
            raw = self.store.engine.get(digest)
            if raw is None:
                continue
            try:
                unseal(raw)
            except CorruptRecord:
                continue
            out.append(raw)
        return out

    # --- the initiator's side --------------------------------------------------------------
    def compare_segments(
        self, round_: ExchangeRound, remote: dict[bytes, bytes]
    ) -> tuple[list[bytes], list[bytes]]:
        """(digests to push, digests to pull) for the segments just compared; also mends
        any drift of the local tree over those segments."""
        from dynakv.core.merkle import diff_keys

        tree = self.trees[round_.partition]
        local: dict[bytes, bytes] = {}
        for segment in round_.segments[:KEYS_PER_REQUEST]:
            start, end = tree.segment_range(segment)
            items = list(self._versions(start, end))
            tree.reset_segment(segment, items)
            local.update(items)
        diff = diff_keys(local, remote)
        push = diff.remote_missing + diff.different
        pull = diff.missing + diff.different
        return push, pull

    def status(self, wanted: int) -> dict[str, object]:
        return {
            "trees_built": len(self.trees),
            "trees_wanted": wanted,
            "keys_repaired": self.keys_repaired,
            "exchanges": self.exchanges,
            "exchanges_in_sync": self.exchanges_in_sync,
        }
