"""The console's pure part: p99 from histogram buckets, the load history sampled from the
request histograms, and the cluster summary built from members' reports."""

from __future__ import annotations

from typing import Any

import pytest

from dynakv.console.summary import LoadHistory, moving_partitions, quantile, summarize
from dynakv.histogram import Histogram

BOUNDS = (0.001, 0.01, 0.1)


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(BOUNDS, [0, 0, 0, 0], 0.99) is None


def test_quantile_interpolates_inside_its_bucket_as_prometheus_does() -> None:
    # 100 observations, all between 1 and 10 ms: the p50 is half way through that bucket.
    assert quantile(BOUNDS, [0, 100, 0, 0], 0.5) == pytest.approx(0.0055)
    # 99 fast ones and one slow one: the p99 is still in the fast bucket, the max is not.
    assert quantile(BOUNDS, [99, 0, 1, 0], 0.99) == pytest.approx(0.001)
    assert quantile(BOUNDS, [99, 0, 1, 0], 1.0) == pytest.approx(0.1)


def test_quantile_above_the_last_bound_is_the_last_bound() -> None:
    assert quantile(BOUNDS, [0, 0, 0, 5], 0.99) == 0.1


def test_load_history_counts_only_what_happened_between_two_samples() -> None:
    gets, puts = Histogram(BOUNDS), Histogram(BOUNDS)
    for _ in range(1000):
        gets.observe(0.05)  # before the first sample: slow, and never counted
    history = LoadHistory()
    history.sample(100.0, [gets, puts], errors=7)
    assert history.as_json() == []  # one snapshot is no interval yet
    for _ in range(150):
        gets.observe(0.0005)
    for _ in range(50):
        puts.observe(0.0005)
    history.sample(102.0, [gets, puts], errors=9)
    [sample] = history.as_json()
    assert sample["t"] == 102.0
    assert sample["ops_per_s"] == 100.0  # 200 requests over 2 s, gets and puts merged
    assert sample["errors_per_s"] == 1.0
    assert sample["p99_ms"] == pytest.approx(0.99, abs=0.01)  # in the fastest bucket


def test_an_idle_interval_has_no_p99_and_history_keeps_the_last_samples() -> None:
    gets = Histogram(BOUNDS)
    history = LoadHistory(keep=3)
    for t in range(6):
        history.sample(float(t), [gets], errors=0)
    samples = history.as_json()
    assert [s["t"] for s in samples] == [3.0, 4.0, 5.0]
    assert all(s["p99_ms"] is None and s["ops_per_s"] == 0 for s in samples)


def test_a_clock_that_goes_back_adds_no_sample() -> None:
    history = LoadHistory()
    history.sample(10.0, [Histogram(BOUNDS)], errors=0)
    history.sample(9.0, [Histogram(BOUNDS)], errors=0)
    assert history.as_json() == []


def _member(name: str, status: str = "up", dc: str = "dc1") -> dict[str, Any]:
    return {
        "name": name, "status": status, "datacenter": dc, "rack": "rack1",
        "node_addr": f"127.0.0.1:70{name[-1]}", "http_addr": f"127.0.0.1:80{name[-1]}",
        "partitions": 2,
    }  # fmt: skip


def _report(name: str, **status: Any) -> dict[str, Any]:
    base = {
        "name": name, "keys": 10, "hints_pending": 0, "hints_dropped": 0, "down_peers": [],
        "transfers": [], "transfers_pending": 0, "uptime_seconds": 5.0,
        "anti_entropy": {"trees_built": 2, "trees_wanted": 4},
        "tombstone_reaping": {"blocked": "", "reaped": 0, "scanned": 0, "refused": 0},
        "handoff": {"hints_delivered": 3}, "corrupt_records_found": 0,
    }  # fmt: skip
    return {"status": {**base, **status}, "load": [{"t": 1.0, "ops_per_s": 2.0}]}


def _cluster(members: list[dict[str, Any]], next_owners: list[str] | None = None) -> dict:
    return {
        "cluster": "c1",
        "epoch": 4,
        "claimant": "a1",
        "members": members,
        "ring": {"size": 4, "owners": ["a1", "b2", "a1", "b2"]},
        "next_ring": None if next_owners is None else {"owners": next_owners},
        "transfers_pending": 0 if next_owners is None else 1,
    }


def test_summary_marks_a_down_member_with_why_and_keeps_the_rest() -> None:
    cluster = _cluster([_member("b2", "down"), _member("a1"), _member("c3")])
    reports = {
        "a1": _report("a1", down_peers=["b2"]),
        "b2": "unreachable: Connection refused",
        "c3": _report("c3", down_peers=["a1", "b2"]),  # a view that differs: said
    }
    view = summarize("a1", cluster, reports, now=50.0)
    a1, b2, _ = view["members"]  # sorted by place, then name
    assert (a1["name"], a1["reachable"], a1["report"]["hints_delivered"]) == ("a1", True, 3)
    assert a1["console_url"] == "http://127.0.0.1:801/" and a1["share"] == 0.5
    assert a1["load"] == [{"t": 1.0, "ops_per_s": 2.0}]
    assert (b2["status"], b2["reachable"], b2["report"]) == ("down", False, None)
    assert b2["error"] == "unreachable: Connection refused"
    assert view["alerts"] == [
        "b2 is down as a1 sees it (unreachable: Connection refused)",
        "c3 counts a1 as down",
    ]


def test_summary_names_why_reaping_waits_and_lists_every_transfer() -> None:
    pull = {"partition": 1, "from": "a1", "fraction": 0.25, "keys": 5, "bytes": 50}
    cluster = _cluster([_member("a1"), _member("b2"), _member("c3", "joining")],
                       next_owners=["a1", "c3", "a1", "b2"])  # fmt: skip
    transfer = {"blocked": "ownership transfer under way"}
    reports = {
        "a1": _report("a1", tombstone_reaping=transfer),
        "b2": _report("b2", hints_dropped=2, tombstone_reaping=transfer),
        "c3": _report("c3", transfers=[pull], transfers_pending=1),
    }
    view = summarize("a1", cluster, reports, now=50.0)
    assert view["ring"]["moving"] == [1]
    assert view["ring"]["next_owners"] == ["a1", "c3", "a1", "b2"]
    assert view["transfers"] == [{"node": "c3", **pull}]
    assert view["alerts"] == [
        "tombstone reaping waits on a1, b2: ownership transfer under way",
        "b2 dropped 2 hints",
    ]


def test_a_hung_member_is_unreachable_but_a_removed_one_is_no_alert() -> None:
    cluster = _cluster([_member("a1"), _member("b2"), _member("c3", "removed")])
    reports = {"a1": _report("a1"), "b2": "no answer in 2 s"}
    view = summarize("a1", cluster, reports, now=1.0)
    assert [m["reachable"] for m in view["members"]] == [True, False, False]
    assert view["alerts"] == ["b2 did not answer a1: no answer in 2 s"]


def test_no_transfer_moves_nothing() -> None:
    assert moving_partitions({"owners": ["a", "b"]}, None) == []
    assert moving_partitions({"owners": ["a", "b"]}, {"owners": ["a", "c"]}) == [1]
