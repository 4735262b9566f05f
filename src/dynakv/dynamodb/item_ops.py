"""PutItem, GetItem, DeleteItem and UpdateItem.

A write with a condition, an update or old values to return is a read-modify-write: it
reads the item at the table's read quorum and writes after that version, serialised per key
on this node (Backend.lock). Two such writes through different nodes can still interleave;
docs/DESIGN.md says what that allows.
"""

from __future__ import annotations

from typing import Any

from dynakv.dynamodb.attributes import (
    Item,
    check_updated_item_size,
    validate_item,
    validate_key,
)
from dynakv.dynamodb.backend import (
    Backend,
    Request,
    bool_param,
    choice,
    expression_attributes,
    read_item,
    refuse_legacy,
    table_of,
    text_param,
    write_item,
)
from dynakv.dynamodb.document_paths import project
from dynakv.dynamodb.errors import (
    ConditionalCheckFailedException,
    DynamoError,
)
from dynakv.dynamodb.expressions import (
    Condition,
    Parsed,
    check_all_used,
    parse_condition,
    parse_projection,
    parse_update,
)
from dynakv.dynamodb.items import key_of, location
from dynakv.dynamodb.tables import Table

ALL_RETURN_VALUES = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")


def _condition(request: Request) -> tuple[Condition | None, list[Parsed]]:
    """The ConditionExpression, if any, parsed with the request's expression attributes,
    and the parsed expressions for check_all_used."""
    names, values = expression_attributes(request)
    text = text_param(request, "ConditionExpression")
    condition = None if text is None else parse_condition(text, names, values)
    return condition, [] if condition is None else [condition]


def _failed(request: Request, old: Item | None) -> ConditionalCheckFailedException:
    choice(
        request,
        "ReturnValuesOnConditionCheckFailure",
        ("NONE", "ALL_OLD"),
        "ReturnValuesOnConditionCheckFailure can only be ALL_OLD or NONE",
    )
    if request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and old is not None:
        return ConditionalCheckFailedException(extra={"Item": old})
    return ConditionalCheckFailedException()


def _attributes(item: Item | None) -> dict[str, Any]:
    return {"Attributes": item} if item else {}


async def put_item(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    item = validate_item(request.get("Item"), table.schema)
    return await _replace(backend, request, table, key_of(table, item), item)


async def delete_item(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    key = validate_key(request.get("Key"), table.schema)
    return await _replace(backend, request, table, key, None)


async def _replace(
    backend: Backend, request: Request, table: Table, key: Item, item: Item | None
) -> dict[str, Any]:
    """PutItem (item) or DeleteItem (None): unconditional and returning nothing, a plain
    write; else a read-modify-write under the key's lock."""
    returns = choice(
        request, "ReturnValues", ("NONE", "ALL_OLD"), "ReturnValues can only be ALL_OLD or NONE"
    )
    condition, parsed = _condition(request)
    names, values = expression_attributes(request)
    check_all_used(names, values, *parsed)
    if condition is None and returns == "NONE":
        await write_item(backend, table, key, item)
        return {}
    async with backend.lock(*location(table, key)):
        old, context = await read_item(backend, table, key)
        if condition is not None and not condition.holds(old):
            raise _failed(request, old)
        await write_item(backend, table, key, item, context)
    return _attributes(old) if returns == "ALL_OLD" else {}


async def get_item(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    key = validate_key(request.get("Key"), table.schema)
    names, values = expression_attributes(request)
    text = text_param(request, "ProjectionExpression")
    projection = None if text is None else parse_projection(text, names)
    check_all_used(names, values, *([projection] if projection else []))
    item, _ = await read_item(backend, table, key, bool_param(request, "ConsistentRead"))
    if item is None:
        return {}
    return {"Item": projection.apply(item) if projection else item}


async def update_item(backend: Backend, request: Request) -> dict[str, Any]:
    refuse_legacy(request)
    table = table_of(backend, request)
    key = validate_key(request.get("Key"), table.schema)
    returns = choice(
        request,
        "ReturnValues",
        ALL_RETURN_VALUES,
        "Return values set to invalid value",
    )
    names, values = expression_attributes(request)
    condition, parsed = _condition(request)
    text = text_param(request, "UpdateExpression")
    update = None if text is None else parse_update(text, names, values)
    check_all_used(names, values, *parsed, *([update] if update else []))
    if update is not None:
        update.check_key_untouched(table.schema)
    async with backend.lock(*location(table, key)):
        old, context = await read_item(backend, table, key)
        if condition is not None and not condition.holds(old):
            raise _failed(request, old)
        paths: list[Any] = []
        new = dict(old) if old is not None else dict(key)
        if update is not None:
            new, paths = update.apply(old, key=key)
        check_updated_item_size(new)
        await write_item(backend, table, key, new, context)
    if returns == "ALL_OLD":
        return _attributes(old)
    if returns == "ALL_NEW":
        return _attributes(new)
    if returns == "UPDATED_OLD":
        return _attributes(project(old, paths) if old else None)
    if returns == "UPDATED_NEW":
        return _attributes(project(new, paths))
    return {}


def serialised_key(backend: Backend, operation: str, request: Request) -> tuple[str, str] | None:
    """(bucket, key) of a request that reads, decides and writes one item (a conditional
    PutItem or DeleteItem, any UpdateItem): those run where that key's lock is; None for
    anything else, and for a request the operation itself will refuse."""
    try:
        if operation == "UpdateItem" or (
            operation in ("PutItem", "DeleteItem") and "ConditionExpression" in request
        ):
            table = table_of(backend, request)
            if operation == "PutItem":
                key = key_of(table, validate_item(request.get("Item"), table.schema))
            else:
                key = validate_key(request.get("Key"), table.schema)
            return location(table, key)
    except DynamoError:
        pass
    return None
