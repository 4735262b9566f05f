"""CI seeds: every workload under every fault, 200 seeds each (and 50 more with reads that
ask every replica), must satisfy every invariant.

A failing seed replays with `python -m dynakv.sim --seed S --workload W --faults all --trace`.
Seeds run in two forked processes (CI has two cores).
"""

from __future__ import annotations

import pytest

from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, run_seeds
from dynakv.sim.workload import WORKLOADS, WorkloadOptions

SEEDS = list(range(1, 201))
JOBS = 2


# Reads that ask all N replicas (read_fanout "n", not the default) on seeds of their own.
FANOUT_N_SEEDS = list(range(1001, 1051))


@pytest.mark.timeout(1200)  # about 30 s each on 2 idle cores; leave room for a busy CI
@pytest.mark.parametrize(("read_fanout", "seeds"), [("r", SEEDS), ("n", FANOUT_N_SEEDS)])
@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_invariant_holds_for_200_seeds_with_all_faults(workload, read_fanout, seeds):
    options = SimOptions().with_faults("all")
    config = RunConfig(workload, nodes=5, options=options, read_fanout=read_fanout)
    failures = []
    runs = acked = lww_lost = 0
    for result in run_seeds(seeds, config, jobs=JOBS):
        runs += 1
        acked += result.report.acknowledged
        lww_lost += result.report.lww_lost
        if not result.report.ok:
            shown = "; ".join(str(v) for v in result.report.violations[:3])
            failures.append(f"seed {result.seed}: {result.report.summary()} | {shown}")
    assert runs == len(seeds)
    assert acked > 100 * runs  # the runs did real work
    if workload == "lww":
        print(f"lww: {lww_lost} of {acked} acknowledged writes lost to last-writer-wins")
    assert not failures, "\n".join(failures)


TOMBSTONE_SEEDS = list(range(1, 51))


@pytest.mark.timeout(900)
def test_reaping_tombstones_under_all_faults_brings_nothing_back():
    """Registers on many keys with many deletes, so that tombstones outlive the grace period
    (4 virtual seconds here) while partitions, crashes and wiped disks come and go."""
    load = WorkloadOptions(keys=200, delete_probability=0.6)
    config = RunConfig("register", nodes=5, options=SimOptions().with_faults("all"), load=load)
    failures = []
    reaped = 0
    for result in run_seeds(TOMBSTONE_SEEDS, config, jobs=JOBS):
        reaped += result.reaped
        if not result.report.ok:
            shown = "; ".join(str(v) for v in result.report.violations[:3])
            failures.append(f"seed {result.seed}: {result.report.summary()} | {shown}")
    print(f"{reaped} tombstones reaped in {len(TOMBSTONE_SEEDS)} runs")
    assert reaped > 10 * len(TOMBSTONE_SEEDS)  # the runs did reap
    assert not failures, "\n".join(failures)
