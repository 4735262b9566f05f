"""Seeds on which the simulator found a real bug in the core; each must stay clean.

Replay one with `python -m dynakv.sim --seed S --workload W --faults all --trace`.
"""

from __future__ import annotations

import pytest

from dynakv.core.events import Received
from dynakv.messages import ClientGet, ClientPut, GetResult
from dynakv.sim.cluster import SimCluster
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, replicas_of, run_seed

REGRESSIONS = [
    # The network duplicated a forwarded put; its coordinator wrote it a second time, after
    # an acknowledged write had superseded it, and the old value came back (came_back).
    ("cart", 170),
]

# Seeds on which the harness, not the core, was wrong: the final check read the replicas
# while a reap round's ReapCommits were still held for its coordinator's commit (pipelined
# commit), so two replicas still held the tombstone the coordinator had deleted (divergent).
HARNESS_REGRESSIONS = [("register", 9181), ("register", 9244), ("register", 9641)]
# Changes to the core (the hand-back of surplus copies, bucket type acknowledgements) change
# every trace after them, so those seeds may no longer reap; the wait is exercised by the
# seeds near them that do (at least one must).
REAPING_SEEDS = range(9181, 9201)


@pytest.mark.parametrize("read_fanout", ["n", "r"])  # found with "n" (the default then)
@pytest.mark.parametrize(("workload", "seed"), REGRESSIONS)
def test_seed_that_found_a_core_bug_stays_clean(workload, seed, read_fanout):
    options = SimOptions().with_faults("all")
    report = run_seed(seed, RunConfig(workload, options=options, read_fanout=read_fanout)).report
    assert report.ok, [str(v) for v in report.violations]


@pytest.mark.parametrize(("workload", "seed"), HARNESS_REGRESSIONS)
def test_final_check_waits_for_reap_commits_held_by_the_commit(workload, seed):
    options = SimOptions().with_faults("all")
    result = run_seed(seed, RunConfig(workload, options=options))
    assert result.report.ok, [str(v) for v in result.report.violations]


def test_the_final_check_waits_for_reaping_on_seeds_that_reap():
    options = SimOptions().with_faults("all")
    reaped = 0
    for seed in REAPING_SEEDS:
        result = run_seed(seed, RunConfig("register", options=options))
        assert result.report.ok, (seed, [str(v) for v in result.report.violations])
        reaped += result.reaped
    assert reaped > 0  # some run did reap, so the wait was exercised


def test_a_forwarded_put_delivered_twice_is_written_once():
    cluster = SimCluster(["n1", "n2", "n3", "n4", "n5"], seed=1)
    assert cluster.run_until(cluster.members_agree)
    key = next(f"k{i}" for i in range(100) if "n1" not in replicas_of(cluster, "b", f"k{i}"))
    coordinator = replicas_of(cluster, "b", key)[0]
    forwarded = ClientPut(41, "b", key, b"once", hops=1)
    cluster.deliver(coordinator, Received("n1", forwarded))
    cluster.run_for(0.5)
    cluster.deliver(coordinator, Received("n1", forwarded))  # the network's duplicate
    cluster.run_for(0.5)
    for name in replicas_of(cluster, "b", key):
        clock = cluster.nodes[name].replica("b", key)
        assert clock is not None
        assert sum(len(entry.values) for entry in clock.entries) == 1, name
    cluster.request("n2", "#c", ClientGet(1, "b", key))
    assert cluster.run_until(lambda: bool(cluster.inbox["#c"]))
    reply = cluster.inbox["#c"][0]
    assert isinstance(reply, GetResult) and reply.values == [b"once"]
