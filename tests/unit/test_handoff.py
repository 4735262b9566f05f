"""Hinted handoff alone: hints held for a primary are offered when it is reachable, removed
when it acknowledges, and held back (with a back-off) when it refuses or is down."""

from __future__ import annotations

from dynakv.core.handoff import Handoff
from dynakv.messages import ReplicaPut
from dynakv.ring import key_digest
from tests.unit.components import Parts, first_write, parts, sends


def holding_hint(p: Parts, primary: str = "n2", key: str = "k", now: float = 0.0) -> None:
    clock = first_write(b"v", "n1@x.0")
    state = p.store.put("b", key, clock)
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
