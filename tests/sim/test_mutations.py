"""A checker that never fails proves nothing: each injected bug is caught within a few seeds.

Each case switches on one core.bugs.InjectedBugs switch, runs seeds from 1 until the checker
reports the violation that bug must cause, and fails if none of the first `SEED_BOUND` does.
The same seeds with the switch off are clean, so the violation comes from the bug.
"""

from __future__ import annotations

import dataclasses

import pytest

from dynakv.sim.checker import CAME_BACK, LOST, MERGED
from dynakv.sim.options import SimOptions
from dynakv.sim.run import BUGS, RunConfig, run_seed
from dynakv.sim.workload import WorkloadOptions

SEED_BOUND = 10

ALL_FAULTS = SimOptions().with_faults("all")
# KV679 needs a node that lost its disk to coordinate a write whose context lacks its old
# dots: many keys (so the wiped node has not been refreshed on all of them by new writes)
# and blind adds; every crash hits the wipe victim and wipes it.
WIPES = dataclasses.replace(
    SimOptions().with_faults("wipe"), wipe_probability=1.0, victim_crash_share=1.0
)
MANY_KEYS = WorkloadOptions(keys=20, blind_probability=0.3)
# A repair overwrites a write only if it lands at a replica between that replica's answer
# to the read and the repair: one hot key makes that race common (with 3 keys, anti-entropy
# heals most of them and 3 seeds in 10 catch it; with one, 10 in 10).
HOT_KEY = WorkloadOptions(keys=1)
# A zombie needs a replica that missed a delete to stay down past the grace period, and the
# deleted key to stay untouched afterwards (a later write would supersede the old value
# again): long crashes, many keys, many deletes.
LONG_CRASHES = dataclasses.replace(SimOptions().with_faults("crash"), crash_min=5.0, crash_max=10.0)
MANY_DELETES = WorkloadOptions(keys=200, delete_probability=0.6)

CASES = {
    # the coordinator answers before it stores: a crash, or a second put it coordinates
    # from the same unstored state (the same dot), loses acknowledged writes
    "ack_before_store": (RunConfig("cart", options=ALL_FAULTS), LOST),
    # replica merges keep one of several concurrent values
    "drop_sibling_on_merge": (RunConfig("register", options=ALL_FAULTS), MERGED),
    # read repair replaces a replica's newer state (and resets its dot counter); with reads
    # asking every replica (fan-out "n") a repair races writes at the other replicas often
    # enough to be caught in 10 seeds; with fan-out "r" it repairs one remote replica at
    # most, and seeds 1-30 showed no loss
    "read_repair_overwrites": (
        RunConfig("register", options=ALL_FAULTS, load=HOT_KEY, read_fanout="n"),
        LOST,
    ),
    # a wiped node mints dots its old incarnation already used (Riak's KV679)
    "reuse_dots_after_restart": (RunConfig("cart", options=WIPES, load=MANY_KEYS), LOST),
    # tombstones reaped without asking the members: a replica that missed the delete
    # brings the value back
    "reap_unchecked": (
        RunConfig("register", options=LONG_CRASHES, load=MANY_DELETES),
        CAME_BACK,
    ),
}


def test_every_injected_bug_has_a_case():
    assert sorted(CASES) == sorted(BUGS)


@pytest.mark.parametrize("bug", sorted(CASES))
def test_the_checker_catches_the_injected_bug(bug):
    config, invariant = CASES[bug]
    buggy = dataclasses.replace(config, bug=bug)
    for seed in range(1, SEED_BOUND + 1):
        report = run_seed(seed, buggy).report
        if report.counts[invariant]:
            clean = [run_seed(s, config).report for s in range(1, seed + 1)]
            assert all(r.ok for r in clean), [str(v) for r in clean for v in r.violations]
            print(f"{bug}: {invariant} caught at seed {seed}: {report.summary()}")
            return
    pytest.fail(f"{bug}: no {invariant} violation in seeds 1-{SEED_BOUND}")
