"""Items and attribute values in wire form ({"id": {"S": "a"}}), and DynamoDB's validation
of them: one type per value, non-empty unique sets, numbers in range, key types, nesting
depth, key and item size limits. Pure; validation returns normalised copies (N canonical).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from dynakv.dynamodb.errors import SerializationException, ValidationException
from dynakv.dynamodb.numbers import canonical_number, parse_number

Item = dict[str, dict[str, Any]]
Value = dict[str, Any]

SCALAR_TYPES = ("S", "N", "B")
SET_TYPES = ("SS", "NS", "BS")
ALL_TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")
MAX_ITEM_BYTES = 400 * 1024
MAX_HASH_KEY_BYTES = 2048
MAX_RANGE_KEY_BYTES = 1024
MAX_NESTING = 32

INVALID = "One or more parameter values were invalid: "
_EMPTY_SET = {
    "SS": INVALID + "An string set  may not be empty",
    "NS": INVALID + "An number set  may not be empty",
    "BS": INVALID + "Binary sets should not be empty",
}


@dataclass(frozen=True)
class KeySchema:
    """A table's primary key: the partition (hash) attribute and the optional sort (range)
    attribute, each with its type, S, N or B."""

    hash_key: str
    hash_type: str
    range_key: str | None = None
    range_type: str | None = None

    def attributes(self) -> list[tuple[str, str]]:
        pairs = [(self.hash_key, self.hash_type)]
        if self.range_key is not None and self.range_type is not None:
            pairs.append((self.range_key, self.range_type))
        return pairs


def value_type(value: Value) -> str:
    """The type tag of a validated value ("S", "M", ...)."""
    return next(iter(value))


def decode_binary(text: object) -> bytes:
    """The bytes of a wire B value (base64 text), or a SerializationException."""
    if isinstance(text, bytes | bytearray):
        return bytes(text)
    if not isinstance(text, str):
        raise SerializationException("Base64 encoded value expected for a Binary attribute")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(
            f"Base64 encoded length is expected a multiple of 4 bytes but found: {len(text)}"
        ) from None


def encode_binary(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def validate_value(value: object, depth: int = 1) -> Value:
    """A normalised copy of one wire attribute value, or DynamoDB's error for it."""
    if depth > MAX_NESTING:
        raise ValidationException(INVALID + "Nesting Levels have exceeded supported limits")
    if not isinstance(value, dict) or not value:
        raise ValidationException(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
        )
    if len(value) > 1:
        raise ValidationException(
            "Supplied AttributeValue has more than one datatypes set, "
            "must contain exactly one of the supported datatypes"
        )
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return {"S": _string(inner)}
    if kind == "N":
        return {"N": canonical_number(_string(inner, "Number"))}
    if kind == "B":
        return {"B": encode_binary(decode_binary(inner))}
    if kind == "BOOL":
        if not isinstance(inner, bool):
            raise SerializationException(f"{_json_kind(inner)} cannot be converted to Boolean")
        return {"BOOL": inner}
    if kind == "NULL":
        if inner is not True:
            raise ValidationException(
                INVALID + "Null attribute value types must have the value of true"
            )
        return {"NULL": True}
    if kind == "L":
        if not isinstance(inner, list):
            raise SerializationException(f"{_json_kind(inner)} cannot be converted to List")
        return {"L": [validate_value(v, depth + 1) for v in inner]}
    if kind == "M":
        if not isinstance(inner, dict):
            raise SerializationException(f"{_json_kind(inner)} cannot be converted to Map")
        return {"M": {_string(k): validate_value(v, depth + 1) for k, v in inner.items()}}
    if kind in SET_TYPES:
        return {kind: _validate_set(kind, inner)}
    raise SerializationException(f"Unexpected attribute value type: {kind}")


def _validate_set(kind: str, members: object) -> list[str]:
    if not isinstance(members, list):
        raise SerializationException(f"{_json_kind(members)} cannot be converted to List")
    if not members:
        raise ValidationException(_EMPTY_SET[kind])
    if kind == "SS":
        out = [_string(m) for m in members]
        identities: list[object] = list(out)
    elif kind == "NS":
        out = [canonical_number(_string(m, "Number")) for m in members]
        identities = list(out)
    else:
        raw = [decode_binary(m) for m in members]
        out = [encode_binary(b) for b in raw]
        identities = list(raw)
    if len(set(identities)) != len(identities):
        shown = ", ".join(str(m) for m in members)
        raise ValidationException(INVALID + f"Input collection [{shown}] contains duplicates.")
    return out


