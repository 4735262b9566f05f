"""Ownership transfer from one full copy plus version digests: a joining node copies one
replica's partition whole and only compares the others', fetching the keys whose version
differs, so it still ends with every write that reached only some replicas; it resumes
from its cursor; version hashes of stored states match anti-entropy's; bad requests and
bad answers are refused while the node keeps serving."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynakv import versions
from dynakv.core.failure import Liveness
from dynakv.core.gossip import Gossiper, member_record
from dynakv.core.merkle import version_hash
from dynakv.core.pull import Pull, order_sources
from dynakv.core.replica import seal
from dynakv.core.transfer import Transfers
from dynakv.core.version_digests import local_differs, scan_versions, state_version_hash
from dynakv.errors import InvalidRequest
from dynakv.item_keys import storage_key
from dynakv.messages import (
    ErrorReply,
    JoinRequest,
    Message,
    TransferBatch,
    TransferDigestRequest,
    TransferDigests,
    TransferFetch,
    TransferRequest,
)
from dynakv.ring import partition_of_digest, partition_range
from tests.unit.components import Parts, first_write, parts, record, sends

SOURCES = ["n1", "n2", "n3"]


def gossiper(p: Parts) -> Gossiper:
    me = member_record(p.config, "inc0")
    return Gossiper(p.context, Liveness(p.context), me, random.Random(1))


def transfers(p: Parts) -> Transfers:
    return Transfers(p.context, p.store, p.engine, gossiper(p), p.budget)


def rewrite(clock: versions.Clock, value: bytes, actor: str) -> versions.Clock:
    """A put of `value` over `clock`, its context covering it."""
    context = versions.new(versions.join(clock), versions.Sibling(value))
    return versions.update(context, clock, actor)


class Joining:
    """Three replicas n1-n3 (each its own store) and n4 joining them, each a Transfers built
    on the same membership with a transfer to n4 under way; `pump` carries the messages."""

    def __init__(self) -> None:
        founder = parts("n1")
        gossiper(founder).on_join_request(0.0, "@n4:7000", JoinRequest(1, record("n4"), "dynakv"))
        self.state = founder.view.state
        assert self.state.ring.next is not None
        self.parts: dict[str, Parts] = {}
        self.nodes: dict[str, Transfers] = {}
        for name in [*SOURCES, "n4"]:
            self.restart(name)
        self.served: dict[str, list[Message]] = {name: [] for name in SOURCES}
        self.dropped: type | None = None  # answers of this type are lost once

    def restart(self, name: str) -> None:
        old = self.parts.get(name)
        p = parts(name, names=SOURCES)
        if old is not None:
            p.engine, p.store = old.engine, old.store  # the same disk, a new process
        p.view.adopt(self.state)
        self.parts[name], self.nodes[name] = p, transfers(p)

    def pump(self, effects: list, sender: str = "n4", limit: int = 10_000) -> None:
        queue = [(sender, to, msg) for to, msg in sends(effects)]
        while queue and limit:
            limit -= 1
            source, to, msg = queue.pop(0)
            node = self.nodes[to]
            if to in SOURCES:
                self.served[to].append(msg)
            if self.dropped is not None and isinstance(msg, self.dropped):
                self.dropped = None
                continue
            handler = {
                TransferRequest: node.on_request,
                TransferDigestRequest: node.on_digest_request,
                TransferFetch: node.on_fetch,
                TransferBatch: node.on_batch,
                TransferDigests: node.on_digests,
            }.get(type(msg))
            if handler is not None:
                queue.extend((to, dest, m) for dest, m in sends(handler(0.0, source, msg)))

    def run(self) -> None:
        """Tick n4 until it pulled every partition it moves to (its pulls all finish)."""
        for tick in range(1, 200):
            self.pump(self.nodes["n4"].on_tick(float(tick)))
            if not self.parts["n4"].view.my_moves() or (not self.nodes["n4"].pulls and tick > 3):
                return

    def moved_key(self, full_source: bool, i: int = 0) -> tuple[str, int, str]:
        """(key, its partition, the replica n4 copies it from in full) for a key of a
        partition n4 moves to."""
        view = self.parts["n4"].view
        moves = set(view.my_moves())
        found = 0
        for k in (f"k{j}" for j in range(10_000)):
            partition = partition_of_digest(storage_key("b", k), view.ring.size)
            if partition in moves:
                if found == i:
                    return k, partition, order_sources(view, partition, {})[0]
                found += 1
        raise AssertionError("no key moves")


def test_a_write_missing_from_the_source_copied_in_full_still_arrives():
    world = Joining()
    key, partition, full = world.moved_key(True)
    others = [x for x in SOURCES if x != full]
    clock = first_write(b"acknowledged by two of three", "n2@a.0")
    for name in others:  # W=2 reached the two others only
        world.parts[name].store.put("b", key, clock)
    old, newer = first_write(b"v1", "n1@a.0"), None
    newer = rewrite(old, b"v2", "n1@a.0")
    stale_key, _, _ = world.moved_key(True, 1)
    world.parts[full].store.put("b", stale_key, old)  # the full source has the older version
    world.parts[others[0]].store.put("b", stale_key, newer)
    world.parts[others[1]].store.put("b", stale_key, old)
    same = [f"same{i}" for i in range(40)]
    for k in same:  # everywhere alike: compared, never fetched again
        for name in SOURCES:
            world.parts[name].store.put("b", k, first_write(b"x" * 100, "n3@a.0"))
    world.run()
    store = world.parts["n4"].store
    assert store.get("b", key) == clock
    assert store.get("b", stale_key) == newer
    fetched = [m for name in others for m in world.served[name] if isinstance(m, TransferFetch)]
    asked = sorted(d for m in fetched for d in m.digests)
    # Fetched from the others: only the keys that differed from the merged copy.
    assert storage_key("b", key) in asked and storage_key("b", stale_key) in asked
    assert not any(storage_key("b", k) in asked for k in same)
    full_pulls = {
        name
        for name in SOURCES
        for m in world.served[name]
        if isinstance(m, TransferRequest) and m.partition == partition
    }
    assert full_pulls == {full}  # one source of this partition copied in full
    assert any(isinstance(m, TransferDigestRequest) for name in others for m in world.served[name])


def test_an_interrupted_digest_pass_resumes_and_misses_no_key():
    world = Joining()
    key, partition, full = world.moved_key(True)
    others = [x for x in SOURCES if x != full]
    clock = first_write(b"only on one replica", "n2@a.0")
    world.parts[others[-1]].store.put("b", key, clock)
    for i in range(60):  # keys everywhere, so the full copy takes several batches
        for name in SOURCES:
            world.parts[name].store.put("b", f"f{i}", first_write(b"z", "n3@a.0"))
    world.dropped = TransferFetch  # n4 found the key different, asked for it, and stopped
    for tick in range(50):
        world.pump(world.nodes["n4"].on_tick(float(tick)))
        if world.dropped is None:
            break
    assert world.dropped is None
    world.restart("n4")  # the same disk: the pulls come back from their cursors
    world.nodes["n4"]._start_pulls(100.0)
    resumed = world.nodes["n4"].pulls.get(partition)
    assert resumed is not None and resumed.copied and resumed.source in others
    world.run()
    assert world.parts["n4"].store.get("b", key) == clock


def test_a_cursor_keeps_the_sources_their_order_and_the_mode():
    pull = Pull(7, 3, ["n2", "n1", "n3"], ["n1", "n2", "n3"], source_index=1, cursor=b"\x05")
    pull.copied, pull.keys, pull.bytes, pull.compared, pull.fetched = True, 10, 999, 40, 2
    again = Pull(7, 3, ["n1", "n2", "n3"], ["n1", "n2", "n3"])
    again.restore(pull.encode_cursor())
    assert (again.sources, again.source_index, again.cursor, again.copied) == (
        ["n2", "n1", "n3"], 1, b"\x05", True
    )  # fmt: skip
    assert (again.keys, again.bytes, again.compared, again.fetched) == (10, 999, 40, 2)
    other_epoch = Pull(8, 3, ["n1", "n2", "n3"])
    other_epoch.restore(pull.encode_cursor())
    assert other_epoch.source_index == 0 and not other_epoch.copied


def test_a_cursor_from_before_digests_resumes_every_source_in_full_order():
    import msgspec

    old = msgspec.msgpack.encode((7, 1, b"\x05", 10, 999))  # pulled every source in full
    pull = Pull(7, 3, ["n3", "n1", "n2"], ["n1", "n2", "n3"])
    pull.restore(old)
    assert pull.sources == ["n1", "n2", "n3"] and pull.source_index == 1 and pull.copied


def test_the_replica_a_join_drops_is_copied_in_full():
    world = Joining()
    view = world.parts["n4"].view
    for partition in view.my_moves():
        placed = set(view.placed_replicas(partition))
        leaving = placed - set(view.replicas(partition))
        order = order_sources(view, partition, {})
        if leaving:
            assert order[0] in leaving
        assert sorted(order) == sorted(placed - {"n4"})


def test_among_staying_replicas_the_least_busy_is_copied():
    p = parts("n4", names=["n1", "n2", "n3", "n4"])
    partition = 0
    placed = [x for x in p.view.placed_replicas(partition) if x != "n4"]
    assert order_sources(p.view, partition, {placed[0]: 2})[0] != placed[0]


def test_digests_are_served_in_order_and_a_corrupt_record_is_left_out():
    p = parts("n1")
    for i in range(30):
        p.store.put("b", f"k{i}", first_write(b"v" * 10, "n1@x.0"))
    partition = p.view.ring.partition("b", "k0")
    start, end = partition_range(partition, p.view.ring.size)
    digests = [d for d, _ in p.engine.scan(start, end)]
    bad = digests[0]
    p.engine.put(bad, p.engine.get(bad)[:-1] + b"\x00")  # its CRC no longer matches
    request = TransferDigestRequest(5, partition, b"", 100)
    ((_, reply),) = sends(transfers(p).on_digest_request(0.0, "n4", request))
    assert isinstance(reply, TransferDigests) and reply.done
    assert [d for d, _ in reply.versions] == digests[1:]
    assert p.store.found_corrupt  # noted, for the node to repair
    for digest, vhash in reply.versions:
        _, _, state = _unsealed(p, digest)
        assert vhash == version_hash(versions.decode(state))


def _unsealed(p: Parts, digest: bytes) -> tuple[str, str, bytes]:
    from dynakv.core.replica import unseal

    return unseal(p.engine.get(digest))


def test_a_digest_batch_stops_after_its_read_budget():
    p = parts("n1")
    for i in range(40):
        p.store.put("b", f"k{i}", first_write(b"v" * 1000, "n1@x.0"))
    start, end = partition_range(p.view.ring.partition("b", "k0"), p.view.ring.size)
    pairs, last, done = scan_versions(p.store, start, end, b"", 1000, 1500)
    assert len(pairs) == 2 and not done and last == pairs[-1][0]
    rest, _, done = scan_versions(p.store, start, end, last, 1000, 1 << 30)
    assert done and [d for d, _ in rest] == [d for d, _ in p.engine.scan(start, end)][2:]


def test_bad_digest_and_fetch_requests_are_refused_and_served_after():
    p = parts("n1")
    t = transfers(p)
    p.store.put("b", "k0", first_write(b"v", "n1@x.0"))
    partition = p.view.ring.partition("b", "k0")
    digest = storage_key("b", "k0")
    bad = [
        (t.on_digest_request, TransferDigestRequest(1, 10_000, b"", 5)),
        (t.on_digest_request, TransferDigestRequest(1, partition, b"", 0)),
        (t.on_fetch, TransferFetch(1, partition, [b"short"])),
        (t.on_fetch, TransferFetch(1, (partition + 1) % 16, [digest])),  # not in that partition
        (t.on_fetch, TransferFetch(1, partition, [digest, digest])),  # not distinct
        (t.on_fetch, TransferFetch(1, partition, [digest] * 10_001)),
    ]
    for handler, msg in bad:
        with pytest.raises(InvalidRequest):
            handler(0.0, "n4", msg)
    (_, reply), = sends(t.on_fetch(0.0, "n4", TransferFetch(2, partition, [digest])))  # fmt: skip
    assert isinstance(reply, TransferBatch) and len(reply.records) == 1 and reply.done


def test_a_fetch_answers_in_order_up_to_its_byte_budget():
    p = parts("n1", transfer_batch_bytes=2500)
    for i in range(200):
        p.store.put("b", f"k{i}", first_write(b"v" * 1000, "n1@x.0"))
    partition = p.view.ring.partition("b", "k0")
    start, end = partition_range(partition, p.view.ring.size)
    digests = [d for d, _ in p.engine.scan(start, end)]
    assert len(digests) >= 4
    ((_, reply),) = sends(transfers(p).on_fetch(0.0, "n4", TransferFetch(2, partition, digests)))
    assert len(reply.records) == 3 and reply.last == digests[2] and not reply.done


def test_digests_outside_the_partition_are_logged_and_not_compared():
    world = Joining()
    n4 = world.nodes["n4"]
    to, request = sends(n4.on_tick(0.0), TransferRequest)[0]
    pull = n4.pulls[request.partition]
    pull.copied = True
    wrong = (request.partition + 1) % 16
    start, _ = partition_range(wrong, 16)
    reply = TransferDigests(request.rid, request.partition, [(start, b"h" * 16)], start, False)
    assert sends(n4.on_digests(0.1, to, reply)) == []
    assert any(log.event == "bad_transfer_digests" for log in world.parts["n4"].logs)
    assert pull.compared == 0 and pull.cursor == b""


def test_only_keys_of_another_version_are_wanted():
    p = parts("n4")
    same, other, absent = (first_write(b"a", "n1@x.0"), first_write(b"b", "n1@x.0"), None)
    p.store.put("b", "same", same)
    p.store.put("b", "other", other)
    pairs = sorted(
        [
            (storage_key("b", "same"), version_hash(same)),
            (storage_key("b", "other"), version_hash(rewrite(other, b"c", "n2@x.0"))),
            (storage_key("b", "absent"), version_hash(first_write(b"d", "n1@x.0"))),
        ]
    )
    wanted = local_differs(p.store, pairs)
    assert sorted(wanted) == sorted([storage_key("b", "other"), storage_key("b", "absent")])
    assert absent is None


_values = st.binary(max_size=64)
_actors = st.sampled_from(["n1@a", "n2@b", "n3@c"])


@st.composite
def clocks(draw: st.DrawFn) -> versions.Clock:
    clock = None
    for _ in range(draw(st.integers(1, 4))):
        value = versions.Sibling(draw(_values), draw(st.booleans()), "", draw(st.integers(0, 9)))
        context = versions.join(clock) if clock is not None and draw(st.booleans()) else ()
        clock = versions.update(versions.new(context, value), clock, draw(_actors))
    assert clock is not None
    if draw(st.booleans()):  # an undotted value, as a client clock holds
        extra = versions.Sibling(draw(_values), False, "t", draw(st.integers(0, 9)))
        clock = versions.Clock(clock.entries, (extra,))
    return clock


@given(clocks())
def test_the_version_hash_of_a_stored_state_is_anti_entropys(clock):
    state = versions.encode(clock)
    assert state_version_hash(state) == version_hash(clock)
    # ... also read through a view of a large record, as stored states of 1 MiB values are
    raw = seal("b", "k", state + b"")
    assert state_version_hash(memoryview(raw)[: len(raw) - 4][-len(state) :]) == version_hash(clock)


def test_a_megabyte_value_is_hashed_without_its_bytes():
    big = first_write(b"x" * (1 << 20), "n1@x.0")
    small = first_write(b"y", "n1@x.0")
    assert state_version_hash(versions.encode(big)) == state_version_hash(versions.encode(small))
    with pytest.raises(InvalidRequest):
        state_version_hash(b"\xc1 not a clock")


def test_a_source_that_refuses_digests_is_pulled_in_full_from_the_cursor():
    world = Joining()
    n4 = world.nodes["n4"]
    _, request = sends(n4.on_tick(0.0), TransferRequest)[0]
    pull = n4.pulls[request.partition]
    pull.copied, pull.cursor = True, b"\x07"  # comparing the next source, past key 07
    (source, asked), = sends(n4._request_batch(pull, 1.0))  # fmt: skip
    assert isinstance(asked, TransferDigestRequest)
    refusal = ErrorReply(asked.rid, "invalid_request", "message type is not accepted here")
    (again_to, again), = sends(n4.on_error(1.1, source, refusal))  # fmt: skip
    assert again_to == source and isinstance(again, TransferRequest) and again.after == b"\x07"
    assert any(log.event == "transfer_digests_refused" for log in world.parts["n4"].logs)
    assert n4.on_error(1.2, source, ErrorReply(12345, "x", "not a pull's")) is None
