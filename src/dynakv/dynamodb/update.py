"""Applying parsed UpdateExpression actions to an item: SET (with +, -, if_not_exists,
list_append), REMOVE, ADD and DELETE on nested paths, with DynamoDB's errors. Pure: the
input item is never modified.
"""

from __future__ import annotations

import copy
from typing import Any

from dynakv.dynamodb.attributes import Item, Value, value_type
from dynakv.dynamodb.errors import ValidationException, invalid_expression
from dynakv.dynamodb.evaluate import resolve
from dynakv.dynamodb.expression_tree import (
    Arithmetic,
    Constant,
    IfNotExists,
    ListAppend,
    Operand,
    Path,
    UpdateAction,
)
from dynakv.dynamodb.numbers import add, number_text, parse_number, subtract
from dynakv.dynamodb.ordering import values_equal

BAD_PATH = "The document path provided in the update expression is invalid for update"
MISSING = "The provided expression refers to an attribute that does not exist in the item"
WRONG_TYPE = "An operand in the update expression has an incorrect data type"


def apply_actions(
    actions: list[UpdateAction], item: Item | None, start: Item | None = None
) -> Item:
    """The item after every action (`item` None: there was no item, and the update starts
    from `start`, the key). Right-hand sides see the item as it was before the update, as
    in DynamoDB; list indexes refer to the original list, and SETs past a list's end
    append in index order."""
    original = item if item is not None else dict(start or {})
    sets = sorted((a for a in actions if a.clause == "SET"), key=lambda a: _index_order(a.path))
    values = [evaluate(action.value, original) for action in sets if action.value is not None]
    updated = copy.deepcopy(original)
    for action, value in zip(sets, values, strict=True):
        _set(updated, action.path, value)
    removals = [a.path for a in actions if a.clause == "REMOVE"]
    # Highest list index first, so earlier removals do not shift later ones.
    for path in sorted(removals, key=_index_order, reverse=True):
        _remove(updated, path, item_exists=item is not None)
    for action in actions:
        if action.clause in ("ADD", "DELETE"):
            assert isinstance(action.value, Constant)
            _add_or_delete(updated, action.clause, action.path, action.value.value)
    return updated


def _index_order(path: Path) -> tuple[Any, ...]:
    return tuple((1, e) if isinstance(e, int) else (0, 0) for e in path.elements)


def evaluate(operand: Operand, item: Item) -> Value:
    """The value of a SET right-hand side against the original item."""
    if isinstance(operand, Constant):
        return operand.value
    if isinstance(operand, Path):
        value = resolve(item, operand)
        if value is None:
            raise ValidationException(MISSING)
        return value
    if isinstance(operand, IfNotExists):
        existing = resolve(item, operand.path)
        return existing if existing is not None else evaluate(operand.fallback, item)
    if isinstance(operand, ListAppend):
        first, second = evaluate(operand.first, item), evaluate(operand.second, item)
        _require_type("list_append", "L", first, second)
        return {"L": [*first["L"], *second["L"]]}
    if isinstance(operand, Arithmetic):
        left, right = evaluate(operand.left, item), evaluate(operand.right, item)
        _require_type(operand.operator, "N", left, right)
        combine = add if operand.operator == "+" else subtract
        return {"N": number_text(combine(parse_number(left["N"]), parse_number(right["N"])))}
    raise TypeError(f"not an update operand: {operand!r}")


def _require_type(function: str, kind: str, *values: Value) -> None:
    """An item attribute of the wrong type given to a function or + and -: the same error
    DynamoDB gives for a wrong constant, naming the type it found."""
    for value in values:
        if kind not in value:
            raise invalid_expression(
                "Update",
                "Incorrect operand type for operator or function; "
                f"operator or function: {function}, operand type: {value_type(value)}",
            )


def _parent(item: Item, path: Path) -> Any:
    """The container holding the last element of `path` (the item's dict, a map's dict or
    a list), or None when it does not exist or is of the wrong kind."""
    if len(path.elements) == 1:
        return item
    holder = resolve(item, Path(path.elements[:-1]))
    if holder is None:
        return None
    last = path.elements[-1]
    if isinstance(last, int):
        return holder.get("L")
    return holder.get("M")


def _set(item: Item, path: Path, value: Value) -> None:
    parent, last = _parent(item, path), path.elements[-1]
    if parent is None:
        raise ValidationException(BAD_PATH)
    if isinstance(last, int):
        if last < len(parent):
            parent[last] = copy.deepcopy(value)
        else:
            parent.append(copy.deepcopy(value))
    else:
        parent[last] = copy.deepcopy(value)


def _remove(item: Item, path: Path, item_exists: bool) -> None:
    parent, last = _parent(item, path), path.elements[-1]
    if parent is None:
        # DynamoDB refuses REMOVE a.b when a is missing or not a map, yet ignores it when
        # there is no item at all.
        if item_exists:
            raise ValidationException(BAD_PATH)
        return
    if isinstance(last, int):
        if last < len(parent):
            del parent[last]
    else:
        parent.pop(last, None)


def _add_or_delete(item: Item, clause: str, path: Path, value: Value) -> None:
    parent, last = _parent(item, path), path.elements[-1]
    if parent is None:
        raise ValidationException(BAD_PATH)
    existing = resolve(item, path)
    kind = value_type(value)
    if existing is None:
        if clause == "ADD":
            _set(item, path, value)
        return
    if value_type(existing) != kind:
        raise ValidationException(WRONG_TYPE)
    if kind == "N":
        total = add(parse_number(existing["N"]), parse_number(value["N"]))
        parent[last] = {"N": number_text(total)}
        return
    element_kind = kind[0]
    if clause == "ADD":
        members = list(existing[kind])
        for member in value[kind]:
            if not any(values_equal({element_kind: m}, {element_kind: member}) for m in members):
                members.append(member)
        parent[last] = {kind: members}
        return
    kept = [
        m
        for m in existing[kind]
        if not any(values_equal({element_kind: m}, {element_kind: d}) for d in value[kind])
    ]
    if kept:
        parent[last] = {kind: kept}
    else:  # DynamoDB has no empty sets: deleting the last member removes the attribute
        del parent[last]
