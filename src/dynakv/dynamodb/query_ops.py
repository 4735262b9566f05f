"""Query and Scan over the replicas' sorted storage (range_read).

A Query reads one partition key's items: one contiguous storage-key range (item_keys), in
sort-key order; descending order reads the range forward and turns it round. A Scan walks a
segment's share of the ring's digest space partition by partition. Both page by Limit and
1 MB of items evaluated, hand back LastEvaluatedKey, and filter and project after that.
"""

from __future__ import annotations

import time
from typing import Any

from dynakv.dynamodb import items
from dynakv.dynamodb.attributes import Item, item_size, validate_key
from dynakv.dynamodb.backend import (
    Backend,
    Request,
    bool_param,
    expression_attributes,
    read_item,
    refuse_legacy,
    table_of,
    text_param,
)
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.expressions import (
    Condition,
    Parsed,
    Projection,
    check_all_used,
    parse_filter,
    parse_key_condition,
    parse_projection,
)
from dynakv.dynamodb.ordering import sort_key_bytes
from dynakv.dynamodb.range_read import read_range
from dynakv.dynamodb.tables import Table
from dynakv.item_keys import SORT_PREFIX, partition_prefix, storage_key, table_bucket
from dynakv.ring import partition_of_digest, partition_range

PAGE_BYTES = 1 << 20  # DynamoDB stops a page once this much has been evaluated
SELECTS = ("ALL_ATTRIBUTES", "COUNT", "SPECIFIC_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES")


class _Page:
    """What Query and Scan share: Limit, the 1 MB cap, the filter, the projection, Select."""

    def __init__(self, table: Table, request: Request, extra: tuple[Parsed, ...] = ()) -> None:
        self.table = table
        names, values = expression_attributes(request)
        limit = request.get("Limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValidationException(
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                "constraint: Member must have value greater than or equal to 1"
            )
        self.limit = limit
        text = text_param(request, "FilterExpression")
        self.filter: Condition | None = None if text is None else parse_filter(text, names, values)
        text = text_param(request, "ProjectionExpression")
        self.projection: Projection | None = None if text is None else parse_projection(text, names)
        self.select = request.get("Select", "ALL_ATTRIBUTES")
        if self.select not in SELECTS:
            raise ValidationException(
                f"1 validation error detected: Value '{self.select}' at 'select' failed to "
                "satisfy constraint: Member must satisfy enum value set: ["
                + ", ".join(SELECTS)
                + "]"
            )
        if self.select == "SPECIFIC_ATTRIBUTES" and self.projection is None:
            raise ValidationException(
                "Select type SPECIFIC_ATTRIBUTES requires ProjectionExpression"
            )
        chosen = self.select in ("ALL_ATTRIBUTES", "COUNT") and "Select" in request
        if chosen and self.projection is not None:
            raise ValidationException(
                "Cannot specify the AttributesToGet/ProjectionExpression when choosing "
                f"to get {self.select}"
            )
        parsed = [p for p in (self.filter, self.projection) if p is not None]
        check_all_used(names, values, *extra, *parsed)
        self.found: list[Item] = []
        self.count = 0
        self.scanned = 0
        self.size = 0
        self.last: Item | None = None

    def full(self) -> bool:
        return (self.limit is not None and self.scanned >= self.limit) or self.size >= PAGE_BYTES

    def offer(self, item: Item) -> None:
        """One item evaluated, in order."""
        self.scanned += 1
        self.size += item_size(item)
        self.last = items.key_of(self.table, item)
        if self.filter is not None and not self.filter.holds(item):
            return
        self.count += 1
        if self.select != "COUNT":
            self.found.append(self.projection.apply(item) if self.projection else item)

    def answer(self, more: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"Count": self.count, "ScannedCount": self.scanned}
        if self.select != "COUNT":
            out["Items"] = self.found
        if more and self.last is not None:
            out["LastEvaluatedKey"] = self.last
        return out


def _start_key(table: Table, request: Request) -> Item | None:
    start = request.get("ExclusiveStartKey")
    if start is None:
        return None
    try:
        return validate_key(start, table.schema)
    except ValidationException:
        raise ValidationException("The provided starting key is invalid") from None


