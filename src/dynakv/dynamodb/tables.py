"""DynamoDB tables as bucket types: the table record kept as JSON in BucketType.table, what
CreateTable/UpdateTable accept, and what DescribeTable/ListTables answer. Pure: no I/O.

A table named T is the `lww` bucket type (and bucket) item_keys.table_bucket(T). Its record
carries the key schema, attribute definitions, billing settings, the TimeToLive attribute
and `created`, the table's generation: every item is stored with it, so items a deleted
table left behind are never seen by a table created later under the same name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dynakv.dynamodb.attributes import KeySchema
from dynakv.dynamodb.errors import (
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from dynakv.item_keys import TABLE_PREFIX, is_table_bucket

INVALID = "One or more parameter values were invalid: "
NAME = re.compile(r"^[a-zA-Z0-9_.-]+$")
MAX_NAME = 255 - len(TABLE_PREFIX)  # a bucket name is at most 255 bytes
ARN_PREFIX = "arn:aws:dynamodb:ddblocal:000000000000:table/"
BILLING_MODES = ("PROVISIONED", "PAY_PER_REQUEST")


@dataclass(frozen=True)
class Table:
    """One table as its record describes it."""

    name: str
    schema: KeySchema
    attributes: tuple[tuple[str, str], ...]  # (name, type) as defined
    billing: str
    read_units: int
    write_units: int
    created: float  # seconds since the epoch: CreationDateTime, and the items' generation
    deleted: bool = False
    ttl_attribute: str = ""  # the attribute holding items' expiry (TimeToLive); "": off

    def record(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "hash": [self.schema.hash_key, self.schema.hash_type],
                "range": [self.schema.range_key, self.schema.range_type],
                "attributes": [list(a) for a in self.attributes],
                "billing": self.billing,
                "units": [self.read_units, self.write_units],
                "created": self.created,
                "deleted": self.deleted,
                "ttl": self.ttl_attribute,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_record(cls, text: str) -> Table:
        raw = json.loads(text)
        hash_key, hash_type = raw["hash"]
        range_key, range_type = raw["range"]
        return cls(
            raw["name"],
            KeySchema(hash_key, hash_type, range_key, range_type),
            tuple((n, t) for n, t in raw["attributes"]),
            raw["billing"],
            raw["units"][0],
            raw["units"][1],
            raw["created"],
            raw["deleted"],
            raw.get("ttl", ""),  # absent from records written before TimeToLive
        )

    def key_schema(self) -> list[dict[str, str]]:
        out = [{"AttributeName": self.schema.hash_key, "KeyType": "HASH"}]
        if self.schema.range_key is not None:
            out.append({"AttributeName": self.schema.range_key, "KeyType": "RANGE"})
        return out

    def describe(self, item_count: int = 0, size_bytes: int = 0) -> dict[str, Any]:
        """DynamoDB's TableDescription."""
        return {
            "TableName": self.name,
            "TableStatus": "DELETING" if self.deleted else "ACTIVE",
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in self.attributes
            ],
            "CreationDateTime": self.created,
            "ItemCount": item_count,
            "TableSizeBytes": size_bytes,
            "TableArn": ARN_PREFIX + self.name,
            "TableId": f"{int(self.created * 1e6):016x}",
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": self.read_units,
                "WriteCapacityUnits": self.write_units,
            },
            "BillingModeSummary": {"BillingMode": self.billing},
        }


def tables_of(types: list[dict[str, Any]]) -> dict[str, Table]:
    """The live tables among the cluster's bucket types (ServerApi.bucket_types())."""
    out: dict[str, Table] = {}
    for t in types:
        if is_table_bucket(t["name"]) and t.get("table"):
            table = Table.from_record(t["table"])
            if not table.deleted:
                out[table.name] = table
    return out


