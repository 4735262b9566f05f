"""Large values stored apart from their key's record (WiscKey, Bitcask): the record format v2.

A key whose state holds a dotted value of APART_FROM bytes or more is stored as a small
record of its causal metadata — the clock with those values emptied, and a `ValueRef` (dot,
size, CRC-32) for each — plus one record per such value in the engine's "values" table,
under `value_key`. A put reads and checksums only the metadata; a value is read, and its
checksum checked, only when it is returned or handed on. Pure encoding: no engine calls.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

import msgspec

from dynakv import versions
from dynakv.core.record_v1 import CorruptRecord, unseal
from dynakv.versions import Clock, Entry, Sibling

APART_FROM = 16 * 1024  # a dotted value this large is stored apart
FORMAT_V2 = 0x01  # first byte of a v2 record (a v1 record starts with a msgpack array header)
_CHECKSUM_BYTES = 4
_DOT_HASH_BYTES = 16


class ValueRef(msgspec.Struct, array_like=True, frozen=True):
    """Where a value stored apart is, and what it must be: the dot that names it (a dot
    names one value for ever: minting never reuses one), its size and CRC-32."""

    actor: str
    counter: int
    size: int
    crc: int


class MetaRecord(msgspec.Struct, array_like=True, frozen=True):
    """A v2 record: `state` is the clock's encoding with the referenced values emptied."""

    bucket: str
    key: str
    state: bytes
    minted_actor: str
    minted_counter: int
    refs: tuple[ValueRef, ...]
    expires: int = 0  # as a v1 record's (record_v1.EXPIRY_HEADER): for the reaper's sweep


class StoredValue:
    """Stands in a metadata clock for a value stored apart, which was not read. It is not
    bytes on purpose: encoding it, or using it as a value, fails loudly instead of passing
    an empty value on. Only ReplicaStore.put stores it (as the reference it was)."""

    __slots__ = ("ref",)

    def __init__(self, ref: ValueRef) -> None:
        self.ref = ref

    def __len__(self) -> int:
        return self.ref.size


class MetaClock(Clock, frozen=True, array_like=True):
    """A clock as ReplicaStore.read_meta gives it: each value stored apart is a
    StoredValue (its type says so at once: the small-value path never looks further)."""


_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(MetaRecord)


class BadMeta(ValueError):
    """A v2 record that fails its checksum or does not decode."""


def is_v2(raw: bytes) -> bool:
    return len(raw) > 0 and raw[0] == FORMAT_V2


def value_key(storage_key: bytes, actor: str, counter: int) -> bytes:
    """The values-table key of the value with dot (actor, counter) of the key stored under
    `storage_key` (at most 446 bytes: with the hash, within LMDB's 511)."""
    dot = hashlib.blake2b(f"{actor}\0{counter}".encode(), digest_size=_DOT_HASH_BYTES)
    return storage_key + dot.digest()


def value_crc(vkey: bytes, value: bytes | memoryview) -> int:
    """CRC-32 of a value, seeded with its key: a value under another key fails it."""
    return zlib.crc32(value, zlib.crc32(vkey))


def has_apart(clock: Clock) -> bool:
    """Whether storing the clock puts some value apart (a large value, or one not read:
    a StoredValue's length is its value's)."""
    for e in clock.entries:
        for s in e.values:
            if len(s.value) >= APART_FROM:
                return True
    return False


def _map_dotted(clock: Clock, change: Callable[[str, int, Sibling], Sibling]) -> Clock:
    """The clock with each dotted sibling replaced by change(actor, counter, sibling);
    entries whose siblings all come back as they were are kept as they were."""
    entries: list[Entry] = []
    for e in clock.entries:
        values = tuple([change(e.actor, e.counter - i, s) for i, s in enumerate(e.values)])
        same = all(a is b for a, b in zip(values, e.values, strict=True))
        entries.append(e if same else Entry(e.actor, e.counter, values))
    return Clock(tuple(entries), clock.anonymous)


