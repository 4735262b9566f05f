"""Attribute values: validation, normalisation, sizes and key checks (dynamodb.attributes)."""

from __future__ import annotations

import pytest

from dynakv.dynamodb.attributes import (
    KeySchema,
    item_size,
    validate_item,
    validate_key,
    validate_value,
)
from dynakv.dynamodb.errors import SerializationException, ValidationException
from dynakv.dynamodb.numbers import add, canonical_number, parse_number, subtract

SCHEMA = KeySchema("id", "S", "sk", "N")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1", "1"),
        ("1.0", "1"),
        ("01", "1"),
        ("-0", "0"),
        ("0.000", "0"),
        ("1e2", "100"),
        ("-12.50", "-12.5"),
        ("+3", "3"),
        (".123", "0.123"),
        ("0001.23", "1.23"),
        ("1e+5", "100000"),
        ("0e1000", "0"),
        ("-17.4E37", "-174" + "0" * 36),
        ("1E-130", "0." + "0" * 129 + "1"),
        ("9.9999999999999999999999999999999999999E+125", "9" * 38 + "0" * 88),
    ],
)
def test_numbers_are_stored_in_canonical_plain_form(text: str, canonical: str) -> None:
    assert canonical_number(text) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1E+126", "Number overflow"),
        ("-1E+126", "Number overflow"),
        ("1E-131", "Number underflow"),
        ("1." + "0" * 37 + "1", "more than 38 significant digits"),
        ("abc", "cannot be converted to a numeric value"),
        ("NaN", "cannot be converted to a numeric value"),
        ("Infinity", "cannot be converted to a numeric value"),
        (" 1", "cannot be converted to a numeric value"),
        ("", "cannot be converted to a numeric value"),
        ("1 ", "cannot be converted to a numeric value: 1 "),
        ("-NaN", "cannot be converted to a numeric value"),
        ("-dog", "cannot be converted to a numeric value: -dog"),
    ],
)
def test_numbers_out_of_range_or_malformed_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        canonical_number(text)


def test_arithmetic_is_exact_to_38_digits_and_overflows_like_dynamodb() -> None:
    big = parse_number("9" * 38)
    assert add(big, parse_number("1")) == parse_number("1E+38")
    assert subtract(parse_number("0.1"), parse_number("0.3")) == parse_number("-0.2")
    # DynamoDB calls a sum that needs more than 38 digits an overflow (1E+50 + 1).
    with pytest.raises(ValidationException, match="Number overflow"):
        add(big, parse_number("0.1"))
    with pytest.raises(ValidationException, match="Number overflow"):
        subtract(parse_number("1E+50"), parse_number("1"))
    with pytest.raises(ValidationException, match="Number overflow"):
        add(parse_number("9.9999999999999999999999999999999999999E+125"), parse_number("1E+125"))


def test_every_type_validates_and_normalises_nested_numbers() -> None:
    value = {
        "M": {
            "s": {"S": "x"},
            "n": {"N": "1.50"},
            "b": {"B": "AAE="},
            "t": {"BOOL": True},
            "z": {"NULL": True},
            "l": {"L": [{"N": "02"}, {"SS": ["a", "b"]}]},
            "ns": {"NS": ["1.0", "2"]},
            "bs": {"BS": ["AA==", "AQ=="]},
        }
    }
    out = validate_value(value)
    assert out["M"]["n"] == {"N": "1.5"}
    assert out["M"]["l"]["L"][0] == {"N": "2"}
    assert out["M"]["ns"] == {"NS": ["1", "2"]}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({}, ValidationException, "Supplied AttributeValue is empty"),
        ({"S": "a", "N": "1"}, ValidationException, "more than one datatypes"),
        ({"SS": []}, ValidationException, "An string set  may not be empty"),
        ({"NS": []}, ValidationException, "An number set  may not be empty"),
        ({"BS": []}, ValidationException, "Binary sets should not be empty"),
        ({"SS": ["a", "a"]}, ValidationException, r"Input collection \[a, a\] contains dup"),
        ({"NS": ["1", "1.0"]}, ValidationException, "contains duplicates"),
        ({"NULL": False}, ValidationException, "Null attribute value types must"),
        ({"S": 5}, SerializationException, "NUMBER_VALUE cannot be converted to String"),
        ({"BOOL": "yes"}, SerializationException, "cannot be converted to Boolean"),
        ({"B": "not base64!"}, SerializationException, "Base64"),
        ({"X": "1"}, SerializationException, "Unexpected attribute value type"),
    ],
)
def test_bad_values_get_dynamodb_errors(value: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        validate_value(value)


def test_nesting_deeper_than_32_levels_is_refused() -> None:
    value: dict = {"S": "leaf"}
    for _ in range(31):
        value = {"L": [value]}
    validate_value(value)
    with pytest.raises(ValidationException, match="Nesting Levels"):
        validate_value({"L": [value]})


def test_item_needs_its_key_attributes_with_the_schema_types() -> None:
    assert validate_item({"id": {"S": "a"}, "sk": {"N": "1.0"}}, SCHEMA)["sk"] == {"N": "1"}
    with pytest.raises(ValidationException, match="Missing the key sk in the item"):
        validate_item({"id": {"S": "a"}}, SCHEMA)
    with pytest.raises(ValidationException, match="Type mismatch for key id expected: S actual: N"):
        validate_item({"id": {"N": "1"}, "sk": {"N": "1"}}, SCHEMA)
    with pytest.raises(ValidationException, match=r"empty string value\. Key: id"):
        validate_item({"id": {"S": ""}, "sk": {"N": "1"}}, SCHEMA)


def test_key_sizes_are_limited() -> None:
    with pytest.raises(ValidationException, match="Size of hashkey has exceeded"):
        validate_item({"id": {"S": "x" * 2049}, "sk": {"N": "1"}}, SCHEMA)
    schema = KeySchema("id", "S", "r", "S")
    with pytest.raises(ValidationException, match="range keys has exceeded"):
        validate_item({"id": {"S": "a"}, "r": {"S": "x" * 1025}}, schema)


def test_key_must_be_exactly_the_schema_attributes() -> None:
    assert validate_key({"id": {"S": "a"}, "sk": {"N": "01"}}, SCHEMA) == {
        "id": {"S": "a"},
        "sk": {"N": "1"},
    }
    for key in (
        {"id": {"S": "a"}},
        {"id": {"S": "a"}, "sk": {"N": "1"}, "x": {"S": "y"}},
        {"id": {"S": "a"}, "sk": {"S": "1"}},
    ):
        with pytest.raises(ValidationException, match="key element does not match the schema"):
            validate_key(key, SCHEMA)


def test_item_size_follows_dynamodb_rules_and_400_kb_is_the_limit() -> None:
    assert item_size({"ab": {"S": "héllo"}}) == 2 + 6
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"t": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"l": {"L": [{"S": "a"}, {"S": "bc"}]}}) == 1 + 3 + 2 + 3
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 1 + 1 + 1
    room = 400 * 1024 - len("id") - 1 - len("sk") - 2 - len("big")
    validate_item({"id": {"S": "a"}, "sk": {"N": "1"}, "big": {"S": "x" * room}}, SCHEMA)
    with pytest.raises(ValidationException, match="Item size has exceeded the maximum"):
        validate_item({"id": {"S": "a"}, "sk": {"N": "1"}, "big": {"S": "x" * (room + 1)}}, SCHEMA)
