"""An item as the store keeps it: the (bucket, key) of its primary key and the value bytes
that hold it. Pure: no I/O.

The value is JSON `{"g": generation, "i": item}` (the item in wire form); `g` is the table's
`created`, so an item left by a deleted table of the same name reads as absent. With the
table's TimeToLive on, an item whose TTL attribute (a Number, epoch seconds) has passed
reads as absent too, and the value is stored with that expiry (expires_of) so that the
node deletes it in the background.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from dynakv import expiry
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


# DynamoDB's TTL ignores expiry times more than five years in the past (not epoch seconds).
IGNORED_BEFORE = 5 * 365 * 24 * 3600
LATEST_MS = 2**63 - 1  # the largest expiry a stored value can carry


def expires_of(table: Table, item: Item, now: float) -> int:
    """The item's expiry in epoch milliseconds, 0 for none: its TTL attribute's Number,
    when the table's TimeToLive is on (any other type, or a time more than five years
    before `now`, is ignored, as DynamoDB's TTL ignores it)."""
    if not table.ttl_attribute:
        return 0
    attribute = item.get(table.ttl_attribute)
    if not isinstance(attribute, dict) or not isinstance(attribute.get("N"), str):
        return 0
    try:
        seconds = Decimal(attribute["N"])
    except InvalidOperation:
        return 0
    if not seconds.is_finite() or seconds < Decimal(now - IGNORED_BEFORE):
        return 0
    return min(int(seconds * 1000), LATEST_MS)


def decode(table: Table, value: bytes, now: float | None = None) -> Item | None:
    """The item a stored value holds; None when it is another generation's or not ours,
    or (given `now`) when its TTL attribute says it expired by then."""
    try:
        raw: Any = json.loads(value)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("g") != table.created:
        return None
    item = raw.get("i")
    if not isinstance(item, dict):
        return None
    if now is not None:
        expires = expires_of(table, item, now)
        if expires and expires <= expiry.now_ms(now):
            return None
    return item
