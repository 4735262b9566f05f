"""Admission control: background work backs off while foreground p99 is high, and recovers."""

from __future__ import annotations

from dynakv.core.admission import BackgroundBudget
from dynakv.core.events import LoadReport
from tests.unit.test_node import make_cluster


def test_the_budget_halves_above_the_threshold_and_recovers_below_it():
    budget = BackgroundBudget(threshold=0.05)
    budget.report(0.2)
    assert budget.share == 0.5
    budget.report(0.2)
    assert budget.share == 0.25
    for _ in range(20):
        budget.report(0.2)
    assert budget.share == budget.floor  # never zero: repairs must finish eventually
    assert budget.scale(64) >= 1
    for _ in range(20):
        budget.report(0.001)
    assert budget.share == 1.0
    assert budget.scale(64) == 64


def test_a_node_under_foreground_pressure_slows_its_background_work():
    cluster = make_cluster(3, aae_interval=1.0, handoff_batch=64)
    node = cluster.nodes["n1"]
    for _ in range(5):
        cluster.deliver("n1", LoadReport(p99=0.5))
    cluster.run_for(0.1)
    assert node.budget.share == node.budget.floor
    assert node.budget.scale(node.config.handoff_batch) < 64
    assert node.budget.stretch(node.config.aae_interval) >= 10
    assert node.status()["background"]["reductions"] == 4
    for _ in range(10):
        cluster.deliver("n1", LoadReport(p99=0.001))
    cluster.run_for(0.1)
    assert node.budget.share == 1.0
