"""A key partition read from several replicas at once and merged key by key, and which nodes
hold a partition: what `dynakv export`, the key listing and `Client.list_keys` walk. Pure: the
callers fetch the batches (TransferRequest / TransferBatch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dynakv import bucket_types as bt
from dynakv import versions
from dynakv.core.membership import Membership
from dynakv.core.replica import CorruptRecord, unseal
from dynakv.item_keys import storage_key
from dynakv.messages import TransferBatch
from dynakv.versions import Clock


@dataclass
class _Source:
    address: str
    after: bytes = b""
    done: bool = False
    buffered: list[tuple[bytes, str, str, bytes]] = field(default_factory=list)


@dataclass
class PartitionScan:
    """One key partition read from several replicas at once, merged key by key.

    Each replica serves its copy in digest order; a key is merged (and handed out) only once
    every replica still serving has sent past it, so each key comes out once, with every
    copy's state. `wanted()` names the replicas to ask next and after which digest.
    """

    partition: int
    sources: list[_Source]
    corrupt: int = 0

    @classmethod
    def of(cls, partition: int, addresses: Iterable[str]) -> PartitionScan:
        return cls(partition, [_Source(a) for a in addresses])

    @property
    def done(self) -> bool:
        return all(s.done and not s.buffered for s in self.sources)

    def wanted(self) -> list[tuple[str, bytes]]:
        """(address, after) for each replica whose sent records are all handed out."""
        return [(s.address, s.after) for s in self.sources if not s.done and not s.buffered]

    def add(self, address: str, batch: TransferBatch) -> None:
        source = next(s for s in self.sources if s.address == address)
        for raw in batch.records:
            try:
                bucket, key, state = unseal(raw)
            except CorruptRecord:
                self.corrupt += 1  # never in a batch (the sender skips them); counted all the same
                continue
            source.buffered.append((storage_key(bucket, key), bucket, key, state))
        source.after = batch.last
        source.done = batch.done

    def drop(self, address: str) -> None:
        """A replica that cannot be reached: the others hold its keys too."""
        self.sources = [s for s in self.sources if s.address != address]

    def ready(self) -> list[tuple[str, str, Clock]]:
        """The keys every serving replica has sent past, merged, in digest order."""
        serving = [s.after for s in self.sources if not s.done]
        if any(not s.buffered and not s.done for s in self.sources):
            return []  # that replica may yet send a smaller digest
        bound = min(serving) if serving else None
        merged: dict[bytes, tuple[str, str, list[Clock]]] = {}
        for source in self.sources:
            keep = []
            for digest, bucket, key, state in source.buffered:
                if bound is not None and digest > bound:
                    keep.append((digest, bucket, key, state))
                    continue
                copies = merged.setdefault(digest, (bucket, key, []))[2]
                copies.append(versions.decode(state))
            source.buffered = keep
        return [(b, k, versions.sync_all(c)) for _, (b, k, c) in sorted(merged.items())]


def partition_replicas(state: Membership, partition: int) -> list[str]:
    """Node addresses holding key `partition`: the first n of its walk on the installed
    ring and on the ring moved towards (n: the largest of the bucket types); every member
    owning partitions when a type places replicas per data center."""
    addrs = {m.name: m.node_addr for m in state.members if m.status != "removed"}
    types = [bt.resolve(t) for t in state.types] or [None]
    n = max((p.n for p in types if p is not None), default=3)
    rings = [r for r in (state.ring.ring, state.ring.next) if r is not None]
    names: list[str] = []
    for ring in rings:
        if any(t.datacenters for t in state.types):
            names.extend(ring.owners)
        else:
            names.extend(ring.walk(partition)[:n])
    return [addrs[name] for name in dict.fromkeys(names) if name in addrs]
