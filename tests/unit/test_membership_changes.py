"""Joins, leaves and removals of a cluster that holds data, driven through real Nodes in the
simulator: nothing acknowledged is lost, reads keep working while data moves, and ownership
ends balanced."""

from __future__ import annotations

import dataclasses

from dynakv import versions
from dynakv.messages import ClientClusterChange, ClusterInfo, ErrorReply, GetResult, PutResult
from dynakv.sim.cluster import SimCluster, default_config
from dynakv.storage.memory import MemoryEngine
from tests.unit.test_node import _rids, _settled, call, get, make_cluster, put


def write_keys(cluster: SimCluster, count: int, node: str = "n1") -> dict[str, bytes]:
    written = {}
    for i in range(count):
        value = f"value-{i}".encode()
        assert isinstance(put(cluster, node, "b", f"k{i}", value), PutResult)
        written[f"k{i}"] = value
    return written


def add_node(cluster: SimCluster, name: str, through: str = "n1") -> None:
    cluster.engines[name] = MemoryEngine()
    cluster.names.append(name)
    cluster.start(name, join=through)


def settle(cluster: SimCluster, names: list[str], limit: float = 120.0) -> None:
    assert cluster.run_until(
        lambda: all(_settled(cluster.nodes[n], len(names)) for n in names), limit=limit
    )


def assert_balanced(cluster: SimCluster, name: str) -> None:
    counts = cluster.nodes[name].ring.ownership().values()
    assert max(counts) - min(counts) <= 1


def assert_all_readable(cluster: SimCluster, written: dict[str, bytes], via: str) -> None:
    for key, value in written.items():
        reply = get(cluster, via, "b", key)
        assert isinstance(reply, GetResult) and reply.values == [value], key


def assert_replicas_hold(cluster: SimCluster, written: dict[str, bytes]) -> None:
    """Every primary of every key holds it: transfers, not read repair, put it there."""
    some = next(iter(cluster.up))
    for key, value in written.items():
        for name in cluster.nodes[some].placement("b", key).primaries:
            state = cluster.nodes[name].replica("b", key)
            assert state is not None, (name, key)
            assert [s.value for s in versions.live_values(state)] == [value], (name, key)


def test_a_node_joining_a_cluster_with_data_receives_its_partitions():
    cluster = make_cluster(3)
    written = write_keys(cluster, 200)
    add_node(cluster, "n4")
    settle(cluster, ["n1", "n2", "n3", "n4"])
    assert_balanced(cluster, "n1")
    assert cluster.nodes["n4"].engine.count() > 0
    assert_replicas_hold(cluster, written)
    assert_all_readable(cluster, written, "n4")
    assert any(log.event == "transfer_finished" for _, name, log in cluster.logs if name == "n4")


def test_writes_during_a_transfer_reach_the_new_owner():
    cluster = make_cluster(3, transfer_batch=4)
    written = write_keys(cluster, 100)
    add_node(cluster, "n4")
    cluster.run_until(lambda: cluster.nodes["n1"].state.ring.next is not None)
    during = {}
    for i in range(40):
        value = f"during-{i}".encode()
        assert isinstance(put(cluster, "n2", "b", f"d{i}", value), PutResult)
        during[f"d{i}"] = value
    assert cluster.nodes["n1"].state.ring.next is not None, "the transfer ended too soon"
    settle(cluster, ["n1", "n2", "n3", "n4"])
    assert_replicas_hold(cluster, {**written, **during})


def test_leave_hands_off_every_partition_then_the_node_stops():
    cluster = make_cluster(4)
    written = write_keys(cluster, 150)
    reply = call(cluster, "n1", ClientClusterChange(next(_rids), "leave", "n4"))
    assert isinstance(reply, ClusterInfo)
    assert cluster.run_until(lambda: "n4" not in cluster.up, limit=120)
    settle(cluster, ["n1", "n2", "n3"])
    record = next(m for m in cluster.nodes["n1"].state.members if m.name == "n4")
    assert record.status == "removed"
    assert "n4" not in cluster.nodes["n1"].ring.owners
    assert_balanced(cluster, "n1")
    assert_replicas_hold(cluster, written)
    assert_all_readable(cluster, written, "n2")


