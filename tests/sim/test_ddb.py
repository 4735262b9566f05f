"""The ddb workload in the simulator: the real DynamoDB operations (dynamodb/) on simulated
nodes under every fault satisfy sim/ddb_check.py's rules; increments are exact in runs
without partitions and crashes; broken implementations (a Query out of order or skipping
an item, conditional writes not serialised or not forwarded) are caught; and the checker
on short hand-made histories.

`make test` runs the first half of each seed window, `make test-long` (marker `long`) the
whole. A failing seed replays with `python -m dynakv.sim --workload ddb --faults all
--seed S --trace`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from dynakv.dynamodb import query_ops
from dynakv.errors import Timeout
from dynakv.sim import ddb_backend
from dynakv.sim.checker import (
    INCREMENT_LOST,
    LOST,
    NEVER_WRITTEN,
    QUERY_BOUNDS,
    QUERY_MISSING,
    QUERY_ORDER,
    ReplicaRead,
)
from dynakv.sim.ddb_check import ItemRead, ItemWrite, QueryPage, check_ddb
from dynakv.sim.options import SimOptions
from dynakv.sim.run import RunConfig, RunResult, formed_cluster, run_seed, run_seeds
from tests.sim.test_seeds import JOBS, START, failure_line, halves

SEEDS = list(range(START, START + 80))
CALM_SEEDS = list(range(START, START + 40))  # another config: the same seeds differ
ALL_FAULTS = SimOptions().with_faults("all")


def figures(results: list[RunResult]) -> dict[str, int]:
    """What the runs did: enough of each kind of operation to mean something."""
    pages = [op for r in results for op in r.history if isinstance(op, QueryPage)]
    return {
        "acked": sum(r.report.acknowledged for r in results),
        "increments": sum(getattr(r.report, "increments_acked", 0) for r in results),
        "paged": len({(op.process, op.query) for op in pages if op.page > 1}),
        "descending": sum(1 for op in pages if not op.forward and op.outcome == "ok"),
        "crashes": sum(r.crashes for r in results),
        "partitions": sum(r.partitions for r in results),
    }


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(SEEDS))
def test_every_ddb_rule_holds_under_all_faults(seeds):
    config = RunConfig("ddb", nodes=5, options=ALL_FAULTS)
    results = list(run_seeds(seeds, config, jobs=JOBS))
    failures = [failure_line(r) for r in results if not r.report.ok]
    assert not failures, "\n".join(failures)
    done = figures(results)
    print(done)
    assert done["acked"] > 40 * len(seeds)  # 77 to 203 a seed in seeds 1-5
    assert done["increments"] > 10 * len(seeds)
    assert done["paged"] > 2 * len(seeds) and done["descending"] > 10 * len(seeds)
    assert done["crashes"] > len(seeds) // 2 and done["partitions"] > len(seeds) // 2


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seeds", halves(CALM_SEEDS))
def test_increments_are_exact_without_partitions_and_crashes(seeds):
    """Loss and clock skew only: every node agrees on each key's primary, so two
    acknowledged increments never produce the same n (the checker's exact mode)."""
    config = RunConfig("ddb", nodes=5, options=SimOptions().with_faults("loss,skew"))
    results = list(run_seeds(seeds, config, jobs=JOBS))
    failures = [failure_line(r) for r in results if not r.report.ok]
    assert not failures, "\n".join(failures)
    assert figures(results)["increments"] > 50 * len(seeds)  # 94 a seed in seeds 1-20


def test_a_ddb_run_is_the_same_whatever_the_hash_seed():
    """The operations are driven by hand in virtual time: one seed, one trace."""
    command = [
        sys.executable, "-m", "dynakv.sim", "--seed", "5", "--trace",
        "--workload", "ddb", "--faults", "all", "--duration", "4",
    ]  # fmt: skip
    outputs = []
    for hash_seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(command, capture_output=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert b" invoke increment " in outputs[0] and b" ok query " in outputs[0]


def _frontends() -> tuple[Any, ddb_backend.DynamoFrontends]:
    cluster = copy.deepcopy(formed_cluster(5, None, 1.0, table=True))
    return cluster, ddb_backend.DynamoFrontends(cluster, 1.0)


def test_a_key_lock_is_first_in_first_out_and_a_stopped_node_drops_its_operations():
    cluster, frontends = _frontends()
    backend = frontends.backend("n1")
    order: list[int] = []
    ended: list[int] = []

    async def hold(i: int) -> int:
        async with backend.lock("b", "k"):
            order.append(i)
            with contextlib.suppress(Timeout):
                await frontends.wait(-1000 - i, 0.1)  # nothing answers: 0.1 s in the lock
            order.append(-i)
        return i

    for i in (1, 2, 3):
        ddb_backend.Task(hold(i), backend.alive, lambda v, e: ended.append(v)).resume()
    other = frontends.backend("n2")
    ddb_backend.Task(hold_on(other, frontends), other.alive, lambda v, e: ended.append(v)).resume()
    cluster.crash("n2")
    cluster.run_for(1.0)
    assert order == [1, -1, 2, -2, 3, -3]
    assert ended == [1, 2, 3]  # n2's operation died with it
    assert not backend.locks  # the last holder dropped the key's queue


async def hold_on(backend: ddb_backend.SimBackend, frontends: ddb_backend.DynamoFrontends) -> int:
    async with backend.lock("b", "k"):
        await frontends.wait(-2000, 0.1)
    return 99


# --- broken implementations ------------------------------------------------------------------
def _rows(patched: Callable[..., AsyncIterator[Any]]) -> Callable[[pytest.MonkeyPatch], None]:
    def apply(monkeypatch: pytest.MonkeyPatch) -> None:
        real = query_ops.read_range
        monkeypatch.setattr(query_ops, "read_range", lambda *a, **k: patched(real(*a, **k)))

    return apply


async def _swap_pairs(rows: AsyncIterator[Any]) -> AsyncIterator[Any]:
    held = None
    async for row in rows:
        if held is None:
            held = row
            continue
        yield row
        yield held
        held = None
    if held is not None:
        yield held


async def _skip_first(rows: AsyncIterator[Any]) -> AsyncIterator[Any]:
    first = True
    async for row in rows:
        if not first:
            yield row
        first = False


def _unlocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ddb_backend.SimBackend, "lock", lambda *_: contextlib.nullcontext())


def _unforwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ddb_backend, "serialised_key", lambda *_: None)


