"""The coordinators and replica logic of core.Node, driven through Node.handle (no sockets).

Several real Nodes run in a SimCluster: an in-memory network on a virtual clock.
"""

from __future__ import annotations

import dataclasses
import itertools

import msgspec
import pytest

from dynakv import versions
from dynakv.config import BucketProps
from dynakv.core.events import Received
from dynakv.core.membership import MemberRecord
from dynakv.messages import (
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    Gossip,
    JoinReply,
    JoinRequest,
    Message,
    PutResult,
)
from dynakv.sim.cluster import SimCluster, default_config

_rids = itertools.count(1)


def make_cluster(n: int = 3, seed: int = 1, **config: object) -> SimCluster:
    def configure(name: str):
        return dataclasses.replace(default_config(name), **config)

    cluster = SimCluster([f"n{i}" for i in range(1, n + 1)], seed=seed, config=configure)
    assert cluster.run_until(lambda: all(_settled(node, n) for node in cluster.nodes.values()))
    return cluster


def _settled(node, n: int) -> bool:
    """The node's installed ring has all n members and no transfer is under way."""
    return len(node.ring.members()) == n and node.state.ring.next is None


def call(cluster: SimCluster, node: str, message: Message, client: str = "#client") -> Message:
    cluster.request(node, client, message)
    rid = message.rid  # type: ignore[attr-defined]

    def answered() -> bool:
        return any(getattr(m, "rid", None) == rid for m in cluster.inbox.get(client, []))

    assert cluster.run_until(answered), f"no reply to {message!r}"
    replies = cluster.inbox[client]
    reply = next(m for m in replies if getattr(m, "rid", None) == rid)
    replies.remove(reply)
    return reply


def put(cluster, node, bucket, key, value, context="", **kw) -> Message:
    return call(cluster, node, ClientPut(next(_rids), bucket, key, value, context, **kw))


def get(cluster, node, bucket, key, **kw) -> Message:
    return call(cluster, node, ClientGet(next(_rids), bucket, key, **kw))


def replicas_of(cluster: SimCluster, bucket: str, key: str) -> list[str]:
    return next(iter(cluster.nodes.values())).placement(bucket, key).primaries


def test_join_gives_every_node_the_same_ring():
    cluster = make_cluster(3)
    states = {node.state for node in cluster.nodes.values()}
    assert len(states) == 1
    state = states.pop()
    assert sorted(m.name for m in state.members) == ["n1", "n2", "n3"]
    assert sorted(state.ring.ring.ownership().values()) == [21, 21, 22]


def test_write_through_one_node_read_through_another():
    cluster = make_cluster(3)
    assert isinstance(put(cluster, "n1", "carts", "alice", b"apple"), PutResult)
    reply = get(cluster, "n3", "carts", "alice")
    assert isinstance(reply, GetResult)
    assert reply.values == [b"apple"]
    for name in replicas_of(cluster, "carts", "alice"):
        assert cluster.nodes[name].replica("carts", "alice") is not None


def test_blind_writes_become_siblings_and_a_put_with_the_context_resolves_them():
    cluster = make_cluster(3)
    put(cluster, "n1", "carts", "bob", b"apple")
    put(cluster, "n2", "carts", "bob", b"pear")
    reply = get(cluster, "n3", "carts", "bob")
    assert sorted(reply.values) == [b"apple", b"pear"]
    put(cluster, "n3", "carts", "bob", b"apple+pear", reply.context)
    assert get(cluster, "n1", "carts", "bob").values == [b"apple+pear"]


def test_a_put_beside_siblings_returns_the_context_it_was_given_not_one_covering_them():
    cluster = make_cluster(3)
    put(cluster, "n1", "carts", "bob", b"apple")
    blind = put(cluster, "n2", "carts", "bob", b"pear")
    assert blind.context == ""  # it saw nothing: a put with it keeps both as siblings
    put(cluster, "n2", "carts", "bob", b"plum", blind.context)
    assert sorted(get(cluster, "n3", "carts", "bob").values) == [b"apple", b"pear", b"plum"]


def test_a_put_after_a_delete_returns_a_context_that_replaces_it():
    cluster = make_cluster(3)
    put(cluster, "n1", "b", "k", b"old")
    call(cluster, "n1", ClientPut(next(_rids), "b", "k", b"", delete=True))
    fresh = put(cluster, "n2", "b", "k", b"new")  # blind, beside the tombstone
    assert fresh.context != ""
    put(cluster, "n3", "b", "k", b"newer", fresh.context)
    assert get(cluster, "n1", "b", "k").values == [b"newer"]


