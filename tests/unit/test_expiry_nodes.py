"""Expiry on real Nodes in the simulator (virtual clock): an expired value reads as not
found at once and never uncovers an older value; the sweep deletes it with its own
context, so a write it did not see survives; the tombstone is then reaped off every disk."""

from __future__ import annotations

import itertools

import pytest

from dynakv import versions
from dynakv.messages import ClientGet, ClientPut, ErrorReply, GetResult, Message, PutResult
from dynakv.sim.cluster import SimCluster
from dynakv.storage.engine import VALUES
from tests.unit.test_node import call
from tests.unit.test_reaping import GRACE, make_cluster, states

_rids = itertools.count(1)


def at(cluster: SimCluster, seconds: float) -> int:
    """Epoch ms `seconds` after the cluster's virtual now (the nodes' clocks have no skew)."""
    return int((cluster.now + seconds) * 1000)


def put(cluster, node, key, value, context="", expires=0, delete=False) -> Message:
    message = ClientPut(next(_rids), "b", key, value, context, delete=delete, expires=expires)
    return call(cluster, node, message)


def get(cluster, node, key) -> GetResult:
    reply = call(cluster, node, ClientGet(next(_rids), "b", key))
    assert isinstance(reply, GetResult), reply
    return reply


def test_an_expired_value_reads_as_not_found_on_every_node():
    cluster = make_cluster(3)
    expires = at(cluster, 2.0)
    assert isinstance(put(cluster, "n1", "k", b"v", expires=expires), PutResult)
    first = get(cluster, "n2", "k")
    assert (first.values, first.expires) == ([b"v"], [expires])
    cluster.run_for(2.0)
    for name in cluster.names:
        reply = get(cluster, name, "k")
        assert reply.values == []
        assert reply.context  # the expired value's context: a write after it replaces it


def test_expiry_never_uncovers_the_value_it_replaced():
    cluster = make_cluster(3)
    old = put(cluster, "n1", "k", b"old")
    put(cluster, "n1", "k", b"new", old.context, expires=at(cluster, 1.0))
    cluster.run_for(1.5)
    assert get(cluster, "n1", "k").values == []
    assert get(cluster, "n3", "k").values == []


def test_a_concurrent_sibling_outlives_its_expired_sibling():
    cluster = make_cluster(3)
    put(cluster, "n1", "k", b"lasting")
    put(cluster, "n2", "k", b"going", expires=at(cluster, 1.0))  # blind: a sibling
    assert sorted(get(cluster, "n1", "k").values) == [b"going", b"lasting"]
    cluster.run_for(1.5)
    reply = get(cluster, "n1", "k")
    assert reply.values == [b"lasting"]
    assert reply.expires == []
    cluster.run_for(2 * GRACE)  # the state never expires as a whole: nothing is deleted
    assert get(cluster, "n1", "k").values == [b"lasting"]


# 40 KB: stored apart from its record (values_apart.py), whose metadata carries the expiry.
@pytest.mark.parametrize("value", [b"v", bytes(range(200)) * 200], ids=["small", "apart"])
def test_an_expired_key_is_deleted_then_reaped_from_every_replica(value):
    cluster = make_cluster(3)
    put(cluster, "n1", "k", value, expires=at(cluster, 1.0))
    cluster.run_for(0.5)
    assert all(s is not None for s in states(cluster, "k").values())
    assert cluster.run_until(
        lambda: all(s is None for s in states(cluster, "k").values()), limit=GRACE + 60.0
    ), states(cluster, "k")
    assert sum(cluster.nodes[n].reaper.stats.expired for n in cluster.names) >= 1
    assert get(cluster, "n2", "k").values == []
    for name in cluster.names:  # no value stored apart is left behind
        assert list(cluster.nodes[name].store.engine.scan(b"", b"", VALUES)) == []


def test_the_deletion_of_an_expired_value_spares_a_write_it_did_not_see():
    cluster = make_cluster(3)
    first = put(cluster, "n1", "k", b"v1", expires=at(cluster, 1.0))
    cluster.run_for(1.5)  # expired; the sweep deletes it with v1's context
    put(cluster, "n2", "k", b"v2", first.context)  # written after a read of v1
    cluster.run_for(2 * GRACE)
    assert get(cluster, "n3", "k").values == [b"v2"]
    assert all(
        s is not None and [x.value for x in versions.live_values(s)] == [b"v2"]
        for s in states(cluster, "k").values()
    )


def test_a_refreshed_lifetime_replaces_the_old_one():
    cluster = make_cluster(3)
    first = put(cluster, "n1", "k", b"v", expires=at(cluster, 1.0))
    put(cluster, "n1", "k", b"v", first.context, expires=at(cluster, 30.0))
    cluster.run_for(5.0)
    assert get(cluster, "n2", "k").values == [b"v"]
    third = get(cluster, "n2", "k")
    put(cluster, "n1", "k", b"v", third.context)  # PERSIST: written back without one
    cluster.run_for(40.0)
    assert get(cluster, "n3", "k").values == [b"v"]


def test_an_expiry_no_record_can_hold_is_refused_and_the_node_serves_on():
    cluster = make_cluster(3)
    reply = put(cluster, "n1", "k", b"v", expires=-5)
    assert isinstance(reply, ErrorReply) and reply.code == "invalid_request", reply
    assert isinstance(put(cluster, "n1", "k", b"v"), PutResult)