MUTATIONS = {
    # range reads hand items over in pairs swapped: pages out of sort-key order
    "query_swaps_items": (_rows(_swap_pairs), "all", QUERY_ORDER),
    # range reads drop the first item: the final Query misses what the replicas hold
    "query_skips_an_item": (_rows(_skip_first), "all", QUERY_MISSING),
    # read-modify-writes of one key on one node not serialised: lost increments
    "no_key_lock": (_unlocked, "none", INCREMENT_LOST),
    # conditional writes served where they arrive, not at the primary: lost increments
    "no_forwarding": (_unforwarded, "none", INCREMENT_LOST),
}
MUTATION_SEEDS = 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_checker_catches_a_broken_implementation(name, monkeypatch):
    apply, faults, invariant = MUTATIONS[name]
    config = RunConfig("ddb", nodes=5, options=SimOptions().with_faults(faults))
    clean = run_seed(1, config).report
    assert clean.ok, [str(v) for v in clean.violations]
    apply(monkeypatch)
    for seed in range(1, MUTATION_SEEDS + 1):
        report = run_seed(seed, config).report
        if report.counts[invariant]:
            print(f"{name}: {invariant} caught at seed {seed}: {report.summary()}")
            return
    pytest.fail(f"{name}: no {invariant} violation in seeds 1-{MUTATION_SEEDS}")


