"""Lowering the replication on simulated nodes running the real core: after the default
type's n falls from 3 to 2, every key is on its two replicas with every acknowledged write
(also a write only the dropped third replica had: the remaining ones pull it before the
lower n serves), and the dropped replica's storage no longer holds the key (it handed its
copy back). Anti-entropy is off, so only the transfer and the hand-back can move data."""

from __future__ import annotations

import dataclasses

from dynakv import bucket_types as bt
from dynakv import versions
from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ClientPut,
    ClusterInfo,
    GetResult,
    PutResult,
)
from dynakv.sim.cluster import SimCluster
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, node_config, run_seeds
from tests.sim.test_datacenters import ask

NAMES = [f"n{i}" for i in range(1, 6)]
KEYS = [f"k{i}" for i in range(60)]


def config(name: str):  # type: ignore[no-untyped-def]
    return dataclasses.replace(node_config(name, request_timeout=1.0), anti_entropy=False)


def placed_for(cluster: SimCluster, n: int) -> bool:
    records = [cluster.nodes[name].view.state.ring for name in NAMES]
    return all(r.next is None and r.replication == n for r in records)


def values(cluster: SimCluster, node: str, key: str) -> set[bytes]:
    clock = cluster.nodes[node].replica("b", key)
    return set() if clock is None else {s.value for s in versions.values(clock)}


def test_a_lowered_n_keeps_every_write_on_the_remaining_replicas_and_frees_the_third():
    cluster = SimCluster(NAMES, seed=11, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    view = cluster.nodes["n1"].view
    for i, key in enumerate(KEYS):
        assert isinstance(ask(cluster, "n1", ClientPut(i, "b", key, b"v")), PutResult)
    cluster.run_for(2.0)
    thirds = {key: view.placement("b", key).primaries[2] for key in KEYS}
    # A write that only the third replica took (W=1, the others' copies lost): the lower n
    # must not strand it.
    only_third = KEYS[::7]
    for key in only_third:
        node = cluster.nodes[thirds[key]]
        local = node.replica("b", key)
        assert local is not None
        ours = versions.update(versions.new(versions.join(local), versions.Sibling(b"w")),
                               local, "n9@x.0")  # fmt: skip
        node.store.put("b", key, ours)

    for rid, name in enumerate((bt.DEFAULT, "lww")):  # the ring holds the largest n of all
        lower = ClientBucketChange(rid, name, {"n": 2, "r": 1, "w": 1}, "update")
        assert isinstance(ask(cluster, "n2", lower), ClusterInfo)
    assert cluster.run_until(lambda: placed_for(cluster, 2), limit=120.0)
    for key in KEYS:
        primaries = view.placement("b", key).primaries
        assert len(primaries) == 2 and thirds[key] not in primaries, key
        wanted = {b"w"} if key in only_third else {b"v"}
        for node in primaries:
            assert values(cluster, node, key) == wanted, (key, node)
    assert cluster.run_until(
        lambda: all(cluster.nodes[thirds[k]].replica("b", k) is None for k in KEYS), limit=60.0
    )
    for i, key in enumerate(KEYS):
        got = ask(cluster, thirds[key], ClientGet(1000 + i, "b", key))
        assert isinstance(got, GetResult) and set(got.values) == (
            {b"w"} if key in only_third else {b"v"}
        ), key


def test_seeds_lowering_every_type_under_faults_keep_every_acknowledged_write():
    config = RunConfig(options=SimOptions().with_faults("all"), lower_replication=True)
    failed = [
        f"seed {r.seed}: {r.report.summary()}"
        for r in run_seeds(list(range(1, 21)), config)
        if not r.report.ok
    ]
    assert not failed, failed
