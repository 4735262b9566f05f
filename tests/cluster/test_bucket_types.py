"""Bucket types on real processes: made on one node, seen on every other after gossip, used
by writes, updated, refused when bad; a raised n fills the new replicas; a node restarted
with a stale file follows the cluster; a lowered n frees the surplus copies. One cluster for
the module, its file saying n=2."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv.client import Client
from tests.cluster.harness import HttpReply, ProcessCluster, http, wait_for

FILE = """
[defaults]
n = 2
r = 1
w = 1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    root = tmp_path_factory.mktemp("bucket-types")
    (root / "node.toml").write_text(FILE)
    procs = ProcessCluster(root, 3, extra_args=["--config", str(root / "node.toml")])
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


def put_type(url: str, bucket: str, body: object) -> HttpReply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("PUT", f"{url}/v1/buckets/{bucket}", data, {"Content-Type": "application/json"})


def test_a_type_made_on_one_node_reaches_the_others_and_writes_use_it(cluster):
    node1, _, node3 = cluster.nodes
    reply = put_type(node1.url, "carts", {"policy": "lww", "r": "one", "w": "all"})
    assert reply.status == 200, reply.body
    assert reply.json()["own_type"] and reply.json()["w"] == 2  # all of n=2
    # Answered only once every member up holds the type: node3 has it already, no waiting
    # (unless node1 took node3 for down just then, as a starved machine may: the answer
    # says so, and gossip brings it).
    if not reply.json().get("not_yet_held_by"):
        assert http("GET", f"{node3.url}/v1/buckets/carts").json()["own_type"]
    wait_for(lambda: http("GET", f"{node3.url}/v1/buckets/carts").json()["own_type"], "gossip")
    listed = http("GET", f"{node3.url}/v1/buckets").json()["types"]
    assert [t["name"] for t in listed] == ["_default", "carts", "default"]
    for value in (b"apple", b"pear"):  # blind writes: lww keeps the last, no siblings
        assert http("PUT", f"{node3.url}/v1/kv/carts/alice", value).status == 204
    got = http("GET", f"{node1.url}/v1/kv/carts/alice")
    assert (got.status, got.body) == (200, b"pear")


def test_r_and_w_changes_apply_at_once_and_the_policy_is_fixed(cluster):
    node2 = cluster.nodes[1]
    with Client(node2.node_addr) as client:  # the binary protocol, as `dynakv bucket` uses
        changed = client.set_bucket_type("carts", "update", r=2, w="one")
        assert (changed.r, changed.w, changed.version) == (2, "one", 2)
    reply = http("GET", f"{node2.url}/v1/buckets/carts")
    assert (reply.json()["r"], reply.json()["w"]) == (2, 1)
    assert http("GET", f"{node2.url}/v1/kv/carts/alice").body == b"pear"
    refused = put_type(node2.url, "carts", {"policy": "siblings"})
    assert refused.status == 400 and refused.json()["error"] == "invalid_request"
    assert "fixed once set" in refused.json()["message"]
    assert http("GET", f"{node2.url}/v1/buckets/carts").json()["policy"] == "lww"


def types_as_set(url: str) -> list[dict[str, object]]:
    """The cluster's types as node `url` reports them, without who holds them: a member's
    acknowledgement of an earlier change may still arrive by gossip (bucket_types.held)."""
    types = http("GET", f"{url}/v1/buckets").json()["types"]
    return [{k: v for k, v in t.items() if k != "seen"} for t in types]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "JSON object"),
        (b"[1, 2]", "JSON object"),
        ({"r": "most"}, "one, quorum, all"),
        ({"w": 3}, "between 1 and n=2"),
        ({"n": 0}, "n must be an integer >= 1"),
        ({"colour": "red"}, "unknown bucket property colour"),
        ({"n": True}, "n must be a number or a string, got true"),
    ],
)
def test_bad_input_is_a_400_and_changes_nothing(cluster, body, says):
    node1 = cluster.nodes[0]
    before = types_as_set(node1.url)
    reply = put_type(node1.url, "odd", body)
    assert reply.status == 400 and reply.json()["error"] == "invalid_request", reply.body
    assert says in reply.json()["message"]
    assert types_as_set(node1.url) == before
    assert http("PUT", f"{node1.url}/v1/kv/odd/k", b"v").status == 204  # still serving


