"""KeyConditionExpression: a condition restricted to `hash = :v` and optionally one sort
key condition (=, <, <=, >, >=, BETWEEN, begins_with), joined by AND. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynakv.dynamodb.attributes import Value, value_size, value_type
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.evaluate import holds
from dynakv.dynamodb.expression_tree import (
    And,
    Between,
    Comparison,
    ConditionNode,
    Constant,
    Function,
    In,
    Not,
    Or,
    Path,
)

_FLIPPED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class SortKeyRange:
    """The sort key condition: operator ("=", "<", "<=", ">", ">=", "BETWEEN",
    "begins_with") and its bounds (two for BETWEEN, else one)."""

    operator: str
    bounds: tuple[Value, ...]
    node: ConditionNode


def split_key_condition(
    node: ConditionNode, hash_key: str, range_key: str | None
) -> tuple[Value, SortKeyRange | None]:
    """The partition key's value and the sort key's range from a parsed condition."""
    parts = _conjuncts(node)
    if len(parts) > 2:
        raise ValidationException("KeyConditionExpressions must only contain one condition per key")
    hash_value: Value | None = None
    sort_range: SortKeyRange | None = None
    seen: set[str] = set()
    for part in parts:
        name, operator, bounds = _key_part(part)
        if name in seen:
            raise ValidationException(
                "KeyConditionExpressions must only contain one condition per key"
            )
        seen.add(name)
        if name == hash_key:
            if operator != "=":
                raise ValidationException("Query key condition not supported")
            hash_value = bounds[0]
        elif name == range_key:
            sort_range = SortKeyRange(operator, bounds, part)
        else:
            missing = hash_key if hash_key not in seen else (range_key or hash_key)
            raise ValidationException(f"Query condition missed key schema element: {missing}")
    if hash_value is None:
        raise ValidationException(f"Query condition missed key schema element: {hash_key}")
    return hash_value, sort_range


def _conjuncts(node: ConditionNode) -> list[ConditionNode]:
    if isinstance(node, And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    if isinstance(node, Or | Not | In):
        word = {Or: "OR", Not: "NOT", In: "IN"}[type(node)]
        raise ValidationException(f"Invalid operator used in KeyConditionExpression: {word}")
    return [node]


def _key_part(node: ConditionNode) -> tuple[str, str, tuple[Value, ...]]:
    """(attribute name, operator, constant bounds) of one key condition."""
    if isinstance(node, Comparison):
        operator, left, right = node.operator, node.left, node.right
        if isinstance(left, Constant) and isinstance(right, Path):
            operator, left, right = _FLIPPED.get(operator, operator), right, left
        if operator == "<>":
            raise ValidationException(
                "Unsupported operator on KeyConditionExpression: operator: <>"
            )
        return _key_name(left), operator, (_constant(right),)
    if isinstance(node, Between):
        return _key_name(node.operand), "BETWEEN", (_constant(node.low), _constant(node.high))
    if isinstance(node, Function):
        if node.name != "begins_with":
            raise ValidationException(
                f"Invalid operator used in KeyConditionExpression: {node.name}"
            )
        return _key_name(node.arguments[0]), "begins_with", (_constant(node.arguments[1]),)
    raise ValidationException("Query key condition not supported")


def _key_name(operand: Any) -> str:
    if not isinstance(operand, Path):
        raise ValidationException("Query key condition not supported")
    if len(operand.elements) != 1:
        raise ValidationException(
            "KeyConditionExpressions cannot have conditions on nested attributes"
        )
    return str(operand.elements[0])


def _constant(operand: Any) -> Value:
    if not isinstance(operand, Constant):
        raise ValidationException("Query key condition not supported")
    return dict(operand.value)


def check_key_types(
    hash_key: str,
    hash_value: Value,
    sort_range: SortKeyRange | None,
    hash_type: str,
    range_type: str | None,
) -> None:
    """DynamoDB's error when a key condition's value is not of the key attribute's type,
    or the partition key's value is empty."""
    kinds = [(value_type(hash_value), hash_type)]
    if sort_range is not None and range_type is not None:
        kinds += [(value_type(b), range_type) for b in sort_range.bounds]
    for actual, expected in kinds:
        if actual != expected:
            raise ValidationException(
                "One or more parameter values were invalid: "
                "Condition parameter type does not match schema type"
            )
    if value_size(hash_value) == 0:
        raise ValidationException(
            "One or more parameter values are not valid. The AttributeValue for a key "
            f"attribute cannot contain an empty {'string' if hash_type == 'S' else 'binary'} "
            f"value. Key: {hash_key}"
        )


def sort_key_matches(sort_range: SortKeyRange, range_key: str, value: Value) -> bool:
    return holds(sort_range.node, {range_key: value})
