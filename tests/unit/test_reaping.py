"""Tombstone reaping (core/reaper.py) on real Nodes in the simulator: never before the grace
period or while any member could still hand the old value back, and a reaped key stays
deleted — the zombie path. With the reap_unchecked bug the same scenario brings it back,
so these tests can fail."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynakv import versions
from dynakv.core.bugs import NO_BUGS, InjectedBugs
from dynakv.core.reaper import covers, may_hold_tombstone, tombstone_age
from dynakv.core.replica import VIEW_FROM, seal
from dynakv.messages import (
    ClientClusterChange,
    ClientGet,
    ClientPut,
    ClusterInfo,
    GetResult,
    Message,
    PutResult,
    ReapCommit,
)
from dynakv.sim.cluster import SimCluster, default_config
from dynakv.versions import Entry, Sibling
from tests.unit.test_node import call

GRACE = 5.0
_rids = itertools.count(1)


def make_cluster(n: int = 3, bugs: InjectedBugs = NO_BUGS, **config: object) -> SimCluster:
    def configure(name: str):
        settings = {"tombstone_grace": GRACE, "reap_interval": 0.5, **config}
        return dataclasses.replace(default_config(name), **settings)

    names = [f"n{i}" for i in range(1, n + 1)]
    cluster = SimCluster(names, seed=7, config=configure, bugs=bugs)
    assert cluster.run_until(cluster.members_agree)
    return cluster


def put(cluster, node, key, value, context="", delete=False) -> Message:
    message = ClientPut(next(_rids), "b", key, value, context, delete=delete)
    return call(cluster, node, message)


def get(cluster, node, key) -> GetResult:
    reply = call(cluster, node, ClientGet(next(_rids), "b", key))
    assert isinstance(reply, GetResult), reply
    return reply


def states(cluster: SimCluster, key: str) -> dict[str, object]:
    return {name: cluster.nodes[name].replica("b", key) for name in sorted(cluster.up)}


def is_tombstone(clock) -> bool:
    return clock is not None and not versions.live_values(clock)


def delete_while_a_replica_is_down(bugs: InjectedBugs = NO_BUGS) -> SimCluster:
    """v1 on all three replicas; n3 stops; v1 is deleted through n1 with its context."""
    cluster = make_cluster(3, bugs)
    put(cluster, "n1", "k", b"v1")
    cluster.run_for(1.0)
    assert all(s is not None for s in states(cluster, "k").values())
    cluster.crash("n3")
    context = get(cluster, "n1", "k").context
    assert isinstance(put(cluster, "n1", "k", b"", context, delete=True), PutResult)
    return cluster


def test_a_tombstone_is_kept_past_the_grace_while_a_replica_is_down():
    cluster = delete_while_a_replica_is_down()
    cluster.run_for(3 * GRACE)
    assert all(is_tombstone(s) for s in states(cluster, "k").values())
    status = cluster.nodes["n1"].status()["tombstone_reaping"]
    blocked = [cluster.nodes[n].status()["tombstone_reaping"]["blocked"] for n in ("n1", "n2")]
    assert any("n3" in why for why in blocked), (blocked, status)


def test_a_replica_that_missed_the_delete_does_not_bring_the_key_back():
    cluster = delete_while_a_replica_is_down()
    cluster.run_for(3 * GRACE)
    cluster.restart("n3")  # still holding v1
    assert cluster.nodes["n3"].replica("b", "k") is not None
    # The tombstone reaches n3 (read repair, anti-entropy), then the members reap it.
    assert cluster.run_until(
        lambda: all(s is None for s in states(cluster, "k").values()), limit=60.0
    ), states(cluster, "k")
    assert sum(cluster.nodes[n].reaper.stats.reaped for n in cluster.names) >= 3
    for name in cluster.names:
        assert get(cluster, name, "k").values == []
    cluster.run_for(20.0)  # anti-entropy rounds: nothing comes back
    assert all(s is None for s in states(cluster, "k").values())
    assert get(cluster, "n3", "k").values == []


def test_unchecked_reaping_brings_the_key_back():
    """The same scenario with the injected bug: the test above would catch it."""
    cluster = delete_while_a_replica_is_down(InjectedBugs(reap_unchecked=True))
    cluster.run_for(3 * GRACE)
    assert cluster.nodes["n1"].replica("b", "k") is None  # reaped with n3 down
    cluster.restart("n3")
    cluster.run_for(5.0)
    # the zombie: a read through n3 (which asks its own copy first) serves it again
    assert get(cluster, "n3", "k").values == [b"v1"]


def test_nothing_is_reaped_before_the_grace_period():
    cluster = make_cluster(3)
    first = put(cluster, "n1", "k", b"v1")
    put(cluster, "n2", "k", b"", first.context, delete=True)
    cluster.run_for(GRACE - 1.0)
    assert all(is_tombstone(s) for s in states(cluster, "k").values())
    assert cluster.run_until(lambda: all(s is None for s in states(cluster, "k").values()))


def test_a_held_hint_blocks_reaping_until_it_is_delivered():
    cluster = make_cluster(4)
    key = "k"
    primaries = cluster.nodes["n1"].placement("b", key).primaries
    down = primaries[-1]
    coordinator = primaries[0]
    first = put(cluster, coordinator, key, b"v1")
    cluster.run_for(1.0)
    cluster.crash(down)
    cluster.run_for(1.0)
    # The delete goes to a fallback with a hint for `down`, which holds v1.
    put(cluster, coordinator, key, b"", first.context, delete=True)
    fallback = next(n for n in cluster.names if n not in primaries)
    assert cluster.nodes[fallback].hints.pending() == 1
    cluster.restart(down)
    cluster.run_for(0.2)
    assert cluster.run_until(
        lambda: all(s is None for s in states(cluster, key).values()), limit=60.0
    )
    assert cluster.nodes[fallback].hints.pending() == 0
    assert get(cluster, down, key).values == []


def test_a_write_after_reaping_mints_a_fresh_dot_so_an_old_context_covers_nothing_new():
    """KV679 after a reap: a client still holding a context from before the delete must not
    silently overwrite a value written after the reap by the same coordinator."""
    cluster = make_cluster(3)
    coordinator = cluster.nodes["n1"].placement("b", "k").primaries[0]
    old = put(cluster, coordinator, "k", b"v1")
    put(cluster, coordinator, "k", b"", old.context, delete=True)
    assert cluster.run_until(lambda: all(s is None for s in states(cluster, "k").values()))
    put(cluster, coordinator, "k", b"v2")  # blind: written after the reap
    put(cluster, coordinator, "k", b"v3", old.context)  # stale context from before the delete
    assert sorted(get(cluster, "n2", "k").values) == [b"v2", b"v3"]


def test_tombstone_age_and_cover():
    dead = Sibling(b"", deleted=True, timestamp=(10_000 << 16) + 5)
    live = Sibling(b"x", timestamp=9_000 << 16)
    tombstone = versions.Clock((Entry("a", 2, (dead,)),))
    assert tombstone_age(tombstone, 12.0) == 2.0
    assert tombstone_age(versions.Clock((Entry("a", 2, (dead, live)),)), 12.0) is None
    assert tombstone_age(versions.Clock(), 12.0) is None
    older = versions.Clock((Entry("a", 1, (live,)),))
    newer = versions.Clock((Entry("a", 3, (live,)),))
    assert covers(tombstone, older)
    assert covers(tombstone, tombstone)
    assert not covers(tombstone, newer)


siblings = st.builds(
    lambda deleted, value, ts, content_type: Sibling(
        b"" if deleted else value, deleted=deleted, content_type=content_type, timestamp=ts
    ),
    st.booleans(),
    st.binary(max_size=64),
    st.integers(0, 2**63 - 1),
    st.sampled_from(["", "text/plain"]),
)
clocks = st.lists(
    st.tuples(st.text(min_size=1, max_size=12), st.lists(siblings, min_size=0, max_size=3)),
    max_size=4,
    unique_by=lambda entry: entry[0],
).map(
    lambda entries: versions.Clock(
        tuple(Entry(a, len(vs) + 1, tuple(vs)) for a, vs in sorted(entries))
    )
)


@settings(max_examples=300, deadline=None)
@given(clocks, st.text(max_size=8), st.integers(0, 2**40), st.sampled_from([0, 40_000]))
def test_the_sweep_filter_never_hides_a_tombstone(
    clock: versions.Clock, actor: str, n: int, padding: int
):
    """The sweep skips records that cannot hold only tombstones; a reapable one it never
    skips, small (searched for the tombstone mark) or large (read through views)."""
    if padding:  # many tombstoned actors: a record past VIEW_FROM with no live value
        pad = tuple(
            Entry(f"pad-{i:05d}-" + "x" * 40, 1, (Sibling(b"", deleted=True, timestamp=n),))
            for i in range(padding // 60)
        )
        clock = versions.Clock(tuple(sorted(clock.entries + pad, key=lambda e: e.actor)))
    record = seal("b", "k", versions.encode(clock), (actor, n) if actor else ("", 0))
    assert (len(record) >= VIEW_FROM) == bool(padding)
    if tombstone_age(clock, 0.0) is not None:
        assert may_hold_tombstone(record)
        assert may_hold_tombstone(versions.encode(clock))


def _record(*entries: Entry) -> bytes:
    return seal("b", "k", versions.encode(versions.Clock(entries)))


@pytest.mark.parametrize("size", [1024, VIEW_FROM, 1 << 20])
def test_the_sweep_filter_skips_a_live_value_of_any_size(size: int):
    live = Entry("a", 1, (Sibling(b"x" * size, timestamp=1),))
    assert not may_hold_tombstone(_record(live))
    if size >= VIEW_FROM:  # a large record is read, not searched: a tombstone beside a value
        assert not may_hold_tombstone(_record(live, Entry("b", 1, (TOMB,))))


def test_the_sweep_filter_leaves_an_undecodable_large_record_to_the_full_check():
    big = _record(Entry("a", 1, (Sibling(b"y" * VIEW_FROM),)))
    assert may_hold_tombstone(big[:20] + b"\xff" * (len(big) - 20))


TOMB = Sibling(b"", deleted=True, timestamp=5)


def test_a_lost_reap_commit_leaves_no_old_fallback_copy_to_serve():
    """A fallback that stood in for a primary keeps its copy of v1 after handing it over;
    it must not survive the reap even if the ReapCommit never reaches it (regression)."""
    cluster = make_cluster(4)
    primaries = cluster.nodes["n1"].placement("b", "k").primaries
    first, last = primaries[0], primaries[2]
    cluster.crash(last)
    cluster.run_for(1.0)
    put(cluster, first, "k", b"v1")
    fallback = next(
        n for n in cluster.nodes[first].placement("b", "k").targets if n not in primaries
    )
    cluster.restart(last)
    assert cluster.run_until(lambda: cluster.nodes[fallback].hints.pending() == 0)
    # The old copy, kept until the fallback's next handoff tick hands it back.
    assert cluster.nodes[fallback].replica("b", "k") is not None
    put(cluster, first, "k", b"", get(cluster, first, "k").context, delete=True)
    transmit = cluster._transmit

    def drop_commits_to_the_fallback(sender, to, message):
        if not (isinstance(message, ReapCommit) and to == fallback):
            transmit(sender, to, message)

    cluster._transmit = drop_commits_to_the_fallback  # type: ignore[method-assign]
    assert cluster.run_until(
        lambda: all(cluster.nodes[n].replica("b", "k") is None for n in primaries), limit=60.0
    )
    cluster._transmit = transmit  # type: ignore[method-assign]
    assert cluster.nodes[fallback].replica("b", "k") is None
    cluster.crash(last)  # the fallback is read in its place now
    cluster.run_for(2.0)
    assert get(cluster, first, "k").values == []


def test_an_old_context_that_brings_an_actor_back_after_a_reap_does_not_reuse_its_dots():
    """After a reap, a write with a pre-delete context puts the coordinator's old actor
    (with no values) back into the state; the coordinator must not continue that actor
    from the old counter, or a value written then is lost to a client holding a context
    that names the old dot (regression)."""
    cluster = make_cluster(3)
    primaries = cluster.nodes["n1"].placement("b", "k").primaries
    a, b = primaries[0], primaries[1]
    r1 = put(cluster, a, "k", b"v1")
    r2 = put(cluster, a, "k", b"v2", r1.context)
    put(cluster, a, "k", b"", r2.context, delete=True)
    assert cluster.run_until(lambda: all(s is None for s in states(cluster, "k").values()))
    put(cluster, b, "k", b"y", r1.context)  # names a's old actor at counter 1
    cluster.run_for(1.0)
    put(cluster, a, "k", b"w", get(cluster, a, "k").context)
    cluster.run_for(1.0)
    put(cluster, b, "k", b"z", r2.context)  # saw v2 (a's old dot 2), never w
    cluster.run_for(1.0)
    assert sorted(get(cluster, primaries[2], "k").values) == [b"w", b"z"]


def test_a_removed_node_that_comes_back_with_old_hints_does_not_bring_a_reaped_key_back():
    """A fallback holding an undelivered hint of v1 dies and is removed; the key is deleted
    and reaped without it. When the old node starts again on its old disk, its hint of v1
    must not reach the primaries (regression: hint_window outlasts the grace period)."""
    cluster = make_cluster(5)
    primaries = cluster.nodes["n1"].placement("b", "k").primaries
    down = primaries[2]
    cluster.crash(down)
    cluster.run_for(2.0)
    put(cluster, primaries[0], "k", b"v1")
    placement = cluster.nodes[primaries[0]].placement("b", "k")
    fallback = next(n for n in placement.targets if n not in primaries)
    assert cluster.nodes[fallback].hints.pending() == 1
    cluster.crash(fallback)  # dies before it could hand v1 over
    cluster.restart(down)
    cluster.run_for(2.0)
    reply = call(cluster, primaries[0], ClientClusterChange(next(_rids), "remove", fallback))
    assert isinstance(reply, ClusterInfo)
    assert cluster.run_until(cluster.members_agree, limit=120.0)
    context = get(cluster, primaries[0], "k").context
    put(cluster, primaries[0], "k", b"", context, delete=True)
    assert cluster.run_until(
        lambda: all(s is None for s in states(cluster, "k").values()), limit=60.0
    )
    cluster.start(fallback)  # its old disk: membership says up, one hint of v1
    cluster.run_for(10.0)
    for name in primaries:
        assert cluster.nodes[name].replica("b", "k") is None
    assert get(cluster, primaries[0], "k").values == []
