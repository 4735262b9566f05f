"""redis-benchmark against dynakv's Redis-protocol front door and against a plain redis-server.

    .venv/bin/python benchmarks/resp_vs_redis.py [--runs 3] [--out benchmarks/results/resp]

For each run, in turn (interleaved, so drift in the machine's load spreads over both): a fresh
local 3-node cluster (`dynakv dev-cluster --resp-base-port`, defaults N=3 R=2 W=2, `fsync`,
in a temporary directory) with redis-benchmark against node 1's RESP port, then a redis-server
of our own on a free port (`run.py`'s baseline). Every process is stopped by its PID. Prints
the medians of requests/s per test and the ratio dynakv / Redis.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from run import REDIS_BENCHMARK, ROOT, run_redis  # benchmarks/run.py

sys.path.insert(0, str(ROOT))
from tests.cluster.harness import free_port_block


def cluster_ready(http_ports: list[int]) -> bool:
    views = []
    for port in http_ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/cluster", timeout=2) as r:
                views.append(json.load(r))
        except OSError:
            return False
    return (
        all(len(v["members"]) == len(http_ports) for v in views)
        and all(m["status"] == "up" for v in views for m in v["members"])
        and all(v["next_ring"] is None for v in views)
        and len({json.dumps(v["ring"]) for v in views}) == 1
    )


def run_dynakv(out: Path, index: int) -> dict[str, dict[str, float]]:
    base = free_port_block(9)  # node ports base+1..3, HTTP base+4..6, RESP base+7..9
    data = Path(tempfile.mkdtemp(prefix="dynakv-resp-"))
    command = [
        sys.executable, "-m", "dynakv", "dev-cluster", "--nodes", "3", "--data-dir", str(data),
        "--base-port", str(base), "--base-http-port", str(base + 3),
        "--resp-base-port", str(base + 6),
    ]  # fmt: skip
    cluster = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not cluster_ready([base + 4, base + 5, base + 6]):
            if time.monotonic() > deadline or cluster.poll() is not None:
                raise RuntimeError("the dynakv cluster did not come up")
            time.sleep(0.2)
        port = base + 7
        print(f"$ redis-benchmark -p {port} {REDIS_BENCHMARK}  (dynakv node1 RESP)", flush=True)
        bench = ["redis-benchmark", "-p", str(port), *REDIS_BENCHMARK.split(), "--csv"]
        text = subprocess.run(bench, check=True, capture_output=True, text=True).stdout
    finally:
        cluster.send_signal(signal.SIGTERM)  # dev-cluster stops its nodes by PID
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cluster.kill()
            cluster.wait()
        shutil.rmtree(data, ignore_errors=True)
    (out / f"dynakv-resp-{index}.csv").write_text(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    return {row["test"]: {k: float(v) for k, v in row.items() if k != "test"} for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "resp")
    opts = parser.parse_args()
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        sys.exit("needs redis-server and redis-benchmark (apt-get install -y redis-server)")
    opts.out.mkdir(parents=True, exist_ok=True)
    dynakv: list[dict[str, dict[str, float]]] = []
    redis: list[dict[str, dict[str, float]]] = []
    for index in range(1, opts.runs + 1):
        dynakv.append(run_dynakv(opts.out, index))
        got = run_redis(opts.out, index)
        assert got is not None
        redis.append(got)
        for name, result in (("dynakv", dynakv[-1]), ("redis", redis[-1])):
            figures = ", ".join(f"{t} {r['rps']:,.0f}/s" for t, r in result.items())
            print(f"run {index} {name}: {figures}", flush=True)
    print(
        "\n| test | dynakv 3 nodes (RESP) | redis-server | ratio | dynakv p50 ms | redis p50 ms |"
    )
    print("|---|---|---|---|---|---|")
    for test in ("SET", "GET"):
        ours = [r[test]["rps"] for r in dynakv]
        theirs = [r[test]["rps"] for r in redis]
        mine, base = statistics.median(ours), statistics.median(theirs)
        p50 = statistics.median(r[test]["p50_latency_ms"] for r in dynakv)
        p50_redis = statistics.median(r[test]["p50_latency_ms"] for r in redis)
        runs = f"{', '.join(f'{x:,.0f}' for x in ours)} / {', '.join(f'{x:,.0f}' for x in theirs)}"
        print(
            f"| {test} | **{mine:,.0f}** | **{base:,.0f}** | {mine / base:.2f}x "
            f"| {p50:.2f} | {p50_redis:.2f} |  <!-- runs: {runs} -->"
        )


if __name__ == "__main__":
    main()
