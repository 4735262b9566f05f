"""The coordinators alone (core/read_coordinator.py for gets, core/coordinator.py for puts):
client requests in, replica requests and results out."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core import membership as ms
from dynakv.core import moves as mv
from dynakv.core.bugs import NO_BUGS
from dynakv.core.coordinator import Coordinator
from dynakv.core.minting import Minter
from dynakv.core.read_coordinator import ReadCoordinator
from dynakv.errors import InvalidRequest, ValueTooLarge
from dynakv.messages import (
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    PutResult,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
)
from tests.unit.components import (
    NAMES,
    Parts,
    key_not_replicated_by,
    key_placed,
    parts,
    record,
    sends,
    state_of,
)


def coordinator(p: Parts) -> Coordinator:
    minter = Minter(p.engine, f"{p.config.name}@inc0")
    hlc = versions.HybridClock()
    return Coordinator(p.context, p.store, p.hints, p.engine, minter, hlc, NO_BUGS)


def reads(p: Parts) -> ReadCoordinator:
    return ReadCoordinator(p.context, p.store, NO_BUGS)


def test_a_get_reads_its_own_copy_and_asks_r_minus_one_more_replica():
    p = parts("n1")
    c = reads(p)
    key = key_placed(p.view, "n1")
    effects = c.on_get(0.0, "#c", ClientGet(7, "b", key))
    asked = sends(effects, ReplicaGet)
    assert len(asked) == 1 and asked[0][0] in p.view.placement("b", key).primaries
    rid = asked[0][1].rid
    effects = c.on_replica_get_reply(0.01, asked[0][0], ReplicaGetReply(rid, None))
    assert sends(effects, GetResult) == [("#c", GetResult(7, [], [], ""))]


def test_a_get_answers_with_the_merge_of_the_replies_and_repairs_the_stale_replica():
    p = parts("n1", read_fanout="n")
    c = reads(p)
    key = key_placed(p.view, "n1")
    effects = c.on_get(0.0, "#c", ClientGet(7, "b", key, r=2))
    (a, first), (b, _) = sends(effects, ReplicaGet)
    c.on_replica_get_reply(0.01, a, ReplicaGetReply(first.rid, state_of(b"v")))
    # R=2 reached (own copy missing + one with v): the client gets v; the last reply is awaited
    effects = c.on_replica_get_reply(0.01, b, ReplicaGetReply(first.rid, None))
    repairs = sends(effects, ReplicaPut)
    assert b in {to for to, _ in repairs}
    assert p.store.get("b", key) is not None  # this node's own missing copy repaired too


def test_a_get_whose_replicas_fall_silent_answers_unavailable_at_its_deadline():
    p = parts("n1", request_timeout=1.0)
    c = reads(p)
    key = key_placed(p.view, "n1")
    c.on_get(0.0, "#c", ClientGet(7, "b", key, r=2))
    assert c.expire(0.5) == []
    (to, error), = sends(c.expire(1.0), ErrorReply)  # fmt: skip
    assert to == "#c" and error.code == "unavailable" and (error.needed, error.got) == (2, 1)
    assert c.pending() == 0


def test_a_replica_found_down_mid_read_is_replaced_by_a_fallback():
    p = parts("n1", names=NAMES)
    c = reads(p)
    key = key_placed(p.view, "n1")
    effects = c.on_get(0.0, "#c", ClientGet(7, "b", key, r=3))
    asked = sends(effects, ReplicaGet)
    gone = asked[0][0]
    p.view.down = {gone}
    fallback = sends(c.peer_down(gone), ReplicaGet)
    assert len(fallback) == 1
    assert fallback[0][0] not in p.view.placement("b", key).primaries


def test_a_put_stores_locally_and_sends_the_state_to_the_other_replicas():
    p = parts("n1")
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    effects = c.on_put(0.0, "#c", ClientPut(3, "b", key, b"v"))
    replicas = sends(effects, ReplicaPut)
    assert sorted(to for to, _ in replicas) == sorted(
        n for n in p.view.placement("b", key).primaries if n != "n1"
    )
    assert [s.value for s in versions.values(p.store.get("b", key))] == [b"v"]
    to, message = replicas[0]
    effects = c.on_put_ack(0.01, to, ReplicaPutReply(message.rid))
    (client, result), = sends(effects, PutResult)  # fmt: skip
    assert client == "#c" and result.rid == 3 and result.context


def test_a_put_for_a_key_this_node_does_not_replicate_is_forwarded_and_answered_back():
    p = parts("n1", names=NAMES)
    c = coordinator(p)
    key = key_not_replicated_by(p.view, "n1")
    (to, forwarded), = sends(c.on_put(0.0, "#c", ClientPut(3, "b", key, b"v")))  # fmt: skip
    assert isinstance(forwarded, ClientPut) and forwarded.hops == 1
    assert to == p.view.placement("b", key).primaries[0]
    answer = c.on_forward_reply(0.1, to, PutResult(forwarded.rid, "ctx"))
    assert sends(answer) == [("#c", PutResult(3, "ctx"))]


def test_a_forwarded_put_delivered_twice_is_coordinated_once():
    p = parts("n1")
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    put = ClientPut(41, "b", key, b"once", hops=1)
    assert sends(c.on_put(0.0, "n2", put), ReplicaPut)
    assert c.on_put(0.1, "n2", put) == []


def test_a_put_with_a_down_primary_sends_a_hinted_copy_to_a_fallback():
    p = parts("n1", names=NAMES)
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    primaries = p.view.placement("b", key).primaries
    p.view.down = {primaries[1]}
    hinted = [m for _, m in sends(c.on_put(0.0, "#c", ClientPut(3, "b", key, b"v")), ReplicaPut)]
    assert [m.hint for m in hinted if m.hint] == [primaries[1]]


@pytest.mark.parametrize("op", ["put", "get"])
def test_a_quorum_that_cannot_be_met_counts_every_replica_that_answered(op):
    p = parts("n1")  # three members, N=3: w or r "all" with one of them down
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    down, up = [n for n in p.view.placement("b", key).primaries if n != "n1"]
    p.view.down = {down}
    if op == "put":
        effects = c.on_put(0.0, "#c", ClientPut(3, "b", key, b"v", w=3))
        assert not sends(effects, ErrorReply)  # not before the replica still up answers
        ((to, sent),) = sends(effects, ReplicaPut)
        effects = c.on_put_ack(0.01, to, ReplicaPutReply(sent.rid))
    else:
        reader = reads(p)
        effects = reader.on_get(0.0, "#c", ClientGet(3, "b", key, r=3))
        assert not sends(effects, ErrorReply)
        ((to, sent),) = sends(effects, ReplicaGet)
        effects = reader.on_replica_get_reply(0.01, to, ReplicaGetReply(sent.rid, None))
    assert to == up
    ((client, error),) = sends(effects, ErrorReply)
    assert client == "#c" and error.code == "unavailable"
    assert (error.needed, error.got) == (3, 2)  # not "got 1" with two up


def test_bad_puts_are_refused_with_clear_errors():
    p = parts("n1", max_value_bytes=10)
    c = coordinator(p)
    with pytest.raises(ValueTooLarge):
        c.on_put(0.0, "#c", ClientPut(3, "b", "k", b"x" * 11))
    with pytest.raises(InvalidRequest):
        c.on_put(0.0, "#c", ClientPut(3, "b", "k", b"v", w=4))
    with pytest.raises(InvalidRequest):
        reads(p).on_get(0.0, "#c", ClientGet(3, "b\0x", "k"))


def test_rids_come_from_the_shared_counter():
    p = parts("n1", names=NAMES)
    c = reads(p)
    first = p.ids.upcoming
    c.on_get(0.0, "#c", ClientGet(7, "b", key_placed(p.view, "n1"), r=2))
    assert p.ids.upcoming == first + 1


# --- while a transfer changes a key's replicas: a level is met in both lists ---------------

THREE = NAMES[:3]


def in_transfer(name: str, done: bool, **config: object) -> Parts:
    """Node `name` of n1-n3 while n4 joins: the transfer planned and, if `done`, every
    move finished as far as this node has heard (ring.next not installed yet)."""
    p = parts(name, names=THREE, **config)
    state = ms.request_join(p.view.state, record("n4"))
    plan = ms.plan_ring(state)
    assert plan is not None
    p.view.adopt(ms.start_transfer(state, plan, "n1"))
    if done:
        for partition, node in p.view.pending_moves_list():
            p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    return p


def moved_key() -> tuple[str, list[str], list[str]]:
    """A key of bucket b whose primaries n4's join changes: (key, old ones, new ones)."""
    record_ = in_transfer("n1", False).view.state.ring
    for key in (f"k{i}" for i in range(500)):
        partition = record_.ring.partition("b", key)
        old, new = record_.ring.walk(partition)[:3], record_.next.walk(partition)[:3]
        if set(old) != set(new):
            return key, old, new
    raise AssertionError("no key moves")


