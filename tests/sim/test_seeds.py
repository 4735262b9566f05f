"""CI seeds: every workload under every fault, 200 seeds each (and 50 more with reads that
ask every replica, 200 more in two data centers, 60 with a data center wiped, 50 reaping
tombstones, 30 with WalEngines on disk), must satisfy every invariant. `make test` runs the
first half of each window, `make test-long` (marker `long`) the whole windows.

The seed window moves with the UTC date (a different 200 seeds every day, so CI keeps
exploring instead of re-proving the same runs); `DYNAKV_SIM_SEED_START=S` pins it. The
window is in each test's id and in its failure message. A failing seed replays with
`python -m dynakv.sim --seed S --workload W --faults all --trace` (add `--read-fanout n`
for the fanout-n test); keep it in tests/sim/test_regressions.py once fixed.
Seeds run in two forked processes (CI has two cores).
"""

from __future__ import annotations

import datetime
import os

import pytest

from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, RunResult, run_seeds
from dynakv.sim.workload import WORKLOADS, WorkloadOptions

JOBS = 2
WINDOW = 200
FANOUT_N_WINDOW = 50
# Windows start above `make sim-long`'s 1-10000, so CI covers seeds the soak does not.
FIRST_START = 10_001
WINDOWS = 5_000


def seed_window_start(today: datetime.date | None = None) -> int:
    """The first seed of today's window (or DYNAKV_SIM_SEED_START's)."""
    pinned = os.environ.get("DYNAKV_SIM_SEED_START")
    if pinned:
        return int(pinned)
    day = (today or datetime.datetime.now(datetime.UTC).date()).toordinal()
    return FIRST_START + (day % WINDOWS) * (WINDOW + FANOUT_N_WINDOW)


START = seed_window_start()
SEEDS = list(range(START, START + WINDOW))
# The windows of other placements and engines leave the expiry workload out: what it adds
# (values hidden and reaped on time) does not depend on where replicas live or the engine,
# and it runs under every fault in the main window and in test_expiry.py (make test's time).
PLACEMENT_WORKLOADS = tuple(w for w in WORKLOADS if w != "expiry")
# Reads that ask all N replicas (read_fanout "n", not the default) on seeds of their own.
FANOUT_N_SEEDS = list(range(START + WINDOW, START + WINDOW + FANOUT_N_WINDOW))


def failure_line(result: RunResult) -> str:
    """What a failing seed's result says: its summary and first violations."""
    shown = "; ".join(str(v) for v in result.report.violations[:3])
    return f"seed {result.seed}: {result.report.summary()} | {shown}"


def window(seeds: list[int]) -> str:
    return f"seeds{seeds[0]}-{seeds[-1]}"


