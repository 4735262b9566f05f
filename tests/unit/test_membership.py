"""Membership as a CRDT: the merge laws, and the join/leave/remove/claim life of a member."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv import bucket_types as bt
from dynakv.claim import claim
from dynakv.config import NodeConfig, with_resp_bucket
from dynakv.core import membership as ms
from dynakv.core.membership import (
    MemberRecord,
    Membership,
    RingRecord,
    claimant,
    decode,
    encode,
    finish_transfer,
    install_ring,
    mark_removed,
    member,
    merge,
    names,
    new_cluster,
    plan_ring,
    refresh_self,
    request_join,
    request_leave,
    set_type,
    start_transfer,
)
from dynakv.core.moves import mark_transferred, pending_moves
from dynakv.errors import ClusterError, InvalidRequest

RING_SIZE = 16


def record(name: str, incarnation: str = "i1", port: int = 0, status: str = "joining"):
    port = port or 7000 + int(name[1:])
    return MemberRecord(name, f"10.0.0.1:{port}", f"10.0.0.1:{port + 1000}", incarnation, status, 0)


def founded(name: str = "n1") -> Membership:
    return new_cluster("c", record(name), RING_SIZE)


def settle(m: Membership) -> Membership:
    """Let the claimant install rings until there is nothing more to install."""
    for _ in range(4):
        ring = plan_ring(m)
        if ring is None:
            return m
        m = install_ring(m, ring, claimant(m))
    raise AssertionError("the ring plan did not settle")


def cluster_of(*names_: str) -> Membership:
    m = founded(names_[0])
    for name in names_[1:]:
        m = request_join(m, record(name))
    return settle(m)


def statuses(m: Membership) -> dict[str, str]:
    return {r.name: r.status for r in m.members}


# --- life of a member -------------------------------------------------------------------------


def test_a_new_cluster_has_its_founder_up_owning_every_partition():
    m = founded("n1")
    assert statuses(m) == {"n1": "up"}
    assert m.ring.epoch == 1
    assert m.ring.claimant == "n1"
    assert set(m.ring.ring.owners) == {"n1"}
    assert m.ring.ring.size == RING_SIZE
    assert plan_ring(m) is None


def test_a_joiner_is_joining_until_the_claimant_installs_a_ring_that_gives_it_partitions():
    m = request_join(founded(), record("n2"))
    assert statuses(m) == {"n1": "up", "n2": "joining"}
    assert claimant(m) == "n1"
    ring = plan_ring(m)
    assert ring is not None
    assert ring.ownership() == {"n1": 8, "n2": 8}
    m = install_ring(m, ring, "n1")
    assert statuses(m) == {"n1": "up", "n2": "up"}
    assert m.ring == RingRecord(2, ring, "n1")
    assert plan_ring(m) is None


def test_the_ring_plan_moves_as_little_as_claim_does():
    m = cluster_of("n1", "n2", "n3")
    m = request_join(m, record("n4"))
    ring = plan_ring(m)
    assert ring == claim(["n1", "n2", "n3", "n4"], RING_SIZE, previous=m.ring.ring)


def test_a_repeated_join_changes_nothing():
    m = request_join(founded(), record("n2"))
    assert request_join(m, record("n2")) is m
    m = settle(m)
    assert request_join(m, record("n2")) is m


def test_a_member_with_a_replaced_disk_rejoins_up_with_a_new_incarnation():
    m = cluster_of("n1", "n2", "n3")
    before = member(m, "n2")
    m2 = request_join(m, record("n2", incarnation="i2"))
    after = member(m2, "n2")
    assert after.status == "up"
    assert after.incarnation == "i2"
    assert after.version == before.version + 1
    assert plan_ring(m2) is None  # ownership unchanged: anti-entropy refills it


def test_a_join_under_the_name_of_a_member_up_elsewhere_is_refused():
    m = cluster_of("n1", "n2")
    with pytest.raises(ClusterError, match="up at"):
        request_join(m, record("n2", port=9999))


def test_a_removed_member_may_rejoin_from_a_new_address():
    m = mark_removed(cluster_of("n1", "n2"), "n2")
    m = request_join(m, record("n2", incarnation="i2", port=9999))
    assert member(m, "n2").status == "joining"
    assert member(m, "n2").node_addr == "10.0.0.1:9999"
    m = settle(m)
    assert statuses(m) == {"n1": "up", "n2": "up"}


def test_a_join_beyond_the_ring_size_is_refused():
    m = new_cluster("c", record("n1"), 2)
    m = request_join(m, record("n2"))
    with pytest.raises(ClusterError, match="partitions"):
        request_join(m, record("n3"))


def test_a_leaver_is_left_out_of_the_next_ring_and_stays_leaving():
    m = cluster_of("n1", "n2", "n3")
    m = request_leave(m, "n2")
    assert request_leave(m, "n2") is m
    ring = plan_ring(m)
    assert ring is not None
    assert set(ring.owners) == {"n1", "n3"}
    m = install_ring(m, ring, claimant(m))
    assert statuses(m) == {"n1": "up", "n2": "leaving", "n3": "up"}
    m = mark_removed(m, "n2")
    assert statuses(m)["n2"] == "removed"
    assert mark_removed(m, "n2") is m
    assert plan_ring(m) is None


def test_a_member_that_rejoins_before_its_leave_is_installed_is_promoted_again():
    m = cluster_of("n1", "n2")
    m = request_leave(m, "n2")
    m = request_join(m, record("n2", incarnation="i2"))
    assert member(m, "n2").status == "joining"
    ring = plan_ring(m)
    assert ring == m.ring.ring  # same owners, but installing promotes n2
    m = install_ring(m, ring, claimant(m))
    assert member(m, "n2").status == "up"
    assert plan_ring(m) is None


def test_leaving_or_removing_the_last_member_is_refused():
    m = founded()
    with pytest.raises(ClusterError, match="no other member"):
        request_leave(m, "n1")
    with pytest.raises(ClusterError, match="no other member"):
        mark_removed(m, "n1")


def test_leaving_or_removing_an_unknown_member_is_refused():
    m = cluster_of("n1", "n2")
    with pytest.raises(ClusterError, match="no such member"):
        request_leave(m, "n9")
    with pytest.raises(ClusterError, match="no such member"):
        mark_removed(m, "n9")
    with pytest.raises(ClusterError, match="no such member"):
        request_leave(mark_removed(m, "n2"), "n2")


def test_the_claimant_is_the_lowest_named_member_that_is_up():
    m = cluster_of("n2", "n3")
    m = request_join(m, record("n1"))
    assert claimant(m) == "n2"  # n1 is only joining
    m = request_leave(m, "n2")
    assert claimant(m) == "n3"


def test_with_no_member_up_a_joiner_claims_so_the_cluster_can_recover():
    a = request_leave(cluster_of("n1", "n2"), "n1")
    b = request_leave(cluster_of("n1", "n2"), "n2")  # concurrent leaves on two sides
    both = merge(a, b)
    assert names(both, ("up",)) == []
    with pytest.raises(ValueError):
        claimant(both)
    rejoined = request_join(both, record("n3"))
    assert claimant(rejoined) == "n3"
    rejoined = settle(rejoined)
    assert statuses(rejoined)["n3"] == "up"
    assert set(rejoined.ring.ring.owners) == {"n3"}


def test_a_member_promoted_by_a_ring_that_lost_the_tie_gets_a_ring_later():
    base = request_join(cluster_of("n1", "n2"), record("n3"))
    # Two claimants install rings of one epoch concurrently (a partition); one ring wins.
    a = install_ring(base, plan_ring(base), "n1")
    b = request_join(base, record("n4"))
    b = install_ring(b, plan_ring(b), "n2")
    m = merge(a, b)
    assert m.ring.epoch == a.ring.epoch == b.ring.epoch
    m = settle(m)
    assert set(m.ring.ring.owners) == {"n1", "n2", "n3", "n4"}
    assert set(statuses(m).values()) == {"up"}


def test_concurrent_changes_of_one_record_settle_alike_and_a_leave_beats_a_promotion():
    base = request_join(cluster_of("n1", "n2"), record("n3"))
    promoted = install_ring(base, plan_ring(base), "n1")
    leaving = request_leave(base, "n3")
    assert member(promoted, "n3").version == member(leaving, "n3").version
    assert merge(promoted, leaving) == merge(leaving, promoted)
    assert member(merge(promoted, leaving), "n3").status == "leaving"
    moved = request_join(base, record("n3", incarnation="i2", port=9000))
    assert merge(moved, leaving) == merge(leaving, moved)


def test_states_of_different_clusters_do_not_merge():
    with pytest.raises(ValueError, match="cluster"):
        merge(founded(), new_cluster("other", record("n1"), RING_SIZE))


def test_merge_returns_the_state_that_already_covers_the_other():
    old = cluster_of("n1", "n2")
    new = request_leave(old, "n2")
    assert merge(old, new) is new
    assert merge(new, old) is new
    assert merge(new, new) is new


def test_encode_decode_round_trips():
    m = request_leave(request_join(cluster_of("n1", "n2", "n3"), record("n4")), "n3")
    assert decode(encode(m)) == m


def test_a_state_that_is_not_canonical_cannot_be_built():
    ring = RingRecord(1, claim(["n1", "n2"], 4), "n1")
    with pytest.raises(ValueError, match="sorted"):
        Membership("c", (record("n2"), record("n1")), ring)
    with pytest.raises(ValueError, match="sorted"):
        Membership("c", (record("n1"), record("n1")), ring)
    with pytest.raises(ValueError, match="status"):
        record("n1", status="zombie")


def test_decoding_rejects_malformed_states():
    good = msgspec.to_builtins(founded())
    unsorted = [good[0], [good[1][0], good[1][0]], good[2]]
    bad_status = [good[0], [[*good[1][0][:4], "zombie", 0]], good[2]]
    bad_ring = [good[0], good[1], [1, [4, ["n1"]], "n1"]]
    for raw in (unsorted, bad_status, bad_ring, [good[0]], "junk"):
        with pytest.raises(msgspec.ValidationError):
            decode(msgspec.msgpack.encode(raw))
    with pytest.raises(msgspec.DecodeError):
        decode(b"\xc1")


# --- the CRDT laws, over reachable states ---------------------------------------------------------

POOL = [f"n{i}" for i in range(1, 7)]
KINDS = ("gossip", "join", "install", "transfer", "leave", "remove", "bucket")
WEIGHTS = (2, 4, 2, 3, 1, 1, 2)
TYPE_NAMES = (bt.DEFAULT, "carts", "sessions")
SEEDED = NodeConfig().bucket_types()


def apply(rng: random.Random, replicas: list[Membership]) -> None:
    """One random operation at one random replica; a refused one changes nothing."""
    at = rng.randrange(len(replicas))
    m, name = replicas[at], rng.choice(POOL)
    try:
        match rng.choices(KINDS, WEIGHTS)[0]:
            case "gossip":
                replicas[at] = merge(m, rng.choice(replicas))
            case "join":
                incarnation, port = rng.choice(["i1", "i2"]), rng.choice([0, 9000])
                replicas[at] = request_join(m, record(name, incarnation, port))
            case "install":
                ring = plan_ring(m)
                if ring is not None:
                    replicas[at] = install_ring(m, ring, claimant(m))
            case "transfer":
                ring = plan_ring(m)
                if ring is not None:
                    replicas[at] = start_transfer(m, ring, claimant(m))
                else:
                    moves = pending_moves(m, 3)
                    if moves:
                        replicas[at] = mark_transferred(m, *rng.choice(moves))
                    elif m.ring.next is not None:
                        replicas[at] = finish_transfer(m, claimant(m))
            case "leave":
                replicas[at] = request_leave(m, name)
            case "remove":
                replicas[at] = mark_removed(m, name)
            case "bucket":  # a type created or changed, concurrently with others at times
                props = {"n": rng.randint(1, 4), "r": rng.choice([1, "one", "quorum", "all"])}
                if rng.random() < 0.3:
                    props["policy"] = rng.choice(bt.POLICIES)
                changed = bt.change(m.types, rng.choice(TYPE_NAMES), props)
                replicas[at] = set_type(m, changed)
    except (ClusterError, ValueError, InvalidRequest):
        pass


@st.composite
def reachable(draw, count: int = 3) -> list[Membership]:
    """States of 2-4 replicas of one cluster after random operations and merges.

    Hypothesis draws the shape (replicas, steps) and a seed; the seed drives the operations,
    which keeps generation fast and the states rich (a failure replays from its seed).
    Mostly the replicas' final states; sometimes a state one of them held on the way.
    """
    replicas = [new_cluster("c", record("n1"), RING_SIZE, SEEDED)] * draw(st.integers(2, 4))
    rng = random.Random(draw(st.integers(0, 2**32)))
    history = []
    for _ in range(draw(st.integers(0, 100))):
        apply(rng, replicas)
        history.extend(replicas)
    pool = replicas + history
    return [
        pool[rng.randrange(len(pool))] if draw(st.booleans()) else rng.choice(replicas)
        for _ in range(count)
    ]


@settings(max_examples=300, deadline=None)
@given(reachable())
def test_merge_is_commutative(states):
    a, b, _ = states
    assert merge(a, b) == merge(b, a)


@settings(max_examples=300, deadline=None)
@given(reachable())
def test_merge_is_associative(states):
    a, b, c = states
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@settings(max_examples=300, deadline=None)
@given(reachable())
def test_merge_is_idempotent(states):
    a, b, _ = states
    assert merge(a, a) == a
    ab = merge(a, b)
    assert merge(ab, a) == ab
    assert merge(ab, b) == ab


@settings(max_examples=300, deadline=None)
@given(reachable(count=4))
def test_merge_keeps_the_greater_record_of_every_member(states):
    merged = states[0]
    for state in states[1:]:
        merged = merge(merged, state)
    for state in states:
        for rec in state.members:
            assert member(merged, rec.name).version >= rec.version
        for bucket_type in state.types:
            kept = next(t for t in merged.types if t.name == bucket_type.name)
            assert kept.version >= bucket_type.version
        assert merged.ring.epoch >= state.ring.epoch
    assert decode(encode(merged)) == merged


def test_a_transfer_serves_from_the_old_ring_until_every_move_is_recorded():
    m = cluster_of("n1", "n2", "n3")
    m = request_join(m, record("n4"))
    target = plan_ring(m)
    assert target is not None
    m = start_transfer(m, target, claimant(m))
    assert m.ring.next == target
    assert statuses(m)["n4"] == "joining"
    assert plan_ring(m) is None  # one transfer at a time
    moves = pending_moves(m, 3)
    assert moves and all(node == "n4" for _, node in moves)
    for partition, node in moves:
        m = mark_transferred(m, partition, node)
    assert pending_moves(m, 3) == []
    m = finish_transfer(m, claimant(m))
    assert m.ring.ring == target and m.ring.next is None
    assert statuses(m)["n4"] == "up"
    assert m.transferred == ()  # installing the ring drops the finished epoch's entries


# --- topology: data center and rack -------------------------------------------------------


def _placed(name: str, datacenter: str = "dc1", rack: str = "rack1") -> MemberRecord:
    return MemberRecord(name, f"{name}:7000", f"{name}:8000", "i1", "joining", 0, datacenter, rack)


def test_a_record_persisted_before_topology_existed_decodes_in_dc1_rack1():
    state = new_cluster("c", MemberRecord("n1", "a:1", "a:2", "i1", "up", 3), 8)
    as_before = list(msgspec.to_builtins(state))
    as_before[1] = [list(as_before[1][0])[:6]]  # the record as it was: six fields
    record = decode(msgspec.msgpack.encode(as_before)).members[0]
    assert (record.datacenter, record.rack) == ("dc1", "rack1")


def test_a_member_that_comes_back_in_another_rack_says_so_with_a_newer_version():
    state = request_join(new_cluster("c", _placed("n1"), 8), _placed("n2", "dc2", "r1"))
    assert (member(state, "n2").datacenter, member(state, "n2").rack) == ("dc2", "r1")
    again = request_join(state, _placed("n2", "dc2", "r1"))
    assert again is state  # a retry changes nothing
    moved = request_join(state, _placed("n2", "dc2", "r9"))
    assert member(moved, "n2").rack == "r9"
    assert member(moved, "n2").version > member(state, "n2").version
    refreshed = refresh_self(new_cluster("c", _placed("n1"), 8), _placed("n1", "dc3", "r2"))
    assert member(refreshed, "n1").datacenter == "dc3" and member(refreshed, "n1").status == "up"


def test_an_empty_datacenter_or_rack_is_refused():
    with pytest.raises(ValueError):
        MemberRecord("n1", "a:1", "a:2", "i1", "up", 0, "", "rack1")


# --- bucket types and replication ---------------------------------------------------------


def test_a_founder_seeds_the_types_of_its_file_and_places_the_ring_for_their_largest_n():
    types = with_resp_bucket(NodeConfig()).bucket_types()
    m = new_cluster("c", record("n1"), RING_SIZE, types)
    assert [t.name for t in m.types] == [bt.DEFAULT, "default"]  # "default": the RESP bucket
    assert m.ring.replication == 3 and m.ring.next_replication == 0


def test_a_newer_type_version_wins_the_merge_and_a_tie_settles_alike_everywhere():
    m = new_cluster("c", record("n1"), RING_SIZE, SEEDED)
    a = set_type(m, bt.change(m.types, "carts", {"n": 2, "r": 1, "w": 1}))
    b = set_type(m, bt.change(m.types, "carts", {"n": 4}))  # the same version, concurrently
    assert merge(a, b) == merge(b, a)
    c = set_type(a, bt.change(a.types, "carts", {"w": "all"}))  # made after seeing a
    assert merge(merge(b, a), c).types == merge(b, c).types == c.types
    assert decode(encode(c)) == c


def test_a_state_persisted_before_bucket_types_decodes_with_none():
    state = founded()
    as_before = list(msgspec.to_builtins(state))[:4]
    as_before[2] = as_before[2][:4]  # the ring record as it was: four fields
    old = decode(msgspec.msgpack.encode(as_before))
    assert old.types == () and old.ring.replication == 0


def test_a_raised_replication_moves_each_partition_to_one_more_replica():
    m = settle(request_join(request_join(founded(), record("n2")), record("n3")))
    m = request_join(m, record("n4"))
    m = settle(m)
    raised = start_transfer(m, m.ring.ring, claimant(m), 3)  # from the legacy 2 below
    moves = pending_moves(raised, 2)
    assert len(moves) == RING_SIZE  # the third replica of every partition
    for partition, node in moves:
        assert node == m.ring.ring.preference_list(partition, 3)[2]
        raised = mark_transferred(raised, partition, node)
    installed = finish_transfer(raised, claimant(raised))
    assert installed.ring.ring == m.ring.ring and installed.ring.replication == 3
    assert pending_moves(installed, 2) == []


def test_the_claimant_plans_with_the_members_places():
    """Joins in two data centers: each plan is the place-aware claim from the ring before,
    so the two data centers' nodes end with even replica shares."""
    m = new_cluster("c", _placed("n1", "dc1", "r1"), 64)
    places = {"n1": ("dc1", "r1")}
    for name, dc in (("n2", "dc2"), ("n3", "dc1"), ("n4", "dc2")):
        m = request_join(m, _placed(name, dc, "r1"))
        places[name] = (dc, "r1")
        expected = claim(sorted(places), 64, m.ring.ring, places)
        assert plan_ring(m) == expected and expected.places == tuple(
            places[n] for n in sorted(places)
        )
        m = settle(m)
    replicas = {name: 0 for name in places}
    for p in range(64):
        for name in m.ring.ring.preference_list(p, 3):
            replicas[name] += 1
    assert all(45 <= count <= 51 for count in replicas.values()), replicas  # 48 is even