def test_raising_n_fills_every_key_s_new_replica(cluster):
    node1 = cluster.nodes[0]
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        assert http("PUT", f"{node1.url}/v1/kv/data/{key}", key.encode()).status == 204
    holders = {key: [n for n in cluster.nodes if has(n, key)] for key in keys}
    assert any(len(nodes) < 3 for nodes in holders.values())  # n=2: not every node has all
    reply = put_type(node1.url, "_default", {"n": 3})
    assert reply.status == 200 and reply.json()["n"] == 3

    def raised() -> bool:
        views = [http("GET", f"{n.url}/v1/cluster").json() for n in cluster.nodes]
        return all(v["replication"]["placed"] == 3 and v["transfers_pending"] == 0 for v in views)

    wait_for(raised, "the transfer that raises the replication to 3", timeout=60)
    missing = [(key, n.name) for key in keys for n in cluster.nodes if not has(n, key)]
    assert missing == []
    more = put_type(node1.url, "wide", {"n": 5, "r": 1, "w": 1})  # more than the members
    assert more.status == 200 and "until more nodes join" in more.json()["note"]
    assert http("PUT", f"{node1.url}/v1/kv/wide/k", b"v").status == 204


def has(node, key: str) -> bool:  # type: ignore[no-untyped-def]
    return http("GET", f"{node.url}/v1/replica/data/{key}").status == 200


def test_a_node_restarted_with_a_stale_file_says_so_and_follows_the_cluster(cluster):
    node3 = cluster.nodes[2]
    node3.kill(signal.SIGTERM)
    node3.start()  # the same file: n=2, no carts type
    node3.wait_ready()
    assert http("GET", f"{node3.url}/v1/buckets/_default").json()["n"] == 3
    assert http("GET", f"{node3.url}/v1/buckets/carts").json()["policy"] == "lww"
    log = Path(node3.log_path).read_text()
    line = next(x for x in log.splitlines()[::-1] if "bucket_config_differs" in x)
    assert "bucket=_default" in line and "n=2 -> 3" in line
    assert http("PUT", f"{node3.url}/v1/kv/carts/bob", b"x").status == 204


def test_a_change_is_answered_without_a_stopped_member_and_says_which_one_lacks_it(cluster):
    node1, _, node3 = cluster.nodes
    node3.kill(signal.SIGSTOP)  # up as far as anyone knows, but answering nothing
    try:
        started = time.monotonic()
        reply = put_type(node1.url, "sessions", {"n": 2, "policy": "lww"})
        waited = time.monotonic() - started
        assert reply.status == 200, reply.body
        assert reply.json()["not_yet_held_by"] == ["node3"]
        assert waited >= 1.0  # it waited for node3 (the request timeout, or until node3
        # was found down) rather than answering at once
    finally:
        node3.kill(signal.SIGCONT)

    def held_everywhere() -> bool:
        return "not_yet_held_by" not in http("GET", f"{node1.url}/v1/buckets/sessions").json()

    wait_for(held_everywhere, "node3 to hold the type after it resumed")
    assert http("GET", f"{node3.url}/v1/buckets/sessions").json()["policy"] == "lww"


def test_lowering_n_frees_the_surplus_copies_and_loses_no_acknowledged_write(cluster):
    node1, node2, _ = cluster.nodes
    keys = [f"low{i}" for i in range(40)]
    for key in keys:
        assert http("PUT", f"{node2.url}/v1/kv/data/{key}", key.encode()).status == 204
    assert all(has(n, key) for key in keys for n in cluster.nodes)  # n=3 of 3 nodes
    for name in ("_default", "wide"):  # the ring holds the largest n of every type
        reply = put_type(node1.url, name, {"n": 2, "r": 1, "w": 1})
        assert reply.status == 200 and reply.json()["n"] == 2, reply.body

    def lowered() -> bool:
        views = [http("GET", f"{n.url}/v1/cluster").json() for n in cluster.nodes]
        return all(v["replication"]["placed"] == 2 and v["next_ring"] is None for v in views)

    wait_for(lowered, "the transfer that lowers the replication to 2", timeout=60)

    def freed() -> bool:  # every key on exactly its two replicas: the third handed it back
        return all(sum(has(n, key) for n in cluster.nodes) == 2 for key in keys)

    wait_for(freed, "the surplus copies to be handed back and deleted", timeout=60)
    for key in keys:
        for node in cluster.nodes:  # read through every node, the surplus one included
            got = http("GET", f"{node.url}/v1/kv/data/{key}")
            assert (got.status, got.body) == (200, key.encode()), (key, node.name)
    handed_back = sum(n.status()["handoff"]["handed_back"] for n in cluster.nodes)
    assert handed_back >= len(keys)
