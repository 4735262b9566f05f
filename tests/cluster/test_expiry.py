"""Expiry (TTL) through all three front ends of a real 3-node cluster: the KV API's
X-Dynakv-TTL header, RESP's SET EX/PX/EXAT/PXAT/KEEPTTL, EXPIRE, PEXPIRE, TTL, PTTL and
PERSIST, and DynamoDB's UpdateTimeToLive/DescribeTimeToLive with expiring items; an
expired value reads as not found, is deleted in the background and its tombstone reaped
from every node's disk; bad lifetimes are refused and the nodes serve on.

No timed assertion: lifetimes that must not run out during a test are a minute or more;
those that must run out are 1-2 s, waited for with generous deadlines.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from dynakv.dynamodb import items
from dynakv.item_keys import item_key, table_bucket
from tests.cluster.ddb_harness import client, error_of, make_table
from tests.cluster.harness import NodeProcess, ProcessCluster, free_port, http, wait_for
from tests.cluster.test_resp import Resp, error_text

BUCKET = "ttl"
CONFIG = """\
tombstone_grace = 3.0
reap_interval = 0.25
request_timeout = 2.0  # primaries wait two timeouts after a change before a reap
"""
DEADLINE = 90.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    root: Path = tmp_path_factory.mktemp("expiry")
    config = root / "expiry.toml"
    config.write_text(CONFIG)
    cluster = ProcessCluster(root, 3, extra_args=["--config", str(config)])
    for node in cluster.nodes:
        node.extra_args += ["--resp", f"127.0.0.1:{free_port()}"]
        node.extra_args += ["--dynamodb", f"127.0.0.1:{free_port()}"]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def resp(procs: ProcessCluster) -> Iterator[Resp]:
    args = procs[1].extra_args
    conn = Resp(args[args.index("--resp") + 1])
    try:
        yield conn
    finally:
        conn.close()


def new_key() -> str:
    return f"k-{uuid.uuid4().hex}"


def kv(node: NodeProcess, key: str, bucket: str = BUCKET) -> str:
    return f"{node.url}/v1/kv/{quote(bucket, safe='')}/{quote(key, safe='')}"


def on_disk(procs: ProcessCluster, bucket: str, key: str) -> dict[str, str]:
    """What each node holds of the key: "absent", "tombstone" or "live"."""
    copies = {}
    for node in procs.nodes:
        path = f"{quote(bucket, safe='')}/{quote(key, safe='')}"
        reply = http("GET", f"{node.url}/v1/replica/{path}")
        if reply.status == 404:
            copies[node.name] = "absent"
        else:
            assert reply.status == 200, (node.name, reply.status, reply.body)
            copies[node.name] = "live" if reply.json()["siblings"] else "tombstone"
    return copies


def expired_found(procs: ProcessCluster) -> int:
    return sum(node.status()["tombstone_reaping"]["expired"] for node in procs.nodes)


# --- the KV API -----------------------------------------------------------------------------


def test_a_kv_value_shows_its_remaining_lifetime(procs: ProcessCluster) -> None:
    key = new_key()
    put = http("PUT", kv(procs[0], key), b"session", {"X-Dynakv-TTL": "600"})
    assert put.status == 204, put.body
    got = http("GET", kv(procs[2], key))
    assert got.status == 200 and got.body == b"session"
    assert 0 < float(got.headers["X-Dynakv-TTL"]) <= 600
    lasting = new_key()
    assert http("PUT", kv(procs[0], lasting), b"forever").status == 204
    assert "X-Dynakv-TTL" not in http("GET", kv(procs[1], lasting)).headers


def test_an_expired_kv_value_is_404_then_removed_from_every_disk(procs: ProcessCluster) -> None:
    key = new_key()
    found_before = expired_found(procs)
    assert http("PUT", kv(procs[0], key), b"short", {"X-Dynakv-TTL": "1"}).status == 204
    wait_for(lambda: http("GET", kv(procs[1], key)).status == 404, "the value to expire", DEADLINE)
    gone = http("GET", kv(procs[2], key))
    assert gone.status == 404 and gone.json()["error"] == "not_found"
    wait_for(
        lambda: set(on_disk(procs, BUCKET, key).values()) == {"absent"},
        "the expired key's deletion and reaping on every node",
        DEADLINE,
    )
    assert expired_found(procs) > found_before
    assert http("GET", kv(procs[0], key)).status == 404


def test_a_write_after_an_expired_value_lives_on(procs: ProcessCluster) -> None:
    key = new_key()
    assert http("PUT", kv(procs[0], key), b"old", {"X-Dynakv-TTL": "1"}).status == 204
    wait_for(lambda: http("GET", kv(procs[0], key)).status == 404, "the value to expire", DEADLINE)
    context = http("GET", kv(procs[0], key)).headers["X-Dynakv-Context"]
    assert http("PUT", kv(procs[1], key), b"new", {"X-Dynakv-Context": context}).status == 204
    wait_for(
        lambda: "tombstone" not in on_disk(procs, BUCKET, key).values(),
        "the background deletion to have nothing left to do",
        DEADLINE,
    )
    for node in procs.nodes:
        assert http("GET", kv(node, key)).body == b"new"


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("-5", "must be positive"),
        ("0", "must be positive"),
        ("soon", "must be a number"),
        ("1e12", "the most is 315360000"),
    ],
)
def test_a_bad_ttl_header_is_refused_and_the_node_serves_on(
    procs: ProcessCluster, header: str, why: str
) -> None:
    key = new_key()
    reply = http("PUT", kv(procs[0], key), b"v", {"X-Dynakv-TTL": header})
    assert reply.status == 400, reply.body
    assert reply.json()["error"] == "invalid_request"
    assert why in reply.json()["message"]
    assert http("GET", kv(procs[0], key)).status == 404  # nothing was written
    assert http("PUT", kv(procs[0], key), b"v").status == 204


# --- RESP -----------------------------------------------------------------------------------


def test_resp_set_with_a_lifetime_and_ttl_pttl_persist(resp: Resp) -> None:
    key = new_key()
    assert resp.call("SET", key, "v", "EX", "600") == "OK"
    assert 0 < resp.call("TTL", key) <= 600
    assert 0 < resp.call("PTTL", key) <= 600_000
    assert resp.call("PERSIST", key) == 1
    assert resp.call("TTL", key) == -1
    assert resp.call("PERSIST", key) == 0
    assert resp.call("EXPIRE", key, "900") == 1
    assert 600 < resp.call("TTL", key) <= 900
    assert resp.call("SET", key, "w", "KEEPTTL") == "OK"
    assert resp.call("GET", key) == b"w"
    assert 600 < resp.call("TTL", key) <= 900
    assert resp.call("SET", key, "x") == "OK"  # a plain SET drops the lifetime
    assert resp.call("TTL", key) == -1
    assert resp.call("PEXPIRE", key, "700000") == 1
    assert 600 < resp.call("TTL", key) <= 700
    at = int(time.time()) + 3600
    assert resp.call("SET", key, "y", "EXAT", str(at)) == "OK"
    assert 3000 < resp.call("TTL", key) <= 3600
    assert resp.call("SET", key, "z", "PXAT", str(at * 1000)) == "OK"
    assert 3000 < resp.call("TTL", key) <= 3600
    missing = new_key()
    assert resp.call("TTL", missing) == -2
    assert resp.call("PTTL", missing) == -2
    assert resp.call("EXPIRE", missing, "10") == 0
    assert resp.call("PERSIST", missing) == 0


def test_resp_keys_expire_and_read_as_missing(resp: Resp) -> None:
    short, shorter = new_key(), new_key()
    assert resp.call("SET", short, "v", "PX", "1500") == "OK"
    assert resp.call("SET", shorter, "v") == "OK"
    assert resp.call("PEXPIRE", shorter, "1000") == 1
    wait_for(
        lambda: resp.call("GET", short) is None and resp.call("GET", shorter) is None,
        "both keys to expire",
        DEADLINE,
    )
    assert resp.call("TTL", short) == -2
    assert resp.call("EXISTS", short, shorter) == 0
    assert resp.call("MGET", short, shorter) == [None, None]
    gone = new_key()
    assert resp.call("SET", gone, "v") == "OK"
    assert resp.call("EXPIRE", gone, "-1") == 1  # a lifetime already over deletes the key
    assert resp.call("GET", gone) is None
    past = new_key()
    assert resp.call("SET", past, "v", "PXAT", "1") == "OK"  # born expired, as on Redis
    assert resp.call("GET", past) is None


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (("SET", "{k}", "v", "EX", "0"), "ERR invalid expire time in 'set' command"),
        (("SET", "{k}", "v", "PX", "-1"), "ERR invalid expire time in 'set' command"),
        (("SET", "{k}", "v", "EX", "ten"), "ERR value is not an integer or out of range"),
        (("SET", "{k}", "v", "EX", "10", "PX", "10"), "ERR syntax error"),
        (("SET", "{k}", "v", "EX"), "ERR syntax error"),
        (("SET", "{k}", "v", "EX", "999999999999"), "ERR invalid expire time in 'set' command"),
        (("EXPIRE", "{k}", "1.5"), "ERR value is not an integer or out of range"),
        (("EXPIRE", "{k}", "10", "NX"), "ERR EXPIRE option NX is not supported by dynakv"),
        (("TTL",), "ERR wrong number of arguments for 'ttl' command"),
        (("PERSIST", "{k}", "x"), "ERR wrong number of arguments for 'persist' command"),
    ],
)
def test_bad_resp_lifetimes_get_redis_errors_and_the_connection_stays(
    resp: Resp, command: tuple[str, ...], reply: str
) -> None:
    key = new_key()
    assert resp.call("SET", key, "kept") == "OK"
    assert error_text(resp.call(*(part.replace("{k}", key) for part in command))) == reply
    assert resp.call("GET", key) == b"kept"
    assert resp.call("TTL", key) == -1


# --- DynamoDB -------------------------------------------------------------------------------


def item(pk: str, expires: float | None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": pk}, **more}
    if expires is not None:
        out["exp"] = {"N": str(int(expires))}
    return out


def test_dynamodb_ttl_enable_describe_and_errors(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "ttl_describe", range_type=None)
    assert ddb.describe_time_to_live(TableName="ttl_describe")["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "DISABLED"
    }
    spec = {"Enabled": True, "AttributeName": "exp"}
    answer = ddb.update_time_to_live(TableName="ttl_describe", TimeToLiveSpecification=spec)
    assert answer["TimeToLiveSpecification"] == spec
    other = client(procs, 2)  # a change of the table is known to every member once answered
    assert other.describe_time_to_live(TableName="ttl_describe")["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "exp",
    }
    assert error_of(
        other.update_time_to_live, TableName="ttl_describe", TimeToLiveSpecification=spec
    ) == ("ValidationException", "TimeToLive is already enabled")
    off_other = {"Enabled": False, "AttributeName": "other"}
    code, message = error_of(
        ddb.update_time_to_live, TableName="ttl_describe", TimeToLiveSpecification=off_other
    )
    assert code == "ValidationException" and "different AttributeName" in message
    off = {"Enabled": False, "AttributeName": "exp"}
    ddb.update_time_to_live(TableName="ttl_describe", TimeToLiveSpecification=off)
    assert error_of(
        ddb.update_time_to_live, TableName="ttl_describe", TimeToLiveSpecification=off
    ) == ("ValidationException", "TimeToLive is already disabled")
    code, _ = error_of(ddb.describe_time_to_live, TableName="no_such_table")
    assert code == "ResourceNotFoundException"
    code, message = error_of(
        ddb.update_time_to_live,
        TableName="ttl_describe",
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "x" * 300},
    )
    assert code == "ValidationException" and "length between 1 and 255" in message


def test_dynamodb_items_expire_from_every_read_and_are_deleted(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    table = "ttl_items"
    make_table(ddb, table, range_type=None)
    spec = {"Enabled": True, "AttributeName": "exp"}
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification=spec)
    now = time.time()
    ddb.put_item(TableName=table, Item=item("past", now - 60))  # hidden at once
    ddb.put_item(TableName=table, Item=item("soon", now + 2))
    ddb.put_item(TableName=table, Item=item("later", now + 3600))
    ddb.put_item(TableName=table, Item=item("never", None))
    ddb.put_item(TableName=table, Item=item("text", None, exp={"S": "1"}))  # not a Number
    reader = client(procs, 1)
    assert "Item" not in reader.get_item(TableName=table, Key={"pk": {"S": "past"}})

    def visible() -> set[str]:
        scanned = {i["pk"]["S"] for i in reader.scan(TableName=table)["Items"]}
        for pk in ("past", "soon", "later", "never", "text"):
            got = reader.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
            assert (pk in scanned) == ("Item" in got), pk
        keys = [{"pk": {"S": pk}} for pk in ("past", "soon", "later")]
        batch = reader.batch_get_item(RequestItems={table: {"Keys": keys}})
        batched = {i["pk"]["S"] for i in batch["Responses"][table]}
        assert batched == scanned & {"past", "soon", "later"}
        return scanned

    assert "past" not in visible()
    wait_for(lambda: visible() == {"later", "never", "text"}, "'soon' to expire", DEADLINE)
    query = reader.query(
        TableName=table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "soon"}},
    )
    assert query["Items"] == []
    for pk in ("past", "soon"):
        stored = item_key(items.partition_id({"S": pk}), b"")
        wait_for(
            lambda stored=stored: set(on_disk(procs, table_bucket(table), stored).values())
            == {"absent"},
            f"expired item {pk} to be deleted and reaped on every node",
            DEADLINE,
        )
    lasting = item_key(items.partition_id({"S": "later"}), b"")
    assert set(on_disk(procs, table_bucket(table), lasting).values()) == {"live"}
    # Writing the item again with a later time brings it back, as a new item.
    ddb.put_item(TableName=table, Item=item("soon", time.time() + 3600, v={"S": "again"}))
    got = reader.get_item(TableName=table, Key={"pk": {"S": "soon"}})
    assert got["Item"]["v"] == {"S": "again"}


def test_every_replica_holds_the_same_expiry(procs: ProcessCluster) -> None:
    """The expiry is part of the replicated state, not of one node's copy."""
    key = new_key()
    assert http("PUT", kv(procs[0], key), b"v", {"X-Dynakv-TTL": "900"}).status == 204

    def expiries() -> list[int]:
        out = []
        for node in procs.nodes:
            reply = http("GET", f"{node.url}/v1/replica/{BUCKET}/{key}")
            if reply.status == 200:
                out += [s["expires"] for s in reply.json()["siblings"]]
        return out

    wait_for(lambda: len(expiries()) == 3, "a copy on each of the three replicas", DEADLINE)
    (expires,) = set(expiries())
    assert 0 < expires - time.time() * 1000 <= 900_000
