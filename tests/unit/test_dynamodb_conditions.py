"""ConditionExpression/FilterExpression: each form, precedence, and each error."""

from __future__ import annotations

import pytest

from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.expressions import parse_condition, parse_filter, parse_update

ITEM = {
    "id": {"S": "abc"},
    "n": {"N": "5"},
    "f": {"N": "-1.5"},
    "b": {"B": "AAEC"},
    "t": {"BOOL": True},
    "z": {"NULL": True},
    "l": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"deep": {"S": "x"}}}]},
    "m": {"M": {"inside": {"M": {"c": {"N": "3"}}}, "tags": {"SS": ["red", "blue"]}}},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": ["AA==", "AQ=="]},
    "status": {"S": "on"},
    "u": {"S": "é."},
}
VALUES = {
    ":five": {"N": "5.0"},
    ":four": {"N": "4"},
    ":six": {"N": "6"},
    ":s": {"S": "abc"},
    ":ab": {"S": "ab"},
    ":bc": {"S": "bc"},
    ":x": {"S": "x"},
    ":red": {"S": "red"},
    ":two": {"S": "two"},
    ":one": {"N": "1"},
    ":three": {"N": "3"},
    ":twohalf": {"N": "2.50"},
    ":b0": {"B": "AA=="},
    ":b01": {"B": "AAE="},
    ":b3": {"B": "Aw=="},
    ":abcd": {"S": "abcd"},
    ":true": {"BOOL": True},
    ":tS": {"S": "S"},
    ":tSS": {"S": "SS"},
    ":tM": {"S": "M"},
    ":tags": {"SS": ["blue", "red"]},
    ":list": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"deep": {"S": "x"}}}]},
}
NAMES = {"#s": "status", "#n": "n", "#dot": "a.b"}


def holds(text: str, item: dict | None = ITEM) -> bool:
    names = {k: v for k, v in NAMES.items() if k in text}
    values = {k: v for k, v in VALUES.items() if k in text}
    return parse_condition(text, names, values).holds(item)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n = :five", True),
        ("n <> :five", False),
        ("n < :six", True),
        ("n <= :five", True),
        ("n > :four", True),
        ("n >= :six", False),
        ("f < :one", True),
        ("id = :s", True),
        ("id > :ab", True),
        ("id < :bc", True),
        ("b > :b0", True),
        ("t = :true", True),
        ("m.tags = :tags", True),
        ("l = :list", True),
        ("l[1] = :two", True),
        ("l[2].deep = :x", True),
        ("m.inside.c < :four", True),
        ("#n = :five", True),
        ("#s = :s", False),
        ("n = :s", False),
        ("n <> :s", True),
        ("gone = :s", False),
        ("gone <> :s", True),
        ("gone < :s", False),
        ("id < :five", False),
    ],
)
def test_comparisons(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n BETWEEN :four AND :six", True),
        ("n BETWEEN :five AND :five", True),
        ("n BETWEEN :one AND :four", False),
        ("id BETWEEN :ab AND :bc", True),
        ("n IN (:one, :five)", True),
        ("n IN (:one, :four)", False),
        ("id IN (:s)", True),
        ("gone IN (:s)", False),
        ("attribute_exists(m.inside.c)", True),
        ("attribute_exists(l[5])", False),
        ("attribute_not_exists(gone)", True),
        ("attribute_not_exists(id)", False),
        ("attribute_type(m, :tM)", True),
        ("attribute_type(m.tags, :tSS)", True),
        ("attribute_type(id, :tSS)", False),
        ("begins_with(id, :ab)", True),
        ("begins_with(id, :bc)", False),
        ("begins_with(b, :b01)", True),
        ("begins_with(n, :ab)", False),
        ("contains(id, :bc)", True),
        ("contains(m.tags, :red)", True),
        ("contains(ns, :twohalf)", True),
        ("contains(ns, :red)", False),
        ("contains(bs, :b0)", True),
        ("contains(b, :b01)", True),
        ("contains(b, :b3)", False),
        ("begins_with(:abcd, id)", True),
        ("contains(l, l[1])", True),
        ("contains(l, :two)", True),
        ("contains(l, :x)", False),
        ("size(id) = :s", False),
        ("size(id) = :three", True),
        ("size(u) = :three", True),
        ("size(l) > :one", True),
        ("size(m.tags) BETWEEN :one AND :four", True),
        ("size(b) = :one", False),
        ("size(n) = :one", False),
        ("size(gone) <> :one", True),
    ],
)
def test_between_in_and_functions(text: str, expected: bool) -> None:
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # AND binds tighter than OR: true OR (false AND false).
        ("n = :five OR n = :one AND n = :four", True),
        ("(n = :five OR n = :one) AND n = :four", False),
        # NOT binds tighter than AND.
        ("NOT n = :one AND n = :five", True),
        ("NOT (n = :five AND n = :one)", True),
        ("NOT NOT n = :five", True),
        ("not n = :five", False),
        ("n = :five and (id = :s or id = :x)", True),
    ],
)
def test_precedence_is_dynamodbs(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_no_item_is_an_empty_item() -> None:
    assert holds("attribute_not_exists(id)", None)
    assert not holds("attribute_exists(id)", None)
    assert holds("id <> :s", None)


def test_names_with_dots_are_one_attribute() -> None:
    item = {"a.b": {"S": "x"}, "a": {"M": {"b": {"S": "y"}}}}
    assert holds("#dot = :x", item)
    assert not holds("a.b = :x", item)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The expression can not be empty;"),
        ("   ", "The expression can not be empty;"),
        ("n =", 'Syntax error; token: "<EOF>"'),
        ("n = = :five", 'Syntax error; token: "="'),
        ("n == :five", 'Syntax error; token: "="'),
        ("n = :five AND", 'Syntax error; token: "<EOF>"'),
        ("(n = :five", 'Syntax error; token: "<EOF>"'),
        ("n $ :five", 'Syntax error; token: "\\$"'),
        ("n BETWEEN :one", 'Syntax error; token: "<EOF>"'),
        ("n IN ()", 'Syntax error; token: "\\)"'),
        ("name = :s", "Attribute name is a reserved keyword; reserved keyword: name"),
        ("m.size = :s", "reserved keyword: size"),
        (
            "#nope = :s",
            "attribute name used in the document path is not defined; attribute name: #nope",
        ),
        ("n = :nope", "attribute value used in expression is not defined; attribute value: :nope"),
        ("foo(n)", "Invalid function name; function: foo"),
        (
            "size(n)",
            "The function is not allowed to be used this way in an expression; function: size",
        ),
        (
            "attribute_exists(n) = :one",
            "not allowed to be used this way in an expression; function: attribute_exists",
        ),
        ("contains(id, :bc) IN (:one)", "function: contains"),
        ("n < :true", "Incorrect operand type for operator or function; operator or function: <, "),
        ("m.tags >= :tags", "operator or function: >=, operand type: SS"),
        ("n BETWEEN :one AND :true", "operator or function: BETWEEN, operand type: BOOL"),
        ("((n = :one))", "The expression has redundant parentheses;"),
        ("((n = :one) AND ((n = :five)))", "The expression has redundant parentheses;"),
        ("_n = :five", 'Syntax error; token: "_"'),
        ("begins_with(:one, id)", "operator or function: begins_with, operand type: N"),
        (
            "contains(l, l)",
            "The first operand must be distinct from the remaining operands for this operator "
            r"or function; operator: contains, first operand: \[l\]",
        ),
        (
            "n = if_not_exists(n, :one)",
            "not allowed to be used this way in an expression; function: if_not_exists",
        ),
        (
            "attribute_exists(n, id)",
            "Incorrect number of operands for operator or function; operator or function: "
            "attribute_exists, number of operands: 2",
        ),
        (
            "attribute_exists(:one)",
            "requires a document path; operator or function: attribute_exists",
        ),
        ("begins_with(id)", "number of operands: 1"),
        (
            "begins_with(id, :one)",
            "Incorrect operand type for operator or function; operator or function: begins_with, "
            "operand type: N",
        ),
        ("attribute_type(id, :one)", "operator or function: attribute_type, operand type: N"),
        (
            "attribute_type(id, :s)",
            "Invalid attribute type name found; type: abc, valid types: { "
            "B,NULL,SS,BOOL,L,BS,N,NS,S,M }",
        ),
        (
            "n BETWEEN :six AND :four",
            "The BETWEEN operator requires upper bound to be greater than or equal to lower "
            "bound; lower bound operand: AttributeValue: {N:6}, upper bound operand: "
            "AttributeValue: {N:4}",
        ),
        (
            "n BETWEEN :one AND :s",
            "The BETWEEN operator requires same data type for lower and upper bounds",
        ),
        ("size(:s) = :one", "requires a document path; operator or function: size"),
    ],
)
def test_bad_conditions_get_dynamodb_errors(text: str, message: str) -> None:
    with pytest.raises(ValidationException, match=message) as caught:
        holds(text)
    assert caught.value.message.startswith("Invalid ConditionExpression: ")
    assert caught.value.status == 400


