"""YCSB's workload E (short ranges) as DynamoDB Queries: `dynakv bench --api dynamodb
--workload e`. The pure parts: where a record lives in the table, what one scan asks for, and
the Query request that asks it.

YCSB's E is 95% scans, 5% inserts; a scan starts at a record chosen by the request
distribution (zipfian) and reads up to a length drawn uniformly from 1..100 records in key
order. Its own example is threaded conversations, "each scan is for the posts in a given
thread (assumed to be clustered by thread id)", which is what a DynamoDB table with a range
key is: the table here has the hash key `k` (S) and the range key `s` (N), and record r is
the item (`user<r // per_key>`, r % per_key), so `per_key` consecutive records share a
partition key (`--items-per-key`) and sit in sort-key order on its replicas.

A scan is one Query of its start record's partition key, `#k = :k AND #s BETWEEN :lo AND
:hi`, Limit the scan's length, following LastEvaluatedKey while the node stops a page short
(its 1 MB page cap) or `--query-page` asks for smaller pages. Unlike YCSB's scan over the
whole ordered key space, it never continues into the next partition key: a scan that starts
near its partition's end returns fewer items, as a Query of one thread would. The report
counts the items and pages each scan returned, and a scan that found fewer items than the
load wrote in its range as `not_found`.

The binary protocol has no range read (its keys are placed by hash, and `partition_batch`
is the replicas' transfer interface, not a client read), so E runs with `--api dynamodb`
only; the comparison is per item, against GetItem (YCSB-C) and the binary get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HASH_KEY, RANGE_KEY = "k", "s"
DEFAULT_ITEMS_PER_KEY = 1000
RECORD_PREFIX = "user"  # the generator names record r `user<r>`


def item_key(record: int, per_key: int) -> tuple[str, int]:
    """(partition key, sort key) of record `record` when `per_key` records share a key."""
    return f"{RECORD_PREFIX}{record // per_key}", record % per_key


def record_of(key: str) -> int:
    """The record number of the generator's key `user<r>`."""
    if not key.startswith(RECORD_PREFIX):
        raise ValueError(f"not a generator key: {key!r}")
    return int(key[len(RECORD_PREFIX) :])


def key_attributes(record: int, per_key: int) -> dict[str, Any]:
    """The DynamoDB key of a record, as a request's `Key` (or the key part of an `Item`)."""
    partition, sort = item_key(record, per_key)
    return {HASH_KEY: {"S": partition}, RANGE_KEY: {"N": str(sort)}}


@dataclass(frozen=True)
class Scan:
    """One scan: sort keys `first`..`last` (inclusive) of `partition_key`, at most `length`
    items; `expected` of them were written by the load."""

    partition_key: str
    first: int
    last: int
    length: int
    expected: int


def plan_scan(start: int, length: int, per_key: int, records: int) -> Scan:
    """The scan of `length` records from record `start`, within its partition key; the load
    wrote records 0..records-1."""
    if length < 1 or per_key < 1:
        raise ValueError("a scan reads at least one item of a key with at least one")
    partition, sort = item_key(start, per_key)
    # Within the partition (per_key - sort records from `start` on) and the loaded records.
    expected = max(0, min(length, per_key - sort, records - start))
    return Scan(partition, sort, sort + length - 1, length, expected)


def query_body(
    table: str,
    scan: Scan,
    limit: int,
    start_key: dict[str, Any] | None = None,
    consistent_read: bool = False,
) -> dict[str, Any]:
    """The Query of one page of `scan`: at most `limit` items, after `start_key` (the last
    page's LastEvaluatedKey) if given."""
    body: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#k = :k AND #s BETWEEN :lo AND :hi",
        "ExpressionAttributeNames": {"#k": HASH_KEY, "#s": RANGE_KEY},
        "ExpressionAttributeValues": {
            ":k": {"S": scan.partition_key},
            ":lo": {"N": str(scan.first)},
            ":hi": {"N": str(scan.last)},
        },
        "Limit": limit,
    }
    if start_key is not None:
        body["ExclusiveStartKey"] = start_key
    if consistent_read:
        body["ConsistentRead"] = True
    return body


def next_limit(scan: Scan, got: int, page: int | None) -> int:
    """The Limit of the next page: what the scan still wants, at most `page` (None: all)."""
    remaining = scan.length - got
    return remaining if page is None else min(page, remaining)


@dataclass(frozen=True)
class ScanResult:
    """What one scan returned: items, Query requests it took, items the load wrote there."""

    items: int
    pages: int
    expected: int


def key_schema(ranged: bool) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(KeySchema, AttributeDefinitions) of the bench's table: hash `k` (S), and for E the
    range key `s` (N)."""
    schema = [{"AttributeName": HASH_KEY, "KeyType": "HASH"}]
    attributes = [{"AttributeName": HASH_KEY, "AttributeType": "S"}]
    if ranged:
        schema.append({"AttributeName": RANGE_KEY, "KeyType": "RANGE"})
        attributes.append({"AttributeName": RANGE_KEY, "AttributeType": "N"})
    return schema, attributes
