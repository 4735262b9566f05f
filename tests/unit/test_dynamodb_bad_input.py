"""Bad input never escapes as anything but a DynamoError: random expression text, names,
values and items through every parser and evaluator (the endpoint turns a DynamoError into
a 400 and keeps serving; any other exception would be a 500 or worse)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv.dynamodb.attributes import KeySchema, validate_item, validate_value
from dynakv.dynamodb.errors import DynamoError
from dynakv.dynamodb.expression_text import condition_text, update_text
from dynakv.dynamodb.expressions import (
    check_all_used,
    parse_condition,
    parse_key_condition,
    parse_projection,
    parse_update,
    validate_expression_attributes,
)
from tests.unit.test_dynamodb_expression_text import conditions, updates

# The machine is shared: no per-example deadline; slow or filtered data is expected.
SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]
FRAGMENTS = [
    "a", "b", "#n", "#m", ":v", ":w", ":l", ".", "[", "]", "0", "7", "(", ")", ",", "=",
    "<>", "<", ">=", "+", "-", " ", "AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE",
    "ADD", "DELETE", "size", "contains", "begins_with", "attribute_exists", "if_not_exists",
    "list_append", "attribute_type", "name", "$", "_", "é",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map(" ".join)
json_values: Any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
attribute_values = st.one_of(
    st.dictionaries(
        st.sampled_from(["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS", "X"]),
        json_values,
        max_size=2,
    ),
    st.sampled_from(
        [{"N": "1"}, {"S": "x"}, {"L": [{"N": "2"}]}, {"M": {"a": {"S": "y"}}}, {"SS": ["p"]}]
    ),
)
names = st.one_of(st.none(), st.dictionaries(st.sampled_from(["#n", "#m", "n", "#"]), json_values))
values = st.one_of(
    st.none(), st.dictionaries(st.sampled_from([":v", ":w", ":l", "v"]), attribute_values)
)
# Valid values of every type, for items that conditions and updates meet.
ITEM_VALUES = st.sampled_from(
    [
        {"N": "1"},
        {"N": "-2.5"},
        {"S": "x"},
        {"S": ""},
        {"B": "AAE="},
        {"BOOL": True},
        {"NULL": True},
        {"L": [{"N": "1"}, {"S": "x"}, {"L": []}]},
        {"M": {"a": {"N": "1"}, "name": {"M": {"size": {"S": "s"}}}}},
        {"SS": ["x", "y"]},
        {"NS": ["1", "2"]},
        {"BS": ["AAE="]},
    ]
)
items = st.dictionaries(st.sampled_from(["a", "b", "id", "n"]), attribute_values, max_size=4)


def settle(call: Any, *args: Any) -> Any:
    """The call's result, or None when it raised a DynamoError (anything else propagates)."""
    try:
        return call(*args)
    except DynamoError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=SLOW)
@given(texts, names, values, items)
def test_any_expression_input_is_an_answer_or_a_dynamo_error(
    text: str, raw_names: Any, raw_values: Any, raw_item: Any
) -> None:
    checked = settle(validate_expression_attributes, raw_names, raw_values)
    if checked is None:
        return
    names_, values_ = checked[0] or None, checked[1] or None
    item = settle(validate_item, raw_item, KeySchema("id", "S"))
    condition = settle(parse_condition, text, names_, values_)
    if condition is not None:
        settle(check_all_used, names_, values_, condition)
        settle(condition.holds, item)
    update = settle(parse_update, text, names_, values_)
    if update is not None:
        settle(update.apply, item, {"id": {"S": "k"}})
    projection = settle(parse_projection, text, names_)
    if projection is not None and item is not None:
        projection.apply(item)
    key = settle(parse_key_condition, text, names_, values_, "a", "b")
    if key is not None:
        settle(key.matches, {"N": "1"})


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(attribute_values)
def test_any_attribute_value_is_normalised_or_a_dynamo_error(value: Any) -> None:
    settle(validate_value, value)


def test_deep_nesting_and_many_operators_are_refused_not_a_crash() -> None:
    v = {":v": {"N": "1"}}
    for text in (
        "NOT " * 1000 + "a = :v",
        "(" * 1000 + "a = :v" + ")" * 1000,
        " OR ".join(["a = :v"] * 301),
    ):
        assert settle(parse_condition, text, None, v) is None
    nested = "SET a = " + "if_not_exists(a, " * 200 + ":v" + ")" * 200
    assert settle(parse_update, nested, None, v) is None
    assert settle(parse_condition, " OR ".join(["a = :v"] * 150), None, v) is not None


def spliced(text: str, at: int, fragment: str, drop: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + fragment + text[at + drop :]


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(
    st.one_of(conditions.map(condition_text), updates.map(update_text)),
    st.integers(0, 400),
    st.sampled_from(["", *FRAGMENTS]),
    st.integers(0, 3),
    st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "name", "size", "id"]), ITEM_VALUES),
        min_size=1,
        max_size=3,
    ),
)
def test_near_valid_expressions_evaluate_or_fail_cleanly_on_any_item(
    printed: Any, at: int, fragment: str, drop: int, raw_items: list[Any]
) -> None:
    text, refs = printed
    text = spliced(text, at, fragment, drop)
    for raw in raw_items:
        item = validate_item({**raw, "id": {"S": "k"}}, KeySchema("id", "S"))
        condition = settle(parse_condition, text, refs.names or None, refs.values or None)
        if condition is not None:
            condition.holds(item)
        update = settle(parse_update, text, refs.names or None, refs.values or None)
        if update is not None:
            settle(update.apply, item)