def test_a_write_acknowledged_where_a_transfer_is_done_is_read_where_it_is_pending():
    # x counts W=2 over the new primaries, y R=2 over the old: {x, d} and {y, a} are
    # disjoint unless each of them needs its count in both lists.
    key, old, new = moved_key()
    x = next(n for n in old if n in new)
    y = next(n for n in old if n not in new)
    (a,) = set(old) - {x, y}
    (d,) = set(new) - set(old)
    writer = coordinator(in_transfer(x, done=True))
    effects = writer.on_put(0.0, "#w", ClientPut(1, "b", key, b"v", w=2))
    sent = {to for to, _ in sends(effects, ReplicaPut)}
    rid = sends(effects, ReplicaPut)[0][1].rid
    acknowledged = sends(writer.on_put_ack(0.01, d, ReplicaPutReply(rid)), PutResult)
    reader = reads(in_transfer(y, done=False, read_fanout="n"))
    asked = sends(reader.on_get(0.0, "#r", ClientGet(2, "b", key, r=2)), ReplicaGet)
    answer = sends(reader.on_replica_get_reply(0.01, a, ReplicaGetReply(asked[0][1].rid, None)))
    assert not (acknowledged and answer == [("#r", GetResult(2, [], [], ""))])
    assert not acknowledged and not answer  # each waits for the other list
    assert sent == {y, a, d} and d in {to for to, _ in asked}  # both lists are asked
    # a's ack gives the write 2 of the old list too; d's answer gives the read 2 of the new.
    assert sends(writer.on_put_ack(0.02, a, ReplicaPutReply(rid)), PutResult)
    stored = writer.store.get_encoded("b", key)[1]
    answer = reader.on_replica_get_reply(0.02, d, ReplicaGetReply(asked[0][1].rid, stored))
    ((_, result),) = sends(answer, GetResult)
    assert result.values == [b"v"]


def test_a_get_during_a_transfer_asks_every_replica_of_both_lists():
    key, old, new = moved_key()
    y = next(n for n in old if n not in new)
    reader = reads(in_transfer(y, done=False))
    asked = {to for to, _ in sends(reader.on_get(0.0, "#r", ClientGet(2, "b", key)), ReplicaGet)}
    assert asked == (set(old) | set(new)) - {y}


def test_once_ring_next_is_installed_only_the_new_replicas_count():
    key, old, new = moved_key()
    x = next(n for n in old if n in new)
    (d,) = set(new) - set(old)
    p = in_transfer(x, done=True)
    p.view.adopt(ms.finish_transfer(p.view.state, "n1"))
    writer = coordinator(p)
    effects = writer.on_put(0.0, "#w", ClientPut(1, "b", key, b"v", w=2))
    assert {to for to, _ in sends(effects, ReplicaPut)} == set(new) - {x}
    rid = sends(effects, ReplicaPut)[0][1].rid
    assert sends(writer.on_put_ack(0.01, d, ReplicaPutReply(rid)), PutResult)
