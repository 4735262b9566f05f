"""Laws of core.merkle: per-partition hash trees, the top-down exchange and version hashes."""

from __future__ import annotations

import hashlib
import random
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv import versions
from dynakv.core.merkle import (
    DEFAULT_BRANCHING,
    DEFAULT_SEGMENTS,
    Exchange,
    HashRequest,
    HashTree,
    KeyDiff,
    SegmentDiff,
    diff_keys,
    version_hash,
)
from dynakv.core.replica import ReplicaStore, unseal
from dynakv.ring import key_digest, partition_of_digest, partition_range
from dynakv.storage.memory import MemoryEngine
from dynakv.versions import Clock, Entry, Sibling

LAWS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RING = 4
PARTITION = 2
# (segments, branching): one segment, a root with fewer children than the branching, deep, wide
SHAPES = [(1, 2), (8, 32), (64, 4), (256, 16), (2048, 32)]
VERSIONS = [hashlib.blake2b(bytes([i]), digest_size=16).digest() for i in range(6)]

Model = dict[bytes, bytes]


def digest(low: int, partition: int = PARTITION, ring: int = RING) -> bytes:
    """The digest `low` places into `partition`."""
    shift = 128 - (ring.bit_length() - 1)
    return ((partition << shift) | low).to_bytes(16, "big")


def tree_of(model: Model, shape: tuple[int, int] = (64, 4)) -> HashTree:
    tree = HashTree(PARTITION, RING, *shape)
    tree.rebuild(model.items())
    return tree


def exchange(local: HashTree, remote: HashTree) -> tuple[SegmentDiff, int]:
    """Run the protocol with `remote` answering in-process; the result and the round trips."""
    ex = Exchange(local)
    step: HashRequest | SegmentDiff | None = ex.start()
    while isinstance(step, HashRequest):
        step = ex.on_hashes(step.level, step.indices, remote.level_hashes(step.level, step.indices))
    assert isinstance(step, SegmentDiff)
    return step, ex.requests


def in_segments(model: Model, tree: HashTree, segments: tuple[int, ...]) -> Model:
    wanted = set(segments)
    return {d: v for d, v in model.items() if tree.segment_of(d) in wanted}


def found_by_exchange(local: Model, remote: Model, shape: tuple[int, int]) -> KeyDiff:
    """What a node ends with: the key diff of the segments the exchange found differing."""
    local_tree, remote_tree = tree_of(local, shape), tree_of(remote, shape)
    result, _ = exchange(local_tree, remote_tree)
    return diff_keys(
        in_segments(local, local_tree, result.segments),
        in_segments(remote, remote_tree, result.segments),
    )


lows = st.integers(0, (1 << 126) - 1)
models = st.dictionaries(lows.map(digest), st.sampled_from(VERSIONS), max_size=40)
shapes = st.sampled_from(SHAPES)


# --- contents determine the root -----------------------------------------------------------


@LAWS
@given(models, shapes, st.randoms(use_true_random=False))
def test_equal_contents_give_equal_roots_in_any_insertion_order(
    model: Model, shape: tuple[int, int], rnd: random.Random
) -> None:
    items = list(model.items())
    rnd.shuffle(items)
    one = HashTree(PARTITION, RING, *shape)
    for d, v in items:
        one.insert(d, v)
    rnd.shuffle(items)
    other = HashTree(PARTITION, RING, *shape)
    other.rebuild(items)
    assert one.root() == other.root()
    assert len(one) == len(other) == len(model)
    assert exchange(one, other)[0] == SegmentDiff(())


@LAWS
@given(st.lists(st.tuples(lows.map(digest), st.sampled_from([None, *VERSIONS])), max_size=60))
def test_incremental_updates_equal_a_full_rebuild(ops: list[tuple[bytes, bytes | None]]) -> None:
    model: Model = {}
    tree = HashTree(PARTITION, RING, 64, 4)
    for i, (d, v) in enumerate(ops):
        tree.update(d, model.get(d), v)
        if v is None:
            model.pop(d, None)
        else:
            model[d] = v
        if i % 7 == 0:
            tree.root()  # interleave rehashes with updates
    rebuilt = tree_of(model)
    assert tree.root() == rebuilt.root()
    assert tree.to_bytes() == rebuilt.to_bytes()
    assert len(tree) == len(model)


