"""Ownership transfer throughput: one key partition of 100,000 keys of 1 KiB moving to a
joining node (issue 4's figure), with real `dynakv serve` processes on loopback.

Each run: node1 starts alone (N=R=W=1, so the partition has exactly one source and the
joiner takes it whole); the partition that node2 will take on joining is computed with
`claim` exactly as the claimant plans it, and `--keys` keys that fall into it are
loaded through AsyncClient (pipelined, `--in-flight` at once). Then node2 starts with
`--join` and the figures come from the nodes' own log lines:

- transfer time: node2's `transfer_started partition=P` to `transfer_finished partition=P
  keys=K bytes=B`; keys/s = K / time, MB/s = B / time / 10^6 (B as the node reports it:
  the encoded records merged, not the 1 KiB values alone);
- total: from spawning node2 to node1 (the claimant) logging `ring_installed`, which needs
  every partition node2 takes (Q/2, all but one of them empty) to have been pulled.

node2 pulls `transfer_concurrency` partitions at once in batches of `transfer_batch`
objects (defaults 2 and 256; flags below override them), from every replica of the
installed ring that is up, one after another (with N=1 that is node1 alone).

    .venv/bin/python benchmarks/transfer_throughput.py [--runs 3] [--keys 100000] [--json F]

The servers run the dynakv this script imports (by default the working tree's src/); the
output and the JSON say which commit and which uncommitted changes that was
(`_procs.source_state` tells how to measure a clean commit instead).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
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

from dynakv import AsyncClient
from dynakv.claim import claim
from dynakv.config import NodeConfig
from dynakv.errors import DynakvError
from dynakv.ring import key_digest, partition_of_digest

BUCKET = "xfer"
DEFAULTS = NodeConfig()


def moving_partitions(ring_size: int) -> list[int]:
    """The partitions node2 takes when it joins node1, as the claimant plans them."""
    before = claim(["node1"], ring_size)
    after = claim(["node1", "node2"], ring_size, previous=before)
    return [p for p, owner in enumerate(after.owners) if owner == "node2"]


def keys_in(partition: int, count: int, ring_size: int) -> list[str]:
    """The first `count` keys k0, k1, ... of BUCKET whose digest falls into `partition`."""
    shift = 16 - (ring_size.bit_length() - 1)  # the top bits of the first two digest bytes
    if ring_size > 1 << 16 or shift < 0:
        raise ValueError("ring sizes above 65536 are not supported here")
    prefix = hashlib.md5(BUCKET.encode() + b"\0", usedforsecurity=False)
    keys: list[str] = []
    i = 0
    while len(keys) < count:
        key = f"k{i}"
        digest = prefix.copy()
        digest.update(key.encode())
        if int.from_bytes(digest.digest()[:2], "big") >> shift == partition:
            keys.append(key)
        i += 1
    # the same placement as the server's, checked with its own functions
    assert all(partition_of_digest(key_digest(BUCKET, k), ring_size) == partition for k in keys)
    return keys


def value_of(key: str, size: int, pad: bytes) -> bytes:
    head = key.encode()
    return head + pad[: size - len(head)]


async def load(addr: str, keys: list[str], size: int, in_flight: int) -> tuple[float, int]:
    """Put every key (retrying failures); (seconds, failed attempts)."""
    pad = os.urandom(size)
    queue = iter(keys)
    failures = 0
    client = AsyncClient(addr, timeout=30)

    async def worker() -> None:
        nonlocal failures
        for key in queue:
            for _attempt in range(20):
                try:
                    await client.put(BUCKET, key, value_of(key, size, pad))
                    break
                except DynakvError:
                    failures += 1
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"put of {key} kept failing")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        await client.close()
    return time.perf_counter() - started, failures


def one_run(opts: argparse.Namespace, index: int, partition: int, keys: list[str]) -> dict:
    knobs: dict[str, Any] = {"ring_size": opts.ring_size, "durability": opts.durability}
    if opts.transfer_batch is not None:
        knobs["transfer_batch"] = opts.transfer_batch
    if opts.transfer_concurrency is not None:
        knobs["transfer_concurrency"] = opts.transfer_concurrency
    loadavg = os.getloadavg()
    with Processes(keep=opts.keep, prefix=f"dynakv-transfer-{index}-") as procs:
        config = write_config(
            procs.root / "node.toml", "bench-transfer", 1, 1, 1, log_level="debug", **knobs
        )  # debug: transfer_started/finished each on a line, not summarised
        node1: Server = procs.server("node1", config)
        node2: Server = procs.server("node2", config)
        node1.start()
        node1.wait_ready()
        wait_for("node1 to found the cluster", lambda: node1.status()["epoch"] > 0, 30)

        print(f"run {index}: loading {len(keys):,} keys of {opts.value_size} B into "
              f"partition {partition} ...", flush=True)  # fmt: skip
        load_s, load_failures = asyncio.run(
            load(node1.node_addr, keys, opts.value_size, opts.in_flight)
        )
        stored = node1.status()["keys"]
        print(f"run {index}: loaded in {load_s:.1f} s ({len(keys) / load_s:,.0f} puts/s, "
              f"{load_failures} retried); node1 holds {stored:,} keys", flush=True)  # fmt: skip

        node1_cpu = node1.cpu_seconds()
        spawned = time.time()
        node2.start(join=node1.node_addr)
        node2.wait_ready()
        progress: list[dict[str, Any]] = []

        def installed() -> bool:
            status = node2.status()
            for pull in status.get("transfers", []):
                if pull["partition"] == partition:
                    # with admission control's share of background work, where the node has it
                    extra = {"background": status["background"]} if "background" in status else {}
                    progress.append({"t": round(time.time() - spawned, 3), **pull, **extra})
            view = node1.cluster()
            return view["next_ring"] is None and "node2" in view["ring"]["owners"]

        seen_installed = wait_for("the new ring", installed, opts.timeout)
        cpu = (node1.cpu_seconds() - node1_cpu, node2.cpu_seconds())
        ours = str(partition)
        started = [t for t, f in node2.events("transfer_started") if f["partition"] == ours]
        finished = [(t, f) for t, f in node2.events("transfer_finished") if f["partition"] == ours]
        ring_installed = [t for t, _ in node1.events("ring_installed") if t >= spawned - 1]
        if not started or not finished:
            raise RuntimeError(f"no transfer log lines for partition {partition}:\n{node2.tail()}")
        t_start, (t_end, fields) = started[0], finished[-1]
        seconds = max(t_end - t_start, 1e-3)
        moved_keys, moved_bytes = int(fields["keys"]), int(fields["bytes"])
        after = node2.status()
        result = {
            "run": index,
            "partition": partition,
            "load_seconds": round(load_s, 2),
            "load_puts_per_s": round(len(keys) / load_s, 1),
            "load_retries": load_failures,
            "source_keys": stored,
            "transfer_seconds": round(seconds, 3),
            "keys": moved_keys,
            "bytes": moved_bytes,
            "keys_per_s": round(moved_keys / seconds, 1),
            "mb_per_s": round(moved_bytes / seconds / 1e6, 3),
            "spawn_to_transfer_start_s": round(t_start - spawned, 3),
            "spawn_to_ring_installed_s": round(
                (ring_installed[0] if ring_installed else seen_installed) - spawned, 3
            ),
            "node1_cpu_s": round(cpu[0], 2),
            "node2_cpu_s": round(cpu[1], 2),
            "ring_installed_from": "node1 log" if ring_installed else "polling /v1/cluster",
            "node2_keys_after": after["keys"],
            "pulls_logged": len(node2.events("transfer_finished")),
            "loadavg_at_start": loadavg,
            "load_1min": round(loadavg[0], 2),
            "loadavg_at_end": os.getloadavg(),
            "progress_samples": progress,
        }
        if opts.keep is not None:
            result["data_dir"] = str(procs.root)
    print(
        f"run {index}: {moved_keys:,} keys, {moved_bytes / 1e6:.1f} MB in {seconds:.2f} s = "
        f"{result['keys_per_s']:,.0f} keys/s, {result['mb_per_s']:.2f} MB/s; "
        f"ring installed {result['spawn_to_ring_installed_s']:.2f} s after node2 started",
        flush=True,
    )
    return result


ROWS = [
    ("keys moved", "keys", "{:,.0f}"),
    ("bytes moved (as reported)", "bytes", "{:,.0f}"),
    ("transfer time, s", "transfer_seconds", "{:.2f}"),
    ("keys/s", "keys_per_s", "{:,.0f}"),
    ("MB/s (10^6 B)", "mb_per_s", "{:.2f}"),
    ("node2 start -> transfer_started, s", "spawn_to_transfer_start_s", "{:.2f}"),
    ("node2 start -> ring installed, s", "spawn_to_ring_installed_s", "{:.2f}"),
    ("CPU s until installed: node1 (source)", "node1_cpu_s", "{:.2f}"),
    ("CPU s until installed: node2 (incl. start-up)", "node2_cpu_s", "{:.2f}"),
    ("load: puts/s", "load_puts_per_s", "{:,.0f}"),
    ("load: seconds", "load_seconds", "{:.1f}"),
    ("machine load average (1 min) at start", "load_1min", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000, help="keys in the partition")
    parser.add_argument("--value-size", type=int, default=1024, help="bytes per value")
    parser.add_argument("--in-flight", type=int, default=64, help="puts in flight while loading")
    parser.add_argument("--ring-size", type=int, default=64)
    parser.add_argument("--durability", default="fsync", choices=["fsync", "os", "none"])
    parser.add_argument("--partition", type=int, default=None,
                        help="one of node2's partitions to fill (default: its first)")  # fmt: skip
    parser.add_argument("--transfer-batch", type=int, default=None,
                        help="objects per batch (server default 256)")  # fmt: skip
    parser.add_argument("--transfer-concurrency", type=int, default=None,
                        help="partitions pulled at once (server default 2)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the ring")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep data dirs and logs under this folder")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    opts = parser.parse_args()
    source = begin()

    moving = moving_partitions(opts.ring_size)
    partition = moving[0] if opts.partition is None else opts.partition
    if partition not in moving:
        parser.error(f"node2 takes partitions {moving}; {partition} is not one of them")
    t0 = time.perf_counter()
    keys = keys_in(partition, opts.keys, opts.ring_size)
    print(f"node2 will take {len(moving)} of {opts.ring_size} partitions; "
          f"{len(keys):,} keys of partition {partition} found in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    runs = run_all(opts.runs, lambda index: one_run(opts, index, partition, keys))
    print()
    print(f"transfer of one partition ({opts.keys:,} keys of {opts.value_size} B), "
          f"N=1, durability {opts.durability}, Q={opts.ring_size}, "
          f"transfer_batch={opts.transfer_batch or DEFAULTS.transfer_batch}, "
          f"transfer_concurrency={opts.transfer_concurrency or DEFAULTS.transfer_concurrency}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print("\n".join(table(runs, ROWS)))
    write_report(
        opts.json,
        "transfer_throughput",
        opts,
        source,
        runs,
        median={
            k: statistics.median(r[k] for r in runs)
            for k in ("keys_per_s", "mb_per_s", "transfer_seconds", "spawn_to_ring_installed_s")
        },
    )


if __name__ == "__main__":
    main()
