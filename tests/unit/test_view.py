"""The cluster view alone: where a key's replicas go, with fallbacks for those down, and
the cache that must follow every change of ring, down set or transfers."""

from __future__ import annotations

import msgspec
import pytest

from dynakv import bucket_types as bt
from dynakv.config import BucketProps
from dynakv.core import membership as ms
from dynakv.core import moves as mv
from dynakv.errors import Unavailable
from tests.unit.components import NAMES, parts, record


def test_a_key_goes_to_its_n_primaries_when_all_are_up():
    p = parts("n1", names=NAMES)
    placement = p.view.placement("b", "k")
    assert len(placement.primaries) == 3 and placement.targets == placement.primaries
    assert placement.hints == {} and len(placement.spare) == 2


def test_a_down_primary_is_replaced_by_the_next_healthy_node_with_a_hint():
    p = parts("n1", names=NAMES)
    before = p.view.placement("b", "k")
    p.view.down = {before.primaries[1]}
    after = p.view.placement("b", "k")  # the cache follows the new down set
    assert after.primaries == before.primaries
    fallback = after.targets[1]
    assert fallback == before.spare[0] and after.hints == {fallback: before.primaries[1]}


def test_a_placement_is_a_copy_the_caller_may_change():
    p = parts("n1", names=NAMES)
    first = p.view.placement("b", "k")
    first.targets.clear()
    first.spare.clear()
    again = p.view.placement("b", "k")
    assert len(again.targets) == 3 and len(again.spare) == 2


def test_during_a_transfer_a_key_whose_replicas_change_is_placed_on_both_lists():
    p = parts("n1")
    state = ms.request_join(p.view.state, record("n4"))
    plan = ms.plan_ring(state)
    assert plan is not None
    p.view.adopt(ms.start_transfer(state, plan, "n1"))
    assert "n4" in {n for ns in p.view.pending_moves.values() for n in ns}
    keys = [f"k{i}" for i in range(200)]
    moved = [key for key in keys if _moved(p, key)]
    assert moved
    for key in keys:
        placement = p.view.placement("b", key)
        if key not in moved:
            assert placement.lists == () and len(placement.primaries) == 3
            continue
        before, after = placement.lists
        assert len(before) == len(after) == 3 and "n4" in after
        assert placement.primaries == before + [x for x in after if x not in before]
        assert placement.targets == placement.primaries  # writes go to both lists
        assert not set(placement.spare) & set(placement.primaries)
    # Done in this node's view, or not: both lists until ring.next is installed.
    for partition, node in p.view.pending_moves_list():
        p.view.adopt(mv.mark_transferred(p.view.state, partition, node))
    assert not p.view.pending_moves
    assert all(p.view.placement("b", key).lists for key in moved)
    p.view.adopt(ms.finish_transfer(p.view.state, "n1"))
    assert not any(p.view.placement("b", key).lists for key in keys)


def _moved(p, key: str) -> bool:
    """Whether `key` of bucket b has other primaries on ring.next than on the ring."""
    record = p.view.state.ring
    partition = record.ring.partition("b", key)
    return set(record.ring.walk(partition)[:3]) != set(record.next.walk(partition)[:3])


def test_a_node_that_never_joined_places_nothing():
    p = parts("n1")
    p.view.adopt(ms.Membership("dynakv", (record("n1"),), ms.RingRecord(0, p.view.ring, "n1")))
    with pytest.raises(Unavailable):
        p.view.placement("b", "k")


def test_take_spare_skips_fallbacks_that_are_down():
    p = parts("n1")
    p.view.down = {"n4"}
    spare = ["n4", "n5"]
    assert p.view.take_spare(spare, "n2") == "n5" and spare == []
    assert p.view.take_spare(spare, "n2") is None


TWO_DCS = {n: ("dc1" if n in ("n1", "n2", "n3") else "dc2", "rack1") for n in NAMES}
SIX = [*NAMES, "n6"]
TWO_DCS["n6"] = ("dc2", "rack1")


