"""This node's own copy of each key: a DVVSet per (bucket, key) in the storage engine.

The stored value is msgpack [bucket, key, encoded clock], under the key's MD5 digest, so a
partition is one contiguous key range. Synchronous and engine-agnostic; no network here.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from dynakv import versions
from dynakv.errors import InternalError
from dynakv.ring import key_digest
from dynakv.storage.engine import Engine
from dynakv.versions import Clock

_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(tuple[str, str, bytes])


class ReplicaStore:
    """Reads and writes causal states of keys through an Engine."""

    def __init__(self, engine: Engine, drop_siblings: bool = False) -> None:
        self.engine = engine
        self._drop_siblings = drop_siblings  # an injected bug (core.bugs), never in production

    def get_state(self, bucket: str, key: str) -> bytes | None:
        """The encoded clock as stored, without decoding it."""
        raw = self.engine.get(key_digest(bucket, key))
        if raw is None:
            return None
        try:
            stored_bucket, stored_key, state = _record_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise InternalError(f"corrupt record for {bucket}/{key}: {exc}") from exc
        if stored_bucket != bucket or stored_key != key:
            # Distinct (bucket, key) pairs never share a digest unless MD5 collides.
            raise InternalError(f"digest collision between {bucket}/{key} and the stored key")
        return state

    def get(self, bucket: str, key: str) -> Clock | None:
        state = self.get_state(bucket, key)
        return None if state is None else versions.decode(state)

    def put(self, bucket: str, key: str, clock: Clock) -> bytes:
        """Store the clock; returns its encoding (to send on to other replicas)."""
        state = versions.encode(clock)
        self.engine.put(key_digest(bucket, key), _record_encoder.encode((bucket, key, state)))
        return state

    def merge(self, bucket: str, key: str, incoming: Clock, lww: bool) -> Clock:
        """Merge a state from another replica into ours; writes only when something changed."""
        local = self.get(bucket, key)
        merged = incoming if local is None else versions.sync(incoming, local)
        if lww:
            merged = versions.lww(merged)
        elif self._drop_siblings and len(versions.values(merged)) > 1:
            merged = versions.lww(merged)  # the bug: concurrent values silently collapse to one
        if merged != local:
            self.put(bucket, key, merged)
        return merged

    def merge_record(self, raw: bytes, is_lww: Callable[[str], bool]) -> int:
        """Merge one stored record from another node (ownership transfer); returns its size."""
        try:
            bucket, key, state = _record_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise InternalError(f"corrupt record in a transfer: {exc}") from exc
        self.merge(bucket, key, versions.decode(state), is_lww(bucket))
        return len(raw)

    def scan_records(
        self, start: bytes, end: bytes, after: bytes, limit: int, max_bytes: int
    ) -> tuple[list[bytes], bytes, bool]:
        """Stored records of [start, end) after key `after`: (records, last key, done)."""
        records: list[bytes] = []
        size = 0
        last = after
        for digest, raw in self.engine.scan(after or start, end):
            if digest == after:
                continue
            records.append(raw)
            size += len(raw)
            last = digest
            if len(records) >= limit or size >= max_bytes:
                return records, last, False
        return records, last, True

    def measure(self, start: bytes, end: bytes) -> tuple[int, int]:
        """(objects, bytes) stored in [start, end)."""
        count = size = 0
        for _, raw in self.engine.scan(start, end):
            count += 1
            size += len(raw)
        return count, size
