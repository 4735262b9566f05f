"""What security and the DynamoDB front end cost: interleaved A/B pairs of `dynakv bench`.

Two comparisons, each a pair of runs `--runs` times with the order alternating, so drift in
the machine's load spreads over both sides (issue 19: "the cost of TLS and auth on make
bench"; issue 20: "the cost per request of the JSON protocol"):

- security: `dynakv bench --local 3 --workload a` open (as `make run`), against `--secure`
  (cluster secret on the node port, TLS on every port, users on and the generator logged in);
- api: the binary protocol against `--api dynamodb` (GetItem / PutItem), workloads A and C;
- http: the binary protocol against the KV HTTP API (`--api http`), workload A;
- query: YCSB-E's scans as DynamoDB Queries (`--api dynamodb --workload e`: 95% Queries of
  1-100 items, 5% PutItem inserts; 1,000 items per partition key) beside GetItem (YCSB-C
  through the same endpoint) and the binary get (YCSB-C): the binary protocol has no range
  read, so the comparison is per item read, adding "items/s" and "servers' CPU per item"
  (items returned by scans and reads, plus items written).

Every run is `--records 100000 --duration 20` unless told otherwise, fsync, N=3 R=2 W=2, 64 in
flight, zipfian, 1 KiB values (the defaults of `dynakv bench`). Prints per run and then a
Markdown table of medians: ops/s, servers' CPU per operation (their CPU seconds over the run
phase / operations), p99 of all operations, the generator's CPU, and the 1-minute load
average when each run started (the machine is shared: say how busy it was).

    .venv/bin/python benchmarks/front_ends.py [--runs 3] [--records 100000] [--duration 20]
        [--only security|api|http|query] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def comparisons() -> dict[str, list[tuple[str, list[str]]]]:
    """Each comparison: the sides of a pair, (label, extra `dynakv bench` arguments)."""
    return {
        "security": [
            ("YCSB-A, open", ["--workload", "a"]),
            ("YCSB-A, --secure", ["--workload", "a", "--secure"]),
        ],
        "api-a": [
            ("YCSB-A, binary", ["--workload", "a"]),
            ("YCSB-A, dynamodb", ["--workload", "a", "--api", "dynamodb"]),
        ],
        "api-c": [
            ("YCSB-C, binary", ["--workload", "c"]),
            ("YCSB-C, dynamodb", ["--workload", "c", "--api", "dynamodb"]),
        ],
        "http-a": [
            ("YCSB-A, binary (HTTP pair)", ["--workload", "a"]),
            ("YCSB-A, KV HTTP", ["--workload", "a", "--api", "http"]),
        ],
        "query": [
            ("YCSB-E, dynamodb Query", ["--workload", "e", "--api", "dynamodb"]),
            ("YCSB-C, dynamodb GetItem", ["--workload", "c", "--api", "dynamodb"]),
            ("YCSB-C, binary get", ["--workload", "c"]),
        ],
    }


def one_run(args: argparse.Namespace, extra: list[str], path: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "dynakv", "bench", "--no-progress", "--local", "3",
        "--records", str(args.records), "--duration", str(args.duration), *extra,
        "--json", str(path),
    ]  # fmt: skip
    load = os.getloadavg()[0]
    print(f"$ dynakv {' '.join(command[3:])}   (load average {load:.2f})", flush=True)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    report = json.loads(path.read_text())
    report["load_average_1m"] = load
    return report


def figures(report: dict[str, Any]) -> dict[str, float]:
    run = report["run"]
    count = run["total"]["count"]
    server_cpu = sum(s["cpu_s"] for s in report.get("servers", []))
    # Items read (a scan's items, a read that found its key) or written (one per write).
    items = sum(
        op["items"] if "items" in op else op["count"] - (op["not_found"] if name == "read" else 0)
        for name, op in run["ops"].items()
    )
    return {
        "ops_s": float(run["throughput"]),
        "server_us_per_op": 1e6 * server_cpu / count if count else 0.0,
        "items_s": items / run["elapsed_s"] if run["elapsed_s"] else 0.0,
        "server_us_per_item": 1e6 * server_cpu / items if items else 0.0,
        "p99_ms": float(run["total"]["latency_ms"]["p99"]),
        "client_cores": float(report["cpu"].get("client_cores", 0.0)),
        "other_cores": float(report["cpu"].get("other_cores", 0.0)),
        "errors": float(sum(run["errors"].values())),
        "load": float(report["load_average_1m"]),
    }


COLUMNS = [
    ("ops/s", "ops_s", "{:,.0f}"),
    ("servers' CPU per op", "server_us_per_op", "{:,.0f} µs"),
    ("p99", "p99_ms", "{:.1f} ms"),
    ("generator CPU", "client_cores", "{:.2f} cores"),
    ("other CPU", "other_cores", "{:.2f} cores"),
    ("errors", "errors", "{:.0f}"),
    ("load avg at start", "load", "{:.1f}"),
]


ITEM_COLUMNS = [
    ("items/s", "items_s", "{:,.0f}"),
    ("servers' CPU per item", "server_us_per_item", "{:,.1f} µs"),
]


def table(results: dict[str, list[dict[str, float]]], columns: list[Any] = COLUMNS) -> str:
    lines = [
        "| configuration | runs | " + " | ".join(c for c, _, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for label, runs in results.items():
        cells = []
        for _, key, fmt in columns:
            values = [r[key] for r in runs]
            median = fmt.format(statistics.median(values))
            if key in ("ops_s", "server_us_per_op", "p99_ms", "items_s", "server_us_per_item"):
                median += f" ({fmt.format(min(values))} to {fmt.format(max(values))})"
            cells.append(median)
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--only", choices=["security", "api", "http", "query"])
    parser.add_argument("--out", type=Path, help="keep each run's JSON here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="front-ends-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {}
    for name, sides in comparisons().items():
        if args.only and not name.startswith(args.only):
            continue
        for index in range(1, args.runs + 1):
            order = sides if index % 2 else list(reversed(sides))  # alternate who goes first
            for label, extra in order:
                slug = "".join(c if c.isalnum() else "-" for c in label.lower())
                report = one_run(args, extra, out / f"{slug}-{index}.json")
                got = figures(report)
                results.setdefault(label, []).append(got)
                print(
                    f"  {label}: {got['ops_s']:,.0f} ops/s, servers "
                    f"{got['server_us_per_op']:,.0f} µs CPU per op, p99 {got['p99_ms']:.1f} ms, "
                    f"{got['items_s']:,.0f} items/s, servers {got['server_us_per_item']:,.1f} "
                    "µs CPU per item",
                    flush=True,
                )
    columns = COLUMNS + ITEM_COLUMNS if args.only == "query" else COLUMNS
    text = (
        f"{os.cpu_count()} CPUs; medians (min to max) over {args.runs} interleaved runs each; "
        f"{args.records:,} records, {args.duration:.0f} s run phase.\n\n" + table(results, columns)
    )
    (out / "front_ends.md").write_text(text)
    print()
    print(text)
    print(f"JSON in {out}")


if __name__ == "__main__":
    main()