def check_name(name: object, field: str = "tableName") -> str:
    """A table name as DynamoDB allows it (3-255 of [a-zA-Z0-9_.-]; here at most MAX_NAME)."""
    if not isinstance(name, str):
        raise ValidationException(f"1 validation error detected: {field} must be a string")
    problems = []
    if len(name) < 3:
        problems.append("Member must have length greater than or equal to 3")
    if len(name) > MAX_NAME:
        problems.append(f"Member must have length less than or equal to {MAX_NAME}")
    if not NAME.match(name):
        problems.append("Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
    if problems:
        count = len(problems)
        raise ValidationException(
            f"{count} validation error{'s' if count > 1 else ''} detected: "
            + "; ".join(
                f"Value '{name}' at '{field}' failed to satisfy constraint: {p}" for p in problems
            )
        )
    return name


def lookup(tables: dict[str, Table], name: object) -> Table:
    """The table a request names, or DynamoDB's errors for a bad or unknown name."""
    checked = check_name(name)
    table = tables.get(checked)
    if table is None:
        raise ResourceNotFoundException(f"Requested resource not found: Table: {checked} not found")
    return table


def new_table(request: dict[str, Any], tables: dict[str, Table], now: float) -> Table:
    """The table a CreateTable request asks for, validated as DynamoDB does."""
    name = check_name(request.get("TableName"))
    key_schema = request.get("KeySchema")
    definitions = request.get("AttributeDefinitions")
    if not isinstance(key_schema, list) or not 1 <= len(key_schema) <= 2:
        raise ValidationException(
            "1 validation error detected: Value at 'keySchema' failed to satisfy constraint: "
            "Member must have length less than or equal to 2 and greater than or equal to 1"
        )
    if not isinstance(definitions, list) or not definitions:
        raise ValidationException(
            INVALID + "Some index key attributes are not defined in AttributeDefinitions"
        )
    defined: dict[str, str] = {}
    for d in definitions:
        if not isinstance(d, dict):
            raise ValidationException(INVALID + "Invalid AttributeDefinitions")
        attr, kind = d.get("AttributeName"), d.get("AttributeType")
        if not isinstance(attr, str) or not attr:
            raise ValidationException(INVALID + "An attribute name may not be empty")
        if kind not in ("S", "N", "B"):
            raise ValidationException(
                "1 validation error detected: Value '"
                + str(kind)
                + "' at 'attributeDefinitions.1.member.attributeType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [B, N, S]"
            )
        defined[attr] = kind
    hash_key = range_key = None
    for k in key_schema:
        if not isinstance(k, dict):
            raise ValidationException(INVALID + "Invalid KeySchema")
        attr, kind = k.get("AttributeName"), k.get("KeyType")
        if kind == "HASH" and hash_key is None:
            hash_key = attr
        elif kind == "RANGE" and range_key is None:
            range_key = attr
        else:
            raise ValidationException(
                INVALID + "Invalid KeySchema: Some index key attribute have no definition"
                if kind not in ("HASH", "RANGE")
                else INVALID + "Too many hash keys or range keys in KeySchema"
            )
    if hash_key is None or not isinstance(hash_key, str):
        raise ValidationException(
            INVALID
            + "No Hash Key specified in schema.  All Dynamo DB tables must have exactly one "
            "hash key"
        )
    keys = [k for k in (hash_key, range_key) if k is not None]
    undefined = [k for k in keys if k not in defined]
    if undefined:
        raise ValidationException(
            INVALID + "Some index key attributes are not defined in AttributeDefinitions. "
            f"Keys: [{', '.join(map(str, keys))}], AttributeDefinitions: "
            f"[{', '.join(defined)}]"
        )
    if len(defined) != len(keys):
        raise ValidationException(
            INVALID + "Number of attributes in KeySchema does not exactly match number of "
            "attributes defined in AttributeDefinitions"
        )
    billing, read_units, write_units = billing_of(request, "PROVISIONED")
    if name in tables:
        raise ResourceInUseException(f"Table already exists: {name}")
    schema = KeySchema(
        hash_key, defined[hash_key], range_key, defined[range_key] if range_key else None
    )
    attributes = tuple((k, defined[k]) for k in keys)
    return Table(name, schema, attributes, billing, read_units, write_units, now)


def billing_of(request: dict[str, Any], default: str) -> tuple[str, int, int]:
    """(billing mode, read units, write units) of a CreateTable or UpdateTable request."""
    billing = request.get("BillingMode", default)
    if billing not in BILLING_MODES:
        raise ValidationException(
            f"1 validation error detected: Value '{billing}' at 'billingMode' failed to "
            "satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        )
    throughput = request.get("ProvisionedThroughput")
    if billing == "PAY_PER_REQUEST":
        if throughput is not None:
            raise ValidationException(
                INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified "
                "when BillingMode is PAY_PER_REQUEST"
            )
        return billing, 0, 0
    if not isinstance(throughput, dict):
        raise ValidationException(
            INVALID + "ReadCapacityUnits and WriteCapacityUnits must both be specified when "
            "BillingMode is PROVISIONED"
        )
    units = [throughput.get("ReadCapacityUnits"), throughput.get("WriteCapacityUnits")]
    for u in units:
        if not isinstance(u, int) or isinstance(u, bool) or u < 1:
            raise ValidationException(
                INVALID + "ReadCapacityUnits and WriteCapacityUnits must both be specified "
                "and at least 1 when BillingMode is PROVISIONED"
            )
    return billing, units[0], units[1]


def list_page(
    tables: dict[str, Table], start: object, limit: object
) -> tuple[list[str], str | None]:
    """ListTables: names after ExclusiveStartTableName, at most Limit (1-100), and the
    LastEvaluatedTableName when more follow."""
    if limit is None:
        limit = 100
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
        raise ValidationException(
            f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
            "constraint: Member must have value less than or equal to 100"
            if isinstance(limit, int) and limit > 100
            else f"1 validation error detected: Value '{limit}' at 'limit' failed to "
            "satisfy constraint: Member must have value greater than or equal to 1"
        )
    names = sorted(tables)
    if start is not None:
        check_name(start, "exclusiveStartTableName")
        names = [n for n in names if n > start]
    page = names[:limit]
    more = len(names) > limit
    return page, page[-1] if more else None
