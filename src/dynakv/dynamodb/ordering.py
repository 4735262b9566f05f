"""Equality and order of attribute values as DynamoDB defines them, and an order-preserving
byte encoding of key attributes (byte order of `sort_key_bytes` = DynamoDB's sort order).
Pure. Values are validated wire form (N canonical text, B base64).
"""

from __future__ import annotations

from decimal import Decimal

from dynakv.dynamodb.attributes import Value, decode_binary, value_type
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.numbers import parse_number


def scalar(value: Value) -> str | Decimal | bytes:
    """The Python value of an S, N or B attribute (str, Decimal, bytes)."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return inner
    if kind == "N":
        return parse_number(inner)
    if kind == "B":
        return decode_binary(inner)
    raise ValidationException(f"Not a scalar key type: {kind}")


def values_equal(left: Value, right: Value) -> bool:
    """DynamoDB equality: same type and same value; numbers by value, sets as sets."""
    kind = value_type(left)
    if kind != value_type(right):
        return False
    a, b = left[kind], right[kind]
    if kind in ("N", "B"):
        return scalar(left) == scalar(right)
    if kind == "NS":
        return {parse_number(m) for m in a} == {parse_number(m) for m in b}
    if kind == "BS":
        return {decode_binary(m) for m in a} == {decode_binary(m) for m in b}
    if kind == "SS":
        return set(a) == set(b)
    if kind == "L":
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "M":
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def compare(left: Value, right: Value) -> int | None:
    """-1, 0 or 1 for two values of the same ordered type (S by UTF-8 bytes, N by value,
    B by unsigned bytes); None when they cannot be ordered (different or unordered types)."""
    kind = value_type(left)
    if kind != value_type(right) or kind not in ("S", "N", "B"):
        return None
    a, b = scalar(left), scalar(right)
    if kind == "S":
        a, b = str(a).encode("utf-8"), str(b).encode("utf-8")
    return (a > b) - (a < b)  # type: ignore[operator]


_NEGATIVE, _ZERO, _POSITIVE = b"\x01", b"\x02", b"\x03"
_EXPONENT_BIAS = 1 << 15


def sort_key_bytes(value: Value) -> bytes:
    """An encoding of an S, N or B value whose byte order is DynamoDB's order.

    S is its UTF-8 and B its raw bytes (DynamoDB orders both as unsigned bytes). N is a
    sign byte, then the decimal exponent, then the digits: for a negative number the
    exponent and digits are complemented and the digits end in 0xFF, so a longer magnitude
    sorts first, as it must.
    """
    kind = value_type(value)
    if kind == "S":
        return str(value["S"]).encode("utf-8")
    if kind == "B":
        return decode_binary(value["B"])
    if kind != "N":
        raise ValidationException(f"Not a scalar key type: {kind}")
    number = parse_number(value["N"])
    if number.is_zero():
        return _ZERO
    sign, digits, _ = number.as_tuple()
    exponent = number.adjusted() + _EXPONENT_BIAS
    if not sign:
        return _POSITIVE + exponent.to_bytes(2, "big") + bytes(0x30 + d for d in digits)
    flipped = (0xFFFF - exponent).to_bytes(2, "big")
    return _NEGATIVE + flipped + bytes(0xFE - d for d in digits) + b"\xff"
