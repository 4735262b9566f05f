"""The coordinator alone: client gets and puts in, replica requests and results out."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core.bugs import NO_BUGS
from dynakv.core.coordinator import Coordinator
from dynakv.core.minting import Minter
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
    sends,
    state_of,
)


def coordinator(p: Parts) -> Coordinator:
    minter = Minter(p.engine, f"{p.config.name}@inc0")
    hlc = versions.HybridClock()
    return Coordinator(p.context, p.store, p.hints, p.engine, minter, hlc, NO_BUGS)


def test_a_get_reads_its_own_copy_and_asks_r_minus_one_more_replica():
    p = parts("n1")
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    effects = c.on_get(0.0, "#c", ClientGet(7, "b", key))
    asked = sends(effects, ReplicaGet)
    assert len(asked) == 1 and asked[0][0] in p.view.placement("b", key).primaries
    rid = asked[0][1].rid
    effects = c.on_replica_get_reply(0.01, asked[0][0], ReplicaGetReply(rid, None))
    assert sends(effects, GetResult) == [("#c", GetResult(7, [], [], ""))]


def test_a_get_answers_with_the_merge_of_the_replies_and_repairs_the_stale_replica():
    p = parts("n1", read_fanout="n")
    c = coordinator(p)
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
    c = coordinator(p)
    key = key_placed(p.view, "n1")
    c.on_get(0.0, "#c", ClientGet(7, "b", key, r=2))
    assert c.expire(0.5) == []
    (to, error), = sends(c.expire(1.0), ErrorReply)  # fmt: skip
    assert to == "#c" and error.code == "unavailable" and (error.needed, error.got) == (2, 1)
    assert c.pending() == 0


def test_a_replica_found_down_mid_read_is_replaced_by_a_fallback():
    p = parts("n1", names=NAMES)
    c = coordinator(p)
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
        effects = c.on_get(0.0, "#c", ClientGet(3, "b", key, r=3))
        assert not sends(effects, ErrorReply)
        ((to, sent),) = sends(effects, ReplicaGet)
        effects = c.on_replica_get_reply(0.01, to, ReplicaGetReply(sent.rid, None))
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
        c.on_get(0.0, "#c", ClientGet(3, "b\0x", "k"))


def test_rids_come_from_the_shared_counter():
    p = parts("n1", names=NAMES)
    c = coordinator(p)
    first = p.ids.upcoming
    c.on_get(0.0, "#c", ClientGet(7, "b", key_placed(p.view, "n1"), r=2))
    assert p.ids.upcoming == first + 1