def test_a_down_primary_is_replaced_only_from_its_own_data_center():
    p = parts("n1", names=SIX, places=TWO_DCS)
    for key in (f"k{i}" for i in range(40)):
        before = p.view.placement("b", key)
        p.view.down = {before.primaries[0]}
        after = p.view.placement("b", key)
        for fallback, primary in after.hints.items():
            assert TWO_DCS[fallback][0] == TWO_DCS[primary][0], key
        p.view.down = set()


def test_with_no_healthy_node_left_in_its_data_center_a_down_primary_counts_as_failed():
    p = parts("n1", names=SIX, places=TWO_DCS)
    key = next(
        k for k in (f"k{i}" for i in range(200))
        if TWO_DCS[p.view.placement("b", k).primaries[0]][0] == "dc2"
    )  # fmt: skip
    dc2 = {n for n in SIX if TWO_DCS[n][0] == "dc2"}
    p.view.down = dc2
    placement = p.view.placement("b", key)
    assert placement.hints == {}  # nothing crosses to dc1 as a hint
    assert [t for t in placement.targets if t in dc2] == [
        n for n in placement.primaries if n in dc2
    ]  # the dc2 primaries stay as targets: down, they count as failed
    spare = [n for n in SIX if n not in placement.primaries]
    assert p.view.take_spare(spare, placement.primaries[0]) is None


# --- bucket properties: from the cluster's bucket types ------------------------------------


def test_a_bucket_has_the_props_of_its_own_type_else_of_the_default_type():
    p = parts("n1")
    carts = bt.change(p.view.state.types, "carts", {"n": 2, "r": "all", "policy": "lww"})
    p.view.adopt(ms.set_type(p.view.state, carts))
    assert p.view.bucket("carts") == bt.ResolvedProps(2, 2, 2, "lww", 1 << 20, "carts")
    assert p.view.bucket("other").type == bt.DEFAULT and not p.view.is_lww("other")
    assert len(p.view.placement("carts", "k").primaries) == 2
    update = bt.change(p.view.state.types, bt.DEFAULT, {"r": 1})
    p.view.adopt(ms.set_type(p.view.state, update))  # the view follows an adopted state
    assert p.view.bucket("other").r == 1


def test_a_node_that_knows_no_types_yet_uses_its_file():
    p = parts("n1", buckets={"carts": BucketProps(n=1, r=1, w=1, policy="lww")})
    p.view.adopt(msgspec.structs.replace(p.view.state, types=()))
    props = p.view.bucket("carts")
    assert (props.n, props.policy, props.type) == (1, "lww", "")


def test_a_raised_n_takes_effect_partition_by_partition_as_the_transfer_fills_it():
    p = parts("n1", names=NAMES)
    four = bt.change(p.view.state.types, "wide", {"n": 4})
    p.view.adopt(ms.set_type(p.view.state, four))
    assert p.view.wanted_replication == 4 and p.view.placed_replication == 3
    assert len(p.view.placement("wide", "k").primaries) == 3  # the ring holds 3 copies
    state = p.view.state
    p.view.adopt(ms.start_transfer(state, state.ring.ring, "n1", 4))
    assert p.view.replication == 4
    placement = p.view.placement("wide", "k")
    before, after = placement.lists  # a level is met in the 3 copies there are, and the 4
    assert len(before) == 3 and len(after) == 4 and placement.primaries == after
    assert p.view.placement("b", "k").lists == ()  # a bucket of n=3 keeps its 3
    partition = p.view.ring.partition("wide", "k")
    p.view.adopt(mv.mark_transferred(p.view.state, partition, after[3]))
    assert p.view.placement("wide", "k").lists == (before, after)  # until ring.next is in
    p.view.adopt(ms.finish_transfer(p.view.state, "n1"))
    placement = p.view.placement("wide", "k")
    assert placement.primaries == after and placement.lists == ()
    assert len(p.view.placement("b", "k").primaries) == 3


