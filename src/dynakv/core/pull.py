"""One key partition an ownership transfer pulls: which replicas it reads and in what order
(the first one in full, the others by version digests), how far it got, and the cursor,
kept in the engine's metadata, that resumes it after a restart. Pure data and ordering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from dynakv.core.view import ClusterView


class _Cursor(msgspec.Struct, array_like=True):
    """The stored form of a pull's progress. Fields after `size` came with digest pulls; a
    cursor written before them (five items) restores with their defaults."""

    epoch: int
    source_index: int
    cursor: bytes
    keys: int
    size: int
    sources: list[str] = msgspec.field(default_factory=list)
    copied: bool = False
    compared: int = 0
    fetched: int = 0


_cursor_decoder = msgspec.msgpack.Decoder(_Cursor)


@dataclass
class Pull:
    """One key partition being pulled towards ring epoch `epoch`.

    `sources` are the installed ring's replicas of the partition, the one to copy in full
    first (`order_sources`). Until one source's whole copy is merged (`copied`), the current
    source is pulled in full (TransferRequest); after that each other source sends the
    (key, version hash) pairs of its copy (TransferDigestRequest) and only the keys whose
    version differs from the merged copy's are fetched (TransferFetch) and merged. The
    cursor moves past a digest batch only once its fetches are merged."""

    epoch: int
    partition: int
    sources: list[str]
    walk_order: list[str] = field(default_factory=list)  # the same nodes in the walk's order
    source_index: int = 0
    cursor: bytes = b""  # last key merged (or compared) from the current source
    copied: bool = False  # a source's whole copy is merged: the others are compared
    keys: int = 0  # records merged, in full or fetched
    bytes: int = 0
    compared: int = 0  # versions compared with other sources' digests
    fetched: int = 0  # records fetched because their version differed
    fetching: list[bytes] = field(default_factory=list)  # keys of a digest batch to fetch
    fetch_last: bytes = b""  # that digest batch's last key and whether it was the last batch
    fetch_done: bool = False
    total_keys: int = 0  # of the current source's copy, reported with its first batch
    total_bytes: int = 0
    keys_from_source: int = 0
    in_flight: int = 0  # rid of the outstanding request, 0 when none
    deadline: float = 0.0
    requested_at: float = 0.0  # when the outstanding (or last) batch was asked for
    resume_at: float = 0.0  # no batch is asked for before this (the budget's pause)
    source_share: float = 1.0  # the background budget the source sent with its last reply

    @property
    def meta_name(self) -> str:
        return f"pull/{self.epoch}/{self.partition}"

    @property
    def source(self) -> str | None:
        return self.sources[self.source_index] if self.source_index < len(self.sources) else None

    def encode_cursor(self) -> bytes:
        return msgspec.msgpack.encode(
            _Cursor(
                self.epoch, self.source_index, self.cursor, self.keys, self.bytes,
                self.sources, self.copied, self.compared, self.fetched,
            )
        )  # fmt: skip

    def restore(self, raw: bytes | None) -> None:
        if raw is None:
            return
        stored = _cursor_decoder.decode(raw)
        if stored.epoch != self.epoch:
            return
        self.source_index, self.cursor = stored.source_index, stored.cursor
        self.keys, self.bytes = stored.keys, stored.size
        self.compared, self.fetched = stored.compared, stored.fetched
        if stored.sources:
            self.sources, self.copied = stored.sources, stored.copied
        else:
            # Written by a node that pulled every source in full, in the walk's order.
            self.sources = list(self.walk_order or self.sources)
            self.copied = stored.source_index > 0

    def next_source(self) -> None:
        self.source_index += 1
        self.cursor = b""
        self.keys_from_source = self.total_keys = self.total_bytes = 0
        self.fetching = []

    def progress(self) -> dict[str, object]:
        sources = len(self.sources)
        share = self.keys_from_source / self.total_keys if self.total_keys else 0.0
        return {
            "partition": self.partition,
            "from": self.source,
            "mode": "digests" if self.copied else "full",
            "sources_done": self.source_index,
            "sources": sources,
            "keys": self.keys,
            "bytes": self.bytes,
            "compared": self.compared,
            "fetched": self.fetched,
            "source_total_keys": self.total_keys,
            "source_total_bytes": self.total_bytes,
            "fraction": round((self.source_index + min(share, 1.0)) / max(sources, 1), 4),
        }


def order_sources(view: ClusterView, partition: int, busy: Mapping[str, int]) -> list[str]:
    """The installed ring's other replicas of `partition`, the one to copy in full first: a
    replica that ring.next drops from the partition (it stops serving it, and its copy is
    deleted after), then one in this node's data center, then the one this node's other
    pulls copy from least (`busy`), then the walk's order."""
    placed = [x for x in view.placed_replicas(partition) if x != view.name]
    staying = set(view.replicas(partition))
    here = view.datacenter(view.name)

    def rank(item: tuple[int, str]) -> tuple[bool, bool, int, int]:
        index, node = item
        return node in staying, view.datacenter(node) != here, busy.get(node, 0), index

    return [node for _, node in sorted(enumerate(placed), key=rank)]
