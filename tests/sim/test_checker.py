"""The checker on hand-written histories: each invariant is reported when broken, and only then."""

from __future__ import annotations

import pytest

from dynakv.sim.checker import (
    CAME_BACK,
    DIVERGENT,
    LOST,
    MERGED,
    NEVER_WRITTEN,
    Read,
    ReplicaRead,
    Write,
    check_cart,
    check_lww,
    check_register,
    encode_value,
)

B, K = "b", "k"
_clock = iter(range(1, 10_000))


def write(wid, seen=(), outcome="ok", delete=False, items=None, at=None):
    start = float(next(_clock)) if at is None else at
    value = b"" if delete else encode_value(wid, items)
    return Write("p", B, K, wid, value, tuple(seen), delete, start, start + 0.5, outcome)


def replicas(*ids, items=None, tombstones=0):
    """Three replicas that agree on the values of `ids`."""
    values = tuple(sorted(encode_value(i, (items or {}).get(i)) for i in ids))
    return [ReplicaRead(f"n{i}", B, K, values, tombstones, "ctx") for i in (1, 2, 3)]


def counts(report):
    return {name: n for name, n in report.counts.items() if n}


def test_a_clean_history_passes():
    history = [write("a"), write("b", seen=["a"])]
    report = check_register(history, replicas("b"))
    assert report.ok, report.violations
    assert (report.writes, report.acknowledged) == (2, 2)


def test_an_acknowledged_write_in_no_final_value_is_lost():
    history = [write("a"), write("b", seen=["a"]), write("c", seen=["a"])]
    report = check_register(history, replicas("b"))
    assert counts(report) == {LOST: 1, MERGED: 1}
    assert "write c" in str(report.violations[0])


def test_a_write_superseded_through_a_chain_of_writes_is_not_lost():
    history = [write("a"), write("b", seen=["a"]), write("c", seen=["b"])]
    assert check_register(history, replicas("c")).ok


def test_unknown_and_failed_writes_may_vanish():
    history = [write("a"), write("b", outcome="unknown"), write("c", outcome="failed")]
    assert check_register(history, replicas("a")).ok


def test_a_write_lost_without_a_concurrent_survivor_is_lost_but_not_merged():
    history = [write("a"), write("b", seen=["a"])]
    report = check_register(history, replicas("a"))
    # b superseded a, so a coming back is reported too
    assert counts(report) == {LOST: 1, CAME_BACK: 1}


def test_values_no_write_made_are_reported_once_per_value():
    history = [
        write("a"),
        Read("p", B, K, 10.0, 11.0, "ok", (b'{"id":"zz"}',)),
        Read("q", B, K, 12.0, 13.0, "ok", (b'{"id":"zz"}',)),
    ]
    reads = [ReplicaRead(f"n{i}", B, K, (encode_value("a"), b"garbage"), 0, "c") for i in (1, 2)]
    report = check_register(history, reads)
    assert counts(report) == {NEVER_WRITTEN: 2}


def test_reading_a_value_before_its_write_was_invoked_is_never_written():
    a = write("a", at=50.0)
    early = Read("p", B, K, 10.0, 11.0, "ok", (a.value,))
    report = check_register([a, early], replicas("a"))
    assert counts(report) == {NEVER_WRITTEN: 1}


def test_the_bytes_of_a_value_must_match_its_write():
    history = [write("a", items=["x"])]
    forged = (encode_value("a", ["x", "y"]),)
    report = check_cart(history, [ReplicaRead("n1", B, K, forged, 0, "c")])
    assert counts(report)[NEVER_WRITTEN] == 1


def test_a_deleted_value_that_comes_back_is_reported():
    history = [write("a"), write("d", seen=["a"], delete=True)]
    report = check_register(history, replicas("a"))
    assert counts(report) == {CAME_BACK: 1}
    assert "delete d" in str(report.violations[0])


def test_a_delete_that_may_have_happened_excuses_what_it_saw():
    history = [write("a"), write("d", seen=["a"], delete=True, outcome="unknown")]
    assert check_register(history, replicas(tombstones=1)).ok


def test_a_value_after_a_delete_is_not_a_comeback():
    history = [write("a"), write("d", seen=["a"], delete=True), write("b")]
    assert check_register(history, replicas("b", tombstones=1)).ok


def test_concurrent_writes_one_silently_dropped_is_merged():
    history = [write("a"), write("b"), write("c", seen=["a"])]
    report = check_register(history, replicas("c"))
    assert counts(report) == {LOST: 1, MERGED: 1}
    assert "b" in report.violations[1].detail


def test_replicas_that_disagree_are_divergent():
    history = [write("a"), write("b", seen=["a"])]
    reads = replicas("b")
    reads[2] = ReplicaRead("n3", B, K, (encode_value("a"),), 0, "old")
    report = check_register(history, reads)
    assert counts(report)[DIVERGENT] == 1


def test_cart_item_removed_and_returned_by_a_concurrent_sibling_is_allowed():
    # a adds x; r removes x; c (concurrent with r, it saw only a) adds y; m merges r and c.
    history = [
        write("a", items=["a"]),
        write("r", seen=["a"], items=[]),
        write("c", seen=["a"], items=["a", "c"]),
        write("m", seen=["c", "r"], items=["a", "c", "m"]),
    ]
    assert check_cart(history, replicas("m", items={"m": ["a", "c", "m"]})).ok


def test_cart_lost_add_names_the_item():
    history = [
        write("a", items=["a"]),
        write("b", items=["b"]),
        write("m", seen=["a"], items=["a", "m"]),
    ]
    report = check_cart(history, replicas("m", items={"m": ["a", "m"]}))
    assert counts(report) == {LOST: 1, MERGED: 1}
    assert "adds b" in str(report.violations[0])


def test_lww_counts_lost_updates_without_failing():
    first = Write("p", B, K, "a", encode_value("a"), (), False, 0.0, 1.0, "ok")
    later = Write("q", B, K, "b", encode_value("b"), (), False, 2.0, 3.0, "ok")
    report = check_lww([first, later], replicas("a"))
    assert report.ok
    assert (report.lww_lost, report.lww_acked) == (1, 2)
    assert check_lww([first, later], replicas("b")).lww_lost == 0


def test_lww_still_fails_on_values_never_written_and_divergence():
    first = Write("p", B, K, "a", encode_value("a"), (), False, 0.0, 1.0, "ok")
    reads = [
        ReplicaRead("n1", B, K, (encode_value("a"),), 0, "x"),
        ReplicaRead("n2", B, K, (encode_value("zz"),), 0, "y"),
    ]
    assert counts(check_lww([first], reads)) == {NEVER_WRITTEN: 1, DIVERGENT: 1}


def test_a_history_with_a_repeated_write_id_is_refused():
    with pytest.raises(ValueError, match="twice"):
        check_register([write("a"), write("a")], [])
