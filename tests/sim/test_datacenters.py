"""Consistency levels across data centers, on simulated nodes running the real core: with the
link between two data centers cut, `local_quorum` reads and writes keep working on each side,
while `quorum` and `each_quorum` say which data center they are missing."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from dynakv.messages import ClientGet, ClientPut, ErrorReply, GetResult, Message, PutResult
from dynakv.sim.cluster import SimCluster
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, node_config, run_seeds

NAMES = [f"n{i}" for i in range(1, 7)]  # n1 n3 n5 in dc1, n2 n4 n6 in dc2; racks r1..r3


@pytest.fixture
def cluster() -> SimCluster:
    config = functools.partial(node_config, request_timeout=1.0, racks=3, datacenters=2)
    cluster = SimCluster(NAMES, seed=5, config=config)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    return cluster


def ask(cluster: SimCluster, node: str, message: Message) -> Message:
    client = f"#{node}"
    inbox = cluster.inbox.setdefault(client, [])
    before = len(inbox)
    cluster.request(node, client, message)
    assert cluster.run_until(lambda: len(inbox) > before, limit=5.0)
    return inbox[-1]


def cut_datacenters(cluster: SimCluster) -> None:
    dc1 = [n for n in NAMES if cluster.datacenters[n] == "dc1"]
    dc2 = [n for n in NAMES if cluster.datacenters[n] == "dc2"]
    cluster.partition({(a, b) for a in dc1 for b in dc2} | {(b, a) for a in dc1 for b in dc2})


def replicas(cluster: SimCluster, key: str) -> list[str]:
    return cluster.nodes["n1"].placement("cart", key).primaries


def test_every_key_has_replicas_in_both_data_centers(cluster):
    for i in range(50):
        sites = {cluster.datacenters[n] for n in replicas(cluster, f"k{i}")}
        assert sites == {"dc1", "dc2"}


def test_with_the_link_cut_local_quorum_works_on_each_side_and_wider_levels_say_what_is_missing(
    cluster,
):
    cut_datacenters(cluster)
    cluster.run_for(15.0)  # the failure detectors see the other side down
    for i in range(10):
        key = f"k{i}"
        for node in ("n1", "n2"):  # one coordinator in each data center
            put = ask(cluster, node, ClientPut(i, "cart", key, node.encode(), w="local_quorum"))
            assert isinstance(put, PutResult), put
            got = ask(cluster, node, ClientGet(i, "cart", key, r="local_quorum"))
            assert isinstance(got, GetResult) and node.encode() in got.values, got
        failed = ask(cluster, "n1", ClientPut(99, "cart", key, b"x", w="each_quorum"))
        assert isinstance(failed, ErrorReply) and failed.code == "unavailable"
        assert "in dc2, got 0" in failed.message
    cluster.heal()
    cluster.run_for(15.0)
    for i in range(10):  # healed: every write of both sides is there, as siblings
        got = ask(cluster, "n3", ClientGet(i, "cart", f"k{i}", r="each_quorum"))
        assert isinstance(got, GetResult) and {b"n1", b"n2"} <= set(got.values), got


def test_a_put_forwarded_by_a_node_that_is_no_replica_keeps_its_local_data_center(cluster):
    key = next(f"k{i}" for i in range(200) if "n5" not in replicas(cluster, f"k{i}"))
    cut_datacenters(cluster)
    cluster.run_for(15.0)
    put = ask(cluster, "n5", ClientPut(1, "cart", key, b"v", w="local_quorum"))
    assert isinstance(put, PutResult), put  # forwarded to a dc1 replica, acked in dc1


def _key_with_two_replicas_in(cluster: SimCluster, site: str) -> tuple[str, list[str]]:
    for i in range(500):
        key = f"r{i}"
        there = [n for n in replicas(cluster, key) if cluster.datacenters[n] == site]
        if len(there) == 2:
            return key, there
    raise AssertionError(f"no key with two replicas in {site}")


def test_a_write_crosses_to_another_data_center_once_and_is_relayed_there(cluster):
    key, there = _key_with_two_replicas_in(cluster, "dc2")
    before = cluster.crossings.get("ReplicaPut", 0)
    put = ask(cluster, "n1", ClientPut(1, "cart", key, b"v", w="all"))
    assert isinstance(put, PutResult), put  # every replica acknowledged, the relayed one too
    assert cluster.crossings.get("ReplicaPut", 0) - before == 1
    for node in there:
        assert cluster.nodes[node].replica("cart", key) is not None


def test_a_relay_that_dies_before_passing_the_write_on_is_bypassed(cluster):
    key, (relay, other) = _key_with_two_replicas_in(cluster, "dc2")
    coordinator = next(n for n in replicas(cluster, key) if cluster.datacenters[n] == "dc1")
    cluster.cut(relay, other)  # what the relay passes on is lost...
    put = ask(cluster, coordinator, ClientPut(1, "cart", key, b"v", w="local_quorum"))
    assert isinstance(put, PutResult), put
    cluster.run_for(0.2)
    assert cluster.nodes[other].replica("cart", key) is None
    cluster.crash(relay)  # ... and then it dies: the coordinator sends the write direct
    cluster.run_for(0.5)
    assert cluster.nodes[other].replica("cart", key) is not None


def test_a_relayed_replica_that_refuses_answers_the_coordinator_not_the_relay(cluster):
    key, (relay, other) = _key_with_two_replicas_in(cluster, "dc2")
    coordinator = next(n for n in replicas(cluster, key) if cluster.datacenters[n] == "dc1")
    # `other` believes the relay was removed (its view ahead of the coordinator's): it refuses
    # what the relay passes on, and says so to the coordinator, which answers at once.
    view = cluster.nodes[other].view
    view.removed = view.removed | {relay}
    start = cluster.now
    reply = ask(cluster, coordinator, ClientPut(1, "cart", key, b"v", w="all"))
    assert isinstance(reply, ErrorReply) and reply.code == "unavailable", reply
    assert cluster.now - start < 0.5  # not the 1 s request timeout


def test_anti_entropy_exchanges_with_other_data_centers_at_a_quarter_of_the_pace():
    config = functools.partial(node_config, request_timeout=1.0, racks=3, datacenters=2)
    lines: list[str] = []
    cluster = SimCluster(NAMES, seed=5, config=config, trace=lines.append)
    assert cluster.run_until(cluster.members_agree, limit=60.0)
    lines.clear()
    cluster.run_for(120.0)  # trees built, then exchanges every aae_interval
    local = remote = 0
    for line in lines:
        parts = line.split()
        if len(parts) > 4 and parts[2] == "->" and parts[4] == "AaeHashes":
            same = cluster.datacenters[parts[1]] == cluster.datacenters[parts[3]]
            local, remote = local + same, remote + (not same)
    assert local > 50, (local, remote)
    assert remote > 0  # remote replicas are still compared...
    assert remote < local / 2  # ... at a lower pace (each node has as many of each)


def test_a_wiped_data_center_loses_what_only_its_own_quorum_acknowledged():
    """The fault bites: with writes at local_quorum (a quorum of one data center), bringing
    crashed data centers back wiped loses acknowledged writes, and the checker says so —
    which is why the simulator wipes data centers only in runs writing at each_quorum."""
    options = dataclasses.replace(
        SimOptions().with_faults("all"),
        datacenter_crash_probability=0.1,
        datacenter_wipe_probability=0.9,
    )
    config = RunConfig(
        "cart",
        nodes=6,
        options=options,
        racks=3,
        datacenters=2,
        bucket_datacenters=(("dc1", 3), ("dc2", 3)),
        write_level="local_quorum",
    )
    results = list(run_seeds(list(range(1, 31)), config, jobs=2))
    assert sum(r.sites_wiped for r in results) >= 5
    assert any(not r.report.ok for r in results)
