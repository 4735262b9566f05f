"""Laws of the pure DynamoDB layer, checked with Hypothesis: key encodings keep DynamoDB's
order, normalisation is idempotent, and an update is seen by the conditions after it."""

from __future__ import annotations

from decimal import Decimal, localcontext

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv.dynamodb.attributes import encode_binary, item_size, validate_value
from dynakv.dynamodb.expressions import parse_condition, parse_update
from dynakv.dynamodb.numbers import number_text, parse_number
from dynakv.dynamodb.ordering import compare, sort_key_bytes, values_equal

# The machine is shared: no per-example deadline; slow or filtered data is expected.
SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]
# Numbers DynamoDB accepts: up to 38 significant digits, magnitude 1E-130 .. <1E+126.
numbers = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=38),
    st.integers(-130, 125 - 37),
).filter(lambda d: d.is_zero() or -130 <= d.adjusted() <= 125)

number_values = numbers.map(lambda d: {"N": number_text(d)})
string_values = st.text(max_size=20).map(lambda s: {"S": s})
binary_values = st.binary(max_size=20).map(lambda b: {"B": encode_binary(b)})


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def byte_order(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


@settings(deadline=None, suppress_health_check=SLOW)
@given(number_values, number_values)
def test_sort_key_bytes_order_numbers_as_decimals(a: dict, b: dict) -> None:
    expected = sign(Decimal(a["N"]).compare(Decimal(b["N"])))  # type: ignore[arg-type]
    assert byte_order(sort_key_bytes(a), sort_key_bytes(b)) == expected
    assert compare(a, b) == expected


@settings(deadline=None, suppress_health_check=SLOW)
@given(string_values, string_values)
def test_sort_key_bytes_order_strings_by_utf8(a: dict, b: dict) -> None:
    expected = byte_order(a["S"].encode(), b["S"].encode())
    assert byte_order(sort_key_bytes(a), sort_key_bytes(b)) == expected == compare(a, b)


@settings(deadline=None, suppress_health_check=SLOW)
@given(binary_values, binary_values)
def test_sort_key_bytes_order_binaries_as_unsigned_bytes(a: dict, b: dict) -> None:
    assert byte_order(sort_key_bytes(a), sort_key_bytes(b)) == compare(a, b)


@settings(deadline=None, suppress_health_check=SLOW)
@given(numbers)
def test_number_text_round_trips_the_exact_value(value: Decimal) -> None:
    text = number_text(value)
    assert parse_number(text) == value
    assert number_text(parse_number(text)) == text
    assert "E" not in text and "e" not in text


leaves = st.one_of(
    number_values,
    string_values,
    binary_values,
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(max_size=5), min_size=1, max_size=4).map(lambda s: {"SS": sorted(s)}),
    st.sets(st.integers(-50, 50), min_size=1, max_size=4).map(
        lambda s: {"NS": [str(n) for n in sorted(s)]}
    ),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: {"L": items}),
        st.dictionaries(st.text(min_size=1, max_size=5), inner, max_size=4).map(
            lambda members: {"M": members}
        ),
    ),
    max_leaves=12,
)


@settings(deadline=None, suppress_health_check=SLOW)
@given(values)
def test_validation_is_idempotent_and_keeps_equality_and_size(value: dict) -> None:
    once = validate_value(value)
    assert validate_value(once) == once
    assert values_equal(once, value)
    assert item_size({"a": once}) == item_size({"a": value})


names = st.sampled_from(["a", "b", "c", "d"])
items = st.dictionaries(names, values, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW)
@given(items, names, values)
def test_after_set_the_condition_path_equals_value_holds(item: dict, name: str, v: dict) -> None:
    new_item, paths = parse_update("SET #p = :v", {"#p": name}, {":v": v}).apply(item)
    holds = parse_condition("#p = :v AND attribute_exists(#p)", {"#p": name}, {":v": v})
    assert holds.holds(new_item)
    assert [p.elements for p in paths] == [(name,)]
    others = {k: x for k, x in new_item.items() if k != name}
    assert others == {k: x for k, x in item.items() if k != name}


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW)
@given(items, names)
def test_after_remove_the_attribute_does_not_exist(item: dict, name: str) -> None:
    new_item, _ = parse_update("REMOVE #p", {"#p": name}, None).apply(item)
    assert parse_condition("attribute_not_exists(#p)", {"#p": name}, None).holds(new_item)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW)
@given(numbers, numbers)
def test_add_then_compare_with_the_sum(start: Decimal, delta: Decimal) -> None:
    item = {"n": {"N": number_text(start)}}
    with localcontext(prec=400):  # the default 28-digit context would round
        total = (start + delta).normalize()
    if total.is_zero() or (-130 <= total.adjusted() <= 125 and len(total.as_tuple().digits) <= 38):
        new_item, _ = parse_update("ADD n :d", None, {":d": {"N": number_text(delta)}}).apply(item)
        expected = {":t": {"N": number_text(total)}}
        assert parse_condition("n = :t", None, expected).holds(new_item)
