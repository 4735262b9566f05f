"""Reproduce the table in benchmarks/README.md: `make bench` (several minutes).

Runs each configuration `--runs` times (interleaved, so drift in the machine's load spreads
over all of them), keeps every run's JSON in `--out`, and prints Markdown tables of the
medians. A Redis baseline is measured in the same session when redis-server and
redis-benchmark are installed (Debian: `apt-get install -y redis-server redis-tools`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DYNAKV = [sys.executable, "-m", "dynakv", "bench", "--no-progress"]
REDIS_BENCHMARK = "-t set,get -n 200000 -c 50 -d 1024 -r 100000"


def cluster_args(records: int, duration: float) -> dict[str, list[str]]:
    common = [
        "--records", str(records), "--distribution", "zipfian", "--concurrency", "64",
        "--value-size", "1024", "--duration", str(duration), "--durability", "fsync",
    ]  # fmt: skip
    three = ["--local", "3", "--n", "3", "--r", "2", "--w", "2", *common]
    return {
        "3 nodes, YCSB-A": [*three, "--workload", "a"],
        "3 nodes, YCSB-C": [*three, "--workload", "c"],
        "1 node N=1, YCSB-C": ["--local", "1", "--n", "1", "--r", "1", "--w", "1", *common,
                               "--workload", "c"],
    }  # fmt: skip


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def run_dynakv(name: str, args: list[str], out: Path, index: int) -> dict[str, Any]:
    path = out / f"{slug(name)}-{index}.json"
    command = [*DYNAKV, *args, "--json", str(path)]
    print(f"$ dynakv bench {' '.join(args)}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(path.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_redis(out: Path, index: int) -> dict[str, dict[str, float]] | None:
    """redis-benchmark against a redis-server of our own on a free port, stopped by PID."""
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        return None
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="dynakv-redis-"))
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        command = ["redis-benchmark", "-p", str(port), *REDIS_BENCHMARK.split(), "--csv"]
        print(f"$ redis-benchmark {REDIS_BENCHMARK}  (redis-server on 127.0.0.1:{port})")
        text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    (out / f"redis-{index}.csv").write_text(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    return {row["test"]: {k: float(v) for k, v in row.items() if k != "test"} for row in rows}


def med(values: list[float]) -> float:
    return statistics.median(values)


def tables(results: dict[str, list[dict[str, Any]]], redis: list[dict[str, Any]]) -> str:
    lines = [
        "| configuration | runs | ops/s, median (min to max) | client CPU | servers CPU "
        "| other CPU | RSS per node |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, reports in results.items():
        tput = [r["run"]["throughput"] for r in reports]
        cpu = [r.get("cpu", {}) for r in reports]
        rss = [max(s["rss_mb"] for s in r.get("servers", [{"rss_mb": 0}])) for r in reports]
        lines.append(
            f"| {name} | {len(reports)} "
            f"| **{med(tput):,.0f}** ({min(tput):,.0f} to {max(tput):,.0f})"
            f" | {med([c.get('client_cores', 0) for c in cpu]):.2f}"
            f" | {med([c.get('servers_cores', 0) for c in cpu]):.2f}"
            f" | {med([c.get('other_cores', 0) for c in cpu]):.2f}"
            f" | {med(rss):.0f} MB |"
        )
    for test in ("SET", "GET"):
        rps = [r[test]["rps"] for r in redis if r and test in r]
        if rps:
            lines.append(
                f"| redis-server (1, unreplicated), redis-benchmark {test} | {len(rps)} "
                f"| **{med(rps):,.0f}** ({min(rps):,.0f} to {max(rps):,.0f}) | | | | |"
            )
    lines += [
        "",
        "| configuration | op | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, reports in results.items():
        for op in reports[0]["run"]["ops"]:
            lat = [r["run"]["ops"][op]["latency_ms"] for r in reports if op in r["run"]["ops"]]
            errors = sum(r["run"]["ops"].get(op, {}).get("errors", 0) for r in reports)
            cells = " | ".join(f"{med([x[k] for x in lat]):.2f}" for k in
                               ("p50", "p95", "p99", "p99.9", "max"))  # fmt: skip
            lines.append(f"| {name} | {op} | {cells} | {errors} |")
    for test in ("SET", "GET"):
        rows = [r[test] for r in redis if r and test in r]
        if rows:
            cells = " | ".join(
                f"{med([x[f'{k}_latency_ms'] for x in rows]):.2f}" for k in ("p50", "p95", "p99")
            )
            maxes = med([x["max_latency_ms"] for x in rows])
            lines.append(f"| redis-server | {test} | {cells} | - | {maxes:.2f} | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0, help="run phase, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-half-rate", action="store_true",
                        help="skip YCSB-A at half the measured maximum (open loop)")  # fmt: skip
    parser.add_argument("--no-redis", action="store_true")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    configs = cluster_args(opts.records, opts.duration)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    redis: list[dict[str, Any]] = []
    for index in range(1, opts.runs + 1):
        for name, args in configs.items():
            results[name].append(run_dynakv(name, args, opts.out, index))
        if not opts.no_redis:
            got = run_redis(opts.out, index)
            if got is not None:
                redis.append(got)
    if not opts.no_half_rate:
        top = med([r["run"]["throughput"] for r in results["3 nodes, YCSB-A"]])
        rate = max(1, round(top / 2))
        name = f"3 nodes, YCSB-A, open loop at {rate:,}/s (half max)"
        args = [*configs["3 nodes, YCSB-A"], "--rate", str(rate)]
        results[name] = [run_dynakv(name, args, opts.out, i) for i in range(1, opts.runs + 1)]
    nproc = os.cpu_count()
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    text = (
        f"Machine: {nproc} CPUs ({model}); medians over {opts.runs} runs; "
        f"{opts.records:,} records, {opts.duration:.0f} s run phase.\n\n" + tables(results, redis)
    )
    (opts.out / "table.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
