"""The replica side alone: replica reads and writes from coordinators."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core import membership as ms
from dynakv.core.bugs import NO_BUGS
from dynakv.core.replica_service import ReplicaService
from dynakv.errors import ClusterError, InvalidRequest
from dynakv.messages import ErrorReply, ReplicaGet, ReplicaGetReply, ReplicaPut, ReplicaPutReply
from tests.unit.components import Parts, parts, sends, state_of


def service(p: Parts) -> ReplicaService:
    return ReplicaService(p.context, p.store, p.hints, versions.HybridClock(), NO_BUGS)


def test_a_replica_write_merges_with_the_copy_here_and_is_acknowledged():
    p = parts("n1")
    s = service(p)
    assert sends(s.on_put(0.0, "n2", ReplicaPut(5, "b", "k", state_of(b"a", "n2@x.0")))) == [
        ("n2", ReplicaPutReply(5))
    ]
    s.on_put(0.0, "n3", ReplicaPut(6, "b", "k", state_of(b"b", "n3@x.0")))
    values = sorted(v.value for v in versions.values(p.store.get("b", "k")))
    assert values == [b"a", b"b"]  # concurrent writes both survive as siblings
    (_, reply), = sends(s.on_get(0.0, "n2", ReplicaGet(7, "b", "k")))  # fmt: skip
    assert isinstance(reply, ReplicaGetReply) and reply.state is not None


def test_read_repair_needs_no_ack():
    p = parts("n1")
    assert service(p).on_put(0.0, "n2", ReplicaPut(0, "b", "k", state_of(b"a", "n2@x.0"))) == []


def test_a_fallback_with_its_hint_budget_spent_refuses_the_write():
    p = parts("n1", hint_budget_bytes=1)
    effects = service(p).on_put(
        0.0, "n2", ReplicaPut(5, "b", "k", state_of(b"a", "n2@x.0"), hint="n3")
    )
    (to, error), = sends(effects, ErrorReply)  # fmt: skip
    assert to == "n2" and error.code == "unavailable" and p.store.get("b", "k") is None
    assert p.hints.dropped == 1


def test_writes_from_a_removed_member_are_refused():
    p = parts("n1")
    p.view.down = {"n3"}
    p.view.adopt(ms.mark_removed(p.view.state, "n3"))
    with pytest.raises(ClusterError):
        service(p).on_put(0.0, "n3", ReplicaPut(5, "b", "k", state_of(b"a", "n3@x.0")))


def test_a_state_that_does_not_decode_is_refused():
    p = parts("n1")
    with pytest.raises(InvalidRequest):
        service(p).on_put(0.0, "n2", ReplicaPut(5, "b", "k", b"\xc1not msgpack"))
