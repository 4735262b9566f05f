"""A join on simulated nodes running the real core, where each key is missing from one of
its three replicas (a write acknowledged by W=2): the joining node copies one replica per
partition in full and compares the others by version digests, and still holds every key
of its partitions the moment its pulls finish (anti-entropy is off, and the ring with it
is not installed yet, so no later repair or handoff could have brought them)."""

from __future__ import annotations

import dataclasses

import pytest

from dynakv import bucket_types as bt
from dynakv import versions
from dynakv.config import NodeConfig
from dynakv.item_keys import storage_key
from dynakv.messages import ClientBucketChange, ClusterInfo
from dynakv.ring import partition_of_digest
from dynakv.sim.cluster import SimCluster
from dynakv.sim.run import node_config
from dynakv.storage.memory import MemoryEngine
from tests.sim.test_datacenters import ask

SOURCES = ["n1", "n2", "n3"]


def config(name: str) -> NodeConfig:
    base = node_config(name, request_timeout=1.0)
    return dataclasses.replace(base, anti_entropy=False, transfer_concurrency=2, transfer_batch=8)


def write(value: bytes, actor: str) -> versions.Clock:
    return versions.update(versions.new((), versions.Sibling(value)), None, actor)


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_joining_node_gets_writes_its_full_source_lacks_before_its_pulls_finish(seed):
    cluster = SimCluster(SOURCES, seed=seed, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    written: dict[str, tuple[versions.Clock, str]] = {}  # key -> (state, replica without it)
    for i in range(120):
        key, missing = f"k{i}", SOURCES[i % 3]
        clock = write(f"v{i}".encode(), f"{SOURCES[(i + 1) % 3]}@sim.0")
        for name in SOURCES:
            if name != missing:
                cluster.nodes[name].store.put("b", key, clock)
        written[key] = (clock, missing)
    for name in SOURCES:
        cluster.engines[name].commit()

    cluster.engines["n4"] = MemoryEngine()
    cluster.names.append("n4")
    cluster.datacenters["n4"] = "dc1"
    cluster.start("n4", join="n1")
    n4 = cluster.nodes["n4"]
    assert cluster.run_until(lambda: n4.view.state.ring.next is not None, limit=30.0)
    assert cluster.run_until(lambda: not n4.view.my_moves(), limit=120.0)
    assert n4.view.state.ring.next is not None  # pulls done, the new ring not installed yet

    full_source = {}  # partition -> the replica n4 copied in full
    for _, node, log in cluster.logs:
        if node == "n4" and log.event == "transfer_started":
            full_source[log.fields["partition"]] = log.fields["sources"][0]
    size = n4.view.ring.size
    checked = lacking_full_source = 0
    for key, (clock, missing) in written.items():
        partition = partition_of_digest(storage_key("b", key), size)
        if partition not in full_source:
            continue  # not a partition n4 moves to
        checked += 1
        lacking_full_source += missing == full_source[partition]
        assert n4.store.get("b", key) == clock, (key, missing, full_source[partition])
    assert checked > 20 and lacking_full_source > 5
    finished = [
        log for _, node, log in cluster.logs if node == "n4" and log.event == "transfer_finished"
    ]
    # Fetched after a digest: about the keys the full copy lacked, never the whole set again.
    fetched = sum(int(log.fields["fetched"]) for log in finished)
    assert lacking_full_source <= fetched < checked


def test_replicas_that_remain_when_n_falls_compare_the_others_and_copy_nothing_whole():
    names = [f"n{i}" for i in range(1, 6)]
    cluster = SimCluster(names, seed=5, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    view = cluster.nodes["n1"].view
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        primaries = view.placement("b", key).primaries
        for name in primaries[:2]:
            cluster.nodes[name].store.put("b", key, write(b"v", "n9@x.0"))
        if key in keys[::5]:  # a write only the third replica took
            cluster.nodes[primaries[2]].store.put("b", key, write(b"w", "n8@x.0"))
    for name in names:
        cluster.engines[name].commit()
    for rid, bucket_type in enumerate((bt.DEFAULT, "lww")):
        lower = ClientBucketChange(rid, bucket_type, {"n": 2, "r": 1, "w": 1}, "update")
        assert isinstance(ask(cluster, "n2", lower), ClusterInfo)
    assert cluster.run_until(
        lambda: any(cluster.nodes[x].view.state.ring.next is not None for x in names), 30.0
    )
    assert cluster.run_until(
        lambda: all(not cluster.nodes[x].view.my_moves() for x in names), 120.0
    )
    finished = [log.fields for _, _, log in cluster.logs if log.event == "transfer_finished"]
    assert finished
    # Each remaining replica held the partition already: it fetched what differed, only.
    assert all(f["keys"] == f["fetched"] for f in finished)
    assert sum(f["fetched"] for f in finished) >= len(keys[::5])
    for key in keys[::5]:
        for name in view.placement("b", key).primaries[:2]:
            clock = cluster.nodes[name].replica("b", key)
            assert clock is not None and {s.value for s in versions.values(clock)} == {b"v", b"w"}
