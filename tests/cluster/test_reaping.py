"""Tombstone reaping with real processes: no zombie, and no reaping before the grace period.

A replica SIGKILLed before a delete keeps the old value on disk. While it is down the
survivors keep their tombstone well past the grace period (status names the down member as
the reason); once it returns, the tombstone reaches it and the key is reaped on every
replica, and the old value never comes back through any node, even after anti-entropy has
had time to run. With every node up, a tombstone lasts at least the grace period and is then
reaped everywhere, and a blind put of the key afterwards reads back as exactly one value.
"""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path

from dynakv import Client
from tests.cluster.harness import NodeProcess, ProcessCluster, http

BUCKET = "reap"
GRACE = 4.0
CONFIG = f"""\
tombstone_grace = {GRACE}
reap_interval = 0.5
request_timeout = 2.0  # primaries wait two timeouts after a change before a reap
aae_interval = 0.25
aae_concurrency = 4

[defaults]
n = 3
r = 2
w = 2
"""


def _cluster(tmp_path: Path) -> ProcessCluster:
    config = tmp_path / "reap.toml"
    config.write_text(CONFIG)
    return ProcessCluster(tmp_path, 3, extra_args=["--config", str(config)])


def _copy(node: NodeProcess, key: str) -> tuple[str, list[bytes]]:
    """This node's own copy of the key: ("absent" | "tombstone" | "live", live values)."""
    reply = http("GET", f"{node.url}/v1/replica/{BUCKET}/{key}")
    if reply.status == 404:
        return "absent", []
    assert reply.status == 200, (node.name, reply.status, reply.body)
    body = reply.json()
    values = [base64.b64decode(s["value_b64"]) for s in body["siblings"]]
    if values:
        return "live", values
    assert body["tombstones"] >= 1, (node.name, body)
    return "tombstone", []


def _wait_copies(nodes: list[NodeProcess], key: str, want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        copies = {node.name: _copy(node, key)[0] for node in nodes}
        if all(kind == want for kind in copies.values()):
            return
        assert time.monotonic() < deadline, f"not every copy of {key} is {want}: {copies}"
        time.sleep(0.2)


def _read_everywhere(cluster: ProcessCluster, key: str) -> dict[str, list[bytes]]:
    """The live values a quorum read through each node returns."""
    found = {}
    for node in cluster.nodes:
        with Client(node.node_addr, route=False) as client:
            found[node.name] = client.get(BUCKET, key).values
    return found


def _reaping(node: NodeProcess) -> dict:
    return node.status()["tombstone_reaping"]


def test_a_replica_down_during_the_delete_blocks_reaping_and_the_value_never_returns(tmp_path):
    cluster = _cluster(tmp_path)
    try:
        cluster.start()
        first, second, third = cluster.nodes
        key = "zombie"
        with Client(first.node_addr, route=False) as client:
            client.put(BUCKET, key, b"v1", w=3)
        _wait_copies(cluster.nodes, key, "live", 10)
        assert all(_copy(node, key) == ("live", [b"v1"]) for node in cluster.nodes)

        third.kill(signal.SIGKILL)  # keeps v1 on disk and misses the delete
        with Client(first.node_addr, route=False) as client:
            read = client.get(BUCKET, key)
            assert read.values == [b"v1"]
            client.delete(BUCKET, key, context=read.context)  # acknowledged by nodes 1 and 2
        deleted_at = time.monotonic()
        survivors = [first, second]
        _wait_copies(survivors, key, "tombstone", 10)

        # Well past the grace period: nothing reaped while a member is down, and the
        # survivors say why.
        deadline = deleted_at + GRACE + 4
        while time.monotonic() < deadline:
            for node in survivors:
                assert _copy(node, key)[0] == "tombstone", node.name
            time.sleep(0.25)
        for node in survivors:
            reaping = _reaping(node)
            assert "node3" in reaping["blocked"], (node.name, reaping)
            assert reaping["reaped"] == 0, (node.name, reaping)

        third.start()  # same data directory: v1 is still there
        third.wait_ready()
        cluster.wait_up(third.name)

        # The tombstone reaches node 3, then every replica drops the key. The old value must
        # never be visible on a survivor along the way.
        deadline = time.monotonic() + 60
        while True:
            copies = {node.name: _copy(node, key) for node in cluster.nodes}
            for name in ("node1", "node2"):
                assert copies[name][0] != "live", f"{key} came back on {name}: {copies}"
            if all(kind == "absent" for kind, _ in copies.values()):
                break
            assert time.monotonic() < deadline, f"{key} not reaped everywhere: {copies}"
            time.sleep(0.25)

        assert _read_everywhere(cluster, key) == {n.name: [] for n in cluster.nodes}
        reaping = {node.name: _reaping(node) for node in cluster.nodes}
        assert any(r["reaped"] > 0 for r in reaping.values()), reaping

        # Several anti-entropy intervals later, still gone everywhere.
        time.sleep(4)
        assert {node.name: _copy(node, key)[0] for node in cluster.nodes} == {
            node.name: "absent" for node in cluster.nodes
        }
        assert _read_everywhere(cluster, key) == {n.name: [] for n in cluster.nodes}
    finally:
        cluster.stop()


def test_a_tombstone_is_reaped_only_after_the_grace_and_the_key_can_be_written_again(tmp_path):
    cluster = _cluster(tmp_path)
    try:
        cluster.start()
        key = "short-lived"
        with Client(cluster[0].node_addr, route=False) as client:
            client.put(BUCKET, key, b"v1", w=3)
            _wait_copies(cluster.nodes, key, "live", 10)
            read = client.get(BUCKET, key)
            before_delete = time.monotonic()
            client.delete(BUCKET, key, context=read.context)
        _wait_copies(cluster.nodes, key, "tombstone", 10)

        # The tombstone's timestamp is no earlier than `before_delete`: up to just before
        # the grace has passed, every replica must still hold it.
        while time.monotonic() < before_delete + GRACE - 0.5:
            kinds = {node.name: _copy(node, key)[0] for node in cluster.nodes}
            assert set(kinds.values()) == {"tombstone"}, kinds
            time.sleep(0.25)

        _wait_copies(cluster.nodes, key, "absent", 30)
        assert time.monotonic() >= before_delete + GRACE
        assert sum(_reaping(node)["reaped"] for node in cluster.nodes) >= 3
        assert _read_everywhere(cluster, key) == {n.name: [] for n in cluster.nodes}

        with Client(cluster[1].node_addr, route=False) as client:
            client.put(BUCKET, key, b"v2")  # blind: no context
        _wait_copies(cluster.nodes, key, "live", 10)
        assert _read_everywhere(cluster, key) == {n.name: [b"v2"] for n in cluster.nodes}
        assert all(_copy(node, key) == ("live", [b"v2"]) for node in cluster.nodes)
    finally:
        cluster.stop()
