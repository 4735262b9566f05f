"""`dynakv bench --workload e`: YCSB's short ranges as DynamoDB Queries. The pure parts (where
a record lives, what a scan asks for, the Query requests and their paging) and a run phase
against a fake DynamoDB client; no node, nothing timed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

from dynakv.bench import summarize
from dynakv.bench_apis import DynamoClient
from dynakv.bench_query import (
    Scan,
    ScanResult,
    item_key,
    key_attributes,
    key_schema,
    next_limit,
    plan_scan,
    query_body,
    record_of,
)
from dynakv.cli import main
from dynakv.load_generator import BenchSpec, Generator
from dynakv.messages import PutResult
from dynakv.ycsb import WORKLOADS

# --- where records live, what a scan asks ---------------------------------------------------


def test_records_fill_partition_keys_in_sort_key_order() -> None:
    assert [item_key(r, 3) for r in range(7)] == [
        ("user0", 0), ("user0", 1), ("user0", 2),
        ("user1", 0), ("user1", 1), ("user1", 2),
        ("user2", 0),
    ]  # fmt: skip
    assert key_attributes(2_000_123, 1000) == {"k": {"S": "user2000"}, "s": {"N": "123"}}
    assert record_of("user2000123") == 2_000_123
    with pytest.raises(ValueError, match="not a generator key"):
        record_of("bench7")


@pytest.mark.parametrize(
    ("start", "length", "expected"),
    [
        (0, 100, 100),  # a whole scan inside the key
        (950, 100, 50),  # the key's last 50 items: a Query does not go on to the next key
        (999, 1, 1),
        (99_990, 100, 10),  # the last loaded records (records = 100,000)
        (1500, 20, 20),
    ],
)
def test_a_scan_stays_within_its_partition_key(start: int, length: int, expected: int) -> None:
    scan = plan_scan(start, length, per_key=1000, records=100_000)
    assert scan.partition_key == f"user{start // 1000}"
    assert (scan.first, scan.last) == (start % 1000, start % 1000 + length - 1)
    assert scan.length == length
    assert scan.expected == expected


def test_a_scan_of_an_inserted_record_expects_nothing_loaded() -> None:
    assert plan_scan(100_005, 10, per_key=1000, records=100_000).expected == 0


def test_the_query_asks_for_a_sort_key_range_with_a_limit() -> None:
    scan = Scan("user7", 40, 139, 100, 100)
    body = query_body("bench", scan, 100)
    assert body == {
        "TableName": "bench",
        "KeyConditionExpression": "#k = :k AND #s BETWEEN :lo AND :hi",
        "ExpressionAttributeNames": {"#k": "k", "#s": "s"},
        "ExpressionAttributeValues": {
            ":k": {"S": "user7"},
            ":lo": {"N": "40"},
            ":hi": {"N": "139"},
        },
        "Limit": 100,
    }
    start = {"k": {"S": "user7"}, "s": {"N": "59"}}
    paged = query_body("bench", scan, 20, start, consistent_read=True)
    assert paged["ExclusiveStartKey"] == start
    assert paged["ConsistentRead"] is True
    assert paged["Limit"] == 20


def test_page_limits_add_up_to_the_scan_length() -> None:
    scan = Scan("user0", 0, 44, 45, 45)
    assert next_limit(scan, 0, None) == 45
    assert [next_limit(scan, got, 20) for got in (0, 20, 40)] == [20, 20, 5]


def test_the_table_has_a_range_key_only_for_e() -> None:
    schema, attributes = key_schema(ranged=True)
    assert [(a["AttributeName"], a["KeyType"]) for a in schema] == [("k", "HASH"), ("s", "RANGE")]
    assert {a["AttributeName"]: a["AttributeType"] for a in attributes} == {"k": "S", "s": "N"}
    assert key_schema(ranged=False)[0] == [{"AttributeName": "k", "KeyType": "HASH"}]


def test_workload_e_is_95_percent_scans_and_5_percent_inserts() -> None:
    rng = random.Random(9)
    counts = Counter(WORKLOADS["e"].choose(rng.random()) for _ in range(100_000))
    assert set(counts) == {"scan", "insert"}
    assert counts["scan"] / 100_000 == pytest.approx(0.95, abs=0.01)


# --- the client's paging, against a scripted endpoint ---------------------------------------


class _ScriptedDynamo(DynamoClient):
    """`call` answers Queries from a partition of `items` sort keys, `page_cap` items at most
    per answer (as the node's 1 MB cap would), and keeps every request."""

    def __init__(self, items: int, page_cap: int = 1000) -> None:
        super().__init__("127.0.0.1:9", 1.0, None, per_key=1000)
        self.items, self.page_cap = items, page_cap
        self.requests: list[dict[str, Any]] = []

    async def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        assert op == "Query"
        self.requests.append(body)
        values = body["ExpressionAttributeValues"]
        low, high = int(values[":lo"]["N"]), int(values[":hi"]["N"])
        if "ExclusiveStartKey" in body:
            low = max(low, int(body["ExclusiveStartKey"]["s"]["N"]) + 1)
        sorts = [s for s in range(low, min(high, self.items - 1) + 1)]
        page = sorts[: min(body["Limit"], self.page_cap)]
        reply: dict[str, Any] = {"Items": [{"s": {"N": str(s)}} for s in page]}
        more = len(page) < len(sorts) or len(page) == body["Limit"]  # DynamoDB: Limit reached
        if page and more:
            reply["LastEvaluatedKey"] = {"k": values[":k"], "s": {"N": str(page[-1])}}
        return reply


def _scan(client: DynamoClient, scan: Scan, page: int | None) -> ScanResult:
    return asyncio.run(client._scan("bench", scan, page))


def test_a_scan_is_one_query_when_nothing_limits_it() -> None:
    client = _ScriptedDynamo(items=1000)
    result = _scan(client, plan_scan(10, 60, 1000, 100_000), None)
    assert result == ScanResult(items=60, pages=1, expected=60)
    assert [r["Limit"] for r in client.requests] == [60]


def test_a_scan_pages_with_the_last_evaluated_key() -> None:
    client = _ScriptedDynamo(items=1000)
    result = _scan(client, plan_scan(10, 45, 1000, 100_000), 20)
    assert result == ScanResult(items=45, pages=3, expected=45)
    assert [r["Limit"] for r in client.requests] == [20, 20, 5]
    starts = [r.get("ExclusiveStartKey", {}).get("s") for r in client.requests]
    assert starts == [None, {"N": "29"}, {"N": "49"}]


def test_a_scan_follows_a_page_the_node_cut_short() -> None:
    client = _ScriptedDynamo(items=1000, page_cap=25)
    result = _scan(client, plan_scan(0, 60, 1000, 100_000), None)
    assert result == ScanResult(items=60, pages=3, expected=60)
    assert [r["Limit"] for r in client.requests] == [60, 35, 10]


def test_a_scan_at_the_end_of_its_key_stops_when_the_node_has_no_more() -> None:
    client = _ScriptedDynamo(items=1000)
    result = _scan(client, plan_scan(990, 50, 1000, 100_000), 20)
    assert result == ScanResult(items=10, pages=1, expected=10)


# --- the generator's run phase --------------------------------------------------------------


class _FakeDynamo:
    """Answers at once: a put, and a scan with every item the load wrote in its range."""

    def __init__(self) -> None:
        self.put_keys: list[str] = []

    def start_put(self, bucket: str, key: str, value: bytes, callback: Any, **_: object) -> None:
        self.put_keys.append(key)
        asyncio.get_running_loop().call_soon(callback, PutResult(0, ""))

    def start_query(self, table: str, scan: Scan, page: int | None, callback: Any) -> None:
        reply = ScanResult(scan.expected, 1, scan.expected)
        asyncio.get_running_loop().call_soon(callback, reply)

    async def close(self) -> None:
        pass


def test_the_run_phase_scans_and_inserts_new_records(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BenchSpec(
        nodes=("127.0.0.1:9",), workload="e", api="dynamodb", records=500, items_per_key=100,
        operations=400, duration=None, concurrency=4, load=False,
    )  # fmt: skip
    generator = Generator(spec)
    client = _FakeDynamo()
    monkeypatch.setattr(generator, "_clients", lambda: [client])
    _, ran = generator.run()
    scans, inserts = ran.ops["scan"], ran.ops["insert"]
    assert scans.hist.count + inserts.hist.count == 400
    assert 0 < inserts.hist.count < 60
    assert scans.pages == scans.hist.count
    assert scans.items > scans.hist.count  # scans of 1 to 100 items, most of them whole
    assert scans.not_found == 0
    inserted = sorted(record_of(key) for key in client.put_keys)
    assert inserted == list(range(500, 500 + inserts.hist.count))  # after the loaded ones
    figures = summarize(ran)
    assert figures["ops"]["scan"]["items"] == scans.items
    assert figures["ops"]["scan"]["pages"] == scans.pages
    assert "items" not in figures["ops"]["insert"]


# --- options that do not go together ----------------------------------------------------------


def test_workload_e_needs_the_dynamodb_api() -> None:
    for api in ("binary", "http"):
        with pytest.raises(ValueError, match="no range read"):
            BenchSpec(nodes=("127.0.0.1:9",), workload="e", api=api)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "c", "--query-page", "10"], "--query-page apply to --workload e only"),
        (["--items-per-key", "5"], "--items-per-key apply to --workload e only"),
        (["--workload", "e"], "no range read"),
        (["--workload", "e", "--api", "dynamodb", "--max-scan-length", "0"], "x>=1"),
    ],
)
def test_bench_refuses_scan_options_that_cannot_apply(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        main, ["bench", *args, "--records", "10", "--duration", "1", "--no-progress"]
    )
    assert result.exit_code != 0
    assert message in result.output