def test_the_empty_tree_has_a_fixed_root_and_an_insert_then_delete_restores_it() -> None:
    tree = HashTree(PARTITION, RING)
    empty = tree.root()
    assert empty == HashTree(PARTITION, RING).root()
    tree.insert(digest(12345), VERSIONS[0])
    assert tree.root() != empty
    tree.delete(digest(12345), VERSIONS[0])
    assert tree.root() == empty
    assert len(tree) == 0


# --- the exchange finds exactly what differs -----------------------------------------------


@LAWS
@given(models, lows.map(digest), st.sampled_from(VERSIONS), shapes, st.data())
def test_any_single_change_changes_the_root_and_the_exchange_finds_exactly_that_key(
    model: Model, key: bytes, version: bytes, shape: tuple[int, int], data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(["insert", "change", "delete"]))
    if kind == "insert" or not model:
        kind = "insert"
        model.pop(key, None)
        changed = {**model, key: version}
    else:
        key = data.draw(st.sampled_from(sorted(model)))
        changed = dict(model)
        if kind == "change":
            changed[key] = data.draw(st.sampled_from([v for v in VERSIONS if v != model[key]]))
        else:
            del changed[key]
    before, after = tree_of(model, shape), tree_of(changed, shape)
    assert before.root() != after.root()
    result, _ = exchange(after, before)
    assert result.segments == (after.segment_of(key),)
    expected = {
        "insert": KeyDiff([], [key], []),
        "change": KeyDiff([], [], [key]),
        "delete": KeyDiff([key], [], []),
    }
    assert found_by_exchange(changed, model, shape) == expected[kind]


@LAWS
@given(models, models, models, shapes)
def test_the_exchange_finds_exactly_the_true_symmetric_difference(
    base: Model, local_changes: Model, remote_changes: Model, shape: tuple[int, int]
) -> None:
    # Both sides start from `base`; each overwrites some keys and drops others.
    local = {**base, **local_changes}
    remote = {**base, **remote_changes}
    for d in list(base)[::3]:
        local.pop(d)
    for d in list(base)[1::4]:
        remote.pop(d)
    expected = KeyDiff(
        sorted(remote.keys() - local.keys()),
        sorted(local.keys() - remote.keys()),
        sorted(d for d in local.keys() & remote.keys() if local[d] != remote[d]),
    )
    assert found_by_exchange(local, remote, shape) == expected


@LAWS
@given(models, models)
def test_the_exchange_descends_only_into_differing_subtrees(local: Model, remote: Model) -> None:
    shape = (4096, 8)  # levels of 1, 8, 64, 512, 4096 nodes
    local_tree, remote_tree = tree_of(local, shape), tree_of(remote, shape)
    ex = Exchange(local_tree)
    step: HashRequest | SegmentDiff | None = ex.start()
    asked = 0
    while isinstance(step, HashRequest):
        hashes = remote_tree.level_hashes(step.level, step.indices)
        mine = local_tree.level_hashes(step.level, step.indices)
        differing = [i for i, a, b in zip(step.indices, mine, hashes, strict=True) if a != b]
        asked += len(step.indices)
        step = ex.on_hashes(step.level, step.indices, hashes)
        if isinstance(step, HashRequest):  # exactly the children of the nodes that differed
            assert list(step.indices) == [
                c for i in differing for c in local_tree.children(step.level - 1, i)
            ]
    assert isinstance(step, SegmentDiff)
    assert ex.hashes_received == asked
    assert asked <= 1 + 8 * local_tree.depth * max(1, len(local.keys() | remote.keys()))


def test_an_empty_replica_differs_in_every_occupied_segment() -> None:
    rnd = random.Random(5)
    full = {digest(rnd.getrandbits(126)): VERSIONS[1] for _ in range(500)}
    full_tree, empty_tree = tree_of(full, (256, 16)), tree_of({}, (256, 16))
    result, requests = exchange(empty_tree, full_tree)
    assert set(result.segments) == {full_tree.segment_of(d) for d in full}
    assert requests == 1 + empty_tree.depth
    assert found_by_exchange({}, full, (256, 16)) == KeyDiff(sorted(full), [], [])