def test_one_place_for_all_plans_the_ring_of_the_claim_without_places():
    m = new_cluster("c", _placed("n1", "east", "r1"), 16)
    for name in ("n2", "n3"):
        m = request_join(m, _placed(name, "east", "r1"))
    assert plan_ring(m) == claim(["n1", "n2", "n3"], 16, m.ring.ring)
    assert plan_ring(m).places == ()


def test_a_ring_record_from_before_per_datacenter_counts_decodes_with_none():
    ring = claim(["a", "b"], 8)
    old = msgspec.msgpack.encode([3, ring, "a", None, 3, 0])
    record = msgspec.msgpack.decode(old, type=ms.RingRecord)
    assert (record.datacenters, record.next_datacenters) == ((), ())
    placed = ms.RingRecord(4, ring, "a", ring, 3, 3, (("dc1", 2),), (("dc1", 2), ("dc2", 1)))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(placed), type=ms.RingRecord) == placed


def test_the_storage_rule_is_the_largest_plain_n_and_each_data_centers_largest_count():
    types = (
        bt.BucketType("a", 3, 2, 2, "siblings", 10, 1),
        bt.BucketType("b", 3, 1, 1, "siblings", 10, 1, (("dc1", 2), ("dc2", 1))),
        bt.BucketType("c", 5, 1, 1, "siblings", 10, 1, (("dc2", 3), ("dc3", 2))),
        bt.BucketType("d", 2, 1, 1, "siblings", 10, 1),
    )
    assert bt.storage_rule(types) == (3, (("dc1", 2), ("dc2", 3), ("dc3", 2)))
