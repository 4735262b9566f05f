"""The gossiper alone: joins, gossip and operators' changes in, membership and effects out."""

from __future__ import annotations

import random

import msgspec
import pytest

from dynakv import bucket_types as bt
from dynakv.config import BucketProps, NodeConfig
from dynakv.core import membership as ms
from dynakv.core import moves as mv
from dynakv.core.component import Context
from dynakv.core.events import Stop
from dynakv.core.failure import Liveness
from dynakv.core.gossip import Gossiper, load_membership, member_record
from dynakv.core.view import ClusterView, RequestIds
from dynakv.errors import ClusterError, InvalidRequest
from dynakv.messages import (
    ClientBucketChange,
    ClientClusterChange,
    ClusterInfo,
    ErrorReply,
    Gossip,
    JoinReply,
    JoinRequest,
)
from dynakv.storage.memory import MemoryEngine
from tests.unit.components import NAMES, Parts, formed, parts, record, sends


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


def test_a_refused_join_stops_the_node_with_a_failure_status():
    g, _, _ = alone()
    g.start(0.0, "n9:7000")
    effects = g.on_error(ErrorReply(0, ClusterError.code, "name 'n1' is in use"))
    assert effects == [Stop("join refused: name 'n1' is in use", status=1)]
    assert [log.event for log in g.logs] == ["join_refused"]


def test_a_cluster_error_after_the_join_does_not_stop_the_node():
    g, _, _ = alone()
    (_, request), = sends(g.start(0.0, "n9:7000"))  # fmt: skip
    g.on_join_reply(0.1, "n9", JoinReply(request.rid, formed(["n9", "n1"])))
    assert g.on_error(ErrorReply(0, ClusterError.code, "a stray refusal")) == []


def test_a_node_that_left_does_not_start_again_on_its_old_data():
    g, view, engine = alone()
    view.adopt(ms.mark_removed(formed(["n1", "n2"]), "n1"))
    p = parts("n1")
    me = member_record(p.config, "inc0")
    restarted = ClusterView(p.config, engine, load_membership(engine, p.config, me))
    context = Context(p.config, restarted, RequestIds(1), [])
    g = Gossiper(context, Liveness(context), me, random.Random(1))
    (stop,) = g.start(0.0, "n2:7000")
    assert isinstance(stop, Stop) and stop.status == 1
    assert "delete" in stop.reason and p.config.data_dir in stop.reason
    assert [log.event for log in g.logs] == ["left_cluster_earlier"]


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


# --- bucket types --------------------------------------------------------------------------


def test_a_bucket_type_change_spreads_by_gossip_and_is_answered_once_every_member_holds_it():
    nodes = {name: parts(name) for name in ("n1", "n2", "n3")}
    gossipers = {name: gossiper(p) for name, p in nodes.items()}
    change = ClientBucketChange(1, "carts", {"n": 2, "r": "one", "policy": "lww"}, "create")
    effects = gossipers["n2"].on_bucket_change(0.0, "#c", change)
    assert sends(effects, ClusterInfo) == []  # not yet: n1 and n3 have not heard of it
    assert nodes["n2"].view.bucket("carts").r == 1
    assert nodes["n2"].logs[-1].event == "bucket_type_set"
    answers = []
    for peer, message in sends(effects, Gossip):  # n2 tells every member at once
        back = sends(gossipers[peer].on_gossip(0.1, "n2", message), Gossip)
        assert [to for to, _ in back] == ["n2"]  # each says it holds the type now
        answers += sends(gossipers["n2"].on_gossip(0.2, peer, back[0][1]), ClusterInfo)
    (to, info), = answers  # fmt: skip
    assert to == "#c" and info.state is nodes["n2"].view.state  # type: ignore[attr-defined]
    for p in nodes.values():
        assert p.view.bucket("carts") == bt.ResolvedProps(2, 1, 2, "lww", 1 << 20, "carts")
        assert p.view.bucket("other").type == bt.DEFAULT
    held = next(t for t in nodes["n2"].view.state.types if t.name == "carts")
    assert held.seen is None  # every member holds it: nothing more to record


