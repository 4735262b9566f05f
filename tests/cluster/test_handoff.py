"""Sloppy quorum and hinted handoff with real processes: two of a key's three primaries
killed, writes still succeed, and after they return the hints drain to them."""

from __future__ import annotations

import signal
import time

from dynakv import Client
from tests.cluster.harness import ProcessCluster, http


def _primaries(cluster: ProcessCluster, bucket: str, key: str) -> list[str]:
    from dynakv.ring import Ring, key_digest, partition_of_digest

    view = http("GET", f"{cluster[0].url}/v1/cluster").json()
    ring = Ring(view["ring"]["size"], tuple(view["ring"]["owners"]))
    return ring.preference_list(partition_of_digest(key_digest(bucket, key), ring.size), 3)


def test_two_primaries_down_writes_succeed_and_hints_drain_when_they_return(tmp_path):
    cluster = ProcessCluster(tmp_path, 5)
    try:
        cluster.start()
        by_name = {node.name: node for node in cluster.nodes}
        keys = [f"cart{i}" for i in range(40)]
        coordinator = cluster[0]
        victims = [
            name for name in _primaries(cluster, "handoff", keys[0]) if name != coordinator.name
        ][:2]
        for name in victims:
            by_name[name].kill(signal.SIGKILL)
        acknowledged: dict[str, bytes] = {}
        with Client(coordinator.node_addr) as client:
            for key in keys:
                value = f"value of {key}".encode()
                client.put("handoff", key, value, w=2)
                acknowledged[key] = value
            for key in keys:
                assert client.get("handoff", key, r=2).value == acknowledged[key]
        survivors = [n for n in cluster.nodes if n.name not in victims]
        assert sum(n.status()["hints_pending"] for n in survivors) > 0
        for name in victims:
            by_name[name].start()
            by_name[name].wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(n.status()["hints_pending"] == 0 for n in cluster.nodes):
                break
            time.sleep(0.25)
        assert all(n.status()["hints_pending"] == 0 for n in cluster.nodes)
        for key, value in acknowledged.items():
            for name in _primaries(cluster, "handoff", key):
                copy = http("GET", f"{by_name[name].url}/v1/replica/handoff/{key}")
                assert copy.status == 200, (name, key)
                import base64

                values = [base64.b64decode(s["value_b64"]) for s in copy.json()["siblings"]]
                assert values == [value], (name, key)
        metrics = http("GET", f"{cluster[0].url}/metrics").body.decode()
        assert "dynakv_hints_pending" in metrics
    finally:
        cluster.stop()