async def query(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    schema = table.schema
    names, values = expression_attributes(request)
    text = text_param(request, "KeyConditionExpression")
    if text is None:
        raise ValidationException(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified "
            "in the request."
        )
    condition = parse_key_condition(text, names, values, schema.hash_key, schema.range_key)
    condition.check_types(schema.hash_type, schema.range_type)
    page = _Page(table, request, (condition,))
    forward = request.get("ScanIndexForward", True)
    if not isinstance(forward, bool):
        raise ValidationException("ScanIndexForward must be a boolean")
    consistent = bool_param(request, "ConsistentRead")
    start = _start_key(table, request)
    if start is not None and start[schema.hash_key] != condition.hash_value:
        raise ValidationException("The provided starting key is invalid")
    key: Item = {schema.hash_key: condition.hash_value}
    if schema.range_key is None:
        item, _ = await read_item(backend, table, key, consistent)
        if item is not None and start is None:
            page.offer(item)
        return page.answer(False)
    bucket = table_bucket(table.name)
    prefix = partition_prefix(bucket, items.partition_id(condition.hash_value))
    low, beyond = _bounds(condition)
    after = prefix + low[:SORT_PREFIX][:-1]
    end: bytes | None = None
    if start is not None:
        start_key = storage_key(*items.location(table, start))
        if forward:
            after = max(after, start_key)
        else:
            end = start_key
    partition = partition_of_digest(prefix, backend.ring_size)

    def stop(skey: bytes) -> bool:
        if not skey.startswith(prefix) or (end is not None and skey >= end):
            return True
        return beyond(skey[len(prefix) :])

    needed = len(backend.replicas(partition)) if consistent else backend.quorum(bucket)
    matching: list[Item] = []
    async for _, b, _, value in read_range(backend, partition, after, stop, needed):
        item = items.decode(table, value, time.time()) if b == bucket else None
        if item is None or not condition.matches(item[schema.range_key]):
            continue
        if forward:
            page.offer(item)
            if page.full():
                return page.answer(True)
        else:
            matching.append(item)
    for item in reversed(matching):
        page.offer(item)
        if page.full():
            return page.answer(True)
    return page.answer(False)


def _bounds(condition: Any) -> tuple[bytes, Any]:
    """(lowest sort bytes to read from, `beyond(sort bytes)`: past every match)."""
    sort_range = condition.range
    if sort_range is None:
        return b"", lambda _: False
    op, bounds = sort_range.operator, [sort_key_bytes(b) for b in sort_range.bounds]
    low = bounds[0] if op in ("=", ">", ">=", "BETWEEN", "begins_with") else b""
    if op in ("=", "<", "<="):
        high = bounds[0]
    elif op == "BETWEEN":
        high = bounds[1]
    elif op == "begins_with":
        head = bounds[0][:SORT_PREFIX]
        return low, lambda sort: sort[: len(head)] > head
    else:
        return low, lambda _: False
    top = high[:SORT_PREFIX]
    # A stored sort key longer than SORT_PREFIX bytes is cut there (item_keys): compare the
    # kept prefix only, and let KeyCondition.matches decide within it.
    return low, lambda sort: sort[:SORT_PREFIX] > top


async def scan(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    page = _Page(table, request)
    segment, total = request.get("Segment"), request.get("TotalSegments")
    if (segment is None) != (total is None):
        which = "TotalSegments" if segment is not None else "Segment"
        raise ValidationException(
            f"The {which} parameter is required but was not present in the request when "
            f"parameter {'Segment' if which == 'TotalSegments' else 'TotalSegments'} is present"
        )
    if total is None:
        segment, total = 0, 1
    if not isinstance(total, int) or not 1 <= total <= 1_000_000:
        raise ValidationException(
            f"1 validation error detected: Value '{total}' at 'totalSegments' failed to "
            "satisfy constraint: Member must have value less than or equal to 1000000"
        )
    if not isinstance(segment, int) or not 0 <= segment < total:
        raise ValidationException(
            f"The Segment parameter is zero-based and must be less than parameter "
            f"TotalSegments: Segment: {segment} is out of bounds for TotalSegments: {total}"
        )
    consistent = bool_param(request, "ConsistentRead")
    bucket = table_bucket(table.name)
    low = (segment << 128) // total
    high = ((segment + 1) << 128) // total  # exclusive; 1 << 128 for the last segment
    after = low.to_bytes(16, "big") if low else b""
    start = _start_key(table, request)
    if start is not None:
        after = storage_key(*items.location(table, start))
        if not low <= int.from_bytes(after[:16], "big") < high:
            raise ValidationException("The provided starting key is invalid")
    size = backend.ring_size
    partition = partition_of_digest(after, size) if after else 0
    last = partition_of_digest((high - 1).to_bytes(16, "big"), size)

    def stop(skey: bytes) -> bool:
        return int.from_bytes(skey[:16], "big") >= high

    while partition <= last:
        needed = len(backend.replicas(partition)) if consistent else backend.quorum(bucket)
        async for _, b, _, value in read_range(backend, partition, after, stop, needed):
            item = items.decode(table, value, time.time()) if b == bucket else None
            if item is None:
                continue
            page.offer(item)
            if page.full():
                return page.answer(True)
        partition += 1
        after = b""
        if partition <= last:
            start_of = partition_range(partition, size)[0]
            after = b"" if int.from_bytes(start_of, "big") >= low else low.to_bytes(16, "big")
    return page.answer(False)
