"""Storage keys of table items: placed by partition key, ordered by sort key, bounded."""

from __future__ import annotations

from dynakv.item_keys import (
    MAX_STORAGE_KEY,
    SORT_PREFIX,
    item_key,
    split_item_key,
    storage_key,
    table_bucket,
)
from dynakv.ring import Ring, key_digest, partition_of_digest


def test_a_plain_key_is_stored_under_its_digest() -> None:
    assert storage_key("carts", "alice") == key_digest("carts", "alice")
    # A table bucket with a key item_key did not make falls back to the digest as well.
    assert storage_key(table_bucket("t"), "plain") == key_digest(table_bucket("t"), "plain")


def test_items_of_one_partition_key_share_a_position_and_sort_by_sort_key() -> None:
    bucket = table_bucket("orders")
    keys = [storage_key(bucket, item_key(b"Salice", bytes([n]))) for n in (3, 1, 200, 2)]
    assert len({k[:16] for k in keys}) == 1
    assert sorted(keys) == [keys[1], keys[3], keys[0], keys[2]]
    other = storage_key(bucket, item_key(b"Sbob", b"\x01"))
    assert other[:16] != keys[0][:16]
    ring = Ring(8, tuple(f"n{i % 3}" for i in range(8)))
    position = partition_of_digest(keys[0][:16], 8)
    assert {partition_of_digest(k, 8) for k in keys} == {position}
    assert ring.partition(bucket, item_key(b"Salice", b"\x05")) == position


def test_an_item_key_round_trips() -> None:
    key = item_key(b"B\x00\xff", b"\x00sort\xff")
    assert split_item_key(key) == (b"B\x00\xff", b"\x00sort\xff")
    assert split_item_key("é" * 3 + "\u20ac") is None  # not Latin-1: not an item key
    assert split_item_key("\x00") is None


def test_a_long_sort_key_is_cut_and_hashed_within_the_limit() -> None:
    bucket = table_bucket("t")
    long_a = b"a" * 1000
    long_b = b"a" * 999 + b"b"
    key_a = storage_key(bucket, item_key(b"Sp", long_a))
    key_b = storage_key(bucket, item_key(b"Sp", long_b))
    assert len(key_a) == len(key_b) == MAX_STORAGE_KEY
    assert key_a != key_b  # distinct items keep distinct storage keys
    assert key_a[16 : 16 + SORT_PREFIX] == long_a[:SORT_PREFIX]
    short = storage_key(bucket, item_key(b"Sp", b"b"))
    assert short > key_a  # the kept prefix still orders it against keys that differ early


def test_a_bucket_type_carries_its_table_and_decodes_from_before_the_field() -> None:
    import msgspec

    from dynakv import bucket_types as bt

    old = msgspec.msgpack.encode([bt.DEFAULT, 3, 2, 2, "lww", 100, 1, [], None])
    decoded = msgspec.msgpack.decode(old, type=bt.BucketType)
    assert decoded.table == ""
    made = bt.change((decoded,), "t2", {"table": '{"k": 1}', "policy": "lww"}, "create")
    assert made.table == '{"k": 1}'
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(made), type=bt.BucketType)
    assert again == made
    changed = bt.change((made,), "t2", {"table": ""}, "update")
    assert changed.table == "" and changed.version == 2


def test_a_key_string_stays_within_the_kv_key_limit() -> None:
    bucket = table_bucket("t")
    worst = item_key(b"B" + b"\xff" * 2048, b"\xff" * 1024)
    assert len(worst.encode()) <= 1024
    again = item_key(b"B" + b"\xff" * 2048, b"\xff" * 1024)
    other = item_key(b"B" + b"\xff" * 2047 + b"\xfe", b"\xff" * 1024)
    assert storage_key(bucket, worst) == storage_key(bucket, again)
    assert storage_key(bucket, worst) != storage_key(bucket, other)
    assert len(storage_key(bucket, worst)) <= MAX_STORAGE_KEY