def test_a_bucket_type_change_does_not_wait_for_a_member_down_and_answers_at_its_deadline():
    p = parts("n1")
    g = gossiper(p)
    p.view.down = {"n3"}
    effects = g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"n": 2}, "create"))
    assert sends(effects, ClusterInfo) == []
    state = p.view.state
    theirs = msgspec.structs.replace(
        state, types=tuple(bt.held(t, "n2", ["n1", "n2", "n3"]) for t in state.types)
    )
    (to, info), = sends(g.on_gossip(0.1, "n2", Gossip(theirs)), ClusterInfo)  # fmt: skip
    carts = next(t for t in info.state.types if t.name == "carts")  # type: ignore[attr-defined]
    assert to == "#c" and bt.holders_missing(carts, ["n1", "n2", "n3"]) == ["n3"]
    # Without an answer from n2 either, the operator hears back at the request timeout.
    effects = g.on_bucket_change(0.2, "#c", ClientBucketChange(2, "carts", {"r": 1}, "update"))
    assert sends(effects, ClusterInfo) == [] and sends(g.on_tick(1.0), ClusterInfo) == []
    (to, _), = sends(g.on_tick(0.2 + p.config.request_timeout), ClusterInfo)  # fmt: skip
    assert to == "#c"


def test_of_two_concurrent_creates_of_one_type_the_loser_is_told_so():
    a, b = parts("n1"), parts("n2")
    ga, gb = gossiper(a), gossiper(b)
    lww = ClientBucketChange(1, "carts", {"policy": "lww"}, "create")
    siblings = ClientBucketChange(1, "carts", {"policy": "siblings", "n": 2}, "create")
    to_b = sends(ga.on_bucket_change(0.0, "#a", lww), Gossip)
    to_a = sends(gb.on_bucket_change(0.0, "#b", siblings), Gossip)
    replies = ga.on_gossip(0.1, "n2", dict(to_a)["n1"])
    replies += gb.on_gossip(0.1, "n1", dict(to_b)["n2"])
    errors = sends(replies, ErrorReply)
    assert len(errors) == 1
    assert "a concurrent change of bucket type 'carts' won" in errors[0][1].message
    assert a.view.bucket("carts") == b.view.bucket("carts")  # both sides settled on the winner
    loser = errors[0][0]
    winner_policy = a.view.bucket("carts").policy
    assert (loser, winner_policy) in (("#a", "siblings"), ("#b", "lww"))


def test_a_refused_bucket_type_change_changes_nothing():
    p = parts("n1")
    g = gossiper(p)
    before = p.view.state
    with pytest.raises(InvalidRequest, match="fixed once set"):
        g.on_bucket_change(0.0, "#c", ClientBucketChange(1, bt.DEFAULT, {"policy": "lww"}))
    with pytest.raises(InvalidRequest, match="w must be between 1 and n=3"):
        g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"w": 9}))
    assert p.view.state is before and p.logs == []


def test_the_claimant_raises_the_replication_with_a_transfer_to_the_same_owners():
    p = parts("n1", names=["n1", "n2", "n3", "n4", "n5"])
    g = gossiper(p)
    owners = p.view.ring.owners
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, bt.DEFAULT, {"n": 4}))
    record = p.view.state.ring
    assert record.next is not None and record.next.owners == owners
    assert (record.replication, record.next_replication) == (3, 4)
    assert len(p.view.pending_moves_list()) == 16  # a fourth replica for each partition
    assert any(log.event == "replication_raised" for log in p.logs)
    g.on_bucket_change(0.0, "#c", ClientBucketChange(2, bt.DEFAULT, {"n": 2}))
    assert p.view.state.ring == record  # a transfer under way is finished first


def test_a_node_whose_file_differs_from_the_cluster_says_so_once_and_follows_the_cluster():
    p = parts("n4", buckets={"carts": BucketProps(n=2, r=1, w=1)})
    engine = MemoryEngine()
    me = member_record(p.config, "inc0")
    view = ClusterView(p.config, engine, load_membership(engine, p.config, me))
    g = Gossiper(Context(p.config, view, RequestIds(1), p.logs), Liveness(p.context), me,
                 random.Random(1))  # fmt: skip
    (_, request), = sends(g.start(0.0, "n1:7000"))  # fmt: skip
    cluster = formed(["n1", "n2"], types=NodeConfig(ring_size=16).bucket_types())
    g.on_join_reply(0.1, "n1", JoinReply(request.rid, cluster))
    g.on_gossip(0.2, "n1", Gossip(cluster))
    differs = [log for log in p.logs if log.event == "bucket_config_differs"]
    assert len(differs) == 1 and differs[0].fields["bucket"] == "carts"
    assert view.bucket("carts").n == 3  # the cluster's default type, not the file


