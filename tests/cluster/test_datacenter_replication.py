"""Replicas per data center on real processes: a bucket type created over HTTP with
`datacenters` puts each key on that many nodes of each data center (as /v1/replica on the
nodes shows), and bad counts or names are refused with 400 and change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from dynakv.client import Client
from tests.cluster.harness import ProcessCluster, http

PLACES = [("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2")]


def put_type(url: str, props: dict) -> object:
    return http("PUT", f"{url}/v1/buckets/carts", json.dumps(props).encode())


def wait_placed(cluster: ProcessCluster, datacenters: dict, timeout: float = 15.0) -> None:
    """Until every node has the ring placed for `datacenters`, with no transfer under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = [http("GET", f"{node.url}/v1/cluster").json() for node in cluster.nodes]
        if all(
            v["replication"]["datacenters"] == datacenters and v["next_ring"] is None
            for v in views
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"not placed for {datacenters}: {[v['replication'] for v in views]}")


def test_a_type_with_datacenters_places_keys_per_data_center_and_bad_input_is_refused(
    tmp_path,
):
    cluster = ProcessCluster(tmp_path, 4)
    for node, (dc, rack) in zip(cluster.nodes, PLACES, strict=True):
        node.extra_args = ["--datacenter", dc, "--rack", rack]
    where = {node.name: dc for node, (dc, _) in zip(cluster.nodes, PLACES, strict=True)}
    try:
        cluster.start()
        url = cluster[0].url
        reply = put_type(url, {"datacenters": {"dc1": 2, "dc2": 1}})
        assert reply.status == 200, reply.body
        body = reply.json()
        assert body["datacenters"] == {"dc1": 2, "dc2": 1}
        assert (body["n"], body["r"], body["w"]) == (3, "local_quorum", "local_quorum")
        wait_placed(cluster, {"dc1": 2, "dc2": 1})

        keys = [f"k{i}" for i in range(30)]
        with Client([cluster[0].node_addr]) as client:
            for key in keys:
                client.put("carts", key, key.encode())
            info = client.cluster()
        ring = info.ring.ring
        urls = {node.name: node.url for node in cluster.nodes}
        time.sleep(1.0)  # the remote data center's copy is written after the local quorum
        for key in keys:
            lists = ring.preference_lists_by_dc(ring.partition("carts", key), {"dc1": 2, "dc2": 1})
            assert [where[n] for n in lists["dc1"]] == ["dc1", "dc1"]
            assert [where[n] for n in lists["dc2"]] == ["dc2"]
            for name in [*lists["dc1"], *lists["dc2"]]:
                got = http("GET", f"{urls[name]}/v1/replica/carts/{key}")
                assert got.status == 200, (key, name, got.body)

        # A client given a node of dc2 learns its data center and sends each request to
        # the key's replica there: that node coordinates (answers), no forward to dc1.
        dc2_node = next(n for n in cluster.nodes if where[n.name] == "dc2")
        with Client([dc2_node.node_addr]) as client:
            for key in keys[:10]:
                client.put("carts", key, b"from dc2")
                assert client.last_node is not None
                answered = next(n for n in cluster.nodes if n.node_addr == client.last_node)
                assert where[answered.name] == "dc2", (key, answered.name)

        def carts_props() -> dict[str, object]:  # without who holds it: acks still gossip
            body = http("GET", f"{url}/v1/buckets/carts").json()
            body.pop("not_yet_held_by", None)
            body["stored"].pop("seen", None)
            return body

        before = carts_props()
        for props, message in [
            ({"datacenters": {"dc1": 0}}, "must be an integer >= 1"),
            ({"datacenters": {"dc1": "2"}}, "must be an integer >= 1"),
            ({"datacenters": {"d c": 1}}, "invalid data center name"),
            ({"datacenters": {"dc9": 1}}, "unknown data center dc9: members are in dc1, dc2"),
            ({"datacenters": {"dc2": 3}}, "dc2 has 2 nodes, asked for 3"),
            ({"datacenters": [["dc1", 1]]}, "datacenters must be an object"),
        ]:
            reply = put_type(url, props)
            assert reply.status == 400, (props, reply.body)
            assert reply.json()["error"] == "invalid_request"
            assert message in reply.json()["message"], (props, reply.body)
        assert carts_props() == before

        command = [sys.executable, "-m", "dynakv", "bucket", "create", "orders"]
        command += ["--datacenters", "dc1=1,dc2=1", "--node", cluster[1].node_addr]
        made = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert "n=2 r=local_quorum w=local_quorum" in made.stdout
        assert "datacenters=dc1=1,dc2=1" in made.stdout
    finally:
        cluster.stop()
