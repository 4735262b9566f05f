"""Which replicas a read asks (NodeConfig.read_fanout), on real Nodes in the simulator.

Fan-out "r" (the default) asks the coordinator's own copy and R-1 more replicas; one that
fails is replaced at once, one that stays silent after `read_speculation` too. Fan-out "n"
asks all N, as Dynamo and Riak do.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dynakv.config import BucketProps
from dynakv.core.events import Log, Received, Send
from dynakv.core.replica import seal
from dynakv.errors import InternalError
from dynakv.messages import ClientGet, ErrorReply, GetResult, ReplicaGet
from dynakv.ring import key_digest
from dynakv.sim.cluster import SimCluster
from tests.unit.test_node import get, make_cluster, put, replicas_of


def count_replica_gets(cluster: SimCluster) -> Counter[str]:
    """Counts, per node, the ReplicaGet requests it answers from now on (a request the
    simulated network delivers twice counts once)."""
    asked: Counter[str] = Counter()
    seen: set[tuple[str, str, int]] = set()
    for name, node in cluster.nodes.items():
        original = node._handlers[ReplicaGet]

        def counting(now, source, msg, name=name, original=original):
            if (name, source, msg.rid) not in seen:
                seen.add((name, source, msg.rid))
                asked[name] += 1
            return original(now, source, msg)

        node._handlers[ReplicaGet] = counting
    return asked


@pytest.mark.parametrize(("fanout", "remote"), [("r", 1), ("n", 2)])
def test_a_read_asks_its_own_copy_and_as_many_more_as_the_fanout_says(fanout, remote):
    cluster = make_cluster(3, read_fanout=fanout)
    coordinator = replicas_of(cluster, "b", "k")[0]
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    asked = count_replica_gets(cluster)
    reply = get(cluster, coordinator, "b", "k")  # R=2
    assert isinstance(reply, GetResult) and reply.values == [b"v"]
    cluster.run_for(1.0)
    assert asked[coordinator] == 0  # its own copy is read in place
    assert sum(asked.values()) == remote


def test_a_silent_replica_is_replaced_after_read_speculation():
    cluster = make_cluster(3, read_speculation=0.1, request_timeout=2.0)
    coordinator, second, _ = replicas_of(cluster, "b", "k")
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    cluster.cut(coordinator, second)  # dropped silently; not yet suspected
    start = cluster.now
    reply = get(cluster, coordinator, "b", "k")
    took = cluster.now - start
    assert isinstance(reply, GetResult) and reply.values == [b"v"]
    assert 0.1 <= took < 0.5, took  # the third replica was asked once the wait ran out


def test_without_speculation_a_silent_replica_stalls_the_read():
    """The test above can fail: with a speculation delay past the timeout the same read
    gets no second answer in time."""
    cluster = make_cluster(3, read_speculation=60.0, request_timeout=1.0)
    coordinator, second, _ = replicas_of(cluster, "b", "k")
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    cluster.cut(coordinator, second)
    reply = get(cluster, coordinator, "b", "k")
    assert isinstance(reply, ErrorReply) and reply.code == "unavailable", reply


def test_a_replica_that_answers_garbage_is_replaced_at_once():
    cluster = make_cluster(3, read_speculation=10.0)
    coordinator, second, _ = replicas_of(cluster, "b", "k")
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    # A record whose checksum holds but whose clock does not decode: the coordinator
    # cannot use the answer and asks the replica it left out.
    engine = cluster.engines[second]
    engine.put(key_digest("b", "k"), seal("b", "k", b"\xc1 not a clock"))
    engine.commit()
    start = cluster.now
    reply = get(cluster, coordinator, "b", "k")
    assert isinstance(reply, GetResult) and reply.values == [b"v"]
    assert cluster.now - start < 1.0  # not after the 10 s speculation delay


def test_a_read_needing_every_replica_asks_every_replica():
    cluster = make_cluster(3)
    coordinator = replicas_of(cluster, "b", "k")[0]
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    asked = count_replica_gets(cluster)
    assert get(cluster, coordinator, "b", "k", r=3).values == [b"v"]
    assert sum(asked.values()) == 2


def test_a_read_of_one_answered_by_its_own_copy_asks_no_one_and_keeps_nothing():
    cluster = make_cluster(3)
    coordinator = replicas_of(cluster, "b", "k")[0]
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    asked = count_replica_gets(cluster)
    node = cluster.nodes[coordinator]
    rids_before = node.ids.upcoming
    reply = get(cluster, coordinator, "b", "k", r=1)
    assert isinstance(reply, GetResult) and reply.values == [b"v"] and reply.context
    assert get(cluster, coordinator, "b", "missing", r=1).values == []
    assert sum(asked.values()) == 0
    assert node.ids.upcoming == rids_before  # no request record was made: answered in the call


def test_the_internal_read_mending_a_corrupt_copy_of_a_one_replica_key_sends_nothing():
    """The read of one fast path answers a client; the mending read has none (source "")."""
    cluster = make_cluster(3, buckets={"single": BucketProps(n=1, r=1, w=1)})
    owner = replicas_of(cluster, "single", "k")[0]
    put(cluster, owner, "single", "k", b"v")
    cluster.run_for(1.0)
    engine = cluster.engines[owner]
    engine.put(key_digest("single", "k"), b"\x00 not a sealed record")
    engine.commit()
    node = cluster.nodes[owner]
    effects = node.handle(cluster.now, Received("#c9", ClientGet(99, "single", "k")))
    sends = [e for e in effects if isinstance(e, Send)]
    assert [s.to for s in sends] == ["#c9"], sends  # the client's answer, nothing to ""
    assert any(isinstance(e, Log) and e.event == "corrupt_record" for e in effects)


def test_a_read_of_one_whose_own_copy_fails_is_answered_by_another_replica():
    cluster = make_cluster(3)
    coordinator = replicas_of(cluster, "b", "k")[0]
    put(cluster, coordinator, "b", "k", b"v")
    cluster.run_for(1.0)
    asked = count_replica_gets(cluster)
    engine = cluster.nodes[coordinator].store.engine
    original = engine.get
    broken = key_digest("b", "k")

    def failing_get(key, *args, **kwargs):
        if key == broken:
            raise InternalError("injected: the disk read failed")
        return original(key, *args, **kwargs)

    engine.get = failing_get
    reply = get(cluster, coordinator, "b", "k", r=1)
    assert isinstance(reply, GetResult) and reply.values == [b"v"], reply
    assert sum(asked.values()) == 1
    logged = [log.event for _, name, log in cluster.logs if name == coordinator]
    assert "local_read_failed" in logged


def test_reads_of_one_follow_every_write_of_the_key():
    """A read of one answers from the coordinator's copy as it is now, siblings included."""
    cluster = make_cluster(3)
    coordinator = replicas_of(cluster, "b", "k")[0]
    first = put(cluster, coordinator, "b", "k", b"v1")
    assert get(cluster, coordinator, "b", "k", r=1).values == [b"v1"]
    put(cluster, coordinator, "b", "k", b"v2", first.context)
    assert get(cluster, coordinator, "b", "k", r=1).values == [b"v2"]
    put(cluster, coordinator, "b", "k", b"v3")  # blind: a sibling beside v2
    both = get(cluster, coordinator, "b", "k", r=1)
    assert sorted(both.values) == [b"v2", b"v3"]
    assert get(cluster, coordinator, "b", "k", r=1).context == both.context
