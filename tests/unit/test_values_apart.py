"""Record format v2: large values stored apart from their key's record (core/values_apart.py).

The put path reads only the causal metadata; a value is read and checked when it is returned
or handed on; records of the format before (b8bfc1e) still read; corruption of either part
is still found when it is read.
"""

from __future__ import annotations

import pathlib
import zlib

import msgspec
import pytest

from dynakv import versions
from dynakv.core.merkle import version_hash
from dynakv.core.reaper import may_hold_tombstone
from dynakv.core.replica import (
    CorruptRecord,
    ReplicaStore,
    record_expiry,
    seal,
    stored_clock,
    unseal,
)
from dynakv.core.values_apart import APART_FROM, StoredValue, is_v2, same_dots, value_key
from dynakv.core.version_digests import fetch_records, local_differs, scan_versions
from dynakv.item_keys import storage_key
from dynakv.storage import LmdbEngine
from dynakv.storage.engine import VALUES, Engine
from dynakv.storage.memory import MemoryEngine
from dynakv.storage.wal import WalEngine
from dynakv.versions import Clock, Sibling

BIG = bytes(range(256)) * 4096  # 1 MiB
# Made by fixtures/make_records_b8bfc1e.py with that commit's code.
LEGACY = pathlib.Path(__file__).parent / "fixtures" / "records_b8bfc1e.msgpack.z"


def write(value: bytes, actor: str, local: Clock | None = None, ts: int = 1) -> Clock:
    context = versions.join(local) if local is not None else ()
    return versions.update(versions.new(context, Sibling(value, timestamp=ts)), local, actor)


def values_table(engine: Engine) -> dict[bytes, bytes]:
    return dict(engine.scan(b"", b"", VALUES))


def record(engine: Engine, bucket: str = "b", key: str = "k") -> bytes:
    raw = engine.get(storage_key(bucket, key))
    assert raw is not None
    return raw


