"""Reads during a transfer, on simulated nodes running the real core: while load runs, a node
joins (or a bucket's count in a data center is raised), and every read begun after a write's
acknowledgement must find it, whichever coordinators count it. The nodes hear that a
partition's moves are done at different times, so without a joint quorum one coordinator
counts over the old replicas and another over the new: the read misses the write."""

from __future__ import annotations

import dataclasses
import random

import pytest

from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ClientPut,
    ClusterInfo,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
)
from dynakv.sim.cluster import SimCluster
from dynakv.sim.options import SimOptions
from dynakv.sim.run import node_config
from dynakv.storage.memory import MemoryEngine
from tests.sim.test_datacenter_replication import placed_everywhere
from tests.sim.test_datacenters import ask


class FreshKeys:
    """Load: a fresh key written every `interval` at a random coordinator, then read at
    two others as soon as it is acknowledged. A read that finds nothing is stale."""

    def __init__(
        self, cluster: SimCluster, bucket: str, coordinators: list[str], level: int | str, seed: int
    ) -> None:
        self.cluster = cluster
        self.bucket = bucket
        self.coordinators = coordinators
        self.level = level
        self.rng = random.Random(seed)
        self.pending: dict[int, tuple[str, str, str]] = {}  # rid -> (kind, key, node)
        self.rid = 0
        self.acknowledged = 0
        self.reads = 0
        self.stale: list[str] = []
        self.running = True
        cluster.attach_client("#load", self.on_reply)

    def start(self, interval: float = 0.01) -> None:
        def write() -> None:
            if not self.running:
                return
            self.rid += 1
            key = f"fresh{self.rid}"
            node = self.rng.choice(self.coordinators)
            self.pending[self.rid] = ("put", key, node)
            put = ClientPut(self.rid, self.bucket, key, key.encode(), w=self.level)
            self.cluster.request(node, "#load", put)
            self.cluster.call_at(self.cluster.now + interval, write)

        write()

    def on_reply(self, now: float, message: Message) -> None:
        assert isinstance(message, PutResult | GetResult | ErrorReply)
        kind, key, node = self.pending.pop(message.rid)
        if kind == "put" and isinstance(message, PutResult):
            self.acknowledged += 1
            others = [x for x in self.coordinators if x != node]
            for reader in self.rng.sample(others, 2):
                self.rid += 1
                self.pending[self.rid] = ("get", key, reader)
                get = ClientGet(self.rid, self.bucket, key, r=self.level)
                self.cluster.request(reader, "#load", get)
        elif kind == "get" and isinstance(message, GetResult):
            self.reads += 1
            if message.values != [key.encode()]:
                self.stale.append(f"{key} read at {node} at {now:.3f}: {message.values}")


# Some messages held back: a write's copy to one replica may arrive after the read that
# follows its acknowledgement, which is what lets a read over other replicas miss it.
LATE = SimOptions(reorder_probability=0.3, reorder_delay=0.3)


def transferring(cluster: SimCluster) -> bool:
    return any(cluster.nodes[name].view.state.ring.next is not None for name in cluster.up)


@pytest.mark.parametrize("seed", range(1, 6))
def test_reads_while_a_node_joins_find_every_write_acknowledged_before(seed):
    def config(name: str):  # type: ignore[no-untyped-def]
        base = node_config(name, request_timeout=1.0)
        return dataclasses.replace(
            base, anti_entropy=False, transfer_concurrency=1, transfer_batch=32
        )

    cluster = SimCluster(["n1", "n2", "n3"], seed=seed, config=config, options=LATE)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    load = FreshKeys(cluster, "b", ["n1", "n2", "n3"], 2, seed)
    load.start()
    cluster.run_for(1.0)
    cluster.engines["n4"] = MemoryEngine()
    cluster.names.append("n4")
    cluster.datacenters["n4"] = "dc1"
    cluster.start("n4", join="n1")
    load.coordinators = ["n1", "n2", "n3", "n4"]
    assert cluster.run_until(lambda: transferring(cluster), limit=30.0)
    during = load.reads
    assert cluster.run_until(cluster.members_agree, limit=120.0)
    load.running = False
    cluster.run_for(3.0)
    assert load.reads - during > 50  # the reads did run while the transfer did
    assert load.stale == [], load.stale[:5]


@pytest.mark.parametrize("seed", range(1, 6))
def test_local_quorum_reads_while_a_data_center_count_is_raised_find_every_write(seed):
    names = [f"n{i}" for i in range(1, 7)]  # n1 n3 n5 in dc1, n2 n4 n6 in dc2

    def config(name: str):  # type: ignore[no-untyped-def]
        base = node_config(name, request_timeout=1.0, racks=3, datacenters=2)
        return dataclasses.replace(
            base, anti_entropy=False, transfer_concurrency=1, transfer_batch=32
        )

    cluster = SimCluster(names, seed=seed, config=config, options=LATE)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    change = ClientBucketChange(1, "carts", {"datacenters": {"dc1": 2, "dc2": 1}}, "create")
    assert isinstance(ask(cluster, "n1", change), ClusterInfo)
    first = (("dc1", 2), ("dc2", 1))
    assert cluster.run_until(lambda: placed_everywhere(cluster, first), limit=60.0)
    load = FreshKeys(cluster, "carts", ["n2", "n4", "n6"], "local_quorum", seed)
    load.start()
    cluster.run_for(1.0)
    raise_ = ClientBucketChange(2, "carts", {"datacenters": {"dc1": 2, "dc2": 3}}, "update")
    assert isinstance(ask(cluster, "n3", raise_), ClusterInfo)
    assert cluster.run_until(lambda: transferring(cluster), limit=30.0)
    during = load.reads
    raised = (("dc1", 2), ("dc2", 3))
    assert cluster.run_until(lambda: placed_everywhere(cluster, raised), limit=120.0)
    load.running = False
    cluster.run_for(3.0)
    assert load.reads - during > 50
    assert load.stale == [], load.stale[:5]
