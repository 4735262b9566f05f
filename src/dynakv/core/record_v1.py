"""The stored record format v1: msgpack [bucket, key, encoded clock(, minted actor, its
counter(, expiry))] followed by a CRC-32 of those bytes; large records are sealed around their
state and read through views, so a megabyte is copied once. A state that expires as a whole
carries its expiry: see EXPIRY_HEADER. Pure encoding: no engine calls.
"""

from __future__ import annotations

import zlib

import msgspec

from dynakv import versions
from dynakv.errors import InternalError

CHECKSUM_BYTES = 4
Minted = tuple[str, int]  # (actor, counter) of this node's last dot for the key; ("", 0): none
NOT_MINTED: Minted = ("", 0)


class Record(msgspec.Struct, array_like=True, frozen=True):
    bucket: str
    key: str
    state: bytes
    minted_actor: str = ""
    minted_counter: int = 0
    expires: int = 0  # expiry.state_expiry of the state (ms), 0: none; kept for the reaper


class RecordView(msgspec.Struct, array_like=True, frozen=True):
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
_record_view_decoder = msgspec.msgpack.Decoder(RecordView)
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
    """The expiry (ms) a v1 record carries for its whole state, 0 for none, from two bytes
    and a fixed offset: no decoding, no checksum (the caller's unseal checks it)."""
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


def unseal_view(raw: bytes) -> RecordView:
    """As unseal_record, but the state is a view into `raw`, not a copy of it (for large
    records: below VIEW_FROM unseal_record costs less)."""
    payload = memoryview(raw)[:-CHECKSUM_BYTES]
    _check(raw, payload)
    try:
        return _record_view_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CorruptRecord(f"undecodable record: {exc}") from exc


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