def test_remove_of_a_dead_node_rebuilds_its_partitions_from_the_other_replicas():
    cluster = make_cluster(4)
    written = write_keys(cluster, 150)
    cluster.crash("n4")
    reply = call(cluster, "n1", ClientClusterChange(next(_rids), "remove", "n4"))
    assert isinstance(reply, ClusterInfo)
    settle(cluster, ["n1", "n2", "n3"])
    assert "n4" not in cluster.nodes["n1"].ring.owners
    assert_balanced(cluster, "n1")
    assert_replicas_hold(cluster, written)


def test_membership_changes_that_make_no_sense_are_refused_and_change_nothing():
    cluster = make_cluster(3)
    before = cluster.nodes["n1"].state
    cases = [
        ClientClusterChange(next(_rids), "remove", "nobody"),
        ClientClusterChange(next(_rids), "leave", "nobody"),
        ClientClusterChange(next(_rids), "remove", "n2"),  # alive: leave is the way
        ClientClusterChange(next(_rids), "explode", "n2"),
    ]
    for message in cases:
        reply = call(cluster, "n1", message)
        assert isinstance(reply, ErrorReply), message
        assert reply.message
    assert cluster.nodes["n1"].state == before


def test_leaving_the_last_node_is_refused():
    cluster = make_cluster(1)
    reply = call(cluster, "n1", ClientClusterChange(next(_rids), "leave", "n1"))
    assert isinstance(reply, ErrorReply)
    assert reply.code == "cluster_error"
    assert "n1" in cluster.up


def test_a_whole_cluster_restart_keeps_ring_and_data():
    cluster = make_cluster(3)
    written = write_keys(cluster, 50)
    ring = cluster.nodes["n1"].ring
    for name in ["n1", "n2", "n3"]:
        cluster.crash(name)
    for name in ["n1", "n2", "n3"]:
        cluster.start(name)
    cluster.run_for(5.0)
    for name in ["n1", "n2", "n3"]:
        assert cluster.nodes[name].ring == ring
    assert_all_readable(cluster, written, "n3")


def test_a_transfer_resumes_after_the_receiver_restarts():
    cluster = make_cluster(3, transfer_batch=2, transfer_concurrency=1)
    written = write_keys(cluster, 120)
    add_node(cluster, "n4")
    assert cluster.run_until(
        lambda: any(p.keys >= 4 for p in cluster.nodes["n4"].transfers.pulls.values()), limit=60
    )
    before = {p.partition: (p.keys, p.cursor) for p in cluster.nodes["n4"].transfers.pulls.values()}
    cluster.crash("n4")
    cluster.start("n4")
    resumed = cluster.nodes["n4"]
    assert cluster.run_until(lambda: bool(resumed.transfers.pulls), limit=5)
    partition, pull = next(iter(resumed.transfers.pulls.items()))
    assert partition in before
    keys, cursor = before[partition]
    assert pull.keys >= keys and pull.cursor >= cursor  # the cursor came back from disk
    settle(cluster, ["n1", "n2", "n3", "n4"])
    assert_replicas_hold(cluster, written)


def test_a_node_that_moves_to_another_rack_moves_its_replicas_through_the_claimant():
    """Places are part of the ring: a member restarted in a new rack makes the claimant plan
    a placed ring, the new replicas pull their partitions, and every key ends on replicas
    that span both racks."""
    racks = {name: "rack1" for name in ("n1", "n2", "n3", "n4", "n5", "n6")}

    def configure(name: str):
        return dataclasses.replace(default_config(name), rack=racks[name])

    cluster = SimCluster(list(racks), seed=3, config=configure)
    assert cluster.run_until(lambda: all(_settled(n, 6) for n in cluster.nodes.values()))
    assert cluster.nodes["n1"].ring.places == ()
    written = write_keys(cluster, 120)
    for name in ("n4", "n5", "n6"):
        racks[name] = "rack2"
        cluster.crash(name)
        cluster.restart(name)

    want = tuple(("dc1", racks[name]) for name in sorted(racks))

    def placed() -> bool:
        rings = [cluster.nodes[n].ring for n in cluster.names]
        return all(r.places == want and r == rings[0] for r in rings) and all(
            _settled(cluster.nodes[n], 6) for n in cluster.names
        )

    assert cluster.run_until(placed, limit=120.0)
    ring = cluster.nodes["n1"].ring
    for partition in range(ring.size):
        assert {racks[n] for n in ring.preference_list(partition, 3)} == {"rack1", "rack2"}
    assert_replicas_hold(cluster, written)
    assert_all_readable(cluster, written, "n2")