def test_a_reply_that_answers_no_pending_request_is_ignored() -> None:
    local = tree_of({digest(1): VERSIONS[0]})
    remote = tree_of({digest(1): VERSIONS[1]})
    ex = Exchange(local)
    first = ex.start()
    root_reply = remote.level_hashes(first.level, first.indices)
    second = ex.on_hashes(first.level, first.indices, root_reply)
    assert isinstance(second, HashRequest) and second.level == 1
    assert ex.on_hashes(first.level, first.indices, root_reply) is None  # a duplicate
    assert ex.on_hashes(second.level, (0,), [bytes(16)]) is None  # not what was asked
    step: HashRequest | SegmentDiff | None = second
    while isinstance(step, HashRequest):
        reply = remote.level_hashes(step.level, step.indices)
        last = (step.level, step.indices, reply)
        step = ex.on_hashes(*last)
    assert step == SegmentDiff((local.segment_of(digest(1)),)) == ex.result
    assert ex.on_hashes(*last) is None  # the exchange is over


def test_a_reply_of_the_wrong_size_is_refused() -> None:
    ex = Exchange(tree_of({}))
    request = ex.start()
    with pytest.raises(ValueError):
        ex.on_hashes(request.level, request.indices, [])
    with pytest.raises(ValueError):
        ex.on_hashes(request.level, request.indices, [b"short"])


def test_diff_keys_names_sides_as_riak_does() -> None:
    a, b, c, d = (digest(i) for i in range(4))
    local = {a: VERSIONS[0], b: VERSIONS[0], c: VERSIONS[0]}
    remote = {b: VERSIONS[0], c: VERSIONS[1], d: VERSIONS[0]}
    assert diff_keys(local, remote) == KeyDiff(missing=[d], remote_missing=[a], different=[c])
    assert diff_keys(local, local) == KeyDiff([], [], [])


# --- lazy rehashing ------------------------------------------------------------------------


def test_a_rehash_touches_only_the_paths_above_dirty_segments() -> None:
    tree = HashTree(PARTITION, RING, 4096, 16)  # levels of 1, 16, 256, 4096 nodes
    assert tree.depth == 3
    tree.root()
    assert tree.inner_rehashes == 1 + 16 + 256  # the first root hashes every inner node once
    tree.inner_rehashes = 0
    tree.root()
    assert tree.inner_rehashes == 0  # nothing changed, nothing rehashed

    def in_segment(segment: int, n: int = 0) -> bytes:
        start, _ = tree.segment_range(segment)
        return (int.from_bytes(start, "big") + n).to_bytes(16, "big")

    tree.insert(in_segment(7), VERSIONS[0])
    tree.insert(in_segment(7, 1), VERSIONS[0])
    tree.update(in_segment(7), VERSIONS[0], VERSIONS[1])
    tree.root()
    assert tree.inner_rehashes == 3  # one segment changed: one node per level above it
    tree.inner_rehashes = 0
    tree.insert(in_segment(0), VERSIONS[0])  # segments 0 and 1 share every ancestor
    tree.insert(in_segment(1), VERSIONS[0])
    tree.insert(in_segment(4095), VERSIONS[0])  # shares only the root with them
    tree.level_hashes(2, [0])
    assert tree.inner_rehashes == 2 + 2 + 1


def test_a_rebuild_rehashes_the_inner_nodes_once() -> None:
    tree = HashTree(PARTITION, RING, 4096, 16)
    tree.rebuild((digest(i << 100), VERSIONS[0]) for i in range(1000))
    tree.root()
    tree.level_hashes(3, range(4096))
    assert tree.inner_rehashes == 1 + 16 + 256


# --- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "branching", "sizes"),
    [
        (1, 32, [1]),
        (8, 32, [1, 8]),
        (1024, 32, [1, 32, 1024]),
        (DEFAULT_SEGMENTS, DEFAULT_BRANCHING, [1, 4, 64, 1024, 16384]),
        (4096, 16, [1, 16, 256, 4096]),
    ],
)
def test_levels_are_full_below_a_root_that_may_have_fewer_children(
    segments: int, branching: int, sizes: list[int]
) -> None:
    tree = HashTree(0, 64, segments, branching)
    assert [tree.level_size(level) for level in range(tree.depth + 1)] == sizes
    for level in range(tree.depth):
        fan = sizes[level + 1] // sizes[level]
        assert tree.children(level, sizes[level] - 1) == list(
            range(sizes[level + 1] - fan, sizes[level + 1])
        )
    with pytest.raises(ValueError):
        tree.children(tree.depth, 0)


