"""The expression API the DynamoDB endpoint uses: parse a ConditionExpression,
FilterExpression, UpdateExpression, ProjectionExpression or KeyConditionExpression with
its ExpressionAttributeNames/Values into a value that evaluates against items, and check
that every name and value supplied is used. Pure; errors are DynamoError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynakv.dynamodb.attributes import INVALID, Item, KeySchema, Value, validate_value
from dynakv.dynamodb.condition_parser import ConditionParser, parse_condition_tree
from dynakv.dynamodb.document_paths import check_disjoint, project
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.evaluate import holds
from dynakv.dynamodb.expression_tree import ConditionNode, Path, UpdateAction
from dynakv.dynamodb.key_condition import (
    SortKeyRange,
    check_key_types,
    sort_key_matches,
    split_key_condition,
)
from dynakv.dynamodb.parser import Parser
from dynakv.dynamodb.update import apply_actions
from dynakv.dynamodb.update_parser import UpdateParser, parse_update_actions

Names = dict[str, str]
Values = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Parsed:
    """What every parsed expression records: the #names and :values it used."""

    names_used: frozenset[str] = field(default=frozenset(), kw_only=True)
    values_used: frozenset[str] = field(default=frozenset(), kw_only=True)


@dataclass(frozen=True)
class Condition(Parsed):
    """A ConditionExpression or FilterExpression."""

    tree: ConditionNode

    def holds(self, item: Item | None) -> bool:
        """True when the condition holds for `item` (None: there is no item)."""
        return holds(self.tree, item or {})


@dataclass(frozen=True)
class Update(Parsed):
    actions: tuple[UpdateAction, ...]

    def apply(self, item: Item | None, key: Item | None = None) -> tuple[Item, list[Path]]:
        """The updated item and the paths the update wrote (for UPDATED_OLD/UPDATED_NEW:
        `project(old, paths)` and `project(new, paths)`). `item` None means there is no
        item yet: the update starts from `key` (the request's key attributes)."""
        new_item = apply_actions(list(self.actions), item, start=key)
        return new_item, [a.path for a in self.actions]

    def top_level_names(self) -> set[str]:
        """Attributes the update touches."""
        return {str(a.path.elements[0]) for a in self.actions}

    def check_key_untouched(self, schema: KeySchema) -> None:
        """DynamoDB's error when the update would write a key attribute."""
        for name, _kind in schema.attributes():
            if name in self.top_level_names():
                raise ValidationException(
                    f"{INVALID}Cannot update attribute {name}. This attribute is part of the key"
                )


@dataclass(frozen=True)
class Projection(Parsed):
    paths: tuple[Path, ...]

    def apply(self, item: Item) -> Item:
        return project(item, list(self.paths))


@dataclass(frozen=True)
class KeyCondition(Parsed):
    """The partition key value a Query reads, and the sort key range (None: all)."""

    hash_key: str
    hash_value: Value
    range_key: str | None
    range: SortKeyRange | None

    def matches(self, sort_value: Value) -> bool:
        """Whether a sort key value is within the range."""
        if self.range is None or self.range_key is None:
            return True
        return sort_key_matches(self.range, self.range_key, sort_value)

    def check_types(self, hash_type: str, range_type: str | None) -> None:
        check_key_types(self.hash_key, self.hash_value, self.range, hash_type, range_type)


def _used(parser: Parser) -> dict[str, frozenset[str]]:
    return {
        "names_used": frozenset(parser.names_used),
        "values_used": frozenset(parser.values_used),
    }


def parse_condition(
    text: str, names: Names | None, values: Values | None, kind: str = "Condition"
) -> Condition:
    parser = ConditionParser(text, kind, names, values)
    return Condition(parse_condition_tree(parser), **_used(parser))


def parse_filter(text: str, names: Names | None, values: Values | None) -> Condition:
    return parse_condition(text, names, values, kind="Filter")


def parse_update(text: str, names: Names | None, values: Values | None) -> Update:
    parser = UpdateParser(text, names, values)
    return Update(tuple(parse_update_actions(parser)), **_used(parser))


def parse_projection(text: str, names: Names | None) -> Projection:
    parser = Parser(text, "Projection", names, None)
    paths = parser.comma_list(parser.path)
    parser.expect_end()
    check_disjoint(paths, "Projection")
    return Projection(tuple(paths), **_used(parser))


def parse_key_condition(
    text: str,
    names: Names | None,
    values: Values | None,
    hash_key: str,
    range_key: str | None,
) -> KeyCondition:
    parser = ConditionParser(text, "KeyCondition", names, values)
    tree = parse_condition_tree(parser)
    hash_value, sort_range = split_key_condition(tree, hash_key, range_key)
    return KeyCondition(hash_key, hash_value, range_key, sort_range, **_used(parser))


def validate_expression_attributes(names: object, values: object) -> tuple[Names, Values]:
    """ExpressionAttributeNames/Values checked and normalised: keys spelled #x and :x,
    names strings, values valid attribute values, neither given as an empty map."""
    checked_names: Names = {}
    checked_values: Values = {}
    if names is not None:
        if not isinstance(names, dict) or not names:
            raise ValidationException("ExpressionAttributeNames must not be empty")
        for key, name in names.items():
            if not _is_placeholder(key, "#"):
                raise ValidationException(
                    f'ExpressionAttributeNames contains invalid key: Syntax error; key: "{key}"'
                )
            if not isinstance(name, str) or not name:
                raise ValidationException(
                    "ExpressionAttributeNames contains invalid value: Empty attribute name "
                    f"for key {key}"
                )
            checked_names[key] = name
    if values is not None:
        if not isinstance(values, dict) or not values:
            raise ValidationException("ExpressionAttributeValues must not be empty")
        for key, value in values.items():
            if not _is_placeholder(key, ":"):
                raise ValidationException(
                    f'ExpressionAttributeValues contains invalid key: Syntax error; key: "{key}"'
                )
            try:
                checked_values[key] = validate_value(value)
            except ValidationException as error:
                raise ValidationException(
                    f"ExpressionAttributeValues contains invalid value: {error.message} "
                    f"for key {key}"
                ) from None
    return checked_names, checked_values


def _is_placeholder(key: object, sigil: str) -> bool:
    return (
        isinstance(key, str)
        and len(key) > 1
        and key[0] == sigil
        and all(c.isascii() and (c.isalnum() or c == "_") for c in key[1:])
    )


def check_all_used(names: Names | None, values: Values | None, *parsed: Parsed) -> None:
    """DynamoDB's error for ExpressionAttributeNames/Values that no expression used, or that
    were given with no expression at all."""
    if not parsed:
        if names:
            raise ValidationException(
                "ExpressionAttributeNames can only be specified when using expressions"
            )
        if values:
            raise ValidationException(
                "ExpressionAttributeValues can only be specified when using expressions"
            )
        return
    used_names = set().union(*(p.names_used for p in parsed))
    used_values = set().union(*(p.values_used for p in parsed))
    unused_names = sorted(set(names or {}) - used_names)
    if unused_names:
        raise ValidationException(
            "Value provided in ExpressionAttributeNames unused in expressions: "
            f"keys: {{{', '.join(unused_names)}}}"
        )
    unused_values = sorted(set(values or {}) - used_values)
    if unused_values:
        raise ValidationException(
            "Value provided in ExpressionAttributeValues unused in expressions: "
            f"keys: {{{', '.join(unused_values)}}}"
        )
