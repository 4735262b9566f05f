"""The gossiper alone: joins, gossip and operators' changes in, membership and effects out."""

from __future__ import annotations

import random

import pytest

from dynakv.core import membership as ms
from dynakv.core.component import Context
from dynakv.core.failure import Liveness
from dynakv.core.gossip import Gossiper, load_membership, member_record
from dynakv.core.view import ClusterView, RequestIds
from dynakv.errors import ClusterError, InvalidRequest
from dynakv.messages import (
    ClientClusterChange,
    ClusterInfo,
    Gossip,
    JoinReply,
    JoinRequest,
)
from dynakv.storage.memory import MemoryEngine
from tests.unit.components import Parts, formed, parts, record, sends


def gossiper(p: Parts) -> Gossiper:
    liveness = Liveness(p.context)
    return Gossiper(p.context, liveness, member_record(p.config, "inc0"), random.Random(1))


def alone(name: str = "n1") -> tuple[Gossiper, ClusterView, MemoryEngine]:
    p = parts(name)
    engine = MemoryEngine()
    me = member_record(p.config, "inc0")
    view = ClusterView(p.config, engine, load_membership(engine, p.config, me))
    context = Context(p.config, view, RequestIds(1), [])
    return Gossiper(context, Liveness(context), me, random.Random(1)), view, engine


def test_a_node_started_without_join_founds_a_cluster_and_persists_it():
    g, view, engine = alone()
    assert view.epoch == 0
    assert g.start(0.0, None) == []  # no peers to tell
    assert view.epoch == 1 and view.ring.members() == ["n1"]
    assert ms.decode(engine.meta_get("membership") or b"") == view.state
    assert [log.event for log in g.logs] == ["cluster_created"]


def test_a_node_started_with_join_asks_and_asks_again_until_answered():
    g, view, _ = alone()
    (to, request), = sends(g.start(0.0, "n9:7000"))  # fmt: skip
    assert to == "@n9:7000" and isinstance(request, JoinRequest)
    assert g.retry_join(1.0) == []
    assert sends(g.retry_join(2.0), JoinRequest)
    founded = formed(["n9", "n1"])
    g.on_join_reply(2.1, "n9", JoinReply(request.rid, founded))
    assert view.epoch == founded.ring.epoch and g.retry_join(10.0) == []


def test_a_join_from_another_cluster_is_refused():
    g = gossiper(parts("n1"))
    with pytest.raises(ClusterError):
        g.on_join_request(0.0, "@x", JoinRequest(1, record("n9"), "other"))


def test_a_join_is_answered_with_the_state_and_gossiped_to_every_member():
    p = parts("n1")
    g = gossiper(p)
    effects = g.on_join_request(0.0, "@n4:7000", JoinRequest(1, record("n4"), "dynakv"))
    assert ms.member(p.view.state, "n4") is not None
    assert {to for to, _ in sends(effects, Gossip)} >= {"n2", "n3"}
    (to, reply), = sends(effects, JoinReply)  # fmt: skip
    assert to == "@n4:7000" and ms.member(reply.state, "n4") is not None


def test_the_claimant_plans_a_transfer_when_a_joiner_changes_ownership():
    p = parts("n1")
    g = gossiper(p)
    g.on_join_request(0.0, "@n4:7000", JoinRequest(1, record("n4"), "dynakv"))
    assert p.view.state.ring.next is not None  # n1 is the claimant (lowest name)
    assert any(log.event == "transfer_planned" for log in p.logs)


def test_gossip_from_another_cluster_is_logged_and_ignored():
    p = parts("n1")
    g = gossiper(p)
    before = p.view.state
    assert g.on_gossip(0.0, "n9", Gossip(formed(["n9"], cluster="other"))) == []
    assert p.view.state is before and p.logs[-1].event == "foreign_gossip"


def test_gossip_answers_a_peer_that_knows_less():
    p = parts("n1")
    g = gossiper(p)
    stale = formed(["n1", "n2"])
    assert sends(g.on_gossip(0.0, "n2", Gossip(stale)), Gossip) == [("n2", Gossip(p.view.state))]


def test_removing_a_member_that_is_up_is_refused_and_an_unknown_change_too():
    p = parts("n1")
    g = gossiper(p)
    with pytest.raises(ClusterError):
        g.on_cluster_change(0.0, "#c", ClientClusterChange(1, "remove", "n2"))
    with pytest.raises(InvalidRequest):
        g.on_cluster_change(0.0, "#c", ClientClusterChange(1, "explode", "n2"))
    p.view.down = {"n2"}
    effects = g.on_cluster_change(0.0, "#c", ClientClusterChange(1, "remove", "n2"))
    (to, info), = sends(effects, ClusterInfo)  # fmt: skip
    assert to == "#c" and ms.member(info.state, "n2").status == "removed"  # type: ignore[union-attr]
