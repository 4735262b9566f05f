"""What active anti-entropy costs the foreground: YCSB throughput with it on and off.

Runs `dynakv bench --local 3` (fsync, N=3 R=2 W=2, zipfian, 1 KiB values) alternately with
the nodes' default settings (anti-entropy on: trees updated on every write, exchanges every
2 s, tombstone sweep) and with `--node-setting anti_entropy=false`, `--runs` times each,
interleaved so drift in the machine's load spreads over both, and prints the median
throughput and p99 of each and the ratio. Target (issue 5): on is at most 10% slower.

    .venv/bin/python benchmarks/aae_overhead.py --runs 3 --records 100000 --duration 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def one_run(args: argparse.Namespace, anti_entropy: bool, out: Path, index: int) -> dict[str, Any]:
    path = out / f"aae-{'on' if anti_entropy else 'off'}-{index}.json"
    command = [
        sys.executable, "-m", "dynakv", "bench", "--no-progress",
        "--local", "3", "--n", "3", "--r", "2", "--w", "2", "--durability", "fsync",
        "--workload", args.workload, "--distribution", "zipfian", "--records", str(args.records),
        "--concurrency", "64", "--value-size", "1024", "--duration", str(args.duration),
        "--json", str(path),
    ]  # fmt: skip
    if not anti_entropy:
        command += ["--node-setting", "anti_entropy=false"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(path.read_text())


def p99_ms(report: dict[str, Any]) -> float:
    """The worst p99 over the run's operations, in milliseconds."""
    ops = report["run"]["ops"]
    return max(float(op["latency_ms"]["p99"]) for op in ops.values()) if ops else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workload", default="a")
    parser.add_argument("--out", type=Path, help="keep each run's JSON here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aae-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for index in range(1, args.runs + 1):
        for anti_entropy in (index % 2 == 1, index % 2 == 0):  # alternate which goes first
            report = one_run(args, anti_entropy, out, index)
            throughput = float(report["run"]["throughput"])
            figures[anti_entropy].append((throughput, p99_ms(report)))
            state = "on " if anti_entropy else "off"
            print(f"  anti-entropy {state}: {throughput:,.0f} ops/s, p99 {p99_ms(report):.1f} ms")
    on = statistics.median(t for t, _ in figures[True])
    off = statistics.median(t for t, _ in figures[False])
    print(f"\nYCSB-{args.workload.upper()}, {args.records:,} records, {args.runs} runs each:")
    for label, key in (("on", True), ("off", False)):
        runs = ", ".join(f"{t:,.0f}" for t, _ in figures[key])
        p99 = statistics.median(p for _, p in figures[key])
        median = statistics.median(t for t, _ in figures[key])
        print(f"  anti-entropy {label:3}: median {median:,.0f} ops/s (runs {runs}), "
              f"median p99 {p99:.1f} ms")  # fmt: skip
    print(f"  on/off = {on / off:.3f} ({100 * (1 - on / off):+.1f}% slower with anti-entropy)")
    print(f"  JSON in {out}")


if __name__ == "__main__":
    main()