def split(
    storage_key: bytes, clock: Clock
) -> tuple[Clock, tuple[ValueRef, ...], list[tuple[bytes, bytes]]]:
    """(the clock with values apart emptied, their refs, the (key, value) records to write).
    A StoredValue keeps its reference and writes nothing: the value is stored already."""
    refs: list[ValueRef] = []
    writes: list[tuple[bytes, bytes]] = []

    def empty(actor: str, counter: int, s: Sibling) -> Sibling:
        value = s.value
        if type(value) is StoredValue:
            refs.append(value.ref)
        elif len(value) >= APART_FROM:
            vkey = value_key(storage_key, actor, counter)
            refs.append(ValueRef(actor, counter, len(value), value_crc(vkey, value)))
            writes.append((vkey, value))
        else:
            return s
        return msgspec.structs.replace(s, value=b"")

    return _map_dotted(clock, empty), tuple(refs), writes


def seal_meta(
    bucket: str,
    key: str,
    state: bytes,
    minted: tuple[str, int],
    refs: tuple[ValueRef, ...],
    expires: int = 0,
) -> bytes:
    meta = MetaRecord(bucket, key, state, minted[0], minted[1], refs, expires)
    payload = _encoder.encode(meta)
    crc = zlib.crc32(payload, FORMAT_V2)
    return bytes((FORMAT_V2,)) + payload + crc.to_bytes(_CHECKSUM_BYTES, "big")


def unseal_meta(raw: bytes) -> MetaRecord:
    """The metadata of a v2 record; BadMeta when it fails its checksum or does not decode."""
    payload = memoryview(raw)[1:-_CHECKSUM_BYTES]
    if len(raw) <= 1 + _CHECKSUM_BYTES or (
        zlib.crc32(payload, FORMAT_V2).to_bytes(_CHECKSUM_BYTES, "big") != raw[-_CHECKSUM_BYTES:]
    ):
        raise BadMeta("checksum mismatch")
    try:
        return _meta_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError) as exc:
        raise BadMeta(f"undecodable record: {exc}") from exc


def with_values(
    meta: Clock, refs: tuple[ValueRef, ...], value_of: Callable[[ValueRef], object]
) -> Clock:
    """The metadata clock with each referenced value put back as value_of(its ref): the
    value itself, or a StoredValue."""
    by_dot = {(r.actor, r.counter): r for r in refs}
    found = 0

    def fill(actor: str, counter: int, s: Sibling) -> Sibling:
        nonlocal found
        ref = by_dot.get((actor, counter))
        if ref is None:
            return s
        found += 1
        return msgspec.structs.replace(s, value=value_of(ref))

    clock = _map_dotted(meta, fill)
    if found != len(by_dot):
        raise BadMeta("a value reference names no dot of the clock")
    return clock


def placeholders(meta: Clock, refs: tuple[ValueRef, ...]) -> MetaClock:
    """The metadata clock with a StoredValue for each value stored apart (nothing read)."""
    clock = with_values(meta, refs, StoredValue)
    return MetaClock(clock.entries, clock.anonymous)


def stored_refs(clock: Clock) -> list[ValueRef]:
    """The refs of the StoredValues in a clock from `placeholders`."""
    return [
        s.value.ref for e in clock.entries for s in e.values if type(s.value) is StoredValue
    ]


def same_dots(a: Clock, b: Clock) -> bool:
    """Whether two states hold the same versions: the same counters and surviving dots, each
    with the same flags, and the same anonymous values. A dot names one value, so the values
    themselves (which may not have been read) need not be compared."""
    if a.anonymous != b.anonymous or len(a.entries) != len(b.entries):
        return False
    for x, y in zip(a.entries, b.entries, strict=True):
        if x.actor != y.actor or x.counter != y.counter or len(x.values) != len(y.values):
            return False
        for s, t in zip(x.values, y.values, strict=True):
            if (s.deleted, s.timestamp, s.content_type) != (t.deleted, t.timestamp, t.content_type):
                return False
    return True


def stored_clock(raw: bytes) -> tuple[str, str, Clock]:
    """(bucket, key, clock) of a stored record of either format, its values stored apart
    left empty (for what reads only versions: anti-entropy's hashes).
    CorruptRecord or InvalidRequest when the record or its clock is bad."""
    if is_v2(raw):
        try:
            meta = unseal_meta(raw)
        except BadMeta as exc:
            raise CorruptRecord(str(exc)) from exc
        return meta.bucket, meta.key, versions.decode(meta.state)
    bucket, key, state = unseal(raw)
    return bucket, key, versions.decode(state)
