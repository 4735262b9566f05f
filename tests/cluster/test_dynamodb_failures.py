"""The DynamoDB endpoint under concurrency and failure, on real processes: conditional
increments racing through all three nodes, and batches while a node is SIGKILLed."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dynakv.dynamodb import items
from dynakv.dynamodb.attributes import KeySchema
from dynakv.dynamodb.tables import Table
from tests.cluster.ddb_harness import client, dynamo_cluster, make_table
from tests.cluster.harness import ProcessCluster, free_port, http

WORKERS = 50


def test_concurrent_conditional_increments_through_three_nodes_lose_nothing(
    tmp_path: Path,
) -> None:
    with dynamo_cluster(tmp_path) as procs:
        make_table(client(procs, 0), "counters", None)
        key = {"pk": {"S": "c"}}
        client(procs, 0).put_item(
            TableName="counters", Item={**key, "n": {"N": "0"}, "writers": {"L": []}}
        )
        clients = [client(procs, i, retries=4) for i in range(3)]
        gate = threading.Barrier(WORKERS)
        applied: list[Decimal] = []
        failures: list[BaseException] = []

        def increment(index: int) -> None:
            ddb = clients[index % 3]
            gate.wait()
            try:
                # A read-modify-write under a condition: two of them that interleave would
                # both read the same n and one increment would be lost.
                new = ddb.update_item(
                    TableName="counters",
                    Key=key,
                    UpdateExpression="SET n = n + :one, writers = list_append(writers, :me)",
                    ConditionExpression="attribute_exists(n)",
                    ExpressionAttributeValues={
                        ":one": {"N": "1"},
                        ":me": {"L": [{"N": str(index)}]},
                    },
                    ReturnValues="UPDATED_NEW",
                )
                applied.append(Decimal(new["Attributes"]["n"]["N"]))
            except BaseException as exc:  # reported below, with the others' outcome
                failures.append(exc)

        threads = [threading.Thread(target=increment, args=(i,)) for i in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not failures, failures[:3]
        final = client(procs, 1).get_item(TableName="counters", Key=key, ConsistentRead=True)
        item: dict[str, Any] = final["Item"]
        writers = [int(w["N"]) for w in item["writers"]["L"]]
        lost = WORKERS - int(item["n"]["N"])
        # Every acknowledged increment saw a distinct value and is in the item.
        print(f"increments lost: {lost} of {WORKERS}")
        assert sorted(applied) == [Decimal(i) for i in range(1, WORKERS + 1)]
        assert lost == 0 and sorted(writers) == list(range(WORKERS))


def _wait(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_batches_with_a_node_killed_return_or_write_every_item(tmp_path: Path) -> None:
    with dynamo_cluster(tmp_path) as procs:
        ddb = client(procs, 0)
        make_table(ddb, "batched", "N")
        procs[2].kill()  # SIGKILL: no goodbye; the others find out by failure detection
        written: list[dict[str, Any]] = []
        unprocessed_total = 0
        for start in range(0, 200, 25):
            request = {
                "batched": [
                    {"PutRequest": {"Item": {"pk": {"S": f"p{i % 7}"}, "sk": {"N": str(i)}}}}
                    for i in range(start, start + 25)
                ]
            }
            for _ in range(20):  # what comes back unprocessed is sent again, as SDKs do
                answer = ddb.batch_write_item(RequestItems=request)
                pending = answer["UnprocessedItems"]
                unprocessed_total += sum(len(v) for v in pending.values())
                done = [w for w in request["batched"] if w not in pending.get("batched", [])]
                written += [w["PutRequest"]["Item"] for w in done]
                if not pending:
                    break
                request = pending
                time.sleep(0.5)
        assert len(written) == 200
        for index in range(2):  # read-modify-writes still run: forwarded, or served here
            for pk in ("p0", "p1", "p2", "p3"):
                client(procs, index).update_item(
                    TableName="batched",
                    Key={"pk": {"S": pk}, "sk": {"N": "1000"}},
                    UpdateExpression="ADD hits :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
        keys = [{"pk": item["pk"], "sk": item["sk"]} for item in written]
        found: list[dict[str, Any]] = []
        reader = client(procs, 1)
        for start in range(0, 200, 100):
            wanted = {"batched": {"Keys": keys[start : start + 100]}}
            for _ in range(20):
                answer = reader.batch_get_item(RequestItems=wanted)
                found += answer["Responses"].get("batched", [])
                wanted = answer["UnprocessedKeys"]
                if not wanted:
                    break
                time.sleep(0.5)
        assert sorted(int(i["sk"]["N"]) for i in found) == list(range(200))
        procs[2].start()
        procs[2].wait_ready()
        procs.wait_up("node3")
        # node3 was down for every write: hinted handoff (or anti-entropy) brings it its own
        # copy of items stored under composite keys, as of any key.
        table = Table("batched", KeySchema("pk", "S", "sk", "N"), (), "PAY_PER_REQUEST", 0, 0, 0)
        bucket, item_key = items.location(table, {"pk": {"S": "p3"}, "sk": {"N": "199"}})
        path = "/v1/replica/" + quote(bucket, safe="") + "/" + quote(item_key, safe="")
        _wait(lambda: http("GET", procs[2].url + path).status == 200)
        every = client(procs, 2).query(
            TableName="batched",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p0"}},
        )
        assert [int(i["sk"]["N"]) for i in every["Items"]] == [*range(0, 200, 7), 1000]
        hits = client(procs, 2).get_item(
            TableName="batched", Key={"pk": {"S": "p1"}, "sk": {"N": "1000"}}, ConsistentRead=True
        )
        assert hits["Item"]["hits"] == {"N": "2"}
        print(f"unprocessed and sent again: {unprocessed_total}")


def test_a_joining_node_receives_composite_key_items_by_transfer(tmp_path: Path) -> None:
    procs = ProcessCluster(tmp_path, 4)
    for node in procs.nodes:
        node.extra_args += ["--dynamodb", f"127.0.0.1:{free_port()}"]
    try:
        first = procs[0]
        first.start()
        first.wait_ready()
        for node in procs.nodes[1:3]:
            node.start(join=first.node_addr)
            node.wait_ready()
        procs.wait_members(3)
        ddb = client(procs, 0)
        make_table(ddb, "moved", "S")
        keys = [
            {"pk": {"S": f"user{p}"}, "sk": {"S": f"event{e:03d}"}}
            for p in range(16)
            for e in range(8)
        ]
        for start in range(0, len(keys), 25):
            request = {"moved": [{"PutRequest": {"Item": k}} for k in keys[start : start + 25]]}
            assert ddb.batch_write_item(RequestItems=request)["UnprocessedItems"] == {}
        procs[3].start(join=first.node_addr)
        procs[3].wait_ready()
        procs.wait_members(4, timeout=120)  # the ring installed: every transfer finished
        table = Table("moved", KeySchema("pk", "S", "sk", "S"), (), "PAY_PER_REQUEST", 0, 0, 0)
        held = 0
        for key in keys:
            bucket, item_key = items.location(table, key)
            path = "/v1/replica/" + quote(bucket, safe="") + "/" + quote(item_key, safe="")
            holders = [n for n in procs.nodes if http("GET", n.url + path).status == 200]
            assert len(holders) >= 3, key
            held += procs[3] in holders
        print(f"items the new node holds: {held} of {len(keys)}")
        assert held > 0  # the new node took over partitions, their items with them
        newcomer = client(procs, 3)
        for p in range(16):
            got = newcomer.query(
                TableName="moved",
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": f"user{p}"}},
                ConsistentRead=True,
            )
            assert [i["sk"]["S"] for i in got["Items"]] == [f"event{e:03d}" for e in range(8)]
    finally:
        procs.stop()
