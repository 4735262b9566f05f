"""Replicas per data center on simulated nodes running the real core: a bucket type that
lists data centers places each key on that many nodes of each, and raising a count moves
every key written before to its new replica through a transfer (anti-entropy off, so only
the transfer can have copied it)."""

from __future__ import annotations

import dataclasses

from dynakv.messages import ClientBucketChange, ClientPut, ClusterInfo, PutResult
from dynakv.sim.cluster import SimCluster
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, node_config, run_seeds
from tests.sim.test_datacenters import ask

NAMES = [f"n{i}" for i in range(1, 7)]  # n1 n3 n5 in dc1, n2 n4 n6 in dc2; racks r1..r3
KEYS = [f"k{i}" for i in range(40)]


def config(name: str):  # type: ignore[no-untyped-def]
    base = node_config(name, request_timeout=1.0, racks=3, datacenters=2)
    return dataclasses.replace(base, anti_entropy=False)


def placed_everywhere(cluster: SimCluster, datacenters: tuple[tuple[str, int], ...]) -> bool:
    """Every node has the ring placed for `datacenters`, with no transfer under way."""
    records = [cluster.nodes[name].view.state.ring for name in NAMES]
    return all(r.next is None and r.datacenters == datacenters for r in records)


def holders(cluster: SimCluster, key: str) -> set[str]:
    return {name for name in NAMES if cluster.nodes[name].replica("carts", key) is not None}


def test_a_raised_data_center_count_moves_every_key_to_its_new_replica():
    cluster = SimCluster(NAMES, seed=7, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    change = ClientBucketChange(1, "carts", {"datacenters": {"dc1": 2, "dc2": 1}}, "create")
    assert isinstance(ask(cluster, "n1", change), ClusterInfo)
    first = (("dc1", 2), ("dc2", 1))
    assert cluster.run_until(lambda: placed_everywhere(cluster, first), limit=60.0)
    for i, key in enumerate(KEYS):
        put = ask(cluster, "n1", ClientPut(i, "carts", key, key.encode()))
        assert isinstance(put, PutResult), put
    cluster.run_for(5.0)
    view = cluster.nodes["n1"].view
    for key in KEYS:
        primaries = view.placement("carts", key).primaries
        sites = sorted(cluster.datacenters[name] for name in primaries)
        assert sites == ["dc1", "dc1", "dc2"], (key, primaries)
        assert set(primaries) <= holders(cluster, key), key

    raise_ = ClientBucketChange(2, "carts", {"datacenters": {"dc1": 2, "dc2": 2}}, "update")
    assert isinstance(ask(cluster, "n3", raise_), ClusterInfo)
    second = (("dc1", 2), ("dc2", 2))
    assert cluster.run_until(lambda: placed_everywhere(cluster, second), limit=120.0)
    for key in KEYS:
        primaries = view.placement("carts", key).primaries
        sites = sorted(cluster.datacenters[name] for name in primaries)
        assert sites == ["dc1", "dc1", "dc2", "dc2"], (key, primaries)
        assert set(primaries) <= holders(cluster, key), key


def test_seeds_with_a_bucket_placed_per_data_center_keep_every_acknowledged_write():
    config = RunConfig(
        nodes=6,
        options=SimOptions().with_faults("all"),
        racks=3,
        datacenters=2,
        bucket_datacenters=(("dc1", 1), ("dc2", 2)),
    )
    failed = [
        f"seed {r.seed}: {r.report.summary()}"
        for r in run_seeds(list(range(1, 21)), config)
        if not r.report.ok
    ]
    assert not failed, failed