@given(st.sampled_from([1, 2, 64, 1024]), st.sampled_from([1, 4, 1024]), st.data())
def test_segments_tile_their_partition_and_hold_their_digests(
    ring: int, segments: int, data: st.DataObject
) -> None:
    partition = data.draw(st.integers(0, ring - 1))
    tree = HashTree(partition, ring, segments, 4)
    ranges = [tree.segment_range(s) for s in range(segments)]
    assert (ranges[0][0], ranges[-1][1]) == partition_range(partition, ring)
    assert all(a[1] == b[0] for a, b in pairwise(ranges))
    low = data.draw(st.integers(0, (1 << (128 - (ring.bit_length() - 1))) - 1))
    d = digest(low, partition, ring)
    start, end = ranges[tree.segment_of(d)]
    assert start <= d and (end == b"" or d < end)


def test_a_partitions_key_range_rescans_segment_by_segment_from_storage() -> None:
    # Real records through ReplicaStore: the digests of a segment are one range scan.
    engine = MemoryEngine()
    store = ReplicaStore(engine)
    ring = 8
    for i in range(400):
        store.put("b", f"k{i}", versions.update(versions.new((), Sibling(b"v")), None, "n@1"))
    partition = partition_of_digest(key_digest("b", "k0"), ring)
    tree = HashTree(partition, ring, 32, 4)
    scanned = 0
    for segment in range(32):
        for d, raw in engine.scan(*tree.segment_range(segment)):
            assert tree.segment_of(d) == segment
            tree.insert(d, version_hash(versions.decode(unseal(raw)[2])))
            scanned += 1
    start, end = partition_range(partition, ring)
    assert scanned == len(tree) == sum(1 for _ in engine.scan(start, end)) > 0


def test_digests_outside_the_partition_and_bad_shapes_are_refused() -> None:
    tree = HashTree(PARTITION, RING, 64, 4)
    inside = tree_of({digest(1): VERSIONS[0]})
    outside = digest(1, partition=3)
    with pytest.raises(ValueError):
        tree.insert(outside, VERSIONS[0])
    with pytest.raises(ValueError):
        tree.insert(b"short", VERSIONS[0])
    with pytest.raises(ValueError):
        inside.rebuild([(digest(2), VERSIONS[0]), (outside, VERSIONS[0])])
    assert inside.root() == tree_of({digest(1): VERSIONS[0]}).root()  # unchanged
    with pytest.raises(ValueError):
        tree.insert(digest(1), b"tiny")
    with pytest.raises(ValueError):
        tree.delete(digest(1), VERSIONS[0])  # nothing there to delete
    before = (inside.root(), len(inside), inside.segment_keys(inside.segment_of(digest(1))))
    for old, new in [(None, b"tiny"), (b"tiny", None), (VERSIONS[0], 5)]:
        with pytest.raises(ValueError):
            inside.update(digest(1) if new != 5 else digest(2), old, new)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        inside.update(outside, None, VERSIONS[0])
    assert (inside.root(), len(inside), inside.segment_keys(inside.segment_of(digest(1)))) == before
    for bad in [(0, 3, 64, 4), (0, 4, 48, 4), (0, 4, 64, 6), (0, 4, 64, 1), (4, 4, 64, 4)]:
        with pytest.raises(ValueError):
            HashTree(*bad)
    with pytest.raises(ValueError):
        tree.level_hashes(tree.depth + 1, [0])
    with pytest.raises(ValueError):
        tree.level_hashes(1, [4])


# --- persistence and self-healing ----------------------------------------------------------


@LAWS
@given(models, shapes)
def test_a_snapshot_restores_the_same_tree(model: Model, shape: tuple[int, int]) -> None:
    tree = tree_of(model, shape)
    restored = HashTree.from_bytes(tree.to_bytes())
    assert restored.shape == tree.shape
    assert restored.root() == tree.root()
    assert len(restored) == len(model)
    assert [restored.segment_keys(s) for s in range(shape[0])] == [
        tree.segment_keys(s) for s in range(shape[0])
    ]