def test_put_with_read_context_replaces_the_value_it_saw():
    cluster = make_cluster(3)
    first = put(cluster, "n1", "k", "x", b"v1")
    put(cluster, "n2", "k", "x", b"v2", first.context)
    assert get(cluster, "n3", "k", "x").values == [b"v2"]


def test_write_and_read_succeed_with_one_replica_down():
    cluster = make_cluster(3)
    cluster.crash("n3")
    assert isinstance(put(cluster, "n1", "b", "k", b"v"), PutResult)
    assert get(cluster, "n2", "b", "k").values == [b"v"]


def test_too_few_replicas_gives_unavailable_with_counts():
    cluster = make_cluster(3)
    cluster.crash("n2")
    cluster.crash("n3")
    reply = put(cluster, "n1", "b", "k", b"v")
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.needed, reply.got) == ("unavailable", 2, 1)
    reply = get(cluster, "n1", "b", "k")
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.needed, reply.got) == ("unavailable", 2, 1)


def test_silent_replicas_time_out_as_unavailable():
    cluster = make_cluster(3)
    cluster.cut("n1", "n2")
    cluster.cut("n1", "n3")
    started = cluster.now
    reply = put(cluster, "n1", "b", "k", b"v")
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.needed, reply.got) == ("unavailable", 2, 1)
    assert cluster.now - started >= cluster.nodes["n1"].config.request_timeout


def test_read_repair_brings_a_restarted_replica_up_to_date():
    cluster = make_cluster(3)
    cluster.crash("n3")
    put(cluster, "n1", "b", "k", b"v")
    assert cluster.nodes["n3"].replica("b", "k") is None
    cluster.start("n3")
    cluster.run_for(2.0)
    assert get(cluster, "n1", "b", "k").values == [b"v"]
    cluster.run_for(1.0)
    repaired = cluster.nodes["n3"].replica("b", "k")
    assert repaired is not None
    assert [s.value for s in versions.live_values(repaired)] == [b"v"]


def test_delete_then_get_is_not_found_with_a_context():
    cluster = make_cluster(3)
    put(cluster, "n1", "b", "k", b"v")
    context = get(cluster, "n2", "b", "k").context
    reply = call(cluster, "n2", ClientPut(next(_rids), "b", "k", b"", context, delete=True))
    assert isinstance(reply, PutResult)
    after = get(cluster, "n3", "b", "k")
    assert after.values == []
    assert after.context != ""  # the tombstone's context is still there


def test_delete_without_context_removes_what_the_coordinator_saw():
    cluster = make_cluster(3)
    put(cluster, "n1", "b", "k", b"v")
    call(cluster, "n1", ClientPut(next(_rids), "b", "k", b"", delete=True))
    assert get(cluster, "n2", "b", "k").values == []


def test_a_node_outside_the_preference_list_forwards_puts():
    cluster = make_cluster(5)
    key = next(f"key{i}" for i in range(1000) if "n5" not in replicas_of(cluster, "b", f"key{i}"))
    reply = put(cluster, "n5", "b", key, b"v")
    assert isinstance(reply, PutResult)
    assert cluster.nodes["n5"].replica("b", key) is None
    assert get(cluster, "n5", "b", key).values == [b"v"]


def test_acknowledged_write_survives_a_crash_of_its_coordinator():
    cluster = make_cluster(3)
    key = "k"
    coordinator = replicas_of(cluster, "b", key)[0]
    assert isinstance(put(cluster, coordinator, "b", key, b"v"), PutResult)
    cluster.crash(coordinator)
    cluster.start(coordinator)
    assert cluster.nodes[coordinator].replica("b", key) is not None


def test_a_clean_restart_keeps_the_incarnation_and_a_crash_renews_it():
    cluster = make_cluster(3)
    actor = cluster.nodes["n1"].actor
    cluster.nodes["n1"].shutdown()
    cluster.engines["n1"].commit()
    cluster.crash("n1")
    cluster.start("n1")
    assert cluster.nodes["n1"].actor == actor  # its dots continue
    # Unclean, under fsync durability too: writes whose dots reached peers may be lost here.
    assert cluster.nodes["n1"].config.durability == "fsync"
    cluster.crash("n1")
    cluster.start("n1")
    assert cluster.nodes["n1"].actor != actor
    assert cluster.nodes["n1"].actor.startswith("n1@")


