"""The DynamoDB endpoint of a real 3-node cluster, through boto3: tables, every attribute type,
item operations with each expression form, Query and Scan paging, batches, and DynamoDB's
error for each kind of bad request (the node keeps serving after each)."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cluster.ddb_harness import client, dynamo_cluster, endpoint, make_table
from tests.cluster.harness import ProcessCluster, http


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with dynamo_cluster(tmp_path_factory.mktemp("ddb")) as started:
        yield started


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def test_tables_are_created_listed_described_updated_and_deleted(procs: ProcessCluster) -> None:
    ddb, other = client(procs, 0), client(procs, 2)
    names = [f"tbl-{i:02d}" for i in range(5)]
    for name in names:
        make_table(ddb, name, "N" if name.endswith("1") else None)
    listed: list[str] = []
    start: dict[str, str] = {}
    while True:  # through another node: the types are cluster-wide once created
        page = other.list_tables(Limit=2, **start)
        listed += page["TableNames"]
        if "LastEvaluatedTableName" not in page:
            break
        start = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}
    assert [n for n in listed if n.startswith("tbl-")] == names
    table = other.describe_table(TableName="tbl-01")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["TableArn"].endswith(":table/tbl-01")
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert "CreationDateTime" in table and table["ItemCount"] >= 0
    code, _ = error_of(
        ddb.create_table,
        TableName="tbl-00",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert code == "ResourceInUseException"
    updated = ddb.update_table(
        TableName="tbl-02",
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 7, "WriteCapacityUnits": 3},
    )["TableDescription"]
    assert updated["ProvisionedThroughput"]["ReadCapacityUnits"] == 7
    assert other.describe_table(TableName="tbl-02")["Table"]["BillingModeSummary"] == {
        "BillingMode": "PROVISIONED"
    }
    ddb.put_item(TableName="tbl-03", Item={"pk": {"S": "old"}})
    ddb.delete_table(TableName="tbl-03")
    assert error_of(other.describe_table, TableName="tbl-03")[0] == "ResourceNotFoundException"
    make_table(ddb, "tbl-03", None)  # the same name again: the old items are not its items
    assert "Item" not in other.get_item(TableName="tbl-03", Key={"pk": {"S": "old"}})
    assert other.scan(TableName="tbl-03")["Count"] == 0


def test_every_attribute_type_round_trips(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "types", "B", hash_type="N")
    item = {
        "pk": {"N": "12345678901234567890123456789012345678"},
        "sk": {"B": b"\x00\xffbin"},
        "s": {"S": "héllo ✓"},
        "n": {"N": "-0.000000000000000000000000000000000001"},
        "b": {"B": b"\x01\x02"},
        "t": {"BOOL": True},
        "f": {"BOOL": False},
        "z": {"NULL": True},
        "m": {"M": {"deep": {"L": [{"S": "x"}, {"N": "1"}, {"M": {}}]}}},
        "l": {"L": []},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5", "-3"]},
        "bs": {"BS": [b"x", b"y"]},
    }
    ddb.put_item(TableName="types", Item=item)
    for index in range(3):  # read through every node
        got = client(procs, index).get_item(
            TableName="types", Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True
        )["Item"]
        assert {k: v for k, v in got.items() if k not in ("ss", "ns", "bs")} == {
            k: v for k, v in item.items() if k not in ("ss", "ns", "bs")
        }
        assert sorted(got["ss"]["SS"]) == ["a", "b"]
        assert sorted(Decimal(x) for x in got["ns"]["NS"]) == [Decimal(-3), 1, Decimal("2.5")]
        assert sorted(got["bs"]["BS"]) == [b"x", b"y"]
    got = ddb.get_item(
        TableName="types",
        Key={"pk": item["pk"], "sk": item["sk"]},
        ProjectionExpression="#m.deep[1], s",
        ExpressionAttributeNames={"#m": "m"},
    )["Item"]
    assert got == {"m": {"M": {"deep": {"L": [{"N": "1"}]}}}, "s": item["s"]}


def test_conditional_puts_and_deletes_with_return_values(procs: ProcessCluster) -> None:
    ddb = client(procs, 1)
    make_table(ddb, "cond", None)
    key = {"pk": {"S": "k"}}
    ddb.put_item(
        TableName="cond",
        Item={**key, "v": {"N": "1"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    code, message = error_of(
        ddb.put_item,
        TableName="cond",
        Item={**key, "v": {"N": "2"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")
    with pytest.raises(ClientError) as info:
        ddb.put_item(
            TableName="cond",
            Item={**key, "v": {"N": "2"}},
            ConditionExpression="v > :x",
            ExpressionAttributeValues={":x": {"N": "5"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert info.value.response["Item"] == {**key, "v": {"N": "1"}}
    old = ddb.put_item(TableName="cond", Item={**key, "v": {"N": "2"}}, ReturnValues="ALL_OLD")
    assert old["Attributes"] == {**key, "v": {"N": "1"}}
    code, _ = error_of(
        ddb.delete_item,
        TableName="cond",
        Key=key,
        ConditionExpression="v = :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    assert code == "ConditionalCheckFailedException"
    gone = ddb.delete_item(
        TableName="cond",
        Key=key,
        ReturnValues="ALL_OLD",
        ConditionExpression="v = :two",
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    assert gone["Attributes"]["v"] == {"N": "2"}
    assert "Item" not in ddb.get_item(TableName="cond", Key=key, ConsistentRead=True)


CONDITIONS = [  # (expression, values, holds for the item below)
    ("n = :a", {":a": {"N": "5"}}, True),
    ("n <> :a", {":a": {"N": "5"}}, False),
    ("n < :a AND n >= :b", {":a": {"N": "6"}, ":b": {"N": "5"}}, True),
    ("n > :a OR n <= :b", {":a": {"N": "9"}, ":b": {"N": "1"}}, False),
    ("n BETWEEN :a AND :b", {":a": {"N": "1"}, ":b": {"N": "5"}}, True),
    ("s IN (:a, :b)", {":a": {"S": "x"}, ":b": {"S": "hello"}}, True),
    ("NOT attribute_exists(absent)", None, True),
    ("attribute_not_exists(s)", None, False),
    ("attribute_type(l, :t)", {":t": {"S": "L"}}, True),
    ("begins_with(s, :p)", {":p": {"S": "he"}}, True),
    ("contains(l, :e)", {":e": {"S": "b"}}, True),
    ("contains(s, :e)", {":e": {"S": "zz"}}, False),
    ("size(l) = :three", {":three": {"N": "3"}}, True),
    ("m.deep.x = :one", {":one": {"N": "1"}}, True),
    (
        "(n = :a OR n = :b) AND NOT s = :c",
        {":a": {"N": "0"}, ":b": {"N": "5"}, ":c": {"S": "q"}},
        True,
    ),
]


@pytest.mark.parametrize(("expression", "values", "expected"), CONDITIONS)
def test_each_condition_form(
    procs: ProcessCluster, expression: str, values: dict | None, expected: bool
) -> None:
    ddb = client(procs, 2)
    try:
        make_table(ddb, "forms", None)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceInUseException"
    item = {
        "pk": {"S": "it"},
        "n": {"N": "5"},
        "s": {"S": "hello"},
        "l": {"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}]},
        "m": {"M": {"deep": {"M": {"x": {"N": "1"}}}}},
    }
    ddb.put_item(TableName="forms", Item=item)
    extra = {"ExpressionAttributeValues": values} if values else {}
    if expected:
        ddb.put_item(TableName="forms", Item=item, ConditionExpression=expression, **extra)
    else:
        code, _ = error_of(
            ddb.put_item, TableName="forms", Item=item, ConditionExpression=expression, **extra
        )
        assert code == "ConditionalCheckFailedException"


def test_update_expressions_and_every_return_value(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "upd", "N")
    key = {"pk": {"S": "u"}, "sk": {"N": "1"}}
    new = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="ALL_NEW",
        UpdateExpression="SET c = if_not_exists(c, :zero) + :one, l = list_append(:l, :l), "
        "m = :m ADD tags :tags",
        ExpressionAttributeValues={
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":l": {"L": [{"S": "a"}]},
            ":m": {"M": {"x": {"N": "1"}}},
            ":tags": {"SS": ["t1", "t2"]},
        },
    )["Attributes"]
    assert new["c"] == {"N": "1"} and new["l"] == {"L": [{"S": "a"}, {"S": "a"}]}
    old = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="UPDATED_OLD",
        UpdateExpression="SET m.x = m.x + :ten REMOVE l[0] DELETE tags :t1",
        ExpressionAttributeValues={":ten": {"N": "10"}, ":t1": {"SS": ["t1"]}},
    )
    assert "Attributes" in old  # UPDATED_OLD: the written paths' old values
    assert old["Attributes"]["m"] == {"M": {"x": {"N": "1"}}}
    updated_new = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="UPDATED_NEW",
        UpdateExpression="SET c = c - :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )["Attributes"]
    assert updated_new == {"c": {"N": "0"}}
    everything_old = ddb.update_item(
        TableName="upd", Key=key, ReturnValues="ALL_OLD", UpdateExpression="REMOVE c"
    )["Attributes"]
    assert everything_old["c"] == {"N": "0"}
    item = ddb.get_item(TableName="upd", Key=key, ConsistentRead=True)["Item"]
    assert "c" not in item and item["tags"] == {"SS": ["t2"]}
    assert item["l"] == {"L": [{"S": "a"}]} and item["m"] == {"M": {"x": {"N": "11"}}}
    none = ddb.update_item(
        TableName="upd",
        Key=key,
        UpdateExpression="SET z = :z",
        ExpressionAttributeValues={":z": {"NULL": True}},
    )
    assert "Attributes" not in none
    code, message = error_of(
        ddb.update_item,
        TableName="upd",
        Key=key,
        UpdateExpression="SET sk = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    assert code == "ValidationException" and "part of the key" in message


def test_query_pages_in_sort_order_both_ways(procs: ProcessCluster) -> None:
    ddb = client(procs, 1)
    make_table(ddb, "qnum", "N")
    numbers = [Decimal(i) / 4 - 30 for i in range(240)]
    batch = [
        {
            "PutRequest": {
                "Item": {
                    "pk": {"S": "p"},
                    "sk": {"N": str(n)},
                    "odd": {"BOOL": int(n * 4) % 2 == 1},
                }
            }
        }
        for n in numbers
    ]
    for i in range(0, len(batch), 25):
        assert (
            client(procs, i % 3).batch_write_item(RequestItems={"qnum": batch[i : i + 25]})[
                "UnprocessedItems"
            ]
            == {}
        )
    ddb.put_item(TableName="qnum", Item={"pk": {"S": "other"}, "sk": {"N": "0"}})
    for forward in (True, False):
        seen: list[Decimal] = []
        start: dict[str, Any] = {}
        pages = 0
        while True:
            page = ddb.query(
                TableName="qnum",
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": "p"}},
                Limit=37,
                ScanIndexForward=forward,
                **start,
            )
            pages += 1
            seen += [Decimal(i["sk"]["N"]) for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        assert seen == sorted(numbers, reverse=not forward)
        assert pages == 7
    ranged = ddb.query(
        TableName="qnum",
        KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
        FilterExpression="odd = :t",
        ProjectionExpression="sk",
        ExpressionAttributeValues={
            ":p": {"S": "p"},
            ":a": {"N": "-1"},
            ":b": {"N": "1"},
            ":t": {"BOOL": True},
        },
    )
    assert [Decimal(i["sk"]["N"]) for i in ranged["Items"]] == [
        Decimal("-0.75"),
        Decimal("-0.25"),
        Decimal("0.25"),
        Decimal("0.75"),
    ]
    assert ranged["ScannedCount"] == 9 and ranged["Items"][0].keys() == {"sk"}
    for op, bound, count in (("<", "-29", 4), ("<=", "-29", 5), (">", "29", 3), (">=", "29", 4)):
        got = ddb.query(
            TableName="qnum",
            KeyConditionExpression=f"pk = :p AND sk {op} :b",
            ExpressionAttributeValues={":p": {"S": "p"}, ":b": {"N": bound}},
            Select="COUNT",
            ConsistentRead=True,
        )
        assert got["Count"] == count and "Items" not in got


def test_query_begins_with_on_string_sort_keys(procs: ProcessCluster) -> None:
    ddb = client(procs, 2)
    make_table(ddb, "qstr", "S")
    for sk in ("a", "ab", "abc", "abd", "b", "é", "a" * 600 + "1", "a" * 600 + "0"):
        ddb.put_item(TableName="qstr", Item={"pk": {"S": "x"}, "sk": {"S": sk}})
    got = ddb.query(
        TableName="qstr",
        KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
        ExpressionAttributeValues={":p": {"S": "x"}, ":b": {"S": "ab"}},
    )
    assert [i["sk"]["S"] for i in got["Items"]] == ["ab", "abc", "abd"]
    everything = ddb.query(
        TableName="qstr",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "x"}},
    )
    keys = [i["sk"]["S"] for i in everything["Items"]]
    assert sorted(keys, key=str.encode)[-3:] == keys[-3:]  # b, é sort after the a's
    assert len(keys) == 8 and keys[:1] == ["a"]
    # Sort keys longer than the storage key keeps are all there; their order among
    # themselves is that of a hash (docs/DESIGN.md).
    assert set(keys[1:3]) == {"a" * 600 + "0", "a" * 600 + "1"}


def test_scan_segments_cover_the_table_once(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "scanned", None)
    wanted = {f"item{i}" for i in range(150)}
    for i, name in enumerate(sorted(wanted)):
        client(procs, i % 3).put_item(
            TableName="scanned", Item={"pk": {"S": name}, "n": {"N": str(i)}}
        )
    found: list[str] = []
    for segment in range(4):
        start: dict[str, Any] = {}
        while True:
            page = ddb.scan(
                TableName="scanned", Segment=segment, TotalSegments=4, Limit=20, **start
            )
            found += [i["pk"]["S"] for i in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    assert sorted(found) == sorted(wanted)
    filtered = ddb.scan(
        TableName="scanned",
        FilterExpression="n < :ten",
        ExpressionAttributeValues={":ten": {"N": "10"}},
        ConsistentRead=True,
    )
    assert filtered["Count"] == 10 and filtered["ScannedCount"] == 150


def test_batches_read_and_write_across_tables(procs: ProcessCluster) -> None:
    ddb = client(procs, 1)
    make_table(ddb, "batch-a", None)
    make_table(ddb, "batch-b", "N")
    writes = {
        "batch-a": [
            {"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}}} for i in range(10)
        ],
        "batch-b": [
            {"PutRequest": {"Item": {"pk": {"S": "p"}, "sk": {"N": str(i)}}}} for i in range(10)
        ],
    }
    assert ddb.batch_write_item(RequestItems=writes)["UnprocessedItems"] == {}
    ddb.batch_write_item(
        RequestItems={"batch-a": [{"DeleteRequest": {"Key": {"pk": {"S": "k0"}}}}]}
    )
    got = ddb.batch_get_item(
        RequestItems={
            "batch-a": {
                "Keys": [{"pk": {"S": f"k{i}"}} for i in range(3)],
                "ProjectionExpression": "v",
            },
            "batch-b": {"Keys": [{"pk": {"S": "p"}, "sk": {"N": "4"}}], "ConsistentRead": True},
        }
    )
    assert sorted(i["v"]["N"] for i in got["Responses"]["batch-a"]) == ["1", "2"]
    assert got["Responses"]["batch-b"] == [{"pk": {"S": "p"}, "sk": {"N": "4"}}]
    assert got["UnprocessedKeys"] == {}
    code, message = error_of(
        ddb.batch_write_item,
        RequestItems={
            "batch-a": [
                {"PutRequest": {"Item": {"pk": {"S": "d"}}}},
                {"DeleteRequest": {"Key": {"pk": {"S": "d"}}}},
            ]
        },
    )
    assert (code, message) == (
        "ValidationException",
        "Provided list of item keys contains duplicates",
    )


def raw(procs: ProcessCluster, body: bytes, target: str | None, index: int = 0) -> tuple[int, dict]:
    headers = {"Content-Type": "application/x-amz-json-1.0"}
    if target is not None:
        headers["X-Amz-Target"] = target
    reply = http("POST", endpoint(procs, index) + "/", body, headers)
    assert reply.headers["x-amz-crc32"] == str(zlib.crc32(reply.body))
    return reply.status, reply.json()


def test_bad_requests_get_dynamodbs_errors_and_the_node_keeps_serving(
    procs: ProcessCluster,
) -> None:
    prefix = "com.amazonaws.dynamodb.v20120810#"
    cases = [
        (b"{not json", "DynamoDB_20120810.ListTables", "SerializationException"),
        (b"[1, 2]", "DynamoDB_20120810.ListTables", "SerializationException"),
        (b"{}", None, "UnknownOperationException"),
        (b"{}", "DynamoDB_20120810.DropEverything", "UnknownOperationException"),
        (b"{}", "Other_2000.ListTables", "UnknownOperationException"),
        (b'{"TableName": "no-such"}', "DynamoDB_20120810.GetItem", "ResourceNotFoundException"),
        (b'{"TableName": "x"}', "DynamoDB_20120810.DescribeTable", "ValidationException"),
    ]
    for body, target, name in cases:
        status, answer = raw(procs, body, target)
        assert status == 400 and answer["__type"] == prefix + name, (body, target, answer)
        assert raw(procs, b"{}", "DynamoDB_20120810.ListTables")[0] == 200
    ddb = client(procs, 0)
    make_table(ddb, "bad", "N")
    key = {"pk": {"S": "a"}, "sk": {"N": "1"}}
    validation = [
        dict(call=ddb.put_item, TableName="bad", Item={"pk": {"S": "a"}}),  # no sort key
        dict(call=ddb.put_item, TableName="bad", Item={"pk": {"N": "1"}, "sk": {"N": "1"}}),
        dict(call=ddb.put_item, TableName="bad", Item={**key, "e": {"SS": []}}),
        dict(call=ddb.put_item, TableName="bad", Item={**key, "n": {"N": "1" * 39}}),
        dict(call=ddb.put_item, TableName="bad", Item={**key, "big": {"S": "x" * 409_600}}),
        dict(call=ddb.put_item, TableName="bad", Item={"pk": {"S": ""}, "sk": {"N": "1"}}),
        dict(call=ddb.get_item, TableName="bad", Key={"pk": {"S": "a"}}),
        dict(call=ddb.get_item, TableName="bad", Key=key, ProjectionExpression="#x"),
        dict(
            call=ddb.put_item,
            TableName="bad",
            Item=key,
            ConditionExpression="a = :v",
            ExpressionAttributeValues={":v": {"S": "1"}, ":unused": {"S": "2"}},
        ),
        dict(call=ddb.put_item, TableName="bad", Item=key, ConditionExpression="a = = b"),
        dict(call=ddb.update_item, TableName="bad", Key=key, UpdateExpression="SET"),
        dict(call=ddb.put_item, TableName="bad", Item=key, ReturnValues="ALL_NEW"),
        dict(
            call=ddb.query,
            TableName="bad",
            KeyConditionExpression="sk = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        ),
        dict(
            call=ddb.query,
            TableName="bad",
            KeyConditionExpression="pk = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        ),
        dict(call=ddb.scan, TableName="bad", Segment=4, TotalSegments=4),
        dict(
            call=ddb.create_table,
            TableName="bad2",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "other", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        ),
    ]
    for case in validation:
        call = case.pop("call")
        code, message = error_of(call, **case)
        assert code == "ValidationException", (case, code, message)
        assert ddb.get_item(TableName="bad", Key=key) is not None  # still serving
    assert error_of(ddb.put_item, TableName="gone", Item=key)[0] == "ResourceNotFoundException"
    emoji = "\U0001f600" * 102_000  # 408 000 bytes of UTF-8: just under the 400 KB limit
    ddb.put_item(TableName="bad", Item={**key, "big": {"S": emoji}})
    got = ddb.get_item(TableName="bad", Key=key, ConsistentRead=True)["Item"]
    assert got["big"]["S"] == emoji


def test_sigv4_headers_are_accepted_and_binary_is_base64_on_the_wire(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "wire", None)
    status, answer = raw(
        procs,
        json.dumps(
            {
                "TableName": "wire",
                "Item": {"pk": {"S": "b"}, "v": {"B": base64.b64encode(b"\x00\x01").decode()}},
            }
        ).encode(),
        "DynamoDB_20120810.PutItem",
    )
    assert (status, answer) == (200, {})
    got = ddb.get_item(TableName="wire", Key={"pk": {"S": "b"}})  # signed by boto3
    assert got["Item"]["v"] == {"B": b"\x00\x01"}


def test_tables_never_clash_with_kv_buckets(procs: ProcessCluster, tmp_path: Path) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "clash", None)
    node = procs[0]
    assert http("PUT", f"{node.url}/v1/kv/clash/k", b"kv value").status == 204
    assert "Item" not in ddb.get_item(TableName="clash", Key={"pk": {"S": "k"}})
    ddb.put_item(TableName="clash", Item={"pk": {"S": "k"}})
    assert http("GET", f"{node.url}/v1/kv/clash/k").body == b"kv value"


def test_query_paging_is_stable_while_writes_go_on(procs: ProcessCluster) -> None:
    ddb, writer = client(procs, 0), client(procs, 1)
    make_table(ddb, "stable", "N")
    for start in range(0, 100, 25):
        writer.batch_write_item(
            RequestItems={
                "stable": [
                    {"PutRequest": {"Item": {"pk": {"S": "p"}, "sk": {"N": str(2 * i)}}}}
                    for i in range(start, start + 25)
                ]
            }
        )
    seen: list[int] = []
    start_key: dict[str, Any] = {}
    added = 0
    while True:
        page = ddb.query(
            TableName="stable",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
            Limit=10,
            **start_key,
        )
        seen += [int(i["sk"]["N"]) for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        start_key = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        # Between pages: odd sort keys on both sides of the cursor, and a delete behind it.
        last = int(page["LastEvaluatedKey"]["sk"]["N"])
        for sk in (last - 1, last + 1):
            writer.put_item(TableName="stable", Item={"pk": {"S": "p"}, "sk": {"N": str(sk)}})
            added += 1
        writer.delete_item(TableName="stable", Key={"pk": {"S": "p"}, "sk": {"N": str(last)}})
    assert seen == sorted(set(seen))  # in order, none twice
    assert set(range(0, 200, 2)) <= set(seen)  # every item there before the first page
    assert {sk for sk in seen if sk % 2} <= {sk for sk in range(1, 200, 2)}
    assert added > 0