def test_a_damaged_snapshot_is_refused() -> None:
    data = tree_of({digest(1): VERSIONS[0]}).to_bytes()
    for bad in [data[:10], data[:-1], b"XXXX" + data[4:], data + b"\0"]:
        with pytest.raises(ValueError):
            HashTree.from_bytes(bad)


def test_resetting_a_segment_from_storage_repairs_a_missed_update() -> None:
    rnd = random.Random(9)
    model = {digest(rnd.getrandbits(126)): VERSIONS[0] for _ in range(300)}
    tree = tree_of(model)
    key = sorted(model)[17]
    tree.update(key, VERSIONS[0], VERSIONS[2])  # the tree believes a write storage never saw
    tree.insert(digest(5), VERSIONS[1])  # and a key storage does not hold
    for segment in {tree.segment_of(key), tree.segment_of(digest(5))}:
        tree.reset_segment(segment, in_segments(model, tree, (segment,)).items())
    assert tree.root() == tree_of(model).root()
    assert len(tree) == len(model)


# --- version hashes ------------------------------------------------------------------------


def put(clock: Clock | None, actor: str, value: bytes, context: Clock | None = None) -> Clock:
    vv = versions.join(context) if context is not None else ()
    return versions.update(versions.new(vv, Sibling(value)), clock, actor)


def test_version_hash_is_equal_for_equal_clocks_and_ignores_value_bytes() -> None:
    a = put(None, "a@1", b"x")
    b = put(None, "b@1", b"y")
    assert version_hash(versions.sync(a, b)) == version_hash(versions.sync(b, a))
    assert version_hash(versions.decode(versions.encode(a))) == version_hash(a)
    assert len(version_hash(a)) == 16
    # Same dot, other bytes: not hashed (a dot names one write, so this never happens for real)
    assert version_hash(put(None, "a@1", b"other")) == version_hash(a)


def test_version_hash_differs_for_different_dots_siblings_and_tombstones() -> None:
    one = put(None, "a@1", b"x")
    two = put(one, "a@1", b"x", context=one)  # same actor, next dot, old value covered
    concurrent = put(one, "a@1", b"x")  # next dot, old value kept as a sibling
    other_actor = put(None, "b@1", b"x")
    value = Clock((Entry("a@1", 1, (Sibling(b"x"),)),))
    tombstone = Clock((Entry("a@1", 1, (Sibling(b"x", deleted=True),)),))
    covered = Clock((Entry("a@1", 1, ()),))  # the same version vector, no surviving value
    hashes = [version_hash(c) for c in (one, two, concurrent, other_actor, tombstone, covered)]
    assert len(set(hashes)) == len(hashes)
    assert version_hash(value) == version_hash(one)


def test_version_hash_of_anonymous_values_ignores_their_order() -> None:
    x, y = Sibling(b"x", timestamp=1), Sibling(b"y", timestamp=2)
    assert version_hash(Clock((), (x, y))) == version_hash(Clock((), (y, x)))
    assert version_hash(Clock((), (x,))) != version_hash(Clock((), (y,)))


actions = st.lists(
    st.tuples(
        st.sampled_from(["put", "blind", "delete", "sync"]), st.integers(0, 2), st.integers(0, 2)
    ),
    max_size=25,
)


@LAWS
@given(actions)
def test_version_hashes_are_equal_exactly_when_reachable_clocks_are(
    steps: list[tuple[str, int, int]],
) -> None:
    replicas: list[Clock | None] = [None, None, None]
    actors = ["a@1", "b@1", "c@1"]
    seen: list[Clock] = []
    for n, (action, i, j) in enumerate(steps):
        here = replicas[i]
        if action == "sync":
            if here is not None and replicas[j] is not None:
                replicas[i] = versions.sync(here, replicas[j])
        else:
            sibling = Sibling(b"v%d" % n, deleted=action == "delete")
            context = versions.join(here) if here is not None and action != "blind" else ()
            replicas[i] = versions.update(versions.new(context, sibling), here, actors[i])
        seen.extend(c for c in replicas if c is not None)
    for p in seen:
        for q in seen:
            assert (version_hash(p) == version_hash(q)) == (p == q)