# --- replicas per data center ----------------------------------------------------------------


def _with_type(p, name: str, props: dict) -> None:
    """Set a bucket type the way the claimant does: the type, then its replication."""
    changed = bt.change(p.view.state.types, name, props)
    state = ms.set_type(p.view.state, changed)
    n, datacenters = bt.storage_rule(state.types)
    p.view.adopt(ms.install_ring(state, state.ring.ring, "n1", n, datacenters))


def test_a_type_with_datacenters_places_each_data_centers_count_in_walk_order():
    p = parts("n1", names=SIX, places=TWO_DCS)
    _with_type(p, "carts", {"datacenters": {"dc1": 2, "dc2": 1}})
    ring = p.view.ring
    for key in (f"k{i}" for i in range(40)):
        partition = ring.partition("carts", key)
        placement = p.view.placement("carts", key)
        lists = ring.preference_lists_by_dc(partition, {"dc1": 2, "dc2": 1})
        assert set(placement.primaries) == {*lists["dc1"], *lists["dc2"]}
        walk = ring.walk(partition)
        assert placement.primaries == [x for x in walk if x in placement.primaries]
        assert placement.spare == [x for x in walk if x not in placement.primaries]
        assert placement.targets == placement.primaries and placement.hints == {}
        # Every primary is a storage replica of the partition, as is every plain one.
        storage = p.view.replicas(partition)
        assert set(placement.primaries) <= set(storage)
        plain = p.view.placement("b", key).primaries
        assert set(plain) <= set(p.view.replicas(ring.partition("b", key)))
        assert storage == [x for x in walk if x in {*walk[:3], *lists["dc1"], *lists["dc2"]}]


def test_a_down_primary_of_a_data_center_list_gets_a_fallback_from_that_data_center():
    p = parts("n1", names=SIX, places=TWO_DCS)
    _with_type(p, "carts", {"datacenters": {"dc1": 2, "dc2": 1}})
    before = p.view.placement("carts", "k")
    remote = next(x for x in before.primaries if TWO_DCS[x][0] == "dc2")
    p.view.down = {remote}
    after = p.view.placement("carts", "k")
    (fallback, primary), = after.hints.items()  # fmt: skip
    assert primary == remote and TWO_DCS[fallback][0] == "dc2"
    assert fallback not in before.primaries


def test_a_raised_data_center_count_waits_for_the_transfer_that_fills_it():
    p = parts("n1", names=SIX, places=TWO_DCS)
    _with_type(p, "carts", {"datacenters": {"dc1": 2, "dc2": 1}})
    raised = bt.change(p.view.state.types, "carts", {"datacenters": {"dc1": 2, "dc2": 2}})
    p.view.adopt(ms.set_type(p.view.state, raised))
    assert p.view.wanted_datacenters == (("dc1", 2), ("dc2", 2))
    assert len(p.view.placement("carts", "k").primaries) == 3  # the ring holds 1 in dc2
    state = p.view.state
    p.view.adopt(ms.start_transfer(state, state.ring.ring, "n1", 0, p.view.wanted_datacenters))
    # A partition whose second dc2 node is among the first 3 of its walk has it already.
    moving = {partition for partition, _ in p.view.pending_moves_list()}
    ring = p.view.ring
    key = next(k for k in (f"k{i}" for i in range(100)) if ring.partition("carts", k) in moving)
    placement = p.view.placement("carts", key)
    before, after = placement.lists
    assert len(before) == 3 and len(placement.primaries) == 4 and set(after) > set(before)
    (added,) = set(after) - set(before)
    assert TWO_DCS[added][0] == "dc2"
    p.view.adopt(ms.finish_transfer(p.view.state, "n1"))
    placement = p.view.placement("carts", key)
    assert len(placement.primaries) == 4 and placement.lists == ()