def halves(seeds: list[int], *leading: str) -> list:
    """Parameters: the first half of `seeds` (make test) and all of them (marker long, make
    test-long), after the `leading` values; each id names its window."""
    head = "-".join(leading)
    return [
        pytest.param(*leading, part, id=f"{head}-{window(part)}" if head else window(part), marks=m)
        for part, m in ((seeds[: len(seeds) // 2], ()), (seeds, pytest.mark.long))
    ]


def test_the_seed_window_moves_each_day_and_can_be_pinned(monkeypatch):
    monkeypatch.delenv("DYNAKV_SIM_SEED_START", raising=False)
    day = datetime.date(2026, 12, 3)
    starts = {seed_window_start(day + datetime.timedelta(days=i)) for i in range(30)}
    assert len(starts) == 30 and min(starts) >= FIRST_START
    assert seed_window_start(day) == seed_window_start(day)
    monkeypatch.setenv("DYNAKV_SIM_SEED_START", "9181")
    assert seed_window_start(day) == 9181


@pytest.mark.timeout(1200)  # about 30 s each on 2 idle cores; leave room for a busy CI
@pytest.mark.parametrize(("read_fanout", "seeds"), halves(SEEDS, "r") + halves(FANOUT_N_SEEDS, "n"))
@pytest.mark.parametrize("workload", WORKLOADS)
def test_every_invariant_holds_for_a_window_of_seeds_with_all_faults(workload, read_fanout, seeds):
    print(f"{workload}, read_fanout {read_fanout}: {window(seeds)}")
    options = SimOptions().with_faults("all")
    config = RunConfig(workload, nodes=5, options=options, read_fanout=read_fanout)
    failures = []
    runs = acked = lww_lost = 0
    for result in run_seeds(seeds, config, jobs=JOBS):
        runs += 1
        acked += result.report.acknowledged
        lww_lost += result.report.lww_lost
        if not result.report.ok:
            failures.append(failure_line(result))
    assert runs == len(seeds)
    assert acked > 100 * runs  # the runs did real work
    if workload == "lww":
        print(f"lww: {lww_lost} of {acked} acknowledged writes lost to last-writer-wins")
    replay = f"replay: --workload {workload} --read-fanout {read_fanout} --faults all --seed S"
    assert not failures, "\n".join([f"{window(seeds)} ({replay})", *failures])


PLACED_SEEDS = list(range(START, START + 200))  # another config: the same seeds differ


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(PLACED_SEEDS))
@pytest.mark.parametrize("workload", PLACEMENT_WORKLOADS)
def test_every_invariant_holds_with_nodes_in_two_datacenters_and_three_racks(workload, seeds):
    """Placed rings (the walk spreads data centers, then racks), WAN delays between the data
    centers, and faults that cut off or crash a whole data center, besides every other."""
    config = RunConfig(
        workload, nodes=6, options=SimOptions().with_faults("all"), racks=3, datacenters=2
    )
    failures = [
        f"seed {r.seed}: {r.report.summary()}"
        for r in run_seeds(seeds, config, jobs=JOBS)
        if not r.report.ok
    ]
    replay = f"replay: --workload {workload} --nodes 6 --racks 3 --datacenters 2 --seed S"
    assert not failures, "\n".join([f"{window(seeds)} ({replay})", *failures])


SITE_WIPE_SEEDS = list(range(START, START + 60))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(SITE_WIPE_SEEDS))
@pytest.mark.parametrize("workload", PLACEMENT_WORKLOADS)
def test_a_data_center_wiped_loses_nothing_written_at_each_quorum(workload, seeds):
    """Three replicas in each of two data centers, writes at each_quorum: a crashed data
    center may come back on empty disks, and every acknowledged write still survives."""
    config = RunConfig(
        workload,
        nodes=6,
        options=SimOptions().with_faults("all"),
        racks=3,
        datacenters=2,
        bucket_datacenters=(("dc1", 3), ("dc2", 3)),
        write_level="each_quorum",
    )
    failures = []
    sites_wiped = 0
    for r in run_seeds(seeds, config, jobs=JOBS):
        sites_wiped += r.sites_wiped
        if not r.report.ok:
            failures.append(f"seed {r.seed}: {r.report.summary()}")
    replay = (
        f"replay: --workload {workload} --nodes 6 --racks 3 --datacenters 2 "
        "--bucket-datacenters dc1=3,dc2=3 --write-level each_quorum --seed S"
    )
    assert not failures, "\n".join([f"{window(seeds)} ({replay})", *failures])
    # The fault struck: about one seed in five wipes a data center (5 and 7 in two windows of
    # 30), so the half window asks for one, not the whole window's three.
    assert sites_wiped >= (3 if len(seeds) >= 60 else 1)


TOMBSTONE_SEEDS = list(range(START, START + 50))  # another config: the same seeds differ


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(TOMBSTONE_SEEDS))
def test_reaping_tombstones_under_all_faults_brings_nothing_back(seeds):
    """Registers on many keys with many deletes, so that tombstones outlive the grace period
    (4 virtual seconds here) while partitions, crashes and wiped disks come and go."""
    load = WorkloadOptions(keys=200, delete_probability=0.6)
    config = RunConfig("register", nodes=5, options=SimOptions().with_faults("all"), load=load)
    failures = []
    reaped = 0
    for result in run_seeds(seeds, config, jobs=JOBS):
        reaped += result.reaped
        if not result.report.ok:
            failures.append(failure_line(result))
    print(f"{reaped} tombstones reaped in {len(seeds)} runs")
    assert reaped > 10 * len(seeds)  # the runs did reap
    assert not failures, "\n".join(failures)


WAL_SEEDS = list(range(START, START + 30))  # another config: the same seeds differ


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(WAL_SEEDS))
@pytest.mark.parametrize("workload", PLACEMENT_WORKLOADS)
def test_every_invariant_holds_with_write_ahead_log_engines_on_disk(workload, seeds):
    """The nodes' engines are WalEngines on disk (storage/wal.py): a crash drops the open
    transaction and what was not logged, and reopens the engine from its log; a wipe gives
    it a new directory. No acknowledged write may be lost."""
    config = RunConfig(workload, nodes=5, options=SimOptions().with_faults("all"), storage="wal")
    failures = []
    crashes = 0
    for result in run_seeds(seeds, config, jobs=JOBS):
        crashes += result.crashes
        if not result.report.ok:
            failures.append(failure_line(result))
    assert crashes > len(seeds) // 2  # the runs did crash nodes
    replay = f"replay: --workload {workload} --storage wal --faults all --seed S"
    assert not failures, "\n".join([f"{window(seeds)} ({replay})", *failures])
