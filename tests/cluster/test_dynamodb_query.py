"""DynamoDB Query and Scan on a real 3-node cluster, through boto3: sort order both ways,
paging (stable while writes go on), key conditions, filters, projections, segments."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.cluster.ddb_harness import client, dynamo_cluster, make_table
from tests.cluster.harness import ProcessCluster


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with dynamo_cluster(tmp_path_factory.mktemp("ddb")) as started:
        yield started


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
