"""Tables as bucket-type records, CreateTable's validation, ListTables' pages, the item codec
and the JSON protocol's framing: the pure parts of the DynamoDB endpoint."""

from __future__ import annotations

import json
import zlib

import pytest

from dynakv.dynamodb import items, protocol
from dynakv.dynamodb.errors import (
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    ServiceUnavailable,
    UnknownOperationException,
    ValidationException,
)
from dynakv.dynamodb.tables import Table, list_page, lookup, new_table, tables_of
from dynakv.errors import Unavailable
from dynakv.item_keys import storage_key, table_bucket


def request(name: str = "orders", **extra: object) -> dict:
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
        **extra,
    }


def test_a_table_record_round_trips_and_describes_itself() -> None:
    table = new_table(request(), {}, 1700000000.5)
    again = Table.from_record(table.record())
    assert again == table
    described = table.describe()
    assert described["TableStatus"] == "ACTIVE"
    assert described["KeySchema"][1] == {"AttributeName": "sk", "KeyType": "RANGE"}
    assert described["BillingModeSummary"] == {"BillingMode": "PAY_PER_REQUEST"}
    types = [
        {"name": table_bucket("orders"), "table": table.record()},
        {"name": "orders", "table": ""},  # a KV bucket of the same name is not a table
    ]
    assert list(tables_of(types)) == ["orders"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"TableName": "ab"}, "greater than or equal to 3"),
        ({"TableName": "bad name!"}, "regular expression"),
        ({"KeySchema": []}, "keySchema"),
        ({"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]},
         "not defined in AttributeDefinitions"),
        ({"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                   {"AttributeName": "sk", "AttributeType": "N"},
                                   {"AttributeName": "x", "AttributeType": "S"}]},
         "does not exactly match"),
        ({"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "BOOL"},
                                   {"AttributeName": "sk", "AttributeType": "N"}]}, "[B, N, S]"),
        ({"BillingMode": "PROVISIONED"}, "must both be specified"),
        ({"ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}},
         "PAY_PER_REQUEST"),
        ({"BillingMode": "FREE"}, "billingMode"),
    ],
)  # fmt: skip
def test_create_table_refuses_what_dynamodb_refuses(changes: dict, fragment: str) -> None:
    with pytest.raises(ValidationException) as info:
        new_table(request(**changes), {}, 1.0)
    assert fragment in info.value.message


def test_existing_and_missing_tables() -> None:
    table = new_table(request(), {}, 1.0)
    with pytest.raises(ResourceInUseException):
        new_table(request(), {"orders": table}, 2.0)
    with pytest.raises(ResourceNotFoundException) as info:
        lookup({}, "orders")
    assert info.value.message == "Requested resource not found: Table: orders not found"


def test_list_tables_pages() -> None:
    tables = {n: new_table(request(n), {}, 1.0) for n in ("aaa", "bbb", "ccc")}
    assert list_page(tables, None, 2) == (["aaa", "bbb"], "bbb")
    assert list_page(tables, "bbb", 2) == (["ccc"], None)
    assert list_page(tables, None, None) == (["aaa", "bbb", "ccc"], None)
    for bad in (0, 101, "2"):
        with pytest.raises(ValidationException):
            list_page(tables, None, bad)


def test_items_of_a_partition_key_are_stored_in_sort_key_order() -> None:
    table = new_table(request(), {}, 1.0)
    keys = [{"pk": {"S": "a"}, "sk": {"N": n}} for n in ("-10", "-1.5", "0", "2", "10", "1e5")]
    stored = [storage_key(*items.location(table, k)) for k in keys]
    assert stored == sorted(stored)
    assert len({s[:16] for s in stored}) == 1
    item = {**keys[0], "v": {"S": "é\U0001f600"}}
    assert items.decode(table, items.encode(table, item)) == item
    later = new_table(request(), {}, 2.0)  # the same name created again: another generation
    assert items.decode(later, items.encode(table, item)) is None
    assert items.decode(table, b"not json") is None


def test_the_protocol_frames_requests_and_errors() -> None:
    assert protocol.operation("DynamoDB_20120810.GetItem") is protocol.OPERATIONS["GetItem"]
    for target in (None, "", "DynamoDB_20120810.Nope", "Other.GetItem"):
        with pytest.raises(UnknownOperationException):
            protocol.operation(target)
    for body in (b"{", b"[]", b'"x"'):
        with pytest.raises(SerializationException):
            protocol.parse_body(body)
    assert protocol.parse_body(b"") == {}
    error = protocol.as_dynamo(Unavailable("too few replicas", 2, 1))
    assert isinstance(error, ServiceUnavailable) and error.status == 503
    body = protocol.error_body(ValidationException("bad"))
    assert body == {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                    "message": "bad"}  # fmt: skip
    data, crc = protocol.encode(body)
    assert json.loads(data) == body and crc == str(zlib.crc32(data))
