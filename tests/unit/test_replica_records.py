"""The stored record's format (core/replica.py): what seal writes, what unseal accepts.

seal builds the record around the state instead of encoding it and appending the CRC; these
tests pin that the bytes are the same as the original encoder's, so records written before
and after the change read alike, and that every corruption is still caught.
"""

from __future__ import annotations

import zlib

import msgspec
import pytest

from dynakv import versions
from dynakv.core.record_v1 import unseal_view
from dynakv.core.replica import (
    CorruptRecord,
    ReplicaStore,
    seal,
    unseal,
    unseal_record,
)
from dynakv.item_keys import storage_key
from dynakv.storage.memory import MemoryEngine
from dynakv.versions import Sibling

SIZES = [0, 1, 200, 255, 256, 65_535, 65_536, 1 << 20]
MINTS = [("", 0), ("n1#7", 1), ("n2#a", 2**40)]


def old_seal(bucket: str, key: str, state: bytes, minted: tuple[str, int]) -> bytes:
    """seal as first written (through e1733e0): encode the payload, append its CRC-32."""
    encoder = msgspec.msgpack.Encoder()
    if minted[0]:
        payload = encoder.encode((bucket, key, state, minted[0], minted[1]))
    else:
        payload = encoder.encode((bucket, key, state))
    return payload + zlib.crc32(payload).to_bytes(4, "big")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("minted", MINTS)
def test_seal_writes_the_bytes_the_original_encoder_wrote(
    size: int, minted: tuple[str, int]
) -> None:
    state = bytes(range(256)) * (size // 256) + b"s" * (size % 256)
    for bucket, key in [("b", "k"), ("bucket" * 10, "ключ" * 100)]:
        assert seal(bucket, key, state, minted) == old_seal(bucket, key, state, minted)
        assert seal(bucket, key, memoryview(state), minted) == old_seal(bucket, key, state, minted)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("minted", MINTS)
def test_records_written_by_the_old_code_unseal(size: int, minted: tuple[str, int]) -> None:
    state = b"\x93" + b"s" * size
    raw = old_seal("b", "k", state, minted)
    assert unseal(raw) == ("b", "k", state)
    record = unseal_record(raw)
    assert (record.minted_actor, record.minted_counter) == minted
    view = unseal_view(raw)
    assert (view.bucket, view.key, view.minted_actor, view.minted_counter) == ("b", "k", *minted)
    assert versions.same_encoding(view.state, state)
    if size >= 1 << 16:  # a large record's state is a view into the stored bytes: no copy
        assert type(view.state) is memoryview and view.state.obj is raw


def test_same_encoding_compares_bytes_and_views_alike() -> None:
    a = b"x" * 70_000
    for left in (a, memoryview(a), memoryview(b"y" + a)[1:]):
        for right in (a, memoryview(bytes(a)), a[:-1] + b"z", a[:-1], memoryview(a)[:-1]):
            assert versions.same_encoding(left, right) == (bytes(left) == bytes(right))


@pytest.mark.parametrize("size", [0, 300, 1 << 20])
def test_every_flipped_bit_or_cut_of_a_record_is_caught(size: int) -> None:
    raw = seal("b", "k", b"v" * size, ("n1#7", 3))
    positions = {0, 1, 5, len(raw) // 2, len(raw) - 5, len(raw) - 1}
    for pos in positions:
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        for read in (unseal, unseal_record, unseal_view):
            with pytest.raises(CorruptRecord):
                read(bytes(bad))
    for cut in (raw[:-1], raw[:4], raw[:3], b"", raw + b"\0"):
        for read in (unseal, unseal_record, unseal_view):
            with pytest.raises(CorruptRecord):
                read(cut)


def test_a_large_v1_record_reads_as_a_view_and_still_reports_corruption() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = versions.update(versions.new((), Sibling(b"x" * 100_000, timestamp=1)), None, "n1#1")
    state = versions.encode(clock)
    # As the code before format v2 stored a large state (puts now store it apart).
    engine.put(storage_key("b", "k"), seal("b", "k", state, ("n1#1", 1)))
    stored = store.get_state("b", "k")
    assert isinstance(stored, memoryview) and stored == state
    assert store.read("b", "k") == (clock, ("n1#1", 1))
    (digest,) = [d for d, _ in engine.scan(b"", b"")]
    raw = bytearray(engine.get(digest) or b"")
    raw[len(raw) // 2] ^= 1
    engine.put(digest, bytes(raw))
    assert store.get_state("b", "k") is None
    assert store.found_corrupt == [("b", "k", "checksum mismatch")]
    with pytest.raises(CorruptRecord):
        store.read("b", "k", strict=True)
