"""Ownership transfer: a node that the next ring makes a replica of a key partition pulls
that partition, in batches, from the replicas the installed ring gives it.

Every replica of the installed ring that is up is pulled from in turn, so a write that
reached only some of them still arrives. Pull-based, so the receiver paces it (at most
`transfer_concurrency` partitions at once) and resumes after either side restarts: its
cursor (source index, last key merged) is kept in the engine's metadata and committed with
the merged objects. Pure bookkeeping; the node sends the messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

_cursor_encoder = msgspec.msgpack.Encoder()
_cursor_decoder = msgspec.msgpack.Decoder(tuple[int, int, bytes, int, int])


@dataclass
class Pull:
    """One key partition being pulled towards ring epoch `epoch`."""

    epoch: int
    partition: int
    sources: list[str]  # the installed ring's replicas of the partition, in walk order
    source_index: int = 0
    cursor: bytes = b""  # last key merged from the current source
    keys: int = 0
    bytes: int = 0
    total_keys: int = 0  # of the current source's copy, reported with its first batch
    total_bytes: int = 0
    keys_from_source: int = 0
    in_flight: int = 0  # rid of the outstanding request, 0 when none
    deadline: float = 0.0

    @property
    def meta_name(self) -> str:
        return f"pull/{self.epoch}/{self.partition}"

    def encode_cursor(self) -> bytes:
        return _cursor_encoder.encode(
            (self.epoch, self.source_index, self.cursor, self.keys, self.bytes)
        )

    def restore(self, raw: bytes | None) -> None:
        if raw is None:
            return
        epoch, index, cursor, keys, size = _cursor_decoder.decode(raw)
        if epoch == self.epoch:
            self.source_index, self.cursor, self.keys, self.bytes = index, cursor, keys, size

    def progress(self) -> dict[str, object]:
        sources = len(self.sources)
        current = self.sources[self.source_index] if self.source_index < sources else None
        share = self.keys_from_source / self.total_keys if self.total_keys else 0.0
        return {
            "partition": self.partition,
            "from": current,
            "sources_done": self.source_index,
            "sources": sources,
            "keys": self.keys,
            "bytes": self.bytes,
            "source_total_keys": self.total_keys,
            "source_total_bytes": self.total_bytes,
            "fraction": round((self.source_index + min(share, 1.0)) / max(sources, 1), 4),
        }
