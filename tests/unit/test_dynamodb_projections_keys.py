"""ProjectionExpression, KeyConditionExpression, and the ExpressionAttributeNames/Values
checks (unused, malformed, empty)."""

from __future__ import annotations

import pytest

from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.expressions import (
    KeyCondition,
    check_all_used,
    parse_condition,
    parse_key_condition,
    parse_projection,
    parse_update,
    validate_expression_attributes,
)

ITEM = {
    "id": {"S": "k"},
    "n": {"N": "1"},
    "l": {"L": [{"S": "a"}, {"S": "b"}, {"M": {"x": {"N": "1"}, "y": {"N": "2"}}}]},
    "m": {"M": {"p": {"S": "q"}, "r": {"M": {"s": {"S": "t"}}}}},
}


def test_projection_keeps_named_paths_and_compacts_lists() -> None:
    projection = parse_projection("id, l[2].y, l[0], m.r.s, gone, #n", {"#n": "n"})
    assert projection.apply(ITEM) == {
        "id": {"S": "k"},
        "n": {"N": "1"},
        "l": {"L": [{"S": "a"}, {"M": {"y": {"N": "2"}}}]},
        "m": {"M": {"r": {"M": {"s": {"S": "t"}}}}},
    }
    assert projection.names_used == {"#n"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Invalid ProjectionExpression: The expression can not be empty;"),
        ("id,", 'Invalid ProjectionExpression: Syntax error; token: "<EOF>"'),
        ("id n", 'Syntax error; token: "n"'),
        ("id, id", r"Two document paths overlap .*path one: \[id\], path two: \[id\]"),
        ("m, m.p", r"overlap .*path one: \[m\], path two: \[m, p\]"),
        ("l[0], l.a", "Two document paths conflict"),
        ("name", "Invalid ProjectionExpression: Attribute name is a reserved keyword"),
        ("#x", "attribute name used in the document path is not defined; attribute name: #x"),
        ("foo(id)", 'Syntax error; token: "\\("'),
    ],
)
def test_bad_projections(text: str, message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        parse_projection(text, None)


V = {":h": {"S": "k"}, ":a": {"N": "1"}, ":b": {"N": "5"}, ":p": {"S": "ab"}}


def key(text: str, range_key: str | None = "r", names: dict | None = None) -> KeyCondition:
    values = {k: v for k, v in V.items() if k in text}
    return parse_key_condition(text, names, values, "id", range_key)


@pytest.mark.parametrize(
    ("text", "operator", "inside", "outside"),
    [
        ("id = :h AND r = :a", "=", "1", "2"),
        ("id = :h AND r < :b", "<", "4.9", "5"),
        ("id = :h AND r <= :b", "<=", "5", "5.1"),
        ("id = :h AND r > :a", ">", "1.5", "1"),
        ("id = :h AND r >= :a", ">=", "1", "0"),
        ("id = :h AND r BETWEEN :a AND :b", "BETWEEN", "3", "6"),
        ("r BETWEEN :a AND :b AND id = :h", "BETWEEN", "5", "0.5"),
        ("(id = :h) AND (r > :a)", ">", "2", "-1"),
        (":a < r AND id = :h", ">", "2", "1"),
    ],
)
def test_key_conditions_on_numbers(text: str, operator: str, inside: str, outside: str) -> None:
    condition = key(text)
    assert condition.hash_value == {"S": "k"}
    assert condition.range is not None and condition.range.operator == operator
    assert condition.matches({"N": inside})
    assert not condition.matches({"N": outside})


def test_key_condition_begins_with_and_hash_only() -> None:
    condition = key("id = :h AND begins_with(#r, :p)", names={"#r": "r"})
    assert condition.matches({"S": "abc"}) and not condition.matches({"S": "b"})
    only_hash = key("id = :h")
    assert only_hash.range is None and only_hash.matches({"S": "anything"})
    only_hash.check_types("S", "N")
    with pytest.raises(ValidationException, match="Condition parameter type does not match"):
        key("id = :h AND r > :p").check_types("S", "N")
    empty = parse_key_condition("id = :e", None, {":e": {"S": ""}}, "id", None)
    with pytest.raises(ValidationException, match=r"empty string value\. Key: id"):
        empty.check_types("S", None)
    with pytest.raises(ValidationException, match="missed key schema element: id"):
        parse_key_condition("id = :h AND x = :h", None, {":h": {"S": "k"}}, "id", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("r = :a", "Query condition missed key schema element: id"),
        ("id > :h", "Query key condition not supported"),
        ("id = :h OR r = :a", "Invalid operator used in KeyConditionExpression: OR"),
        ("NOT id = :h", "Invalid operator used in KeyConditionExpression: NOT"),
        ("id IN (:h)", "Invalid operator used in KeyConditionExpression: IN"),
        (
            "id = :h AND attribute_exists(r)",
            "Invalid operator used in KeyConditionExpression: attribute_exists",
        ),
        ("id = :h AND r <> :a", "Unsupported operator on KeyConditionExpression: operator: <>"),
        (
            "id = :h AND r = :a AND r = :b",
            "KeyConditionExpressions must only contain one condition per key",
        ),
        ("id = :h AND id = :h", "KeyConditionExpressions must only contain one condition per key"),
        ("id = :h AND extra = :a", "Query condition missed key schema element: r"),
        ("id = :h AND r.x = :a", "cannot have conditions on nested attributes"),
        ("id = r", "Query key condition not supported"),
        ("id = :h AND", 'Invalid KeyConditionExpression: Syntax error; token: "<EOF>"'),
    ],
)
def test_bad_key_conditions(text: str, message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        key(text)


def test_unused_names_and_values_are_refused() -> None:
    condition = parse_condition("#a = :a", {"#a": "a"}, {":a": {"S": "x"}})
    check_all_used({"#a": "a"}, {":a": {"S": "x"}}, condition)
    with pytest.raises(
        ValidationException,
        match=r"^Value provided in ExpressionAttributeValues unused in expressions: keys: \{:x\}$",
    ):
        check_all_used({"#a": "a"}, {":a": {"S": "x"}, ":x": {"S": "y"}}, condition)
    with pytest.raises(
        ValidationException,
        match=r"Value provided in ExpressionAttributeNames unused in expressions: keys: \{#b\}",
    ):
        check_all_used({"#a": "a", "#b": "b"}, {":a": {"S": "x"}}, condition)


def test_names_and_values_are_counted_across_every_expression_of_a_request() -> None:
    update = parse_update("SET #a = :a", {"#a": "a"}, {":a": {"S": "x"}})
    condition = parse_condition("attribute_exists(#b)", {"#b": "b"}, None)
    check_all_used({"#a": "a", "#b": "b"}, {":a": {"S": "x"}}, update, condition)


def test_names_or_values_without_expressions_are_refused() -> None:
    with pytest.raises(ValidationException, match="ExpressionAttributeNames can only be specified"):
        check_all_used({"#a": "a"}, None)
    with pytest.raises(
        ValidationException, match="ExpressionAttributeValues can only be specified"
    ):
        check_all_used(None, {":a": {"S": "a"}})
    check_all_used(None, None)


@pytest.mark.parametrize(
    ("names", "values", "message"),
    [
        ({}, None, "ExpressionAttributeNames must not be empty"),
        (None, {}, "ExpressionAttributeValues must not be empty"),
        ({"a": "a"}, None, 'ExpressionAttributeNames contains invalid key: Syntax error; key: "a"'),
        ({"#": "a"}, None, 'invalid key: Syntax error; key: "#"'),
        (
            None,
            {"v": {"S": "a"}},
            'ExpressionAttributeValues contains invalid key: Syntax error; key: "v"',
        ),
        (
            None,
            {":v": {"SS": []}},
            "ExpressionAttributeValues contains invalid value: .*may not be empty for key :v",
        ),
    ],
)
def test_malformed_names_and_values(names: object, values: object, message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        validate_expression_attributes(names, values)


def test_valid_names_and_values_are_normalised() -> None:
    names, values = validate_expression_attributes({"#a_1": "a"}, {":v": {"N": "01.0"}})
    assert names == {"#a_1": "a"} and values == {":v": {"N": "1"}}
