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
