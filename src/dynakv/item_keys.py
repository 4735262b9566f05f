"""Where a DynamoDB item is stored: its table's bucket name, its key string, and the storage
key every digest-range mechanism (placement, transfers, Merkle segments, hints, reaping) uses.

A plain key is stored under key_digest(bucket, key), 16 bytes. An item of a table is stored
under md5(bucket, NUL, partition-key id) followed by the order-preserving bytes of its sort
key, so all items of one partition key share a ring position (the same replicas) and form one
contiguous range, ordered by sort key, inside one ring partition. A sort key longer than
SORT_ROOM bytes keeps its first SORT_PREFIX bytes and gets their MD5 appended: items whose
sort keys agree on those first bytes are ordered by that hash among themselves, not by value.

The key string carries what the storage key needs, so `storage_key(bucket, key)` is a pure
function of the pair, as key_digest is: 2 bytes of partition-id length, the partition id, the
sort bytes, read as Latin-1 (each byte one character). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from dynakv.ring import key_digest

__all__ = [
    "MAX_STORAGE_KEY",
    "SORT_PREFIX",
    "SORT_ROOM",
    "TABLE_PREFIX",
    "digest_of",
    "is_table_bucket",
    "item_key",
    "partition_prefix",
    "split_item_key",
    "storage_key",
    "table_bucket",
]

# A control character no one types in a bucket name, so a table never shares a KV bucket's
# name; a bucket name is at most 255 bytes, so a table name is at most 250.
TABLE_PREFIX = "\x1fddb:"
DIGEST_BYTES = 16
# A hint is stored under `primary NUL storage key` (handoff.record_key) and a primary's name
# is up to 64 bytes: the storage key must leave room for both within LMDB's 511.
MAX_STORAGE_KEY = 511 - 64 - 1
SORT_ROOM = MAX_STORAGE_KEY - DIGEST_BYTES  # sort bytes kept whole up to this many
SORT_PREFIX = SORT_ROOM - DIGEST_BYTES  # a longer one keeps this many, then their MD5
MAX_PARTITION_ID = 64  # partition ids kept whole in a key string; longer ones are hashed
_HASHED = 0x8000  # flag in the id length: the id is a hash of the real one


def table_bucket(table: str) -> str:
    """The bucket (and bucket type) of a table's items."""
    return TABLE_PREFIX + table


def is_table_bucket(bucket: str) -> bool:
    return bucket.startswith(TABLE_PREFIX)


def item_key(partition_id: bytes, sort_bytes: bytes) -> str:
    """The key string of an item: its partition-key id (type and bytes, as the caller makes
    it) and its sort key's order-preserving bytes (b"" for a table without a sort key).

    A key string is at most 1024 bytes of UTF-8 and a Latin-1 character above 127 takes two:
    an id longer than MAX_PARTITION_ID is replaced by its SHA-256 (its items then share a
    position that depends on the hash: placement needs identity, not order), and the sort
    bytes are those stored (stored_sort_bytes)."""
    if len(partition_id) > MAX_PARTITION_ID:
        partition_id = b"#" + hashlib.sha256(partition_id).digest()
        header = (len(partition_id) | _HASHED).to_bytes(2, "big")
    else:
        header = len(partition_id).to_bytes(2, "big")
    return (header + partition_id + stored_sort_bytes(sort_bytes)).decode("latin-1")


def split_item_key(key: str) -> tuple[bytes, bytes] | None:
    """(partition id, sort bytes) of an item key; None for a key item_key did not make."""
    try:
        raw = key.encode("latin-1")
    except UnicodeEncodeError:
        return None
    if len(raw) < 3:
        return None
    size = int.from_bytes(raw[:2], "big") & ~_HASHED
    if not 0 < size <= len(raw) - 2:
        return None
    return raw[2 : 2 + size], raw[2 + size :]


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def partition_prefix(bucket: str, partition_id: bytes) -> bytes:
    """The 16 bytes every item of one partition key is stored under: its ring position."""
    return _md5(bucket.encode() + b"\0" + partition_id)


def stored_sort_bytes(sort_bytes: bytes) -> bytes:
    """Sort bytes as stored: whole up to SORT_ROOM, else a prefix and its hash."""
    if len(sort_bytes) <= SORT_ROOM:
        return sort_bytes
    return sort_bytes[:SORT_PREFIX] + _md5(sort_bytes)


@lru_cache(maxsize=1 << 15)
def storage_key(bucket: str, key: str) -> bytes:
    """The key a (bucket, key) pair is stored under; its first 16 bytes are its ring position.

    Cached, as key_digest is: one request asks for it several times.
    """
    if bucket.startswith(TABLE_PREFIX):
        parts = split_item_key(key)
        if parts is not None:
            return partition_prefix(bucket, parts[0]) + stored_sort_bytes(parts[1])
    return key_digest(bucket, key)


def digest_of(stored: bytes) -> bytes:
    """The ring position (16 bytes) of a storage key."""
    return stored[:DIGEST_BYTES]
