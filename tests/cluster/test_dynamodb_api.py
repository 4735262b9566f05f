"""The DynamoDB endpoint of a real 3-node cluster, through boto3: tables, batches, the wire
format, and DynamoDB's error for each kind of bad request (the node keeps serving after
each)."""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.ddb_harness import client, dynamo_cluster, endpoint, error_of, make_table
from tests.cluster.harness import ProcessCluster, http


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with dynamo_cluster(tmp_path_factory.mktemp("ddb")) as started:
        yield started


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


def test_describe_table_estimates_item_count_and_size(procs: ProcessCluster) -> None:
    ddb = client(procs, 2)
    make_table(ddb, "counted", None)
    for start in range(0, 60, 25):
        ddb.batch_write_item(
            RequestItems={
                "counted": [
                    {"PutRequest": {"Item": {"pk": {"S": f"k{i:02d}"}, "v": {"S": "x" * 10}}}}
                    for i in range(start, min(start + 25, 60))
                ]
            }
        )
    deadline = time.monotonic() + 120
    while True:  # the first DescribeTable starts a count in the background
        table = ddb.describe_table(TableName="counted")["Table"]
        if table["ItemCount"] == 60:
            break
        assert time.monotonic() < deadline, table
        time.sleep(0.2)
    assert table["TableSizeBytes"] == 60 * (2 + 3 + 1 + 10)  # pk, kNN, v, ten x's