# --- the checker on hand-made histories --------------------------------------------------------
def put(id: str, invoke: float, complete: float, outcome: Any = "ok", sk: str = "v0") -> ItemWrite:
    return ItemWrite("c0", "put", "p0", sk, id, None, invoke, complete, outcome)


def final(*items: dict[str, Any]) -> QueryPage:
    return QueryPage("final", 99, 1, "p0", True, None, None, None, None, 50.0, 50.1, "ok", items)


def item(id: str, sk: str = "v0", **extra: Any) -> dict[str, Any]:
    return {"pk": "p0", "sk": sk, "v": id, **extra}


def test_a_put_may_lose_only_to_a_write_that_did_not_finish_before_it_began_less_the_skew():
    first, second = put("c0.1", 1.0, 1.1), put("c1.1", 2.0, 2.1)
    assert check_ddb([first, second, final(item("c1.1"))], []).ok
    report = check_ddb([first, second, final(item("c0.1"))], [])
    assert report.counts[LOST] == 1  # c1.1 acknowledged, an earlier write shown
    # With clocks up to 2 s ahead, c0.1 may carry the later timestamp.
    assert check_ddb([first, second, final(item("c0.1"))], [], skew=2.0).ok
    gone = ItemWrite("c2", "delete", "p0", "v0", "c2.1", None, 0.5, 0.6, "ok")
    assert check_ddb([second, gone, final()], [], skew=2.0).ok
    assert check_ddb([second, gone, final()], []).counts[LOST] == 1
    unknown = put("c3.1", 0.1, 0.2, "unknown")  # may have landed at any time since
    assert check_ddb([second, unknown, final(item("c3.1"))], []).ok


def test_items_never_written_and_pages_out_of_order_are_reported():
    a, b = put("c0.1", 1.0, 1.1, sk="v1"), put("c0.2", 1.2, 1.3, sk="v2")
    history: list[Any] = [a, b, final(item("c0.1", "v1"), item("c0.2", "v2"))]
    assert check_ddb(history, []).ok

    def page(*found: dict[str, Any], forward: bool = True, limit: int | None = None) -> Any:
        return QueryPage("c1", 1, 1, "p0", forward, limit, None, None, None, 2, 3, "ok", found)

    backwards = page(item("c0.1", "v1"), item("c0.2", "v2"), forward=False)
    assert check_ddb([*history, backwards], []).counts[QUERY_ORDER] == 1
    assert check_ddb([*history, page(item("c0.1", "v1"), item("c0.1", "v1"))], []).counts[
        QUERY_ORDER
    ]
    too_many = page(item("c0.1", "v1"), item("c0.2", "v2"), limit=1)
    assert check_ddb([*history, too_many], []).counts[QUERY_BOUNDS] == 1
    stranger = ItemRead("c1", "p0", "v1", 2, 3, "ok", item("c9.9", "v1"))
    early = ItemRead("c1", "p0", "v2", 1.0, 1.1, "ok", item("c0.2", "v2"))  # before its put
    assert check_ddb([*history, stranger, early], []).counts[NEVER_WRITTEN] == 2


def test_duplicate_increments_fail_only_in_exact_runs_and_replicas_must_match_the_query():
    def inc(id: str, n: int) -> ItemWrite:
        return ItemWrite("c0", "increment", "p0", "c0", id, n, 1.0, 1.1, "ok")

    history = [inc("c0.1", 1), inc("c1.1", 1), final(item("c1.1", "c0", n=1))]
    assert check_ddb(history, []).counts[INCREMENT_LOST] == 1
    relaxed = check_ddb(history, [], exact_increments=False)
    assert relaxed.ok and relaxed.increments_duplicated == 1
    stored = b'{"g":1,"i":{"pk":{"S":"p0"},"sk":{"S":"c0"},"v":{"S":"c0.1"},"n":{"N":"1"}}}'
    replicas = [ReplicaRead(n, "b", "k", (stored,), 0, "") for n in ("n1", "n2", "n3")]
    assert check_ddb(history, replicas, exact_increments=False).counts[QUERY_MISSING] == 1
