"""This node's own copy of each key: a DVVSet per (bucket, key) in the storage engine.

The stored value (format v1) is msgpack [bucket, key, encoded clock, minted actor, its
counter] (a state that expires as a whole adds its expiry: record_v1.EXPIRY_HEADER) followed
by a CRC-32 of those bytes, under the key's MD5 digest, so a partition is one contiguous key
range. A state holding a dotted value of 16 KiB or more is stored in
format v2 instead (core/values_apart.py): the record keeps the causal metadata, the large
values live in the "values" table, each with its own CRC-32, and the put path (`read_meta`)
reads neither them nor their checksums (v1 is in core/record_v1.py). "Minted" records
which of this node's actors last dotted a write of the key here, and at which counter: the
node continues that actor only while the record still holds exactly that
(core/minting.py, `Minter.actor_for`). Transfers and anti-entropy hand records on whole, in
format v1, and the receiver keeps only the bucket, key and clock. A record whose checksum
or structure is wrong is corrupt: reads treat it as missing (so quorum reads and read
repair replace it from the other replicas) and note it in `found_corrupt` for the node to
report and repair. Synchronous and engine-agnostic; no network here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from dynakv import expiry, versions
from dynakv.core import record_v1
from dynakv.core.record_v1 import (
    EXPIRY_HEADER,
    NOT_MINTED,
    VIEW_FROM,
    CorruptRecord,
    Minted,
    Record,
    RecordView,
    may_be_tombstones,
    seal,
    unseal,
    unseal_record,
    unseal_view,
)
from dynakv.core.values_apart import (
    APART_FROM,
    FORMAT_V2,
    BadMeta,
    MetaClock,
    MetaRecord,
    ValueRef,
    has_apart,
    is_v2,
    placeholders,
    same_dots,
    seal_meta,
    split,
    stored_clock,
    stored_refs,
    unseal_meta,
    value_crc,
    value_key,
    with_values,
)
from dynakv.errors import InvalidRequest
from dynakv.item_keys import storage_key
from dynakv.storage.engine import VALUES, Engine
from dynakv.versions import Clock

__all__ = [
    "EXPIRY_HEADER",
    "NOT_MINTED",
    "UNKNOWN",
    "VIEW_FROM",
    "CorruptRecord",
    "Minted",
    "ReplicaStore",
    "may_be_tombstones",
    "record_expiry",
    "seal",
    "stored_clock",
    "unseal",
    "unseal_record",
    "unseal_state",
]

T = TypeVar("T")

class _Unknown:
    """Marks an old state the caller did not read."""


UNKNOWN = _Unknown()


def record_expiry(raw: bytes) -> int:
    """The expiry (ms) a stored record of either format carries for its whole state, 0 for
    none: a v1 record's from two bytes and a fixed offset, a v2 record's from its metadata
    (small: its values are apart). Unchecked for v1 (the caller's unseal checks it); a v2
    record that fails its checksum answers 0 (its reader finds it corrupt)."""
    if raw[:1] != b"\x01":  # not is_v2(): a call more per record of a sweep
        return record_v1.record_expiry(raw)
    try:
        return unseal_meta(raw).expires
    except BadMeta:
        return 0


def unseal_state(raw: bytes) -> bytes | memoryview:
    """The encoded clock of a stored record, checked (CorruptRecord if it fails): a view into
    `raw` for a large v1 record, not a copy; a v2 record's with its values stored apart left
    empty, which keeps its shape (actors, counters, flags: values apart are all dotted)."""
    if raw[:1] == b"\x01":
        try:
            return unseal_meta(raw).state
        except BadMeta as exc:
            raise CorruptRecord(str(exc)) from exc
    return (unseal_record(raw) if len(raw) < VIEW_FROM else unseal_view(raw)).state


class ReplicaStore:
    """Reads and writes causal states of keys through an Engine."""

    def __init__(self, engine: Engine, drop_siblings: bool = False) -> None:
        self.engine = engine
        self._drop_siblings = drop_siblings  # an injected bug (core.bugs), never in production
        self.found_corrupt: list[tuple[str, str, str]] = []  # (bucket, key, why), for the node
        self.corrupt_total = 0
        # Told of every write with the key's old and new state (anti-entropy's trees).
        self.on_write: Callable[[bytes, Clock | None, Clock | None], None] | None = None

    def _record(
        self, bucket: str, key: str, raw: bytes, strict: bool
    ) -> Record | RecordView | None:
        """A v1 record, checked."""
        try:
            record = unseal_record(raw) if len(raw) < VIEW_FROM else unseal_view(raw)
            if record.bucket != bucket or record.key != key:
                # Distinct (bucket, key) pairs never share a digest unless MD5 collides.
                raise CorruptRecord(f"the stored key is {record.bucket}/{record.key}")
        except CorruptRecord as exc:
            return self._corrupt(bucket, key, str(exc), strict)
        return record

    def _meta(
        self, bucket: str, key: str, raw: bytes, strict: bool
    ) -> tuple[MetaRecord, Clock] | None:
        """A v2 record's metadata and its clock (values apart left empty), checked."""
        try:
            meta = unseal_meta(raw)
            if meta.bucket != bucket or meta.key != key:
                raise BadMeta(f"the stored key is {meta.bucket}/{meta.key}")
            return meta, versions.decode(meta.state)
        except (BadMeta, InvalidRequest) as exc:
            return self._corrupt(bucket, key, str(exc), strict)

    def _values(
        self, bucket: str, key: str, meta: MetaRecord, clock: Clock, strict: bool
    ) -> Clock | None:
        """The metadata clock with its values read, each checked against its reference. A
        missing or bad value makes the copy corrupt: it is removed (so that merges see no
        copy and write the repaired state whole) and reads as missing."""
        digest = storage_key(bucket, key)

        def value_of(ref: ValueRef) -> bytes:
            vkey = value_key(digest, ref.actor, ref.counter)
            value = self.engine.get(vkey, VALUES)
            if value is None or len(value) != ref.size or value_crc(vkey, value) != ref.crc:
                raise BadMeta(f"value {ref.actor}:{ref.counter} is missing or fails its checksum")
            return value

        try:
            return with_values(clock, meta.refs, value_of)
        except BadMeta as exc:
            if self.on_write is not None:
                self.on_write(digest, clock, None)
            for ref in meta.refs:
                self.engine.delete(value_key(digest, ref.actor, ref.counter), VALUES)
            self.engine.delete(digest)
            return self._corrupt(bucket, key, str(exc), strict)

    def _load(
        self, bucket: str, key: str, strict: bool, encoded: bool, raw: bytes | None = None
    ) -> tuple[Clock | None, bytes | memoryview | None, Minted]:
        """(clock, its encoding as stored if `encoded` (v1: a view for a large record), this
        node's last mint); (None, None, NOT_MINTED) if absent or corrupt. `raw`: the stored
        record, if the caller read it."""
        if raw is None:
            raw = self.engine.get(storage_key(bucket, key))
        if raw is None:
            return None, None, NOT_MINTED
        if raw[0] == FORMAT_V2:  # not is_v2(): a call more shows in a 1 KiB write
            found = self._meta(bucket, key, raw, strict)
            if found is None:
                return None, None, NOT_MINTED
            meta, skeleton = found
            clock = self._values(bucket, key, meta, skeleton, strict)
            if clock is None:
                return None, None, NOT_MINTED
            state = versions.encode(clock) if encoded else None
            return clock, state, (meta.minted_actor, meta.minted_counter)
        record = self._record(bucket, key, raw, strict)
        if record is None:
            return None, None, NOT_MINTED
        try:
            clock = versions.decode(record.state)
        except InvalidRequest:
            self._corrupt(bucket, key, "undecodable clock", strict)
            return None, None, NOT_MINTED
        return clock, record.state, (record.minted_actor, record.minted_counter)

    def get_state(self, bucket: str, key: str, strict: bool = False) -> bytes | memoryview | None:
        """The encoded clock as stored, after its checksum, without decoding it; for a large
        record, a read-only view into it (no copy; it keeps the record's bytes alive).
        Compare encodings with versions.same_encoding: == on a view is item by item.

        A corrupt record reads as missing (noted in found_corrupt), or raises CorruptRecord
        when `strict` — for a coordinator, which must never mint dots without its history.
        """
        raw = self.engine.get(storage_key(bucket, key))
        if raw is None:
            return None
        if raw[0] == FORMAT_V2:
            return self._load(bucket, key, strict, True, raw)[1]
        record = self._record(bucket, key, raw, strict)
        return None if record is None else record.state

    def get(self, bucket: str, key: str, strict: bool = False) -> Clock | None:
        return self._load(bucket, key, strict, False)[0]

    def get_encoded(self, bucket: str, key: str) -> tuple[Clock | None, bytes | memoryview | None]:
        """The key's clock and its encoding as stored ((None, None) if absent or corrupt): a
        coordinator compares the encoding with the replicas' answers to skip decoding them.
        The encoding is a view into the stored record, as in get_state."""
        clock, state, _ = self._load(bucket, key, False, True)
        return clock, state

    def read(self, bucket: str, key: str, strict: bool = False) -> tuple[Clock | None, Minted]:
        """The key's clock (None if absent or corrupt) and this node's last mint for it."""
        clock, _, minted = self._load(bucket, key, strict, False)
        return clock, minted

    def read_meta(
        self, bucket: str, key: str, strict: bool = False
    ) -> tuple[Clock | None, Minted]:
        """As read, but a value stored apart is neither read nor checked: it is a
        StoredValue. For the put path, which needs the versions, not the values: pass the
        clock as `old` to put, and `fill` what is to be sent or returned."""
        raw = self.engine.get(storage_key(bucket, key))
        if raw is None:
            return None, NOT_MINTED
        if raw[0] != FORMAT_V2:
            clock, _, minted = self._load(bucket, key, strict, False, raw)
            return clock, minted
        found = self._meta(bucket, key, raw, strict)
        if found is None:
            return None, NOT_MINTED
        meta, skeleton = found
        try:
            clock = placeholders(skeleton, meta.refs)
        except BadMeta as exc:
            self._corrupt(bucket, key, str(exc), strict)
            return None, NOT_MINTED
        return clock, (meta.minted_actor, meta.minted_counter)

    def fill(self, bucket: str, key: str, clock: Clock, read: Clock | None) -> Clock:
        """The clock, made from `read` (what read_meta gave), with each StoredValue replaced
        by the value, read and checked; raises CorruptRecord when one is missing or bad (the
        copy is then removed)."""
        if type(read) is not MetaClock:
            return clock  # no value was left unread
        refs = tuple(stored_refs(clock))
        if not refs:
            return clock
        meta = MetaRecord(bucket, key, b"", "", 0, refs)
        filled = self._values(bucket, key, meta, clock, strict=True)
        assert filled is not None  # strict: a bad value raised
        return filled

    def _corrupt(self, bucket: str, key: str, why: str, strict: bool) -> None:
        self.corrupt_total += 1
        self.found_corrupt.append((bucket, key, why))
        if strict:
            raise CorruptRecord(f"the local copy of {bucket}/{key} is corrupt: {why}")

    def _refs_of(self, digest: bytes, old: Clock | None) -> list[ValueRef]:
        """The values stored apart for `old`, the state stored under digest: its StoredValues
        (a clock from read_meta), else, if it holds a large value, what the record says."""
        if old is None:
            return []
        if type(old) is MetaClock:
            return stored_refs(old)
        if not has_apart(old):
            return []
        raw = self.engine.get(digest)
        if raw is None or not is_v2(raw):
            return []
        try:
            return list(unseal_meta(raw).refs)
        except BadMeta:
            return []

    def put(
        self,
        bucket: str,
        key: str,
        clock: Clock,
        old: Clock | None | _Unknown = UNKNOWN,
        minted: Minted | None = None,
        state: bytes | memoryview | None = None,
    ) -> None:
        """Store the clock (`old`: what was stored before, as read_meta gave it, if the
        caller read it; `minted`: this node's last mint for the key, None to keep the stored
        one; `state`: the clock's encoding if the caller has it). A StoredValue in the clock
        (from that read) stays where it is stored; a large value is stored apart, and the
        values of `old` the new state no longer holds are deleted."""
        digest = storage_key(bucket, key)
        if isinstance(old, _Unknown) or minted is None:
            previous, stored_mint = self.read_meta(bucket, key)
            if isinstance(old, _Unknown):
                old = previous
            if minted is None:
                minted = stored_mint
        if self.on_write is not None:
            self.on_write(digest, old, clock)
        if type(old) is not MetaClock and (
            # An encoding shorter than APART_FROM holds no value that long: no scan.
            len(state) < APART_FROM if state is not None else not has_apart(clock)
        ):
            if state is None:
                state = versions.encode(clock)
            self.engine.put(digest, seal(bucket, key, state, minted, expiry.state_expiry(clock)))
            return  # nothing was stored apart for old (it is no MetaClock), nothing is now
        stale = stored_refs(old) if type(old) is MetaClock else []
        kept: set[tuple[str, int]] = set()
        if has_apart(clock):
            skeleton, refs, writes = split(digest, clock)
            for vkey, value in writes:
                self.engine.put(vkey, value, VALUES)
            meta_state = versions.encode(skeleton)
            expires = expiry.state_expiry(clock)
            self.engine.put(digest, seal_meta(bucket, key, meta_state, minted, refs, expires))
            kept = {(ref.actor, ref.counter) for ref in refs}
        else:
            if state is None:
                state = versions.encode(clock)
            self.engine.put(digest, seal(bucket, key, state, minted, expiry.state_expiry(clock)))
        for ref in stale:
            if (ref.actor, ref.counter) not in kept:
                self.engine.delete(value_key(digest, ref.actor, ref.counter), VALUES)

    def delete(self, bucket: str, key: str, old: Clock) -> None:
        """Remove the key's record and its values (`old`: what is stored, as the caller just
        read it)."""
        digest = storage_key(bucket, key)
        if self.on_write is not None:
            self.on_write(digest, old, None)
        for ref in self._refs_of(digest, old):
            self.engine.delete(value_key(digest, ref.actor, ref.counter), VALUES)
        self.engine.delete(digest)

    def merge(
        self,
        bucket: str,
        key: str,
        incoming: Clock,
        lww: bool,
        state: bytes | memoryview | None = None,
    ) -> Clock:
        """Merge a state from another replica into ours (`state`: incoming's encoding, if the
        caller has it); writes only when something changed; returns the merged state, in
        which values stored here apart are StoredValues: the merge reads only the versions
        (a dot names one value)."""
        local, minted = self.read_meta(bucket, key)
        merged = incoming if local is None else versions.sync(incoming, local)
        if lww:
            merged = versions.lww(merged)
        elif self._drop_siblings and len(versions.values(merged)) > 1:
            merged = versions.lww(merged)  # the bug: concurrent values silently collapse to one
        if type(local) is MetaClock:
            changed = merged is not local and not same_dots(merged, local)
        else:
            changed = local is None or merged != local
        if changed:
            # Usually the incoming state already covers ours (sync and lww then return it
            # as it is): its bytes are stored as they came.
            self.put(bucket, key, merged, local, minted, state if merged is incoming else None)
        return merged

    def merge_record(self, raw: bytes, is_lww: Callable[[str], bool]) -> int:
        """Merge one record from another node (ownership transfer, anti-entropy: always
        format v1, see handed_on); returns its size."""
        bucket, key, state = unseal(raw)
        self.merge(bucket, key, versions.decode(state), is_lww(bucket))
        return len(raw)

    def handed_on(self, digest: bytes, raw: bytes) -> bytes | None:
        """A stored record as it is handed to another node: format v1, whole (a v2 record
        with its values read and checked); None if it is corrupt (noted)."""
        if not is_v2(raw):
            try:
                unseal(raw)
            except CorruptRecord as exc:
                self.corrupt_total += 1
                self.found_corrupt.append(("?", digest.hex(), str(exc)))
                return None
            return raw
        try:
            meta = unseal_meta(raw)
        except BadMeta as exc:
            self.corrupt_total += 1
            self.found_corrupt.append(("?", digest.hex(), str(exc)))
            return None
        if storage_key(meta.bucket, meta.key) != digest:
            self._corrupt(meta.bucket, meta.key, "stored under another key's digest", False)
            return None
        found = self._meta(meta.bucket, meta.key, raw, False)
        clock = None if found is None else self._values(meta.bucket, meta.key, *found, False)
        return None if clock is None else seal(meta.bucket, meta.key, versions.encode(clock))

    def scan_records(
        self, start: bytes, end: bytes, after: bytes, limit: int, max_bytes: int
    ) -> tuple[list[bytes], bytes, bool]:
        """Records of [start, end) after key `after`, as handed on: (records, last key,
        done). A corrupt copy is never handed on; the other replicas have the key."""

        def record(digest: bytes, raw: bytes) -> tuple[bytes, int] | None:
            handed = self.handed_on(digest, raw)
            return None if handed is None else (handed, len(handed))

        return self.scan_read(start, end, after, limit, max_bytes, record)

    def scan_read(
        self,
        start: bytes,
        end: bytes,
        after: bytes,
        limit: int,
        max_bytes: int,
        read: Callable[[bytes, bytes], tuple[T, int] | None],
    ) -> tuple[list[T], bytes, bool]:
        """What `read(key, record)` makes of the stored records of [start, end) after key
        `after`, up to `limit` of them and about `max_bytes` (read returns the thing and its
        size, or None to leave the record out): (the things, last key, done). A record
        `read` finds corrupt (CorruptRecord, InvalidRequest) is left out and noted: never
        hand on a corrupt copy; the other replicas have the key."""
        found: list[T] = []
        size = 0
        last = after
        for digest, raw in self.engine.scan(after or start, end):
            if digest == after:
                continue
            last = digest
            try:
                got = read(digest, raw)
            except (CorruptRecord, InvalidRequest) as exc:
                self.corrupt_total += 1
                self.found_corrupt.append(("?", digest.hex(), str(exc)))
                continue
            if got is None:
                continue
            found.append(got[0])
            size += got[1]
            if len(found) >= limit or size >= max_bytes:
                return found, last, False
        return found, last, True

    def measure(self, start: bytes, end: bytes) -> tuple[int, int]:
        """(objects, bytes) stored in [start, end), values stored apart included."""
        count = size = 0
        for _, raw in self.engine.scan(start, end):
            count += 1
            size += len(raw)
            if is_v2(raw):
                with contextlib.suppress(BadMeta):
                    size += sum(ref.size for ref in unseal_meta(raw).refs)
        return count, size