def _string(inner: object, target: str = "String") -> str:
    if not isinstance(inner, str):
        raise SerializationException(f"{_json_kind(inner)} cannot be converted to {target}")
    return inner


def _json_kind(inner: object) -> str:
    if isinstance(inner, bool):
        return "BOOLEAN_VALUE"
    if isinstance(inner, int | float):
        return "NUMBER_VALUE"
    if isinstance(inner, str):
        return "STRING_VALUE"
    if isinstance(inner, list):
        return "START_ARRAY"
    if isinstance(inner, dict):
        return "START_OBJECT"
    return "VALUE_NULL"


def validate_attributes(item: object) -> Item:
    """A normalised copy of a map of attribute name -> wire value (no key checks)."""
    if not isinstance(item, dict):
        raise SerializationException("Start of structure or map found where not expected")
    out: Item = {}
    for name, value in item.items():
        if not isinstance(name, str) or not name:
            raise ValidationException(INVALID + "An attribute name may not be empty")
        out[name] = validate_value(value)
    return out


def validate_item(item: object, schema: KeySchema) -> Item:
    """A normalised copy of a whole item for PutItem: key attributes present with the
    schema's types and not empty, and the whole item within 400 KB."""
    checked = validate_attributes(item)
    for name, kind in schema.attributes():
        if name not in checked:
            raise ValidationException(INVALID + f"Missing the key {name} in the item")
        _check_key_value(name, kind, checked[name], schema)
    if item_size(checked) > MAX_ITEM_BYTES:
        raise ValidationException("Item size has exceeded the maximum allowed size")
    return checked


def check_updated_item_size(item: Item) -> None:
    """UpdateItem's wording of the 400 KB limit, for the item an update produced."""
    if item_size(item) > MAX_ITEM_BYTES:
        raise ValidationException("Item size to update has exceeded the maximum allowed size")


def validate_key(key: object, schema: KeySchema) -> Item:
    """A normalised copy of a primary key (GetItem, DeleteItem, ...): exactly the key
    attributes of the schema, with its types."""
    checked = validate_attributes(key)
    wanted = dict(schema.attributes())
    if set(checked) != set(wanted):
        raise ValidationException("The provided key element does not match the schema")
    for name, kind in wanted.items():
        if value_type(checked[name]) != kind:
            raise ValidationException("The provided key element does not match the schema")
        _check_key_value(name, kind, checked[name], schema)
    return checked


def _check_key_value(name: str, kind: str, value: Value, schema: KeySchema) -> None:
    actual = value_type(value)
    if actual != kind:
        raise ValidationException(
            INVALID + f"Type mismatch for key {name} expected: {kind} actual: {actual}"
        )
    size = value_size(value)
    if size == 0:
        raise ValidationException(
            "One or more parameter values are not valid. The AttributeValue for a key "
            f"attribute cannot contain an empty {'string' if kind == 'S' else 'binary'} "
            f"value. Key: {name}"
        )
    if name == schema.hash_key and size > MAX_HASH_KEY_BYTES:
        raise ValidationException(
            INVALID + "Size of hashkey has exceeded the maximum size limit of2048 bytes"
        )
    if name == schema.range_key and size > MAX_RANGE_KEY_BYTES:
        raise ValidationException(
            INVALID + "Aggregated size of all range keys has exceeded the size limit of 1024 bytes"
        )


def value_size(value: Value) -> int:
    """Bytes DynamoDB counts for one value: strings as UTF-8, numbers about one byte per
    two significant digits plus one, containers 3 bytes plus one per element."""
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(inner.encode("utf-8"))
    if kind == "N":
        return _number_size(inner)
    if kind == "B":
        return len(decode_binary(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(m.encode("utf-8")) for m in inner)
    if kind == "NS":
        return sum(_number_size(m) for m in inner)
    if kind == "BS":
        return sum(len(decode_binary(m)) for m in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in inner.items())


def _number_size(text: str) -> int:
    digits = parse_number(text).as_tuple().digits
    return (len(digits) + 1) // 2 + 1


def item_size(item: Item) -> int:
    """An item's size by DynamoDB's rules: names (UTF-8) plus values; the limit is 400 KB."""
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())
