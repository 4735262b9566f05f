"""This node's own copy of each key: a DVVSet per (bucket, key) in the storage engine.

The stored value is msgpack [bucket, key, encoded clock, minted actor, its counter] (a state
that expires as a whole adds its expiry: see EXPIRY_HEADER) followed by a CRC-32 of those
bytes, under the key's MD5 digest, so a partition is one contiguous key range. "Minted"
records which of this node's actors last dotted a write of the key here, and at which
counter: the node continues that actor only while the record still holds exactly that
(core/minting.py, `Minter.actor_for`). Transfers and anti-entropy hand records on whole, and
the receiver keeps only the bucket, key and clock. A record whose checksum or structure is
wrong is corrupt: reads treat it as missing (so quorum reads and read repair replace it from
the other replicas) and note it in `found_corrupt` for the node to report and repair.
Synchronous and engine-agnostic; no network here.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TypeVar

import msgspec

from dynakv import expiry, versions
from dynakv.errors import InternalError, InvalidRequest
from dynakv.item_keys import storage_key
from dynakv.storage.engine import Engine
from dynakv.versions import Clock

CHECKSUM_BYTES = 4
T = TypeVar("T")
Minted = tuple[str, int]  # (actor, counter) of this node's last dot for the key; ("", 0): none
NOT_MINTED: Minted = ("", 0)


class Record(msgspec.Struct, array_like=True, frozen=True):
    bucket: str
    key: str
    state: bytes
    minted_actor: str = ""
    minted_counter: int = 0
    expires: int = 0  # expiry.state_expiry of the state (ms), 0: none; kept for the reaper


class _RecordView(msgspec.Struct, array_like=True, frozen=True):
    """A Record decoded without copying its state: `state` is a read-only view into the
    stored bytes (msgspec decodes msgpack bin into a memoryview of its input). Safe because
    engines return bytes objects of their own (LMDB reads copy out of the map; never a
    buffer that is valid only inside its transaction)."""

    bucket: str
    key: str
    state: memoryview
    minted_actor: str = ""
    minted_counter: int = 0
    expires: int = 0


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_record_view_decoder = msgspec.msgpack.Decoder(_RecordView)
_ARRAY_HEADER = {3: 0x93, 5: 0x95}  # msgpack fixarray headers of the record's two shapes
# A record whose state expires as a whole is a 6-array (first byte 0x96) ending in the
# expiry as a msgpack uint64 (0xcf, 8 bytes big-endian) before the checksum: the reaper's
# sweep finds such records by their first byte and reads the time at a fixed offset, with
# no decoding. It costs such a record 9 bytes (2 more when nothing was minted); every other
# record keeps its shape.
EXPIRY_HEADER = 0x96
_EXPIRY_TAIL = 9 + CHECKSUM_BYTES
# From this size on, records are sealed around their state and read through views. Below
# it, copying costs less than the extra calls (a 1 KiB record: seal 0.76 µs encoded
# whole, 1.0 built around; unseal 0.69 µs sliced, 0.84 through a view).
VIEW_FROM = 16 * 1024


class _Unknown:
    """Marks an old state the caller did not read."""


UNKNOWN = _Unknown()


class CorruptRecord(InternalError):
    """A stored record failed its checksum or could not be decoded."""


def seal(
    bucket: str,
    key: str,
    state: bytes | memoryview,
    minted: Minted = NOT_MINTED,
    expires: int = 0,
) -> bytes:
    """The stored form of a record: payload plus CRC-32 of the payload.

    The payload is msgpack [bucket, key, state(, minted actor, counter(, expires))]. A large
    state (the whole value, up to megabytes) is not encoded into a payload that is then
    copied again to append the checksum: the record is built around it, byte for byte what
    the encoder writes, so the state is copied once and the CRC runs over the pieces.
    """
    if expires:
        return _seal_expiring(bucket, key, state, minted, expires)
    if len(state) < VIEW_FROM:
        if minted[0]:
            payload = _record_encoder.encode((bucket, key, state, minted[0], minted[1]))
        else:
            payload = _record_encoder.encode((bucket, key, state))
        return payload + zlib.crc32(payload).to_bytes(CHECKSUM_BYTES, "big")
    head = _record_encoder.encode((bucket, key))
    # minted's own array header is dropped: its two items follow in the record's array.
    tail = _record_encoder.encode(minted)[1:] if minted[0] else b""
    size = len(state)
    bin_header = (
        b"\xc5" + size.to_bytes(2, "big") if size < 0x10000 else b"\xc6" + size.to_bytes(4, "big")
    )
    # head is the 2-array [bucket, key] (fixarray 0x92): the record is a 3- or 5-array.
    prefix = bytes((_ARRAY_HEADER[5 if tail else 3],)) + head[1:] + bin_header
    crc = zlib.crc32(tail, zlib.crc32(state, zlib.crc32(prefix)))
    return b"".join((prefix, state, tail, crc.to_bytes(CHECKSUM_BYTES, "big")))


def _seal_expiring(
    bucket: str, key: str, state: bytes | memoryview, minted: Minted, expires: int
) -> bytes:
    """seal() of a state that expires: the 6-array EXPIRY_HEADER describes."""
    head = _record_encoder.encode((bucket, key))
    size = len(state)
    if size < 0x100:
        bin_header = b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        bin_header = b"\xc5" + size.to_bytes(2, "big")
    else:
        bin_header = b"\xc6" + size.to_bytes(4, "big")
    prefix = bytes((EXPIRY_HEADER,)) + head[1:] + bin_header
    tail = _record_encoder.encode(minted)[1:] + b"\xcf" + expires.to_bytes(8, "big")
    crc = zlib.crc32(tail, zlib.crc32(state, zlib.crc32(prefix)))
    return b"".join((prefix, state, tail, crc.to_bytes(CHECKSUM_BYTES, "big")))


def record_expiry(raw: bytes) -> int:
    """The expiry (ms) a stored record carries for its whole state, 0 for none, from two
    bytes and a fixed offset: no decoding, no checksum (the caller's unseal checks it)."""
    if raw[:1] != b"\x96" or len(raw) < _EXPIRY_TAIL or raw[-_EXPIRY_TAIL] != 0xCF:
        return 0
    return int.from_bytes(raw[-_EXPIRY_TAIL + 1 : -CHECKSUM_BYTES], "big")


def unseal(raw: bytes) -> tuple[str, str, bytes]:
    """(bucket, key, state) of a stored record; CorruptRecord when it fails its checksum."""
    record = unseal_record(raw)
    return record.bucket, record.key, record.state


def unseal_record(raw: bytes) -> Record:
    """The whole stored record; CorruptRecord when it fails its checksum."""
    # A large record's payload is a view: a slice would copy the whole value. A small one's
    # is a slice, which costs less than making the view.
    payload = raw[:-CHECKSUM_BYTES] if len(raw) < VIEW_FROM else memoryview(raw)[:-CHECKSUM_BYTES]
    # Checked here, not through _check: one call more shows in a 1 KiB read.
    if (
        len(raw) <= CHECKSUM_BYTES
        or zlib.crc32(payload).to_bytes(CHECKSUM_BYTES, "big") != raw[-CHECKSUM_BYTES:]
    ):
        raise CorruptRecord("checksum mismatch")
    try:
        return _record_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CorruptRecord(f"undecodable record: {exc}") from exc


def _unseal_view(raw: bytes) -> _RecordView:
    """As unseal_record, but the state is a view into `raw`, not a copy of it (for large
    records: below VIEW_FROM unseal_record costs less)."""
    payload = memoryview(raw)[:-CHECKSUM_BYTES]
    _check(raw, payload)
    try:
        return _record_view_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CorruptRecord(f"undecodable record: {exc}") from exc


def unseal_state(raw: bytes) -> bytes | memoryview:
    """The encoded clock of a stored record, checked against its CRC (CorruptRecord if it
    fails): a view into `raw` for a large record, not a copy."""
    return (unseal_record(raw) if len(raw) < VIEW_FROM else _unseal_view(raw)).state


def _checked(digest: bytes, raw: bytes) -> bytes:
    """`raw` itself, once its CRC checks (CorruptRecord if not)."""
    unseal_state(raw)
    return raw


def may_be_tombstones(raw: bytes) -> bool:
    """False only when a large record's state certainly holds a live value: read through a
    view, its checksum unchecked (a corrupt record answers True, and the caller's unseal
    then finds it), so no byte of the value is touched."""
    try:
        state = _record_view_decoder.decode(memoryview(raw)[:-CHECKSUM_BYTES]).state
    except (msgspec.DecodeError, ValueError):
        return True
    return versions.only_tombstones(state)


def _check(raw: bytes, payload: bytes | memoryview) -> None:
    """CorruptRecord unless `raw` ends in the CRC-32 of `payload`, the rest of it."""
    if len(raw) <= CHECKSUM_BYTES or (
        zlib.crc32(payload).to_bytes(CHECKSUM_BYTES, "big") != raw[-CHECKSUM_BYTES:]
    ):
        raise CorruptRecord("checksum mismatch")


class ReplicaStore:
    """Reads and writes causal states of keys through an Engine."""

    def __init__(self, engine: Engine, drop_siblings: bool = False) -> None:
        self.engine = engine
        self._drop_siblings = drop_siblings  # an injected bug (core.bugs), never in production
        self.found_corrupt: list[tuple[str, str, str]] = []  # (bucket, key, why), for the node
        self.corrupt_total = 0
        # Told of every write with the key's old and new state (anti-entropy's trees).
        self.on_write: Callable[[bytes, Clock | None, Clock | None], None] | None = None

    def _record(self, bucket: str, key: str, strict: bool) -> Record | _RecordView | None:
        raw = self.engine.get(storage_key(bucket, key))
        if raw is None:
            return None
        try:
            record = unseal_record(raw) if len(raw) < VIEW_FROM else _unseal_view(raw)
            if record.bucket != bucket or record.key != key:
                # Distinct (bucket, key) pairs never share a digest unless MD5 collides.
                raise CorruptRecord(f"the stored key is {record.bucket}/{record.key}")
        except CorruptRecord as exc:
            return self._corrupt(bucket, key, str(exc), strict)
        return record

    def get_state(self, bucket: str, key: str, strict: bool = False) -> bytes | memoryview | None:
        """The encoded clock as stored, after its checksum, without decoding it; for a large
        record, a read-only view into it (no copy; it keeps the record's bytes alive).
        Compare encodings with versions.same_encoding: == on a view is item by item.

        A corrupt record reads as missing (noted in found_corrupt), or raises CorruptRecord
        when `strict` — for a coordinator, which must never mint dots without its history.
        """
        record = self._record(bucket, key, strict)
        return None if record is None else record.state

    def get(self, bucket: str, key: str, strict: bool = False) -> Clock | None:
        return self.read(bucket, key, strict)[0]

    def get_encoded(self, bucket: str, key: str) -> tuple[Clock | None, bytes | memoryview | None]:
        """The key's clock and its encoding as stored ((None, None) if absent or corrupt): a
        coordinator compares the encoding with the replicas' answers to skip decoding them.
        The encoding is a view into the stored record, as in get_state."""
        clock, record = self._decoded(bucket, key, False)
        return clock, None if record is None else record.state

    def read(self, bucket: str, key: str, strict: bool = False) -> tuple[Clock | None, Minted]:
        """The key's clock (None if absent or corrupt) and this node's last mint for it."""
        clock, record = self._decoded(bucket, key, strict)
        if record is None:
            return None, NOT_MINTED
        return clock, (record.minted_actor, record.minted_counter)

    def _decoded(
        self, bucket: str, key: str, strict: bool
    ) -> tuple[Clock | None, Record | _RecordView | None]:
        """The key's clock and its record, (None, None) if absent or corrupt."""
        record = self._record(bucket, key, strict)
        if record is None:
            return None, None
        try:
            return versions.decode(record.state), record
        except InvalidRequest:
            self._corrupt(bucket, key, "undecodable clock", strict)
            return None, None

    def _corrupt(self, bucket: str, key: str, why: str, strict: bool) -> None:
        self.corrupt_total += 1
        self.found_corrupt.append((bucket, key, why))
        if strict:
            raise CorruptRecord(f"the local copy of {bucket}/{key} is corrupt: {why}")

    def put(
        self,
        bucket: str,
        key: str,
        clock: Clock,
        old: Clock | None | _Unknown = UNKNOWN,
        minted: Minted | None = None,
        state: bytes | memoryview | None = None,
    ) -> bytes:
        """Store the clock (`old`: what was stored before, if the caller read it; `minted`:
        this node's last mint for the key, None to keep the stored one; `state`: the clock's
        encoding if the caller has it); returns its encoding (to send on to other replicas)."""
        digest = storage_key(bucket, key)
        if isinstance(old, _Unknown) or minted is None:
            previous, stored_mint = self.read(bucket, key)
            if isinstance(old, _Unknown):
                old = previous
            if minted is None:
                minted = stored_mint
        if self.on_write is not None:
            self.on_write(digest, old, clock)
        if state is None:
            state = versions.encode(clock)
        self.engine.put(digest, seal(bucket, key, state, minted, expiry.state_expiry(clock)))
        return state

    def delete(self, bucket: str, key: str, old: Clock) -> None:
        """Remove the key's record (`old`: what is stored, as the caller just read it)."""
        digest = storage_key(bucket, key)
        if self.on_write is not None:
            self.on_write(digest, old, None)
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
        caller has it); writes only when something changed."""
        local, minted = self.read(bucket, key)
        merged = incoming if local is None else versions.sync(incoming, local)
        if lww:
            merged = versions.lww(merged)
        elif self._drop_siblings and len(versions.values(merged)) > 1:
            merged = versions.lww(merged)  # the bug: concurrent values silently collapse to one
        if merged != local:
            # Usually the incoming state already covers ours (sync and lww then return it
            # as it is): its bytes are stored as they came.
            self.put(bucket, key, merged, local, minted, state if merged is incoming else None)
        return merged

    def merge_record(self, raw: bytes, is_lww: Callable[[str], bool]) -> int:
        """Merge one stored record from another node (ownership transfer); returns its size."""
        bucket, key, state = unseal(raw)
        self.merge(bucket, key, versions.decode(state), is_lww(bucket))
        return len(raw)

    def scan_records(
        self, start: bytes, end: bytes, after: bytes, limit: int, max_bytes: int
    ) -> tuple[list[bytes], bytes, bool]:
        """Stored records of [start, end) after key `after`: (records, last key, done)."""
        return self.scan_read(start, end, after, limit, max_bytes, _checked)

    def scan_read(
        self,
        start: bytes,
        end: bytes,
        after: bytes,
        limit: int,
        max_bytes: int,
        read: Callable[[bytes, bytes], T],
    ) -> tuple[list[T], bytes, bool]:
        """`read(key, record)` of the stored records of [start, end) after key `after`, up to
        `limit` of them and about `max_bytes` of records: (what read returned, last key,
        done). A record `read` finds corrupt (CorruptRecord, InvalidRequest) is left out and
        noted: never hand on a corrupt copy; the other replicas have the key."""
        found: list[T] = []
        size = 0
        last = after
        for digest, raw in self.engine.scan(after or start, end):
            if digest == after:
                continue
            last = digest
            try:
                found.append(read(digest, raw))
            except (CorruptRecord, InvalidRequest) as exc:
                self.corrupt_total += 1
                self.found_corrupt.append(("?", digest.hex(), str(exc)))
                continue
            size += len(raw)
            if len(found) >= limit or size >= max_bytes:
                return found, last, False
        return found, last, True

    def measure(self, start: bytes, end: bytes) -> tuple[int, int]:
        """(objects, bytes) stored in [start, end)."""
        count = size = 0
        for _, raw in self.engine.scan(start, end):
            count += 1
            size += len(raw)
        return count, size
