"""Laws of dynakv.versions: DVVSet sync/update, lww, the hybrid clock and the wire formats."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv.errors import InvalidRequest
from dynakv.versions import (
    MAX_CONTEXT_CHARS,
    Clock,
    Entry,
    HybridClock,
    Sibling,
    VersionVector,
    decode,
    decode_context,
    descends,
    encode,
    encode_context,
    join,
    live_values,
    lww,
    new,
    sync,
    sync_all,
    update,
    values,
)

ACTORS = ("a@01", "b@02", "c@03")
LAWS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def s(name: str, ts: int = 0, deleted: bool = False) -> Sibling:
    return Sibling(name.encode(), deleted=deleted, timestamp=ts)


def put(value: Sibling, local: Clock | None, actor: str, context: VersionVector = ()) -> Clock:
    return update(new(context, value), local, actor)


def check_canonical(clock: Clock) -> None:
    actors = [e.actor for e in clock.entries]
    assert actors == sorted(set(actors))
    for e in clock.entries:
        assert e.counter >= 1
        assert len(e.values) <= e.counter


def vv_le(a: VersionVector, b: VersionVector) -> bool:
    bd = dict(b)
    return all(bd.get(actor, 0) >= n for actor, n in a)


# --- reachable states: random histories of puts and syncs over a few replicas ---------------


@dataclass
class Model:
    """Replicas (one actor each) and an independent set-of-dots model of what they hold."""

    lww: bool = False
    states: list[Clock | None] = field(default_factory=lambda: [None] * len(ACTORS))
    hlcs: list[HybridClock] = field(default_factory=lambda: [HybridClock() for _ in ACTORS])
    # dot model per replica: (history as {actor: counter}, {dot: Sibling} held)
    dots: list[tuple[dict[str, int], dict[tuple[str, int], Sibling]]] = field(
        default_factory=lambda: [({}, {}) for _ in ACTORS]
    )
    stamps: dict[tuple[str, int], int] = field(default_factory=dict)  # dot -> timestamp
    pool: list[Clock] = field(default_factory=list)
    writes: int = 0

    def read(self, replicas: list[int]) -> VersionVector:
        got = [c for c in (self.states[i] for i in replicas) if c is not None]
        return join(sync_all(got))

    def causal_max_stamp(self, hist: dict[str, int]) -> int:
        return max(
            (self.stamps[(a, k)] for a, n in hist.items() for k in range(1, n + 1)), default=0
        )

    def put(self, i: int, context: VersionVector, wall: float, deleted: bool) -> None:
        self.writes += 1
        actor = ACTORS[i]
        hist, held = self.dots[i]
        new_hist = dict(hist)
        for a, n in context:
            new_hist[a] = max(new_hist.get(a, 0), n)
        ts = 0
        if self.lww:  # timestamps respect causality: above everything in the write's past
            self.hlcs[i].observe(self.causal_max_stamp(new_hist))
            ts = self.hlcs[i].now(wall)
        value = Sibling(b"w%d" % self.writes, deleted=deleted, timestamp=ts)
        clock = update(new(context, value), self.states[i], actor)
        ctx = dict(context)
        new_held = {d: v for d, v in held.items() if ctx.get(d[0], 0) < d[1]}
        dot = (actor, new_hist.get(actor, 0) + 1)
        new_hist[actor] = dot[1]
        new_held[dot] = value
        self.stamps[dot] = ts
        self.finish(i, clock, new_hist, new_held)

    def sync(self, i: int, j: int) -> None:
        a, b = self.states[i], self.states[j]
        if b is None:
            return
        clock = b if a is None else sync(a, b)
        (ha, va), (hb, vb) = self.dots[i], self.dots[j]
        hist = {x: max(ha.get(x, 0), hb.get(x, 0)) for x in ha.keys() | hb.keys()}
        held = {d: v for d, v in va.items() if d in vb or hb.get(d[0], 0) < d[1]}
        held.update({d: v for d, v in vb.items() if d in va or ha.get(d[0], 0) < d[1]})
        self.finish(i, clock, hist, held)

    def finish(self, i: int, clock: Clock, hist: dict, held: dict) -> None:
        if self.lww:
            clock = lww(clock)
            if held:
                best = max(held, key=lambda d: (held[d].timestamp, d[0], d[1]))
                held = {best: held[best]}
        check_canonical(clock)
        assert join(clock) == tuple(sorted(hist.items()))
        got = values(clock)
        assert len(got) == len(held) and set(got) == set(held.values()), "differs from dot model"
        self.states[i] = clock
        self.dots[i] = (hist, held)
        self.pool.append(clock)


replica = st.integers(0, len(ACTORS) - 1)
op = st.one_of(
    st.tuples(
        st.just("put"),
        replica,
        st.lists(replica, max_size=2),  # replicas the client read its context from ([] = blind)
        st.floats(0, 10, allow_nan=False),  # wall clock of the coordinator; may go backwards
        st.booleans(),
    ),
    st.tuples(st.just("sync"), replica, replica),
)


@st.composite
def histories(draw: st.DrawFn, lww_mode: bool = False) -> Model:
    model = Model(lww=lww_mode)
    model.put(draw(replica), (), 1.0, False)
    for step in draw(st.lists(op, max_size=30)):
        if step[0] == "put":
            _, i, readers, wall, deleted = step
            model.put(i, model.read(readers), wall, deleted and draw(st.booleans()))
        else:
            model.sync(step[1], step[2])
    return model


@st.composite
def three_states(draw: st.DrawFn, lww_mode: bool = False) -> tuple[Clock, Clock, Clock]:
    pool = draw(histories(lww_mode)).pool
    pick = st.sampled_from(pool)
    return draw(pick), draw(pick), draw(pick)


def lsync(a: Clock, b: Clock) -> Clock:
    return lww(sync(a, b))


# --- sync laws -------------------------------------------------------------------------------


@LAWS
@given(histories())
def test_sync_and_update_agree_with_the_dot_set_model(model: Model) -> None:
    # the checks run inside Model.finish after every step
    assert model.pool


@LAWS
@given(three_states())
def test_sync_is_commutative(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, _ = abc
    assert sync(a, b) == sync(b, a)


@LAWS
@given(three_states())
def test_sync_is_associative(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, c = abc
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync_all([a, b, c]) == sync_all([c, b, a])


@LAWS
@given(three_states())
def test_sync_is_idempotent(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, _ = abc
    assert sync(a, a) == a
    ab = sync(a, b)
    assert sync(ab, b) == ab
    assert sync(ab, a) == ab


def test_sync_gives_back_the_input_that_covers_the_other_as_it_is() -> None:
    # ReplicaStore.merge stores the incoming bytes unchanged only when sync returns the
    # incoming clock itself: the common case of a replica's update over its older copy.
    older = put(s("v1", 1), None, "a@01")
    newer = put(s("v2", 2), older, "a@01", join(older))
    assert sync(newer, older) is newer
    assert sync(older, newer) is newer
    two = put(s("w", 3), newer, "b@02", join(newer))
    assert sync(two, newer) is two


@LAWS
@given(three_states(), st.booleans())
def test_merge_stores_exactly_the_merged_state(abc: tuple[Clock, Clock, Clock], lw: bool) -> None:
    from dynakv.core.replica import ReplicaStore
    from dynakv.storage.memory import MemoryEngine

    a, b, _ = abc
    store = ReplicaStore(MemoryEngine())
    store.put("bk", "k", b)
    merged = store.merge("bk", "k", a, lw, encode(a))  # the incoming bytes passed along
    expected = lww(sync(a, b)) if lw else sync(a, b)
    assert merged == expected
    stored = store.get_state("bk", "k")
    assert stored is not None and decode(stored) == expected


@LAWS
@given(three_states())
def test_sync_result_descends_both_inputs_and_joins_their_vectors(
    abc: tuple[Clock, Clock, Clock],
) -> None:
    a, b, _ = abc
    ab = sync(a, b)
    assert descends(ab, a)
    assert descends(ab, b)
    expected = dict(join(a))
    for actor, n in join(b):
        expected[actor] = max(expected.get(actor, 0), n)
    assert join(ab) == tuple(sorted(expected.items()))


def test_sync_all_of_nothing_is_the_empty_clock() -> None:
    assert sync_all([]) == Clock()
    one = put(s("v"), None, "a")
    assert sync_all([one]) is one


# --- puts and siblings ------------------------------------------------------------------------


def test_put_with_read_context_replaces_what_it_saw() -> None:
    x = put(s("x"), None, "a")  # two concurrent values at two replicas
    y = put(s("y"), None, "b")
    seen = sync(x, y)
    z = put(s("z"), None, "c")  # a third one the reader does not see
    state = sync(seen, z)
    assert sorted(v.value for v in values(state)) == [b"x", b"y", b"z"]
    after = put(s("w"), state, "a", context=join(seen))
    assert sorted(v.value for v in values(after)) == [b"w", b"z"]
    # the coordinator need not have the values the context covers
    elsewhere = put(s("w2"), z, "c", context=join(seen))
    assert sync(elsewhere, seen) == sync(seen, elsewhere)
    assert sorted(v.value for v in values(sync(elsewhere, seen))) == [b"w2", b"z"]


@LAWS
@given(histories(), replica, replica)
def test_put_with_read_context_replaces_exactly_the_covered_values(
    model: Model, reader: int, coordinator: int
) -> None:
    read = model.states[reader] or Clock()
    local = model.states[coordinator]
    before = values(sync(read, local)) if local is not None else values(read)
    after = put(s("new"), local, ACTORS[coordinator], context=join(read))
    survivors = [v for v in values(after) if v.value != b"new"]
    seen = set(values(read))
    assert set(survivors) == {v for v in before if v not in seen}
    assert s("new") in values(after)


def test_blind_writes_become_siblings() -> None:
    # at two different coordinators
    x = put(s("x"), None, "a")
    y = put(s("y"), None, "b")
    both = sync(x, y)
    assert [v.value for v in values(both)] == [b"x", b"y"]
    # at the same coordinator
    one = put(s("1"), None, "a")
    two = put(s("2"), one, "a")
    assert [v.value for v in values(two)] == [b"2", b"1"]
    assert join(two) == (("a", 2),)
    # a write that read the first but not the second
    three = put(s("3"), two, "a", context=join(one))
    assert [v.value for v in values(three)] == [b"3", b"2"]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 7),
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=60),
)
def test_sibling_count_bounded_by_real_concurrency(k: int, steps: list[tuple[int, bool]]) -> None:
    # k clients on one coordinator; a client writes with the context of its last read, and
    # reads again before its next write
    state: Clock | None = None
    contexts: list[VersionVector | None] = [None] * k
    for n, (writer, is_read) in enumerate(steps):
        writer %= k
        if is_read or contexts[writer] is None:
            contexts[writer] = join(state) if state is not None else ()
        if not is_read:
            state = put(s(f"{writer}-{n}"), state, "coord@1", context=contexts[writer] or ())
            contexts[writer] = None
            assert len(values(state)) <= k


def test_seven_writers_interleaving_read_then_write_keep_at_most_seven_siblings() -> None:
    # riak_test sibling_explosion: all writers read, then all write, repeatedly
    state: Clock | None = None
    for round_ in range(10):
        contexts = [join(state) if state else () for _ in range(7)]
        for w in range(7):
            state = put(s(f"{round_}-{w}"), state, "coord@1", context=contexts[w])
        assert state is not None
        assert len(values(state)) == 7


# --- join / descends / values -------------------------------------------------------------------


@LAWS
@given(three_states())
def test_descends_matches_the_version_vectors(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, _ = abc
    assert descends(a, b) == vv_le(join(b), join(a))
    assert descends(a, a)
    assert (descends(a, b) and descends(b, a)) == (join(a) == join(b))
    assert descends(new(join(a), s("v")), a)
    assert descends(put(s("v"), b, "a@01", context=join(a)), a)
    assert not descends(a, put(s("v"), a, "z"))


@LAWS
@given(three_states())
def test_values_are_deterministic(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, c = abc
    assert values(sync(a, b)) == values(sync(b, a))
    assert values(sync(sync(a, b), c)) == values(sync(a, sync(b, c)))
    assert values(decode(encode(a))) == values(a)
    assert live_values(a) == [v for v in values(a) if not v.deleted]


def test_values_order_is_anonymous_then_actor_then_newest_dot() -> None:
    clock = Clock(
        (Entry("a", 4, (s("a4"), s("a3"))), Entry("b", 1, ()), Entry("c", 1, (s("c1", 0, True),))),
        (s("anon"),),
    )
    assert [v.value for v in values(clock)] == [b"anon", b"a4", b"a3", b"c1"]
    assert [v.value for v in live_values(clock)] == [b"anon", b"a4", b"a3"]


def test_tombstone_is_a_value_that_replaces_what_it_saw() -> None:
    x = put(s("x"), None, "a")
    gone = put(s("", deleted=True), x, "b", context=join(x))
    assert live_values(gone) == []
    assert values(gone) == [s("", deleted=True)]
    back = put(s("again"), gone, "a", context=join(gone))
    assert [v.value for v in live_values(back)] == [b"again"]


def test_update_needs_a_clock_from_new() -> None:
    with pytest.raises(ValueError):
        update(Clock(), None, "a")


def test_update_keeps_timestamps_non_decreasing_along_an_actors_dots() -> None:
    first = put(s("x", ts=100), None, "a")
    second = put(s("y", ts=50), first, "a")  # the node's clock went backwards
    assert [v.timestamp for v in values(second)] == [100, 100]
    assert lww(second).entries == (Entry("a", 2, (s("y", ts=100),)),)


# --- last writer wins -------------------------------------------------------------------------


@LAWS
@given(three_states())
def test_lww_keeps_exactly_the_value_with_greatest_timestamp_then_actor(
    abc: tuple[Clock, Clock, Clock],
) -> None:
    a, b, _ = abc
    merged = sync(a, b)
    ranked = [
        ((v.timestamp, e.actor, e.counter - i), v)
        for e in merged.entries
        for i, v in enumerate(e.values)
    ]
    result = lww(merged)
    check_canonical(result)
    assert join(result) == join(merged)
    if ranked:
        assert values(result) == [max(ranked, key=lambda kv: kv[0])[1]]
    else:
        assert values(result) == []
    assert lww(result) == result


@LAWS
@given(three_states(lww_mode=True))
def test_lww_sync_is_commutative_associative_idempotent(abc: tuple[Clock, Clock, Clock]) -> None:
    a, b, c = abc
    for x in (a, b, c):
        assert len(values(x)) == 1
    assert lsync(a, b) == lsync(b, a)
    assert lsync(lsync(a, b), c) == lsync(a, lsync(b, c))
    assert lsync(a, a) == a
    assert lsync(lsync(a, b), b) == lsync(a, b)


def test_lww_tie_on_timestamp_goes_to_the_greater_actor() -> None:
    x = put(s("x", ts=7), None, "node1@aa")
    y = put(s("y", ts=7), None, "node2@bb")
    assert values(lww(sync(x, y))) == [s("y", ts=7)]
    assert values(lww(sync(y, x))) == [s("y", ts=7)]
    older = put(s("z", ts=6), None, "node3@cc")
    assert values(lww(sync_all([x, y, older]))) == [s("y", ts=7)]


def test_lww_of_one_value_returns_the_same_clock() -> None:
    x = put(s("x", ts=7), None, "a")
    assert lww(x) is x
    assert lww(Clock()) == Clock()


# --- hybrid logical clock -------------------------------------------------------------------


def test_hybrid_clock_follows_wall_time_in_milliseconds() -> None:
    hlc = HybridClock()
    assert hlc.now(1.0) == 1000 << 16
    assert hlc.now(1.0) == (1000 << 16) + 1
    assert hlc.now(2.5) == 2500 << 16
    hlc.observe(9000 << 16)
    assert hlc.now(3.0) == (9000 << 16) + 1
    assert HybridClock(last=42).now(0.0) == 43


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(-1e3, 1e10, allow_nan=False).map(lambda w: ("now", w)),
            st.integers(0, 2**80).map(lambda t: ("observe", t)),
        ),
        max_size=50,
    )
)
def test_hybrid_clock_is_monotonic_even_when_wall_time_goes_backwards(
    steps: list[tuple[str, float]],
) -> None:
    hlc = HybridClock()
    floor = 0
    for kind, arg in steps:
        if kind == "now":
            ts = hlc.now(arg)
            assert ts > floor
            assert ts >= int(arg * 1000) << 16
            floor = ts
        else:
            hlc.observe(int(arg))
            floor = max(floor, int(arg))


# --- wire formats ---------------------------------------------------------------------------


@LAWS
@given(three_states())
def test_encode_decode_round_trip(abc: tuple[Clock, Clock, Clock]) -> None:
    for clock in abc:
        assert decode(encode(clock)) == clock
    client = new(join(abc[0]), s("v", ts=3, deleted=True))
    assert decode(encode(client)) == client


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        msgspec.msgpack.encode({"entries": []}),
        msgspec.msgpack.encode([[["a", "1", []]], []]),
        msgspec.msgpack.encode([[["b", 1, []], ["a", 1, []]], []]),  # unsorted
        msgspec.msgpack.encode([[["a", 1, []], ["a", 2, []]], []]),  # duplicate actor
        msgspec.msgpack.encode([[["a", 0, []]], []]),  # zero counter
        msgspec.msgpack.encode([[["a", 1, [[b"x"], [b"y"]]]], []]),  # more values than events
        encode(Clock()) + b"\x00",  # trailing bytes
    ],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode(data)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("!!!!", "base64"),
        ("ab+/", "base64"),
        ("a", "base64"),
        ("YWJj ZA", "base64"),
        (b64(b"\xc1"), "msgpack"),
        (b64(msgspec.msgpack.encode({"a": 1})), "pairs"),
        (b64(msgspec.msgpack.encode([["a", 1, 2]])), "pairs"),
        (b64(msgspec.msgpack.encode([["a", True]])), "pairs"),
        (b64(msgspec.msgpack.encode([["a", 1.5]])), "pairs"),
        (b64(msgspec.msgpack.encode([["a", 0]])), "positive"),
        (b64(msgspec.msgpack.encode([["a", -3]])), "positive"),
        (b64(msgspec.msgpack.encode([["", 1]])), "empty"),
        (b64(msgspec.msgpack.encode([["b", 1], ["a", 2]])), "sorted"),
        (b64(msgspec.msgpack.encode([["a", 1], ["a", 2]])), "sorted"),
        (b64(msgspec.msgpack.encode([["a", 1]]) + b"\x00"), "msgpack"),
        ("A" * (MAX_CONTEXT_CHARS + 4), "characters"),
    ],
)
def test_decode_context_rejects_garbage_with_a_clear_message(text: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        decode_context(text)


vectors = st.dictionaries(st.text(min_size=1, max_size=20), st.integers(1, 2**63), max_size=8).map(
    lambda d: tuple(sorted(d.items()))
)


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_encode_context_decode_context_round_trip(vv: VersionVector) -> None:
    text = encode_context(vv)
    assert decode_context(text) == vv
    assert "=" not in text and "+" not in text and "/" not in text
    assert (text == "") == (vv == ())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(b64)))
def test_decode_context_accepts_only_valid_vectors(text: str) -> None:
    try:
        vv = decode_context(text)
    except InvalidRequest:
        return
    assert all(n >= 1 for _, n in vv)
    assert [a for a, _ in vv] == sorted({a for a, _ in vv})
    assert decode_context(encode_context(vv)) == vv


def test_decode_context_accepts_padding_and_empty() -> None:
    vv = (("node1@3f9a2c1b", 3), ("node2@77aa", 1))
    padded = base64.urlsafe_b64encode(msgspec.msgpack.encode(vv)).decode()
    assert decode_context(padded) == vv
    assert decode_context("") == ()
    assert encode_context(()) == ""


# --- examples ported from riak_core dvvset.erl's EUnit tests -----------------------------------


def ent(actor: str, counter: int, *vals: Sibling) -> Entry:
    return Entry(actor, counter, vals)


v1, v2, v3, v4, v5 = (s(f"v{i}") for i in range(1, 6))


def test_dvvset_join() -> None:
    a = new((), v1)
    a1 = update(a, None, "a")
    b1 = update(new(join(a1), v2), a1, "b")
    assert join(a) == ()
    assert join(a1) == (("a", 1),)
    assert join(b1) == (("a", 1), ("b", 1))


def test_dvvset_update() -> None:
    a0 = update(new((), v1), None, "a")
    a1 = update(new(join(a0), v2), a0, "a")
    a2 = update(new(join(a1), v3), a1, "b")
    a3 = update(new(join(a0), v4), a1, "b")
    a4 = update(new(join(a0), v5), a1, "a")
    assert a0 == Clock((ent("a", 1, v1),))
    assert a1 == Clock((ent("a", 2, v2),))
    assert a2 == Clock((ent("a", 2), ent("b", 1, v3)))
    assert a3 == Clock((ent("a", 2, v2), ent("b", 1, v4)))
    assert a4 == Clock((ent("a", 3, v5, v2),))
    # event: a new actor's entry is inserted in order
    assert update(new((), v2), a0, "0").entries == (ent("0", 1, v2), ent("a", 1, v1))


def test_dvvset_sync() -> None:
    x = Clock((ent("x", 1),))
    a = update(new((), v1), None, "a")
    y = update(new((), v2), None, "b")
    a1 = update(new(join(a), v2), None, "a")
    a3 = update(new(join(a1), v3), None, "b")
    a4 = update(new(join(a1), v3), None, "c")
    w = Clock((ent("a", 1),))
    z = Clock((ent("a", 2, v2, v1),))
    assert sync(w, z) == Clock((ent("a", 2, v2),))
    assert sync(w, z) == sync(z, w)
    assert sync(a, a1) == sync(a1, a)
    assert sync(a4, a3) == sync(a3, a4)
    assert sync(a4, a3) == Clock((ent("a", 2), ent("b", 1, v3), ent("c", 1, v3)))
    assert sync(x, a) == Clock((ent("a", 1, v1), ent("x", 1)))
    assert sync(x, a) == sync(a, x)
    assert sync(a, y) == Clock((ent("a", 1, v1), ent("b", 1, v2)))
    assert sync(y, a) == sync(a, y)
    assert lww(a4) == sync(a4, lww(a4))


def test_dvvset_sync_update() -> None:
    a0 = update(new((), v1), None, "a")  # Mary writes v1 without a context
    vv1 = join(a0)  # Peter reads v1
    a1 = update(new((), v2), a0, "a")  # Mary writes v2 without a context
    a2 = update(new(vv1, v3), a1, "a")  # Peter writes v3 with the context of v1
    assert vv1 == (("a", 1),)
    assert a0 == Clock((ent("a", 1, v1),))
    assert a1 == Clock((ent("a", 2, v2, v1),))
    assert a2 == Clock((ent("a", 3, v3, v2),))  # v3 replaced v1 only


def test_dvvset_less_as_descends() -> None:
    def less(p: Clock, q: Clock) -> bool:
        return descends(q, p) and not descends(p, q)

    a = update(new((), v1), None, "a")
    b = update(new(join(a), v2), None, "a")
    b2 = update(new(join(a), v2), None, "b")
    b3 = update(new(join(a), v2), None, "z")
    c = update(new(join(b), v3), a, "c")
    d = update(new(join(c), v4), b2, "d")
    assert less(a, b) and less(a, c) and less(b, c) and less(b, d)
    assert less(b2, d) and less(a, d)
    assert not less(b2, c) and not less(b, b2) and not less(b2, b)
    assert not less(a, a) and not less(c, c) and not less(d, b2) and not less(b3, d)


def test_dvvset_lww() -> None:
    def t(n: int) -> Sibling:
        return s(str(n), ts=n)

    x = Clock((ent("a", 4, t(5), t(2)), ent("b", 1), ent("c", 1, t(3))))
    y = Clock(x.entries, (t(10), t(0)))
    z = Clock((ent("a", 4, t(5), t(2)), ent("b", 1, t(1))), (t(3),))
    assert lww(x) == Clock((ent("a", 4, t(5)), ent("b", 1), ent("c", 1)))
    assert lww(y) == Clock((ent("a", 4), ent("b", 1), ent("c", 1)), (t(10),))
    assert lww(z) == Clock((ent("a", 4, t(5)), ent("b", 1)))
    ts = Clock(
        (
            ent("a", 4, s("5", ts=1002345), s("7", ts=1002340)),
            ent("b", 1, s("4", ts=1001340)),
        ),
        (s("2", ts=1001140),),
    )
    assert lww(ts) == Clock((ent("a", 4, s("5", ts=1002345)), ent("b", 1)))


def test_dvvset_anonymous_values_in_sync() -> None:
    # anonymous values only live in client clocks; sync keeps those of a strictly newer side
    older = new((("a", 1),), v1)
    newer = new((("a", 2),), v2)
    assert sync(older, newer).anonymous == (v2,)
    assert sync(newer, older).anonymous == (v2,)
    other = new((("b", 1),), v3)
    assert sync(older, other) == sync(other, older)
    assert set(sync(older, other).anonymous) == {v1, v3}


def test_no_two_reachable_clocks_compare_equal_unless_same_state() -> None:
    # canonical form: == compares states, independent of how they were built
    x = put(s("x"), None, "a")
    y = put(s("y"), None, "b")
    built = [sync(x, y), sync(y, x), sync_all([x, y, x]), decode(encode(sync(x, y)))]
    for p, q in itertools.combinations(built, 2):
        assert p == q
