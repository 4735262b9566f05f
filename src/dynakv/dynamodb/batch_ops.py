"""BatchGetItem and BatchWriteItem: every request validated first (one bad request fails
the batch, as in DynamoDB), then run concurrently; a key whose replicas cannot be read or
written is handed back in UnprocessedKeys / UnprocessedItems, never dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dynakv.dynamodb.attributes import Item, validate_item, validate_key
from dynakv.dynamodb.backend import (
    Backend,
    Request,
    expression_attributes,
    read_item,
    write_item,
)
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.expressions import Projection, check_all_used, parse_projection
from dynakv.dynamodb.items import key_of
from dynakv.dynamodb.tables import Table, lookup
from dynakv.errors import DynakvError

MAX_GETS = 100
MAX_WRITES = 25


def _request_items(request: Request) -> dict[str, Any]:
    wanted = request.get("RequestItems")
    if not isinstance(wanted, dict) or not wanted:
        raise ValidationException(
            "1 validation error detected: Value at 'requestItems' failed to satisfy "
            "constraint: Member must have length greater than or equal to 1"
        )
    return wanted


def _unique(keys: list[Item]) -> None:
    seen = {json.dumps(k, sort_keys=True) for k in keys}
    if len(seen) != len(keys):
        raise ValidationException("Provided list of item keys contains duplicates")


async def batch_get_item(backend: Backend, request: Request) -> dict[str, Any]:
    wanted = _request_items(request)
    plans: list[tuple[str, Table, Item, Projection | None, bool, dict[str, Any]]] = []
    for name, spec in wanted.items():
        table = lookup(backend.tables(), name)
        if not isinstance(spec, dict) or not isinstance(spec.get("Keys"), list):
            raise ValidationException("1 validation error detected: Keys must be a list")
        keys = [validate_key(k, table.schema) for k in spec["Keys"]]
        if not keys:
            raise ValidationException(
                "1 validation error detected: Value at 'requestItems." + name + ".member.keys' "
                "failed to satisfy constraint: Member must have length greater than or equal to 1"
            )
        _unique(keys)
        names, values = expression_attributes(spec)
        text = spec.get("ProjectionExpression")
        projection = None if text is None else parse_projection(text, names)
        check_all_used(names, values, *([projection] if projection else []))
        consistent = bool(spec.get("ConsistentRead", False))
        plans.extend((name, table, key, projection, consistent, spec) for key in keys)
    if len(plans) > MAX_GETS:
        raise ValidationException("Too many items requested for the BatchGetItem call")
    results = await asyncio.gather(
        *(read_item(backend, t, k, c) for _, t, k, _, c, _ in plans), return_exceptions=True
    )
    responses: dict[str, list[Item]] = {name: [] for name in wanted}
    unprocessed: dict[str, dict[str, Any]] = {}
    for (name, _, key, projection, _, spec), result in zip(plans, results, strict=True):
        if isinstance(result, DynakvError):
            entry = unprocessed.setdefault(
                name, {k: v for k, v in spec.items() if k != "Keys"} | {"Keys": []}
            )
            entry["Keys"].append(key)
        elif isinstance(result, BaseException):
            raise result
        elif result[0] is not None:
            item = result[0]
            responses[name].append(projection.apply(item) if projection else item)
    return {"Responses": responses, "UnprocessedKeys": unprocessed}


async def batch_write_item(backend: Backend, request: Request) -> dict[str, Any]:
    wanted = _request_items(request)
    plans: list[tuple[str, Table, Item, Item | None, dict[str, Any]]] = []
    for name, writes in wanted.items():
        table = lookup(backend.tables(), name)
        if not isinstance(writes, list) or not writes:
            raise ValidationException(
                "1 validation error detected: Value at 'requestItems' failed to satisfy "
                "constraint: Map value must satisfy constraint: [Member must have length "
                "less than or equal to 25, Member must have length greater than or equal to 1]"
            )
        keys = []
        for write in writes:
            if not isinstance(write, dict) or len(write) != 1:
                raise ValidationException(
                    "Supplied AttributeValue has more than one datatypes set, must contain "
                    "exactly one of the supported datatypes"
                )
            if "PutRequest" in write and isinstance(write["PutRequest"], dict):
                item = validate_item(write["PutRequest"].get("Item"), table.schema)
                key = key_of(table, item)
                plans.append((name, table, key, item, write))
            elif "DeleteRequest" in write and isinstance(write["DeleteRequest"], dict):
                key = validate_key(write["DeleteRequest"].get("Key"), table.schema)
                plans.append((name, table, key, None, write))
            else:
                raise ValidationException(
                    "1 validation error detected: a WriteRequest must hold one PutRequest "
                    "or DeleteRequest"
                )
            keys.append(key)
        _unique(keys)
    if len(plans) > MAX_WRITES:
        raise ValidationException(
            "1 validation error detected: Value at 'requestItems' failed to satisfy "
            "constraint: Map value must satisfy constraint: [Member must have length less "
            "than or equal to 25, Member must have length greater than or equal to 1]"
        )
    results = await asyncio.gather(
        *(write_item(backend, t, k, i) for _, t, k, i, _ in plans), return_exceptions=True
    )
    unprocessed: dict[str, list[dict[str, Any]]] = {}
    for (name, _, _, _, write), result in zip(plans, results, strict=True):
        if isinstance(result, DynakvError):
            unprocessed.setdefault(name, []).append(write)
        elif isinstance(result, BaseException):
            raise result
    return {"UnprocessedItems": unprocessed}
