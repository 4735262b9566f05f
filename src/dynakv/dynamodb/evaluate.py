"""Evaluation of parsed conditions against an item: path lookup, size(), comparisons and
the condition functions, with DynamoDB's rule that a missing attribute or a type mismatch
makes a comparison false (and `<>` true). Pure.
"""

from __future__ import annotations

from typing import Any

from dynakv.dynamodb.attributes import Item, Value, decode_binary, value_type
from dynakv.dynamodb.expression_tree import (
    And,
    Between,
    Comparison,
    ConditionNode,
    Constant,
    Function,
    In,
    Not,
    Operand,
    Or,
    Path,
    Size,
)
from dynakv.dynamodb.ordering import compare, values_equal

_ORDERINGS = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def resolve(item: Item, path: Path) -> Value | None:
    """The value at `path` in `item`, or None where any step is missing or of the wrong type."""
    first = path.elements[0]
    if not isinstance(first, str):
        return None
    value: Any = item.get(first)
    for element in path.elements[1:]:
        if value is None:
            return None
        if isinstance(element, int):
            elements = value.get("L")
            value = elements[element] if elements is not None and element < len(elements) else None
        else:
            members = value.get("M")
            value = members.get(element) if members is not None else None
    return value


def size_of(value: Value | None) -> Value | None:
    """size(): a String's length in UTF-8 bytes, a Binary's bytes, the
    elements of a set, list or map; None for types without a size."""
    if value is None:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "S":
        # DynamoDB measures strings in UTF-8 bytes everywhere (as Alternator does here).
        count = len(inner.encode("utf-8"))
    elif kind == "B":
        count = len(decode_binary(inner))
    elif kind in ("SS", "NS", "BS", "L", "M"):
        count = len(inner)
    else:
        return None
    return {"N": str(count)}


def operand_value(item: Item, operand: Operand) -> Value | None:
    if isinstance(operand, Path):
        return resolve(item, operand)
    if isinstance(operand, Constant):
        return operand.value
    if isinstance(operand, Size):
        return size_of(resolve(item, operand.path))
    raise TypeError(f"not a condition operand: {operand!r}")


def holds(node: ConditionNode, item: Item) -> bool:
    """Whether the condition is true of `item` (an empty dict when there is no item)."""
    if isinstance(node, And):
        return holds(node.left, item) and holds(node.right, item)
    if isinstance(node, Or):
        return holds(node.left, item) or holds(node.right, item)
    if isinstance(node, Not):
        return not holds(node.operand, item)
    if isinstance(node, Comparison):
        left, right = operand_value(item, node.left), operand_value(item, node.right)
        if node.operator in ("=", "<>"):
            equal = left is not None and right is not None and values_equal(left, right)
            return equal if node.operator == "=" else not equal
        return _ordered(left, right, _ORDERINGS[node.operator])
    if isinstance(node, Between):
        value = operand_value(item, node.operand)
        low, high = operand_value(item, node.low), operand_value(item, node.high)
        return _ordered(value, low, _ORDERINGS[">="]) and _ordered(value, high, _ORDERINGS["<="])
    if isinstance(node, In):
        value = operand_value(item, node.operand)
        if value is None:
            return False
        for choice in node.choices:
            other = operand_value(item, choice)
            if other is not None and values_equal(value, other):
                return True
        return False
    return _function(node, item)


def _ordered(left: Value | None, right: Value | None, test: Any) -> bool:
    if left is None or right is None:
        return False
    order = compare(left, right)
    return order is not None and bool(test(order))


def _function(node: Function, item: Item) -> bool:
    arguments = [operand_value(item, a) for a in node.arguments]
    first = arguments[0]
    if node.name == "attribute_exists":
        return first is not None
    if node.name == "attribute_not_exists":
        return first is None
    second = arguments[1]
    if first is None or second is None:
        return False
    if node.name == "attribute_type":
        return second.get("S") == value_type(first)
    if node.name == "begins_with":
        return _begins_with(first, second)
    return _contains(first, second)


def _begins_with(value: Value, prefix: Value) -> bool:
    kind = value_type(value)
    if kind != value_type(prefix):
        return False
    if kind == "S":
        return bool(value["S"].startswith(prefix["S"]))
    if kind == "B":
        return decode_binary(value["B"]).startswith(decode_binary(prefix["B"]))
    return False


def _contains(value: Value, member: Value) -> bool:
    kind, member_kind = value_type(value), value_type(member)
    if kind == "S":
        return member_kind == "S" and member["S"] in value["S"]
    if kind == "B":
        return member_kind == "B" and decode_binary(member["B"]) in decode_binary(value["B"])
    if kind in ("SS", "NS", "BS"):
        if member_kind != kind[0]:
            return False
        return any(values_equal({member_kind: m}, member) for m in value[kind])
    if kind == "L":
        return any(values_equal(element, member) for element in value["L"])
    return False
