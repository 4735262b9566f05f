"""`dynakv bench`: key generators, the latency histogram, workload mixes, and one short run.

Nothing here asserts on speed: only on distributions, arithmetic and the report's shape.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dynakv.bench import summarize
from dynakv.errors import Unavailable
from dynakv.latency_histogram import SUB_BITS, Histogram, bucket_index, bucket_range
from dynakv.load_generator import (
    BenchSpec,
    Generator,
    NothingSucceeded,
    OpStats,
    PhaseResult,
    default_connections,
    share,
)
from dynakv.messages import GetResult, Message, PutResult
from dynakv.ycsb import WORKLOADS, ScrambledZipfian, Uniform, ZipfianGenerator, fnv1_64, zeta
from tests.cluster.harness import free_port

DRAWS = 100_000


def draws(generator: ScrambledZipfian | Uniform | ZipfianGenerator, n: int = DRAWS) -> list[int]:
    return [generator.next() for _ in range(n)]


# --- key choice ---------------------------------------------------------------------------


def test_scrambled_zipfian_is_deterministic_from_its_seed() -> None:
    first = draws(ScrambledZipfian(10_000, random.Random(7)), 2000)
    again = draws(ScrambledZipfian(10_000, random.Random(7)), 2000)
    other = draws(ScrambledZipfian(10_000, random.Random(8)), 2000)
    assert first == again
    assert first != other


@pytest.mark.parametrize("items", [1, 2, 7, 1000, 100_000])
def test_scrambled_zipfian_stays_in_range(items: int) -> None:
    values = draws(ScrambledZipfian(items, random.Random(1)), 20_000)
    assert min(values) >= 0
    assert max(values) < items


def test_scrambled_zipfian_is_skewed_and_uniform_is_not() -> None:
    items = 1000
    zipf = Counter(draws(ScrambledZipfian(items, random.Random(3))))
    flat = Counter(draws(Uniform(items, random.Random(3))))
    # YCSB's scrambled zipfian: the hottest item takes 1/zeta(10^10, 0.99) ~ 3.8% of draws.
    hottest = zipf.most_common(1)[0][1] / DRAWS
    assert 0.03 < hottest < 0.05
    top10 = sum(n for _, n in zipf.most_common(10)) / DRAWS
    assert top10 > 0.10  # ten keys in a thousand get over a tenth of the load
    assert flat.most_common(1)[0][1] / DRAWS < 0.003
    assert sum(n for _, n in flat.most_common(10)) / DRAWS < 0.02
    assert len(flat) == items  # uniform reaches every key
    # The hot keys are scattered by the hash, not bunched at the low end of the range.
    hot = [key for key, _ in zipf.most_common(10)]
    assert max(hot) - min(hot) > items // 4


def test_zipfian_matches_its_law_for_the_head() -> None:
    items = 100
    counts = Counter(draws(ZipfianGenerator(items, random.Random(5)), 200_000))
    z = zeta(items, 0.99)
    # Items 0 and 1 are drawn exactly with probability 1/zeta and 1/(2^theta zeta).
    assert counts[0] / 200_000 == pytest.approx(1 / z, rel=0.03)
    assert counts[1] / 200_000 == pytest.approx(1 / (2**0.99 * z), rel=0.05)
    assert counts[0] > counts[1] > counts[5] > counts[50]
    assert set(counts) <= set(range(items))


def test_fnv_hash_is_a_non_negative_java_long() -> None:
    values = [fnv1_64(v) for v in range(10_000)]
    assert all(0 <= v < 1 << 63 for v in values)
    assert len(set(values)) == len(values)
    assert fnv1_64(12345) == fnv1_64(12345)


# --- histogram ----------------------------------------------------------------------------


def nearest_rank(sorted_values: list[int], p: float) -> int:
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


def test_buckets_cover_every_value_with_three_significant_digits() -> None:
    rng = random.Random(11)
    values = list(range(5000)) + [int(rng.lognormvariate(10, 4)) for _ in range(20_000)]
    for value in values:
        value = min(value, (1 << 36) - 1)
        low, high = bucket_range(bucket_index(value))
        assert low <= value <= high
        assert (high - low + 1) <= max(1, low >> (SUB_BITS - 1))
    assert bucket_index(2047) + 1 == bucket_index(2048)  # no gap after the exact region


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_match_sorted_list_percentiles(seed: int) -> None:
    rng = random.Random(seed)
    # Microsecond latencies from tens of microseconds to tens of seconds, with a heavy tail.
    values = [int(rng.lognormvariate(7.5, 1.5)) for _ in range(50_000)]
    values += [rng.randrange(1, 2048) for _ in range(5000)]
    hist = Histogram()
    for value in values:
        hist.record(value)
    exact = sorted(values)
    ps = [0.1, 1, 25, 50, 90, 95, 99, 99.9, 99.99, 100]
    for p, got in zip(ps, hist.percentiles(ps), strict=True):
        want = nearest_rank(exact, p)
        assert abs(got - want) <= want / 1000 + 1, (p, got, want)
    assert hist.count == len(values)
    assert hist.max == exact[-1]
    assert hist.min == exact[0]
    assert hist.mean == pytest.approx(sum(values) / len(values))


def test_histogram_small_values_are_exact_and_empty_is_zero() -> None:
    hist = Histogram()
    assert hist.percentiles([50, 99]) == [0, 0]
    for value in [5, 1, 3, 2, 4]:
        hist.record(value)
    assert hist.percentiles([20, 40, 60, 80, 100]) == [1, 2, 3, 4, 5]
    hist.record(-3)  # clipped to 0, never an error
    assert hist.min == 0


def test_merged_histograms_equal_one_histogram_of_everything() -> None:
    rng = random.Random(4)
    parts = [[int(rng.expovariate(1 / 5000)) for _ in range(3000)] for _ in range(3)]
    merged = Histogram()
    for part in parts:
        h = Histogram()
        for value in part:
            h.record(value)
        merged.merge(h)
    whole = Histogram()
    for value in (v for part in parts for v in part):
        whole.record(value)
    ps = [50, 95, 99, 99.9]
    assert merged.percentiles(ps) == whole.percentiles(ps)
    assert (merged.count, merged.min, merged.max, merged.total) == (
        whole.count,
        whole.min,
        whole.max,
        whole.total,
    )


# --- workloads and splitting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", {"read": 0.5, "update": 0.5}),
        ("b", {"read": 0.95, "update": 0.05}),
        ("c", {"read": 1.0}),
        ("f", {"read": 0.5, "rmw": 0.5}),
        ("w", {"update": 1.0}),
    ],
)
def test_workload_mix_proportions(name: str, expected: dict[str, float]) -> None:
    rng = random.Random(9)
    counts = Counter(WORKLOADS[name].choose(rng.random()) for _ in range(DRAWS))
    assert set(counts) == set(expected)
    for op, share_ in expected.items():
        assert counts[op] / DRAWS == pytest.approx(share_, abs=0.01)


def test_work_is_split_exactly_between_processes() -> None:
    for total, parts in [(100_000, 3), (7, 4), (64, 2), (1, 1)]:
        slices = [share(total, parts, i) for i in range(parts)]
        assert slices[0][0] == 0
        assert slices[-1][1] == total
        assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
    assert default_connections(64, 3) == 6  # about 11 in flight each, two per node
    assert default_connections(8, 3) == 1
    assert default_connections(1, 1) == 1
    assert all(8 <= 64 / default_connections(64, n) <= 16 for n in (1, 2, 4))


def test_summary_merges_phases_from_several_processes() -> None:
    def part(values: list[int], elapsed: float, errors: int) -> PhaseResult:
        stats = OpStats()
        for value in values:
            stats.hist.record(value)
        stats.errors["timeout"] = errors
        return PhaseResult({"read": stats}, elapsed, cpu=1.0)

    total = PhaseResult()
    total.merge(part([1000] * 90, 2.0, 1))
    total.merge(part([9000] * 10, 1.5, 2))
    figures = summarize(total)
    assert figures["elapsed_s"] == 2.0
    assert figures["throughput"] == 50.0
    assert figures["errors"] == {"timeout": 3}
    assert figures["client_cpu_s"] == 2.0
    read = figures["ops"]["read"]
    assert read["count"] == 100
    assert read["latency_ms"]["p50"] == 1.0
    assert read["latency_ms"]["p95"] == pytest.approx(9.0, rel=1e-3)
    assert figures["total"]["count"] == 100


# --- one short run against a real single-node cluster -------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_bench_against_a_local_node_writes_its_figures(tmp_path: Path, processes: int) -> None:
    """About 2 s of YCSB-A in-process, then in two generator processes whose figures merge."""
    out = tmp_path / "bench.json"
    args = [
        sys.executable, "-m", "dynakv", "bench",
        "--local", "1", "--durability", "none",
        "--records", "200", "--duration", "2", "--concurrency", "8",
        "--workload", "a", "--processes", str(processes),
        "--json", str(out), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["local"]["n"] == 1
    assert report["config"]["processes"] == processes
    assert report["load"]["ops"]["insert"]["count"] == 200
    run = report["run"]
    assert run["errors"] == {}
    assert set(run["ops"]) == {"read", "update"}
    for op in run["ops"].values():
        assert op["count"] > 0
        assert op["not_found"] == 0
        lat = op["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert run["total"]["count"] == sum(op["count"] for op in run["ops"].values())
    assert run["client_cpu_s"] > 0
    assert report["servers"][0]["rss_mb"] > 0


# --- failures: the bench stops, says so, and counts the time they took ---------------------


class _FakeClient:
    """Answers every request after `delay` s: a success until `fail_after` s into the run,
    an `unavailable` after that (or from the start when fail_after is 0)."""

    def __init__(self, fail_after: float, delay: float = 0.002) -> None:
        self.fail_after = fail_after
        self.delay = delay
        self.started = time.perf_counter()

    def _answer(self, callback, ok: Message) -> None:
        failing = time.perf_counter() - self.started >= self.fail_after
        reply = Unavailable("needed 2 replicas, got 0") if failing else ok
        asyncio.get_running_loop().call_later(self.delay, callback, reply)

    def start_get(self, bucket, key, callback, **_: object) -> None:
        self._answer(callback, GetResult(0, [b"v"], [""], ""))

    def start_put(self, bucket, key, value, callback, **_: object) -> None:
        self._answer(callback, PutResult(0, ""))

    async def close(self) -> None:
        pass


def _generator(monkeypatch, fail_after: float, **spec: object) -> Generator:
    settings = {"nodes": ("127.0.0.1:9",), "records": 50, "concurrency": 4, **spec}
    generator = Generator(BenchSpec(**settings))  # type: ignore[arg-type]
    monkeypatch.setattr(generator, "_clients", lambda: [_FakeClient(fail_after)])
    return generator


def test_a_run_phase_lasts_until_its_last_answer_even_a_failed_one(monkeypatch) -> None:
    generator = _generator(monkeypatch, fail_after=0.3, duration=0.8, load=False)
    _, ran = generator.run()
    assert sum(s.errors["unavailable"] for s in ran.ops.values()) > 0
    assert ran.elapsed > 0.7  # not 0.3, when the last success came


def test_a_phase_whose_every_request_fails_stops_early(monkeypatch) -> None:
    generator = _generator(monkeypatch, fail_after=0.0, duration=30.0, load=False)
    started = time.perf_counter()
    with pytest.raises(NothingSucceeded, match=r"all 200 requests of the run phase failed"):
        generator.run()
    assert time.perf_counter() - started < 10


def test_a_load_phase_of_only_failures_stops_the_bench(monkeypatch) -> None:
    generator = _generator(monkeypatch, fail_after=0.0, duration=30.0)
    with pytest.raises(NothingSucceeded, match=r"all 50 requests of the load phase failed"):
        generator.run()


def test_bench_with_nothing_listening_exits_non_zero_naming_the_address() -> None:
    args = [
        sys.executable, "-m", "dynakv", "bench", "--nodes", f"127.0.0.1:{free_port()}",
        "--records", "10", "--duration", "30", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "requests of the load phase failed" in done.stderr
    assert "make run" in done.stderr