def test_parentheses_may_wrap_each_condition_once() -> None:
    assert holds("((n = :five) AND (id = :s))")
    assert holds("(attribute_exists(n)) AND (size(l) > :one)")
    assert holds("NOT (NOT (n = :five))")


def test_expressions_are_at_most_4_kb() -> None:
    name = "a" * (4096 - len("attribute_exists()"))
    assert parse_condition(f"attribute_exists({name})", None, None).holds({name: {"N": "1"}})
    with pytest.raises(ValidationException) as caught:
        parse_condition(f"attribute_exists({name}b)", None, None)
    assert caught.value.message == (
        "Invalid ConditionExpression: Expression size has exceeded the maximum allowed size; "
        "expression size: 4097"
    )
    with pytest.raises(ValidationException, match=r"allowed size;$"):
        parse_update("SET " + "a" * 4093, None, None)


def test_in_takes_at_most_100_operands() -> None:
    values = {f":v{i}": {"N": str(i)} for i in range(101)}
    text = "n IN (" + ", ".join(values) + ")"
    with pytest.raises(ValidationException, match="too many operands; number of operands: 101"):
        parse_condition(text, None, values)
    del values[":v100"]
    assert parse_condition(text.replace(", :v100", ""), None, values).holds(ITEM)


def test_filter_errors_name_the_filter_expression() -> None:
    with pytest.raises(ValidationException, match=r"^Invalid FilterExpression: Syntax error"):
        parse_filter("n = ", None, None)
    assert parse_filter("n = :five", None, {":five": {"N": "5"}}).holds(ITEM)


def test_document_path_depth_is_limited_to_32() -> None:
    deep = "a" + ".a" * 31
    parse_condition(f"attribute_exists({deep})", None, None)
    with pytest.raises(ValidationException, match="nesting levels: 33"):
        parse_condition(f"attribute_exists({deep}.a)", None, None)
