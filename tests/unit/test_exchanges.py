"""Anti-entropy rounds alone: two replicas' Exchanges talk to each other directly (no
simulator, no Node), and the keys that differ end up merged on both."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core.antientropy import KEYS_PER_REQUEST, AntiEntropy, Exchanges
from dynakv.core.events import Effect, Send
from dynakv.errors import InvalidRequest
from dynakv.messages import AaeFetch, AaeKeys, ClientRepair, RepairResult, ReplicaPut
from tests.unit.components import Parts, first_write, parts, sends


def exchanges(p: Parts) -> Exchanges:
    aae = AntiEntropy(p.store, p.config.ring_size, 256, 16)
    p.store.on_write = aae.on_write
    return Exchanges(p.context, p.store, aae, p.budget)


def write(p: Parts, key: str, value: bytes, actor: str) -> None:
    p.store.put("b", key, first_write(value, actor))


def run_round(
    a: tuple[str, Exchanges, Parts], b: tuple[str, Exchanges, Parts], first: list[Effect]
) -> list[Send]:
    """Carry the round's messages between the two sides until it ends; replica puts are
    applied as the replica service would (merged). Returns what went to clients."""
    sides = {a[0]: a, b[0]: b}
    handlers = {
        "AaeHashes": "on_hashes", "AaeHashesReply": "on_hashes_reply", "AaeKeys": "on_keys",
        "AaeKeysReply": "on_keys_reply", "AaeFetch": "on_fetch", "AaeFetchReply": "on_fetch_reply",
    }  # fmt: skip
    queue = [(a[0], e) for e in first if isinstance(e, Send)]
    out: list[Send] = []
    while queue:
        sender, send = queue.pop(0)
        if send.to not in sides:
            out.append(send)
            continue
        _, target, target_parts = sides[send.to]
        message = send.message
        if isinstance(message, ReplicaPut):
            incoming = versions.decode(message.state)
            target_parts.store.merge(message.bucket, message.key, incoming, False)
            continue
        effects = getattr(target, handlers[type(message).__name__])(1.0, sender, message)
        queue.extend((send.to, e) for e in effects if isinstance(e, Send))
    return out


def test_an_operators_repair_merges_what_two_replicas_hold_apart():
    pa, pb = parts("n1"), parts("n2")
    ea, eb = exchanges(pa), exchanges(pb)
    partition = next(p for p in ea.partitions() if "n2" in pa.view.replicas(p))
    keys = [k for k in (f"k{i}" for i in range(400)) if pa.view.ring.partition("b", k) == partition]
    write(pa, keys[0], b"only-a", "n1@x.0")
    write(pb, keys[1], b"only-b", "n2@x.0")
    write(pa, keys[2], b"a", "n1@x.0")
    write(pb, keys[2], b"b", "n2@x.0")
    first = [
        e for e in ea.on_repair(1.0, "#op", ClientRepair(9, partition))
        if isinstance(e, Send) and e.to == "n2"
    ]  # fmt: skip
    out = run_round(("n1", ea, pa), ("n2", eb, pb), first)
    for p in (pa, pb):
        assert p.store.get("b", keys[0]) is not None and p.store.get("b", keys[1]) is not None
        assert sorted(s.value for s in versions.values(p.store.get("b", keys[2]))) == [b"a", b"b"]
    assert ea.aae.keys_repaired >= 3
    # The n2 round ended; the n3 round (not carried here) still waits, and so does the result.
    assert [r.peer for r in ea.rounds.values()] == ["n3"]
    assert out == []


def test_requests_beyond_the_batch_limits_are_refused():
    e = exchanges(parts("n1"))
    with pytest.raises(InvalidRequest):
        e.on_keys(0.0, "n2", AaeKeys(1, 0, list(range(KEYS_PER_REQUEST + 1))))
    with pytest.raises(InvalidRequest):
        e.on_fetch(0.0, "n2", AaeFetch(1, [b"x" * 16] * (KEYS_PER_REQUEST + 1)))


def test_a_repair_is_refused_when_anti_entropy_is_off_or_the_partition_is_not_ours():
    with pytest.raises(InvalidRequest):
        exchanges(parts("n1", anti_entropy=False)).on_repair(0.0, "#op", ClientRepair(1, -1))
    p = parts("n1", names=["n1", "n2", "n3", "n4", "n5"])
    e = exchanges(p)
    other = next(x for x in range(p.config.ring_size) if x not in e.partitions())
    with pytest.raises(InvalidRequest):
        e.on_repair(0.0, "#op", ClientRepair(1, other))


def test_an_unanswered_round_times_out_with_a_log_line():
    p = parts("n1", request_timeout=1.0)
    e = exchanges(p)
    sends_out = sends(e.on_repair(0.0, "#op", ClientRepair(9, e.partitions()[0])))
    assert sends_out
    assert e.expire(3.0) == []
    results = sends(e.expire(4.0), RepairResult)
    assert [to for to, _ in results] == ["#op"]
    assert any(log.fields.get("problem") == "timed out" for log in p.logs)
