"""An item as the store keeps it: the (bucket, key) of its primary key and the value bytes
that hold it. Pure: no I/O.

The value is JSON `{"g": generation, "i": item}` (the item in wire form); `g` is the table's
`created`, so an item left by a deleted table of the same name reads as absent.
"""

from __future__ import annotations

import json
from typing import Any

from dynakv.dynamodb.attributes import Item, Value, decode_binary, value_type
from dynakv.dynamodb.ordering import sort_key_bytes
from dynakv.dynamodb.tables import Table
from dynakv.item_keys import item_key, table_bucket

CONTENT_TYPE = "application/x-dynakv-item+json"


def partition_id(value: Value) -> bytes:
    """The identity of a partition key value: its type and its bytes."""
    kind = value_type(value)
    if kind == "B":
        return b"B" + decode_binary(value["B"])
    return kind.encode() + str(value[kind]).encode("utf-8")


def location(table: Table, key: Item) -> tuple[str, str]:
    """(bucket, key) of the item with this validated primary key."""
    schema = table.schema
    sort = b""
    if schema.range_key is not None:
        sort = sort_key_bytes(key[schema.range_key])
    return table_bucket(table.name), item_key(partition_id(key[schema.hash_key]), sort)


def key_of(table: Table, item: Item) -> Item:
    """The primary key attributes of an item."""
    return {name: item[name] for name, _ in table.schema.attributes()}


def encode(table: Table, item: Item) -> bytes:
    # Not ASCII-escaped: 400 KB of emoji would take 1.2 MB as \ud83d\ude00 escapes, more than
    # a bucket's default max_value_bytes.
    data = {"g": table.created, "i": item}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def decode(table: Table, value: bytes) -> Item | None:
    """The item a stored value holds; None when it is another generation's or not ours."""
    try:
        raw: Any = json.loads(value)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("g") != table.created:
        return None
    item = raw.get("i")
    return item if isinstance(item, dict) else None
