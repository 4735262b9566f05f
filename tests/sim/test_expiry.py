"""The expiry workload in the simulator: under every fault (clock skew included), no read
started after a value's expiry returns it; with the coordinators' hiding turned off the
checker sees it happen, so the rule can fail; and the checker itself on a short history."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core import coordinator
from dynakv.sim.checker import EXPIRED_SHOWN, NEVER_WRITTEN, Read, Write, encode_value, value_id
from dynakv.sim.expiry_check import check_expiry
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, run_seed, run_seeds
from tests.sim.test_seeds import START, failure_line

SEEDS = list(range(START, START + 40))


def expiring_values_read(history) -> int:
    """Reads that returned a value written with a lifetime: the runs exercised expiry."""
    lives = {op.id: op.expires for op in history if isinstance(op, Write)}
    return sum(
        1
        for op in history
        if isinstance(op, Read)
        for value in op.values
        if lives.get(value_id(value) or "", 0)
    )


@pytest.mark.timeout(900)
def test_no_read_started_after_an_expiry_returns_the_value_under_all_faults():
    config = RunConfig("expiry", nodes=5, options=SimOptions().with_faults("all"))
    failures, shown, reaped = [], 0, 0
    for result in run_seeds(SEEDS, config, jobs=2):
        shown += expiring_values_read(result.history)
        reaped += result.reaped
        if not result.report.ok:
            failures.append(failure_line(result))
    assert not failures, "\n".join(failures)
    assert shown > 10 * len(SEEDS)  # values with lifetimes were read before they expired
    assert reaped > len(SEEDS)  # expired keys were deleted and their tombstones reaped


def test_with_hiding_turned_off_the_checker_finds_expired_values(monkeypatch):
    monkeypatch.setattr(
        coordinator.expiry, "visible", lambda clock, now: versions.live_values(clock)
    )
    config = RunConfig("expiry", nodes=5)
    reports = [run_seed(seed, config).report for seed in range(1, 4)]
    assert any(report.counts[EXPIRED_SHOWN] for report in reports)


def test_the_checker_judges_reads_by_when_they_started():
    value = encode_value("c0.1")
    write = Write("c0", "b", "k", "c0.1", value, (), False, 0.0, 0.1, "ok", expires=2000)
    before = Read("c1", "b", "k", 1.9, 2.5, "ok", (value,))  # started before the expiry
    after = Read("c1", "b", "k", 2.1, 2.2, "ok", (value,))
    stranger = Read("c1", "b", "k", 0.5, 0.6, "ok", (encode_value("c9.9"),))
    assert check_expiry([write, before], []).ok
    report = check_expiry([write, before, after, stranger], [])
    assert report.counts[EXPIRED_SHOWN] == 1 and report.counts[NEVER_WRITTEN] == 1
    assert check_expiry([write, after], [], skew=0.5).ok  # within the allowed clock skew
