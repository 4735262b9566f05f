"""Active anti-entropy through real Nodes in the simulator: replicas that diverged for good
converge by Merkle exchange alone, a wiped node is refilled without any client read, and an
operator's repair reports what it mended."""

from __future__ import annotations

from dynakv import versions
from dynakv.messages import ClientPut, ClientRepair, ErrorReply, PutResult, RepairResult
from dynakv.sim.cluster import SimCluster
from tests.unit.test_node import _rids, call, make_cluster, put, replicas_of


def holders(cluster: SimCluster, bucket: str, key: str) -> dict[str, list[bytes]]:
    out = {}
    for name in replicas_of(cluster, bucket, key):
        state = cluster.nodes[name].replica(bucket, key)
        out[name] = sorted(s.value for s in versions.live_values(state)) if state else []
    return out


def test_replicas_written_apart_converge_by_anti_entropy_alone():
    cluster = make_cluster(3, read_repair=False, aae_interval=1.0)
    # Split n1 from n2 and n3; write the same keys on both sides with W=1.
    cluster.cut("n1", "n2")
    cluster.cut("n1", "n3")
    cluster.run_for(6.0)  # long enough for phi to suspect the other side
    for i in range(20):
        assert isinstance(put(cluster, "n1", "b", f"k{i}", b"left", w=1), PutResult)
        assert isinstance(put(cluster, "n2", "b", f"k{i}", b"right", w=1), PutResult)
    cluster.heal()
    cluster.run_for(150.0)  # no client reads at all from here on
    for i in range(20):
        assert set(map(tuple, holders(cluster, "b", f"k{i}").values())) == {(b"left", b"right")}
    assert sum(node.aae.keys_repaired for node in cluster.nodes.values()) > 0


def test_a_wiped_node_is_refilled_without_any_client_read():
    cluster = make_cluster(3, read_repair=False, aae_interval=1.0)
    written = {}
    for i in range(60):
        put(cluster, "n1", "b", f"k{i}", f"v{i}".encode())
        written[f"k{i}"] = f"v{i}".encode()
    cluster.crash("n3")
    cluster.restart("n3", wipe=True)
    assert cluster.engines["n3"].count() < 60
    cluster.run_for(180.0)
    for key, value in written.items():
        state = cluster.nodes["n3"].replica("b", key)
        assert state is not None, key
        assert [s.value for s in versions.live_values(state)] == [value]


def test_an_operator_repair_runs_now_and_reports_what_it_mended():
    cluster = make_cluster(3, read_repair=False, aae_interval=3600.0)
    cluster.cut("n1", "n3")
    for i in range(10):
        reply = call(cluster, "n1", ClientPut(next(_rids), "b", f"r{i}", b"v", w=2))
        assert isinstance(reply, PutResult)
    cluster.heal()
    reply = call(cluster, "n1", ClientRepair(next(_rids)))
    assert isinstance(reply, RepairResult)
    assert reply.exchanges >= 2
    cluster.run_for(2.0)
    missing = [i for i in range(10) if cluster.nodes["n3"].replica("b", f"r{i}") is None]
    assert missing == []
    bad = call(cluster, "n1", ClientRepair(next(_rids), partition=9999))
    assert isinstance(bad, ErrorReply)


def test_anti_entropy_switched_off_builds_no_trees_and_refuses_repair():
    cluster = make_cluster(3, anti_entropy=False)
    put(cluster, "n1", "b", "k", b"v")
    cluster.run_for(10.0)
    assert all(not node.aae.trees for node in cluster.nodes.values())
    reply = call(cluster, "n1", ClientRepair(next(_rids)))
    assert isinstance(reply, ErrorReply)
    assert "anti-entropy is switched off" in reply.message


def test_trees_kept_by_writes_match_trees_built_from_storage():
    """Trees are kept current write by write (on_write with the old and new state); after
    many rewrites, deletes and re-creations of the same keys every tree must still equal one
    built afresh from what is stored."""
    from dynakv.core.antientropy import AntiEntropy
    from dynakv.core.replica import ReplicaStore
    from dynakv.ring import key_digest, partition_of_digest
    from dynakv.storage.memory import MemoryEngine
    from dynakv.versions import Clock, Entry, Sibling

    store = ReplicaStore(MemoryEngine())
    aae = AntiEntropy(store, ring_size=8, segments=64, branching=4)
    store.on_write = aae.on_write
    for partition in range(8):
        aae.build(partition)
    keys = [f"k{i}" for i in range(40)]
    for step in range(600):
        key = keys[(step * 7) % len(keys)]
        old = store.get("b", key)
        if step % 11 == 0 and old is not None:
            store.delete("b", key, old)
            continue
        counter = 1 if old is None else old.entries[0].counter + 1
        deleted = step % 5 == 0
        clock = Clock((Entry("a", counter, (Sibling(b"" if deleted else b"v", deleted),)),))
        store.put("b", key, clock, old)
    partitions = {partition_of_digest(key_digest("b", key), 8) for key in keys}
    for partition in partitions:
        kept = aae.trees[partition]
        fresh = AntiEntropy(store, ring_size=8, segments=64, branching=4).build(partition)
        assert kept.keys == fresh.keys
        assert kept.root() == fresh.root()
        assert kept.level_hashes(kept.depth, range(64)) == fresh.level_hashes(
            fresh.depth, range(64)
        )