def flip(engine: Engine, key: bytes, table: str = "objects", at: int | None = None) -> None:
    raw = bytearray(engine.get(key, table) or b"")  # type: ignore[arg-type]
    raw[len(raw) // 2 if at is None else at] ^= 0x01
    engine.put(key, bytes(raw), table)  # type: ignore[arg-type]


def test_a_large_value_is_stored_apart_and_reads_back_whole() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = write(BIG, "n1@a.1")
    store.put("b", "k", clock, None, ("n1@a.1", 1))
    raw = record(engine)
    assert is_v2(raw) and len(raw) < 200  # the record holds the versions, not the megabyte
    assert list(values_table(engine).values()) == [BIG]
    assert store.get("b", "k") == clock
    assert store.read("b", "k") == (clock, ("n1@a.1", 1))
    state = store.get_state("b", "k")
    assert state is not None and versions.same_encoding(state, versions.encode(clock))
    assert store.get_encoded("b", "k")[0] == clock


def test_small_values_keep_the_format_before() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = write(b"x" * (APART_FROM - 1), "n1@a.1")
    store.put("b", "k", clock, None)
    assert not is_v2(record(engine)) and values_table(engine) == {}
    assert unseal(record(engine))[2] == versions.encode(clock)


def test_the_put_path_reads_the_versions_without_reading_or_checking_the_value() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    first = write(BIG, "n1@a.1")
    store.put("b", "k", first, None, ("n1@a.1", 1))
    (vkey,) = values_table(engine)
    flip(engine, vkey, VALUES)  # a value read now would fail its checksum
    local, minted = store.read_meta("b", "k", strict=True)
    assert local is not None and minted == ("n1@a.1", 1) and store.found_corrupt == []
    (sibling,) = versions.values(local)
    assert type(sibling.value) is StoredValue and len(sibling.value) == len(BIG)
    assert same_dots(local, first)
    with pytest.raises(TypeError):
        versions.encode(local)  # a value not read can never pass for one
    # A write that covers it replaces it without reading it; its value record goes.
    second = write(BIG[::-1], "n1@a.1", local, ts=2)
    assert store.fill("b", "k", second, local) is second  # nothing of the old state survives
    store.put("b", "k", second, local, ("n1@a.1", 2))
    assert list(values_table(engine).values()) == [BIG[::-1]]
    assert store.get("b", "k") == write(BIG[::-1], "n1@a.1", first, ts=2)
    assert store.found_corrupt == []


def test_a_sibling_stored_apart_stays_where_it_is_and_is_read_when_sent_on() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    mine = write(BIG, "n1@a.1")
    store.put("b", "k", mine, None, ("n1@a.1", 1))
    before = values_table(engine)
    local, _ = store.read_meta("b", "k")
    assert local is not None
    other = Sibling(b"y" * APART_FROM, timestamp=2)
    blind = versions.update(versions.new((), other), local, "n2@b.1")
    full = store.fill("b", "k", blind, local)
    assert sorted(s.value for s in versions.values(full)) == sorted([BIG, b"y" * APART_FROM])
    store.put("b", "k", blind, local, ("n2@b.1", 1))
    after = values_table(engine)
    assert len(after) == 2 and all(after[k] is v for k, v in before.items())  # not rewritten
    assert store.get("b", "k") == full


def test_a_merge_that_changes_nothing_writes_nothing() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = write(BIG, "n1@a.1")
    store.put("b", "k", clock, None, ("n1@a.1", 1))
    engine.commit()
    store.on_write = lambda *_: pytest.fail("an unchanged state was written again")
    store.merge("b", "k", clock, lww=False, state=versions.encode(clock))
    store.merge("b", "k", clock, lww=True)


def test_a_replica_merges_a_newer_state_without_reading_its_own_value() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    old = write(BIG, "n1@a.1")
    store.put("b", "k", old, None)
    (vkey,) = values_table(engine)
    flip(engine, vkey, VALUES)
    new = write(BIG[::-1], "n2@b.1", old, ts=2)
    store.merge("b", "k", new, lww=False, state=versions.encode(new))
    assert store.get("b", "k") == new and store.found_corrupt == []
    assert list(values_table(engine).values()) == [BIG[::-1]]


def test_a_corrupt_value_reads_as_missing_and_the_repair_writes_it_anew() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = write(BIG, "n1@a.1")
    store.put("b", "k", clock, None)
    (vkey,) = values_table(engine)
    flip(engine, vkey, VALUES)
    assert store.get_state("b", "k") is None
    assert store.found_corrupt and "fails its checksum" in store.found_corrupt[0][2]
    # The copy is gone, so the repair (a merge of the other replicas' state) writes it whole.
    assert engine.get(storage_key("b", "k")) is None and values_table(engine) == {}
    store.merge("b", "k", clock, lww=False)
    assert store.get("b", "k") == clock


def test_a_missing_value_or_a_corrupt_record_is_corruption_and_strict_reads_raise() -> None:
    for damage in ("missing value", "record bit"):
        engine = MemoryEngine()
        store = ReplicaStore(engine)
        store.put("b", "k", write(BIG, "n1@a.1"), None)
        (vkey,) = values_table(engine)
        if damage == "missing value":
            engine.delete(vkey, VALUES)
        else:
            flip(engine, storage_key("b", "k"), at=10)
        with pytest.raises(CorruptRecord):
            store.read("b", "k", strict=True)
        assert store.get("b", "k") is None and store.corrupt_total >= 1


def test_a_corrupt_value_surviving_as_a_sibling_stops_the_coordinator_minting() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    store.put("b", "k", write(BIG, "n1@a.1"), None)
    (vkey,) = values_table(engine)
    flip(engine, vkey, VALUES)
    local, _ = store.read_meta("b", "k", strict=True)
    blind = versions.update(versions.new((), Sibling(b"z", timestamp=2)), local, "n2@b.1")
    with pytest.raises(CorruptRecord):
        store.fill("b", "k", blind, local)


def test_records_are_handed_on_whole_in_the_format_every_node_reads() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = versions.sync(write(BIG, "n1@a.1"), write(b"small", "n2@b.1", ts=2))
    store.put("b", "k", clock, None, ("n1@a.1", 1))
    records, _, done = store.scan_records(b"", b"", b"", 10, 1 << 30)
    assert done and len(records) == 1 and not is_v2(records[0])
    bucket, key, state = unseal(records[0])
    assert (bucket, key, versions.decode(state)) == ("b", "k", clock)
    other = ReplicaStore(MemoryEngine())
    other.merge_record(records[0], lambda _: False)
    assert other.get("b", "k") == clock
    assert store.measure(b"", b"") == (1, len(record(engine)) + len(BIG))
    (vkey,) = values_table(engine)
    flip(engine, vkey, VALUES)
    assert store.scan_records(b"", b"", b"", 10, 1 << 30)[0] == []  # never a corrupt copy


def test_anti_entropy_hashes_the_same_versions_in_either_format() -> None:
    clock = write(BIG, "n1@a.1")
    apart = MemoryEngine()
    ReplicaStore(apart).put("b", "k", clock, None)
    raw_v2 = record(apart)
    legacy = MemoryEngine()
    raw_v1 = seal("b", "k", versions.encode(clock))
    legacy.put(storage_key("b", "k"), raw_v1)
    hashes = {version_hash(stored_clock(raw)[2]) for raw in (raw_v1, raw_v2)}
    assert hashes == {version_hash(clock)}
    assert not may_hold_tombstone(raw_v2)


def test_a_delete_removes_the_values_too() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    clock = write(BIG, "n1@a.1")
    store.put("b", "k", clock, None)
    store.delete("b", "k", store.get("b", "k") or clock)
    assert engine.get(storage_key("b", "k")) is None and values_table(engine) == {}
    store.put("b", "k", clock, None)
    local, _ = store.read_meta("b", "k")
    assert local is not None
    store.delete("b", "k", local)
    assert values_table(engine) == {}


def test_records_written_by_b8bfc1e_still_read_and_are_rewritten_in_the_new_format() -> None:
    legacy = msgspec.msgpack.decode(zlib.decompress(LEGACY.read_bytes()))
    engine = MemoryEngine()
    for key, raw in legacy["records"]:
        engine.put(key, raw)
    store = ReplicaStore(engine)
    for name, encoded in legacy["clocks"].items():
        clock = versions.decode(encoded)
        assert store.get("legacy", name) == clock
        state = store.get_state("legacy", name)
        assert state is not None and versions.same_encoding(state, encoded)
        local, _ = store.read_meta("legacy", name, strict=True)
        assert local == clock
    assert store.read("legacy", "large")[1] == ("n1@a.1", 1)
    # A write over an old record: the old value goes with it, the new one is stored apart.
    local, _ = store.read_meta("legacy", "siblings")
    new = write(BIG, "n3@c.1", local, ts=9)
    store.put("legacy", "siblings", new, local, ("n3@c.1", 1))
    assert is_v2(record(engine, "legacy", "siblings"))
    assert list(values_table(engine).values()) == [BIG]
    assert store.get("legacy", "siblings") == new and store.found_corrupt == []


def open_engine(path: pathlib.Path, kind: str) -> Engine:
    return LmdbEngine(path, map_size=64 << 20) if kind == "lmdb" else WalEngine(path, 64 << 20)


@pytest.mark.parametrize("kind", ["lmdb", "wal"])
def test_values_apart_survive_a_reopen_and_a_backup(tmp_path: pathlib.Path, kind: str) -> None:
    clock = write(BIG, "n1@a.1")
    path = tmp_path / "data"
    engine = open_engine(path, kind)
    ReplicaStore(engine).put("b", "k", clock, None)
    engine.commit()
    if kind == "wal":
        engine.crash()  # type: ignore[attr-defined]  # the log alone must bring it back
    else:
        engine.close()
    reopened = open_engine(path, kind)
    try:
        assert ReplicaStore(reopened).get("b", "k") == clock
        if kind == "lmdb":
            assert isinstance(reopened, LmdbEngine)
            reopened.backup(str(tmp_path / "backup"))
            copy = LmdbEngine(tmp_path / "backup", map_size=64 << 20)
            assert ReplicaStore(copy).get("b", "k") == clock
            copy.close()
    finally:
        reopened.close()


def test_value_keys_name_one_dot_of_one_key() -> None:
    digest = storage_key("b", "k")
    keys = {value_key(digest, a, c) for a in ("n1@a.1", "n1@a.2") for c in (1, 2, 12)}
    assert len(keys) == 6 and all(k.startswith(digest) and len(k) == 32 for k in keys)


def test_a_large_expiring_value_carries_its_expiry_in_the_metadata() -> None:
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    expires = 1_900_000_000_000
    clock = versions.update(
        versions.new((), Sibling(BIG, timestamp=1, expires=expires)), None, "n1@a"
    )
    store.put("b", "k", clock, None)
    raw = record(engine)
    assert is_v2(raw) and record_expiry(raw) == expires
    assert store.get("b", "k") == clock
    store.put("b", "k", write(BIG, "n1@a", store.get("b", "k"), ts=2), None)
    assert record_expiry(record(engine)) == 0  # the new value lives for ever


def test_a_join_compares_and_fetches_large_values_by_their_versions() -> None:
    clock = write(BIG, "n1@a.1")
    apart, legacy = ReplicaStore(MemoryEngine()), ReplicaStore(MemoryEngine())
    apart.put("b", "k", clock, None)
    legacy.engine.put(storage_key("b", "k"), seal("b", "k", versions.encode(clock)))
    pairs, _, done = scan_versions(apart, b"", b"", b"", 10, 1 << 20)
    assert done and pairs == scan_versions(legacy, b"", b"", b"", 10, 1 << 20)[0]
    assert local_differs(legacy, pairs) == []  # the same versions: nothing to fetch
    newer = ReplicaStore(MemoryEngine())
    newer.put("b", "k", write(BIG[::-1], "n2@b.1", clock, ts=2), None)
    assert local_differs(newer, pairs) == [storage_key("b", "k")]
    (fetched,), _, done = fetch_records(apart, [storage_key("b", "k")], 1 << 30)
    assert done and not is_v2(fetched)  # handed on whole, in format v1
    assert versions.decode(unseal(fetched)[2]) == clock
