"""Ownership transfer alone: the pulling side asks for batches and resumes from its cursor;
the serving side answers one bounded batch and refuses bad requests."""

from __future__ import annotations

import random

import pytest

from dynakv.core.failure import Liveness
from dynakv.core.gossip import Gossiper, member_record
from dynakv.core.transfer import Transfers
from dynakv.errors import InvalidRequest
from dynakv.messages import JoinRequest, TransferBatch, TransferRequest
from dynakv.ring import partition_range
from tests.unit.components import Parts, first_write, parts, record, sends


def transfers(p: Parts) -> Transfers:
    return Transfers(p.context, p.store, p.engine, gossiper(p), p.budget)


def gossiper(p: Parts) -> Gossiper:
    me = member_record(p.config, "inc0")
    return Gossiper(p.context, Liveness(p.context), me, random.Random(1))


def test_a_batch_request_is_served_from_the_partition_in_order():
    p = parts("n1")
    t = transfers(p)
    for i in range(30):
        clock = first_write(b"v", "n1@x.0")
        p.store.put("b", f"k{i}", clock)
    partition = p.view.ring.partition("b", "k0")
    (_, batch), = sends(t.on_request(0.0, "n4", TransferRequest(3, partition, b"", 2)))  # fmt: skip
    assert isinstance(batch, TransferBatch) and len(batch.records) <= 2 and batch.total_keys >= 1
    start, end = partition_range(partition, p.view.ring.size)
    assert start <= batch.last < end


def test_a_bad_transfer_request_is_refused():
    p = parts("n1")
    with pytest.raises(InvalidRequest):
        transfers(p).on_request(0.0, "n4", TransferRequest(3, 10_000, b"", 2))
    with pytest.raises(InvalidRequest):
        transfers(p).on_request(0.0, "n4", TransferRequest(3, 0, b"", 0))


def test_a_new_member_pulls_its_partitions_and_keeps_its_cursor():
    p = parts("n1")
    gossip = gossiper(p)
    gossip.on_join_request(0.0, "@n4:7000", JoinRequest(1, record("n4"), "dynakv"))
    assert p.view.state.ring.next is not None
    # Seen from n4's side: it is a member of the same state and has moves to make.
    q = parts("n4", names=["n1", "n2", "n3"])
    q.view.adopt(p.view.state)
    t = transfers(q)
    requests = sends(t.on_tick(0.0), TransferRequest)
    assert requests and all(to in ("n1", "n2", "n3") for to, _ in requests)
    to, request = requests[0]
    reply = TransferBatch(request.rid, request.partition, [], b"\x01", False, 10, 100)
    (again_to, again), = sends(t.on_batch(0.1, to, reply))  # fmt: skip
    assert again_to == to and again.after == b"\x01"  # resumes after the last key
    assert q.engine.meta_get(t.pulls[request.partition].meta_name)  # the cursor is kept


def n4_joining():
    """n1's parts, n4's parts with n1's view of n4 joining, and n4's transfers."""
    p = parts("n1")
    gossip = gossiper(p)
    gossip.on_join_request(0.0, "@n4:7000", JoinRequest(1, record("n4"), "dynakv"))
    q = parts("n4", names=["n1", "n2", "n3"])
    q.view.adopt(p.view.state)
    return p, q, transfers(q)


def test_under_foreground_pressure_a_pull_pauses_between_batches():
    _, q, t = n4_joining()
    for _ in range(10):
        q.budget.report(10.0)  # foreground p99 far above the threshold: the lowest share
    assert q.budget.share == q.budget.floor == 0.1
    to, request = sends(t.on_tick(0.0), TransferRequest)[0]
    reply = TransferBatch(request.rid, request.partition, [], b"\x01", False, 10, 100)
    assert sends(t.on_batch(0.5, to, reply), TransferRequest) == []  # 0.5 s busy: 4.5 s rest
    pull = t.pulls[request.partition]
    assert pull.resume_at == pytest.approx(5.0)
    asked = [r for _, r in sends(t.on_tick(4.9), TransferRequest) if r.partition == pull.partition]
    assert asked == []
    asked = [r for _, r in sends(t.on_tick(5.0), TransferRequest) if r.partition == pull.partition]
    assert [r.after for r in asked] == [b"\x01"]  # then it resumes where it was
    for _ in range(20):
        q.budget.report(0.0)
    assert q.budget.rest(0.5) == 0.0  # a full share: batches back to back again


def test_a_pull_paces_to_a_busy_sources_budget():
    p, q, t = n4_joining()
    assert q.budget.share == 1.0  # the new node serves no client: its own budget is full
    to, request = sends(t.on_tick(0.0), TransferRequest)[0]
    for _ in range(10):
        p.budget.report(10.0)  # the source's clients suffer: its share falls to the floor
    served = transfers(p).on_request(0.0, "@n4:7000", request)
    (reply,) = [e.message for e in served]
    assert reply.share == p.budget.floor
    reply = TransferBatch(request.rid, request.partition, [], b"\x01", False, 10, 100, 0.25)
    assert sends(t.on_batch(0.5, to, reply), TransferRequest) == []  # 0.5 s busy at 25%
    assert t.pulls[request.partition].resume_at == pytest.approx(2.0)