def test_the_claimant_of_a_cluster_made_before_bucket_types_seeds_them_from_its_file():
    p = parts("n1")
    p.view.adopt(msgspec.structs.replace(p.view.state, types=()))
    effects = gossiper(p).claim()
    assert [t.name for t in p.view.state.types] == [bt.DEFAULT]
    assert sorted(to for to, _ in sends(effects, Gossip)) == ["n2", "n3"]  # told at once


def test_a_type_asking_more_of_a_data_center_than_it_has_is_refused_and_changes_nothing():
    places = {"n1": ("dc1", "r1"), "n2": ("dc1", "r2"), "n3": ("dc2", "r1")}
    p = parts("n1", places=places)
    g = gossiper(p)
    before = p.view.state
    with pytest.raises(InvalidRequest, match="dc2 has 1 node, asked for 2"):
        g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"datacenters": {"dc2": 2}}))
    with pytest.raises(InvalidRequest, match="unknown data center dc9: members are in dc1, dc2"):
        g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"datacenters": {"dc9": 1}}))
    assert p.view.state is before and p.logs == []
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"datacenters": {"dc1": 2}}))
    assert p.view.bucket("carts").datacenters == (("dc1", 2),)


def test_the_claimant_moves_data_when_a_type_raises_a_data_center_count_or_adds_one():
    places = {n: ("dc1" if n in ("n1", "n2", "n3") else "dc2", "rack1") for n in NAMES}
    p = parts("n1", names=[*NAMES, "n6"], places={**places, "n6": ("dc2", "rack1")})
    g = gossiper(p)
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, "carts", {"datacenters": {"dc1": 3}}))
    record = p.view.state.ring
    # Writes to carts go to dc1's three nodes only from now on: each pulls what the ring
    # holds (the bucket may have data under the default type), even one among the first 3.
    assert record.next is not None and record.next_datacenters == (("dc1", 3),)
    assert len(p.view.pending_moves_list()) == 3 * 16
    for partition, node in p.view.pending_moves_list():
        assert node in p.view.replicas(partition)
        p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    g.claim()
    assert p.view.state.ring.next is not None  # not every member has seen ring.next yet
    assert mv.next_unseen(p.view.state) == ["n2", "n3", "n4", "n5", "n6"]
    every_member_saw_next(p)
    g.claim()
    assert p.view.state.ring.next is None
    assert p.view.state.ring.datacenters == (("dc1", 3),)
    change = ClientBucketChange(2, "carts", {"datacenters": {"dc1": 3, "dc2": 3}})
    g.on_bucket_change(0.0, "#c", change)
    record = p.view.state.ring
    assert record.next_datacenters == (("dc1", 3), ("dc2", 3))
    assert len(p.view.pending_moves_list()) == 3 * 16  # dc2's nodes, new to its list
    assert any(log.event == "replication_raised" for log in p.logs)
    before = p.view.state.ring
    g.on_bucket_change(0.0, "#c", ClientBucketChange(3, "carts", {"datacenters": {"dc1": 1}}))
    assert p.view.state.ring == before  # a transfer under way is finished first


def finish_moves(p: Parts) -> None:
    """Every pull done, and every member has adopted ring.next (as gossip would tell)."""
    for partition, node in p.view.pending_moves_list():
        p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    every_member_saw_next(p)


def every_member_saw_next(p: Parts) -> None:
    for name in mv.next_unseen(p.view.state):
        p.view.adopt(mv.saw_next(p.view.state, name))


