"""A join that moves gigabytes of 1 MiB objects while clients keep going (issue 22's figure).

Each run: three `dynakv serve` processes (N=3, R=2, W=2, fsync) hold `--records` values of
`--value-size` bytes, loaded by `dynakv bench`'s load phase. Then an open-loop YCSB-A run
at `--rate` operations/s measures the foreground alone for `--before` seconds; a second one
of `--during` seconds starts, and `--join-after` seconds into it a fourth node joins. The
figures:

- transfer: node4's `transfer_finished` lines (keys and bytes per partition pulled, keys
  compared by version digest and fetched after), from
  its first `transfer_started` to its last `transfer_finished`; keys/s and MB/s over that;
  and from node4's start to the ring that includes it being installed (node1's view);
- foreground: p50/p99/p99.9 of reads and updates (latency from each request's scheduled
  time, so stalls count) before the join and in the run around it, and the errors;
- RSS and CPU seconds of every node at the end.

    .venv/bin/python benchmarks/join_large_values.py [--runs 1] [--records 2048]
        [--value-size 1048576] [--rate 60] [--json F]

With the defaults the three nodes hold 2 GiB each and node4 pulls about three quarters of it
(with N=3 of four nodes it replicates three partitions in four). The data directories
need about 4 x 2 GiB of disk; they are removed at the end unless `--keep` names a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _procs import (
    Processes,
    Server,
    begin,
    run_all,
    table,
    wait_for,
    write_config,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent


def ring_has(server: Server, names: list[str]) -> bool:
    view = server.cluster()
    return view["next_ring"] is None and set(names) <= set(view["ring"]["owners"])


def bench(nodes: list[Server], opts: argparse.Namespace, out: Path, *extra: str) -> list[str]:
    """The `dynakv bench` command line against the running nodes."""
    return [
        sys.executable, "-m", "dynakv", "bench", "--no-progress",
        "--nodes", ",".join(s.node_addr for s in nodes),
        "--records", str(opts.records), "--value-size", str(opts.value_size),
        "--workload", "a", "--concurrency", str(opts.concurrency), "--json", str(out), *extra,
    ]  # fmt: skip


def latencies(report: dict[str, Any]) -> dict[str, Any]:
    ops = report["run"]["ops"]
    figures: dict[str, Any] = {"ops_per_s": report["run"]["throughput"]}
    for op in ("read", "update"):
        if op in ops:
            for p in ("p50", "p99", "p99.9"):
                figures[f"{op}_{p}"] = ops[op]["latency_ms"][p]
            figures[f"{op}_errors"] = ops[op]["errors"]
    return figures


def one_run(opts: argparse.Namespace, index: int) -> dict[str, Any]:
    loadavg = os.getloadavg()
    with Processes(keep=opts.keep, prefix=f"dynakv-join-{index}-") as procs:
        config = write_config(procs.root / "node.toml", "bench-join", 3, 2, 2)
        # node4 at debug: its transfer_started/finished each on a line, not summarised
        debug = write_config(procs.root / "node4.toml", "bench-join", 3, 2, 2, log_level="debug")
        nodes = [procs.server(f"node{i}", config) for i in range(1, 4)]
        nodes.append(procs.server("node4", debug))
        first, joiner = nodes[0], nodes[3]
        first.start()
        first.wait_ready()
        wait_for("node1 to found the cluster", lambda: first.status()["epoch"] > 0, 30)
        for node in nodes[1:3]:
            node.start(join=first.node_addr)
            node.wait_ready()
        wait_for("three owners", lambda: ring_has(first, ["node1", "node2", "node3"]), 300)
        members = nodes[:3]

        print(f"run {index}: loading {opts.records:,} x {opts.value_size:,} B, then "
              f"{opts.before:.0f} s at {opts.rate}/s before the join", flush=True)  # fmt: skip
        before_json = procs.root / "before.json"
        command = bench(members, opts, before_json, "--rate", str(opts.rate),
                        "--duration", str(opts.before))  # fmt: skip
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        before = json.loads(before_json.read_text())

        during_json = procs.root / "during.json"
        command = bench(members, opts, during_json, "--no-load", "--rate", str(opts.rate),
                        "--duration", str(opts.during))  # fmt: skip
        foreground = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            time.sleep(opts.join_after)
            spawned = time.time()
            joiner.start(join=first.node_addr)
            joiner.wait_ready()
            installed = wait_for(
                "the ring with node4",
                lambda: ring_has(first, ["node1", "node2", "node3", "node4"]),
                opts.timeout,
            )
            foreground.wait(timeout=opts.during + 120)
        finally:
            if foreground.poll() is None:
                foreground.kill()
                foreground.wait()
        if foreground.returncode != 0:
            raise RuntimeError(f"the foreground bench exited with {foreground.returncode}")
        during = json.loads(during_json.read_text())

        started = [t for t, _ in joiner.events("transfer_started")]
        finished = joiner.events("transfer_finished")
        if not started or not finished:
            raise RuntimeError(f"node4 logged no transfers:\n{joiner.tail()}")
        moved_keys = sum(int(f["keys"]) for _, f in finished)
        moved_bytes = sum(int(f["bytes"]) for _, f in finished)
        # Keys compared with other replicas' version digests, and fetched after (0 before
        # transfers compared: every replica's copy came whole).
        compared = sum(int(f.get("compared", 0)) for _, f in finished)
        fetched = sum(int(f.get("fetched", 0)) for _, f in finished)
        seconds = max(max(t for t, _ in finished) - min(started), 1e-3)
        result: dict[str, Any] = {
            "run": index,
            "keys": moved_keys,
            "bytes": moved_bytes,
            "keys_compared": compared,
            "keys_fetched": fetched,
            "transfer_seconds": round(seconds, 2),
            "keys_per_s": round(moved_keys / seconds, 1),
            "mb_per_s": round(moved_bytes / seconds / 1e6, 1),
            "spawn_to_ring_installed_s": round(installed - spawned, 2),
            "join_within_run": installed - spawned + opts.join_after <= opts.during,
            "load_1min": round(loadavg[0], 2),
            **{f"before_{k}": v for k, v in latencies(before).items()},
            **{f"during_{k}": v for k, v in latencies(during).items()},
            "rss_mb": {s["name"]: s.get("rss_mb") for s in during.get("servers", [])},
            "cpu_s": {node.name: round(node.cpu_seconds(), 1) for node in nodes},
        }
    print(f"run {index}: node4 pulled {moved_keys:,} keys, {moved_bytes / 1e6:,.0f} MB in "
          f"{seconds:.1f} s ({result['keys_per_s']:,.0f} keys/s, {result['mb_per_s']} MB/s); "
          f"update p99 {result['before_update_p99']} ms before, "
          f"{result['during_update_p99']} ms around the join", flush=True)  # fmt: skip
    return result


ROWS = [
    ("keys pulled by node4", "keys", "{:,.0f}"),
    ("bytes pulled (as reported)", "bytes", "{:,.0f}"),
    ("keys compared by version digest", "keys_compared", "{:,.0f}"),
    ("of those fetched (version differed)", "keys_fetched", "{:,.0f}"),
    ("first transfer started -> last finished, s", "transfer_seconds", "{:.1f}"),
    ("keys/s", "keys_per_s", "{:,.0f}"),
    ("MB/s (10^6 B)", "mb_per_s", "{:.1f}"),
    ("node4 start -> ring installed, s", "spawn_to_ring_installed_s", "{:.1f}"),
    ("foreground ops/s before the join", "before_ops_per_s", "{:.1f}"),
    ("foreground ops/s around the join", "during_ops_per_s", "{:.1f}"),
    ("read p99 ms before", "before_read_p99", "{:.1f}"),
    ("read p99 ms around", "during_read_p99", "{:.1f}"),
    ("update p99 ms before", "before_update_p99", "{:.1f}"),
    ("update p99 ms around", "during_update_p99", "{:.1f}"),
    ("update p99.9 ms before", "before_update_p99.9", "{:.1f}"),
    ("update p99.9 ms around", "during_update_p99.9", "{:.1f}"),
    ("read errors around the join", "during_read_errors", "{:.0f}"),
    ("update errors around the join", "during_update_errors", "{:.0f}"),
    ("machine load average (1 min) at start", "load_1min", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--value-size", type=int, default=1 << 20)
    parser.add_argument("--rate", type=float, default=60.0, help="foreground ops/s (open loop)")
    parser.add_argument("--concurrency", type=int, default=16, help="foreground in flight")
    parser.add_argument("--before", type=float, default=20.0, help="seconds before the join")
    parser.add_argument("--during", type=float, default=90.0, help="seconds of the run around it")
    parser.add_argument("--join-after", type=float, default=5.0, help="into that run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the ring")
    parser.add_argument("--keep", type=Path, default=None, help="keep data and logs here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    opts = parser.parse_args()
    source = begin()
    runs = run_all(opts.runs, lambda index: one_run(opts, index))
    print()
    print(f"join of a fourth node: {opts.records:,} records of {opts.value_size:,} B, "
          f"N=3 R=2 W=2, fsync, foreground YCSB-A open loop at {opts.rate}/s, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print("\n".join(table(runs, ROWS)))
    write_report(
        opts.json,
        "join_large_values",
        opts,
        source,
        runs,
        median={
            k: statistics.median(r[k] for r in runs)
            for k in ("keys_per_s", "mb_per_s", "during_update_p99", "before_update_p99")
        },
    )


if __name__ == "__main__":
    main()