def test_lww_bucket_keeps_one_value():
    def config(name):
        return dataclasses.replace(default_config(name), buckets={"reg": BucketProps(policy="lww")})

    cluster = SimCluster(["n1", "n2", "n3"], seed=3, config=config)
    cluster.run_until(lambda: all(_settled(node, 3) for node in cluster.nodes.values()))
    put(cluster, "n1", "reg", "x", b"first")
    cluster.run_for(0.01)
    put(cluster, "n2", "reg", "x", b"second")
    assert get(cluster, "n3", "reg", "x").values == [b"second"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (ClientGet(1, "", "k"), "invalid_request"),
        (ClientGet(1, "b", ""), "invalid_request"),
        (ClientGet(1, "b" * 256, "k"), "invalid_request"),
        (ClientGet(1, "b", "k" * 1025), "invalid_request"),
        (ClientGet(1, "b\0", "k"), "invalid_request"),
        (ClientGet(1, "b", "k", r=4), "invalid_request"),
        (ClientGet(1, "b", "k", r=0), "invalid_request"),
        (ClientPut(1, "b", "k", b"v", w=0), "invalid_request"),
        (ClientPut(1, "b", "k", b"v", w=9), "invalid_request"),
        (ClientPut(1, "b", "k", b"v", context="not base64 at all!"), "invalid_request"),
        (ClientPut(1, "b", "k", b"x" * ((1 << 20) + 1)), "value_too_large"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_node_keeps_serving(message, code):
    cluster = make_cluster(3)
    reply = call(cluster, "n1", message)
    assert isinstance(reply, ErrorReply)
    assert reply.code == code
    assert reply.message
    assert isinstance(put(cluster, "n1", "b", "k", b"still fine"), PutResult)


def test_a_value_of_exactly_the_limit_is_accepted():
    cluster = make_cluster(3)
    assert isinstance(put(cluster, "n1", "b", "big", b"x" * (1 << 20)), PutResult)
    assert get(cluster, "n2", "b", "big").values == [b"x" * (1 << 20)]


def test_join_from_another_cluster_is_refused_and_the_ring_is_unchanged():
    cluster = make_cluster(3)
    before = cluster.nodes["n1"].state
    stranger = MemberRecord("x", "x:7000", "x:8000", "0000", "joining", 0)
    reply = call(cluster, "n1", JoinRequest(77, stranger, "other"))
    assert isinstance(reply, ErrorReply)
    assert reply.code == "cluster_error"
    assert cluster.nodes["n1"].state == before


def test_join_with_a_name_in_use_by_a_live_member_is_refused():
    cluster = make_cluster(3)
    before = cluster.nodes["n1"].state
    impostor = MemberRecord("n2", "elsewhere:7000", "elsewhere:8000", "0000", "joining", 0)
    reply = call(cluster, "n1", JoinRequest(78, impostor, "dynakv"))
    assert isinstance(reply, ErrorReply)
    assert reply.code == "cluster_error"
    assert cluster.nodes["n1"].state == before


def test_gossip_from_another_cluster_is_ignored():
    cluster = make_cluster(3)
    before = cluster.nodes["n1"].state
    foreign = msgspec.structs.replace(before, cluster="other")
    cluster.deliver("n1", Received("x", Gossip(foreign)))
    cluster.run_for(0.1)
    assert cluster.nodes["n1"].state == before


def test_rejoin_under_the_same_address_keeps_the_ring():
    cluster = make_cluster(3)
    before = cluster.nodes["n1"].state
    again = MemberRecord("n3", "n3:7000", "n3:8000", "feedbeef", "joining", 0)
    reply = call(cluster, "n1", JoinRequest(79, again, "dynakv"))
    assert isinstance(reply, JoinReply)
    assert reply.state.ring.ring == before.ring.ring
    record = next(m for m in reply.state.members if m.name == "n3")
    assert (record.incarnation, record.status) == ("feedbeef", "up")


def _key_with_primaries(cluster: SimCluster, wanted_first: str) -> str:
    return next(
        f"key{i}" for i in range(10_000) if replicas_of(cluster, "b", f"key{i}")[0] == wanted_first
    )


def test_writes_succeed_with_two_of_three_primaries_down_and_hints_drain_on_return():
    cluster = make_cluster(5)
    key = _key_with_primaries(cluster, "n1")
    primaries = replicas_of(cluster, "b", key)
    down = primaries[1:]
    for name in down:
        cluster.crash(name)
    contexts = []
    for i in range(5):
        reply = put(cluster, "n1", "b", key, f"v{i}".encode(), contexts[-1] if contexts else "")
        assert isinstance(reply, PutResult), reply
        contexts.append(reply.context)
    assert get(cluster, "n1", "b", key).values == [b"v4"]
    holders = [n for n in cluster.nodes if n not in primaries]
    hinted = {p for n in holders for p in cluster.nodes[n].hints.per_primary}
    assert hinted == set(down)
    for name in down:
        cluster.start(name)
    assert cluster.run_until(
        lambda: all(node.hints.pending() == 0 for node in cluster.nodes.values()), limit=30
    )
    for name in primaries:
        state = cluster.nodes[name].replica("b", key)
        assert state is not None
        assert [s.value for s in versions.live_values(state)] == [b"v4"]


def test_a_replica_found_down_mid_write_is_replaced_by_a_fallback():
    cluster = make_cluster(5)
    key = _key_with_primaries(cluster, "n1")
    primaries = replicas_of(cluster, "b", key)
    cluster.crash(primaries[1])
    cluster.crash(primaries[2])
    # n1 does not know yet: the PeerDowns arrive while the put is in flight.
    assert not cluster.nodes["n1"].down
    assert isinstance(put(cluster, "n1", "b", key, b"v", w=3), PutResult)


def test_hints_older_than_the_window_are_dropped_and_counted():
    cluster = make_cluster(5, hint_window=5.0)
    key = _key_with_primaries(cluster, "n1")
    primaries = replicas_of(cluster, "b", key)
    cluster.crash(primaries[2])
    assert isinstance(put(cluster, "n1", "b", key, b"v"), PutResult)
    assert sum(node.hints.pending() for node in cluster.nodes.values()) == 1
    cluster.run_for(70.0)
    assert sum(node.hints.pending() for node in cluster.nodes.values()) == 0
    assert sum(node.hints_dropped for node in cluster.nodes.values()) == 1
    assert any(log.event == "hint_dropped" for _, _, log in cluster.logs)


def test_a_fallback_over_its_hint_budget_refuses_the_write():
    cluster = make_cluster(5, hint_budget_bytes=10)
    key = _key_with_primaries(cluster, "n1")
    primaries = replicas_of(cluster, "b", key)
    cluster.crash(primaries[1])
    cluster.crash(primaries[2])
    reply = put(cluster, "n1", "b", key, b"a value larger than ten bytes")
    assert isinstance(reply, ErrorReply)
    assert reply.code == "unavailable"
    assert sum(node.hints.pending() for node in cluster.nodes.values()) == 0


def test_phi_accrual_suspects_a_silent_primary_and_writes_go_to_a_fallback():
    cluster = make_cluster(5)
    key = _key_with_primaries(cluster, "n1")
    silent = replicas_of(cluster, "b", key)[2]
    cluster.cut("n1", silent)  # no PeerDown: only missing heartbeats tell
    cluster.run_for(10.0)
    assert silent in cluster.nodes["n1"].liveness.suspected
    assert any(
        log.event == "peer_suspected" and log.fields["peer"] == silent
        for _, name, log in cluster.logs
        if name == "n1"
    )
    assert isinstance(put(cluster, "n1", "b", key, b"v", w=3), PutResult)
    assert sum(node.hints.per_primary.get(silent, 0) for node in cluster.nodes.values()) == 1
    cluster.heal()
    cluster.run_for(5.0)
    assert silent not in cluster.nodes["n1"].down
    assert cluster.run_until(
        lambda: all(node.hints.pending() == 0 for node in cluster.nodes.values()), limit=30
    )
    state = cluster.nodes[silent].replica("b", key)
    assert state is not None and [s.value for s in versions.live_values(state)] == [b"v"]


def _corrupt(cluster: SimCluster, name: str, bucket: str, key: str) -> None:
    from dynakv.ring import key_digest

    engine = cluster.engines[name]
    digest = key_digest(bucket, key)
    raw = bytearray(engine.get(digest))
    raw[len(raw) // 2] ^= 0xFF
    engine.put(digest, bytes(raw))
    engine.commit()


def test_a_corrupt_copy_is_reported_read_as_missing_and_repaired():
    cluster = make_cluster(3)
    put(cluster, "n1", "b", "k", b"precious")
    _corrupt(cluster, "n2", "b", "k")
    assert cluster.nodes["n2"].replica("b", "k") is None  # corrupt reads as missing
    cluster.run_for(1.0)
    assert get(cluster, "n3", "b", "k").values == [b"precious"]
    cluster.run_for(1.0)
    repaired = cluster.nodes["n2"].replica("b", "k")
    assert repaired is not None
    assert [s.value for s in versions.live_values(repaired)] == [b"precious"]
    assert cluster.nodes["n2"].store.corrupt_total >= 1
    assert any(log.event == "corrupt_record" for _, name, log in cluster.logs if name == "n2")


def test_a_coordinator_with_a_corrupt_copy_hands_the_put_to_another_replica():
    cluster = make_cluster(3)
    first = put(cluster, "n1", "b", "k", b"v1")
    _corrupt(cluster, "n1", "b", "k")
    reply = put(cluster, "n1", "b", "k", b"v2", first.context)
    assert isinstance(reply, PutResult)
    cluster.run_for(1.0)
    assert get(cluster, "n2", "b", "k", r=3).values == [b"v2"]