def test_the_claimant_lowers_the_replication_only_after_the_remaining_replicas_pulled():
    p = parts("n1", names=["n1", "n2", "n3", "n4", "n5"])
    g = gossiper(p)
    before = {q: p.view.placed_replicas(q) for q in range(16)}
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, bt.DEFAULT, {"n": 2}))
    record = p.view.state.ring
    assert record.next is not None and record.next.owners == record.ring.owners
    assert (record.replication, record.next_replication) == (3, 2)
    assert any(log.event == "replication_lowered" for log in p.logs)
    # Every partition loses its third replica: its first two pull (from all three) first.
    assert p.view.pending_moves_list() == [
        (q, node) for q in range(16) for node in sorted(before[q][:2])
    ]
    assert p.view.placed_replicas(0) == before[0]  # the old replicas still serve
    moves = p.view.pending_moves_list()
    for partition, node in moves[:-1]:
        p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    g.claim()
    assert p.view.state.ring.next is not None  # one pull left: not installed yet
    p.view.adopt(mv.mark_transferred(p.view.state, *moves[-1]))
    every_member_saw_next(p)
    g.claim()
    record = p.view.state.ring
    assert record.next is None and record.replication == 2
    assert p.view.placed_replicas(0) == before[0][:2]


def test_lowering_a_data_center_count_or_dropping_it_waits_for_the_pulls_too():
    places = {n: ("dc1" if n in ("n1", "n2", "n3") else "dc2", "rack1") for n in NAMES}
    p = parts("n1", names=[*NAMES, "n6"], places={**places, "n6": ("dc2", "rack1")})
    g = gossiper(p)
    change = ClientBucketChange(1, "carts", {"datacenters": {"dc1": 2, "dc2": 2}})
    g.on_bucket_change(0.0, "#c", change)
    finish_moves(p)
    g.claim()
    assert p.view.state.ring.datacenters == (("dc1", 2), ("dc2", 2))
    g.on_bucket_change(0.0, "#c", ClientBucketChange(2, "carts", {"datacenters": {"dc1": 2}}))
    record = p.view.state.ring
    assert record.next is not None and record.next_datacenters == (("dc1", 2),)
    assert p.view.pending_moves_list() and any(
        log.event == "replication_lowered" for log in p.logs
    )
    for partition, node in p.view.pending_moves_list():
        assert node in p.view.replicas(partition)  # only replicas that remain pull
    finish_moves(p)
    g.claim()
    assert p.view.state.ring.next is None
    assert p.view.state.ring.datacenters == (("dc1", 2),)


def test_a_lowering_with_fewer_members_than_either_n_is_recorded_at_once():
    p = parts("n1", names=["n1", "n2"])
    g = gossiper(p)
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, bt.DEFAULT, {"n": 2}))
    record = p.view.state.ring
    assert record.next is None and record.replication == 2


def test_cluster_status_says_whether_the_replication_rises_or_falls():
    from dynakv.cli import _replication_change

    assert _replication_change({"placed": 3, "next": None}) == ""
    assert _replication_change({"placed": 3, "next": 3}) == ""  # a join: owners move only
    assert _replication_change({"placed": 3, "next": 2}) == "replication falling from 3 to 2"
    change = {"placed": 2, "next": 2, "datacenters": {"dc1": 2, "dc2": 1},
              "next_datacenters": {"dc1": 1, "dc2": 2}}  # fmt: skip
    assert _replication_change(change) == (
        "replication falling in dc1 from 2 to 1; rising in dc2 from 1 to 2"
    )


def test_ring_next_is_installed_only_once_every_member_up_has_adopted_it():
    p = parts("n1", names=["n1", "n2", "n3", "n4", "n5"])
    g = gossiper(p)
    g.on_bucket_change(0.0, "#c", ClientBucketChange(1, bt.DEFAULT, {"n": 4}))
    assert p.view.state.ring.next is not None
    for partition, node in p.view.pending_moves_list():  # every pull done
        p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    for name in ("n2", "n3"):
        p.view.adopt(mv.saw_next(p.view.state, name))
    g.claim()
    # n4 and n5 may still count requests over the installed ring alone.
    assert p.view.state.ring.next is not None
    p.view.down = {"n4"}  # a member down serves no requests: not waited for
    g.claim()
    assert p.view.state.ring.next is not None
    p.view.adopt(mv.saw_next(p.view.state, "n5"))
    g.claim()
    assert p.view.state.ring.next is None and p.view.state.ring.replication == 4
