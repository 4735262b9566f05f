"""Handoff alone: hints held for a primary are offered when it is reachable, removed when it
acknowledges, and held back (with a back-off) when it refuses or is down; copies of
partitions the node no longer replicates are pushed to their replicas and deleted only
once all acknowledged, if unchanged."""

from __future__ import annotations

from dynakv import versions
from dynakv.core import membership as ms
from dynakv.core.handoff import Handoff
from dynakv.messages import ReplicaPut
from dynakv.ring import key_digest
from tests.unit.components import NAMES, Parts, first_write, parts, sends


def holding_hint(p: Parts, primary: str = "n2", key: str = "k", now: float = 0.0) -> None:
    clock = first_write(b"v", "n1@x.0")
    state = versions.encode(clock)
    p.store.put("b", key, clock, state=state)
    assert p.hints.record(primary, key_digest("b", key), "b", key, now, len(state))


def handoff(p: Parts) -> Handoff:
    return Handoff(p.context, p.store, p.hints, p.budget)


def test_a_hint_is_offered_to_its_reachable_primary_and_cleared_by_its_ack():
    p = parts("n1")
    holding_hint(p)
    h = handoff(p)
    (to, offer), = sends(h.on_tick(1.0), ReplicaPut)  # fmt: skip
    assert to == "n2" and (offer.bucket, offer.key) == ("b", "k")
    assert h.on_ack(1.1, offer.rid) == []
    assert p.hints.pending() == 0


def test_no_hint_is_offered_to_a_primary_that_is_down():
    p = parts("n1")
    holding_hint(p)
    p.view.down = {"n2"}
    assert sends(handoff(p).on_tick(1.0), ReplicaPut) == []


def test_a_refused_delivery_backs_off_before_the_next_offer():
    p = parts("n1", handoff_interval=1.0)
    holding_hint(p)
    h = handoff(p)
    (_, offer), = sends(h.on_tick(1.0), ReplicaPut)  # fmt: skip
    assert h.on_error(1.1, offer.rid)
    assert sends(h.on_tick(2.0), ReplicaPut) == []  # backing off (2 s after one failure)
    assert sends(h.on_tick(3.2), ReplicaPut)
    assert p.hints.pending() == 1


def test_an_unanswered_delivery_expires_and_an_ack_for_another_rid_is_not_ours():
    p = parts("n1", request_timeout=1.0)
    holding_hint(p)
    h = handoff(p)
    h.on_tick(1.0)
    assert h.on_ack(1.1, 999_999) is None and not h.on_error(1.1, 999_999)
    h.expire(2.5)
    assert not h.deliveries and p.hints.pending() == 1


def test_a_hint_older_than_the_window_is_dropped_with_a_log_line():
    p = parts("n1", hint_window=10.0)
    holding_hint(p, now=0.0)
    h = handoff(p)
    assert sends(h.on_tick(11.0), ReplicaPut) == []
    assert p.hints.pending() == 0 and p.hints.dropped == 1
    assert p.logs[-1].event == "hint_dropped" and p.logs[-1].fields["reason"] == "age"


# --- ownership handoff: copies of partitions this node no longer replicates ------------------


def surplus_copy(p: Parts, value: bytes = b"v") -> str:
    """A key of a partition n1 is no placed replica of, stored on n1 (five nodes, N=3)."""
    key = next(
        k
        for k in (f"k{i}" for i in range(1000))
        if "n1" not in p.view.placed_replicas(p.view.ring.partition("b", k))
    )
    p.store.put("b", key, first_write(value, "n2@x.0"))
    return key


def test_a_surplus_copy_is_pushed_to_every_replica_and_deleted_once_all_acknowledged():
    p = parts("n1", names=NAMES)
    key = surplus_copy(p)
    primaries = p.view.placement("b", key).primaries
    h = handoff(p)
    offers = sends(h.on_tick(1.0), ReplicaPut)
    assert sorted(to for to, _ in offers) == sorted(primaries)
    assert all((m.bucket, m.key) == ("b", key) for _, m in offers)
    for _, offer in offers[:-1]:
        assert h.on_ack(1.1, offer.rid) == []
    assert p.store.get("b", key) is not None  # one replica has not acknowledged yet
    h.on_ack(1.2, offers[-1][1].rid)
    assert p.store.get("b", key) is None and h.handed_back == 1


def test_a_surplus_copy_written_after_it_was_pushed_is_kept_and_pushed_again():
    p = parts("n1", names=NAMES)
    key = surplus_copy(p)
    h = handoff(p)
    offers = sends(h.on_tick(1.0), ReplicaPut)
    # A write arriving meanwhile (compare-and-delete: it must survive the acks).
    newer = p.store.merge("b", key, first_write(b"w", "n3@x.0"), lww=False)
    for _, offer in offers:
        h.on_ack(1.1, offer.rid)
    assert p.store.get("b", key) == newer and h.handed_back == 0
    again = sends(h.on_tick(2.0), ReplicaPut)
    assert again and all(m.state == versions.encode(newer) for _, m in again)


def test_a_surplus_copy_waits_while_a_replica_is_down_or_refuses_it():
    p = parts("n1", names=NAMES, handoff_interval=1.0)
    key = surplus_copy(p)
    primaries = p.view.placement("b", key).primaries
    h = handoff(p)
    p.view.down = {primaries[1]}
    assert sends(h.on_tick(1.0), ReplicaPut) == []
    p.view.down = set()
    offers = sends(h.on_tick(2.0), ReplicaPut)
    (refused, _), *others = offers
    assert h.on_error(2.1, offers[0][1].rid)
    for _, offer in others:  # the others' acks come in, but one replica never took it
        h.on_ack(2.2, offer.rid)
    assert p.store.get("b", key) is not None and not h.deliveries
    assert sends(h.on_tick(3.0), ReplicaPut) == []  # backing off from the refusing replica
    offers = sends(h.on_tick(5.0), ReplicaPut)
    h.peer_down(refused)
    for _, offer in offers:
        h.on_ack(5.1, offer.rid)
    assert p.store.get("b", key) is not None  # down before it acknowledged: kept


def test_no_surplus_copy_is_dropped_while_a_transfer_is_under_way():
    p = parts("n1", names=NAMES)
    key = surplus_copy(p)
    h = handoff(p)
    offers = sends(h.on_tick(1.0), ReplicaPut)
    state = p.view.state
    p.view.adopt(ms.start_transfer(state, state.ring.ring, "n1", 4))  # n1 may pull it back
    for _, offer in offers:
        h.on_ack(1.1, offer.rid)
    assert p.store.get("b", key) is not None
    assert sends(h.on_tick(2.0), ReplicaPut) == []


def test_a_copy_held_for_a_hint_is_left_to_hinted_handoff():
    p = parts("n1", names=NAMES)
    key = surplus_copy(p)
    primary = p.view.placement("b", key).primaries[0]
    assert p.hints.record(primary, key_digest("b", key), "b", key, 0.0, 10)
    offers = sends(handoff(p).on_tick(1.0), ReplicaPut)
    assert [to for to, _ in offers] == [primary]  # the hint's delivery only


def test_a_replica_of_the_partition_keeps_keys_of_a_bucket_with_a_smaller_n():
    p = parts("n1", names=NAMES)
    view = p.view
    key = next(
        k
        for k in (f"k{i}" for i in range(1000))
        if view.placed_replicas(view.ring.partition("b", k))[2] == "n1"
    )
    p.store.put("b", key, first_write(b"v"))  # as if b had n=2: n1 is no primary of it
    assert sends(handoff(p).on_tick(1.0), ReplicaPut) == []
