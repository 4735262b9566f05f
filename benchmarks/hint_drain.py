"""Hint drain time after a 60-second outage under write load (issue 4's figure), with real
`dynakv serve` processes on loopback.

A 5-node cluster (N=3, R=2, W=2, durability fsync) takes a steady load of puts of unique
keys with 1 KiB values (AsyncClient, `--in-flight` at once, over `--clients` clients seeded
with the nodes other than the victim; an AsyncClient that routes each request to a replica
of its key reaches the victim as well) for the whole run. After `--warmup`
seconds the victim is SIGKILLed; the load goes on for `--outage` seconds, during which the
writes meant for it go to fallbacks with hints (sloppy quorum); then it is restarted on the
same data directory and the load still goes on. The figure is the time from its restart
until the sum of `hints_pending` over all five nodes' GET /v1/status is 0, together with
the peak of that sum, the write throughput and the errors during the outage.

Afterwards a random sample of the keys acknowledged during the outage whose preference
list holds the victim is read from the victim's own GET /v1/replica: how many of them it
holds with the value written is reported (hinted handoff should have brought them all).

    .venv/bin/python benchmarks/hint_drain.py [--outage 60] [--in-flight 16] [--json F]

The servers run the dynakv this script imports (by default the working tree's src/); the
output and the JSON say which commit and which uncommitted changes that was
(`_procs.source_state` tells how to measure a clean commit instead).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _procs import (
    Processes,
    Server,
    begin,
    get_status,
    run_all,
    table,
    write_config,
    write_report,
)

from dynakv import AsyncClient
from dynakv.errors import DynakvError
from dynakv.ring import Ring, key_digest, partition_of_digest

BUCKET = "drain"


class Load:
    """Puts of unique keys from a thread of its own; remembers when each was acknowledged."""

    def __init__(self, addrs: list[str], in_flight: int, clients: int, value_size: int) -> None:
        self.addrs = addrs
        self.in_flight = in_flight
        self.clients = max(1, min(clients, in_flight))
        self.pad = os.urandom(value_size)
        self.value_size = value_size
        self.acked: list[tuple[float, str]] = []  # (time.time() of the answer, key)
        self.errors: list[tuple[float, str]] = []  # (time.time(), "Class: message")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)
        self.failure: BaseException | None = None

    def value(self, key: str) -> bytes:
        head = key.encode()
        return head + self.pad[: self.value_size - len(head)]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the main thread
            self.failure = exc

    async def _run(self) -> None:
        clients = []
        for i in range(self.clients):
            shift = i % len(self.addrs)
            clients.append(AsyncClient(self.addrs[shift:] + self.addrs[:shift], timeout=10))
        try:
            await asyncio.gather(
                *(self._worker(i, clients[i % len(clients)]) for i in range(self.in_flight))
            )
        finally:
            for client in clients:
                await client.close()

    async def _worker(self, index: int, client: AsyncClient) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"w{index}-{n}"
            n += 1
            try:
                await client.put(BUCKET, key, self.value(key))
            except DynakvError as exc:
                self.errors.append((time.time(), f"{type(exc).__name__}: {str(exc)[:100]}"))
                await asyncio.sleep(0.05)
                continue
            self.acked.append((time.time(), key))

    def between(self, start: float, end: float) -> tuple[int, Counter[str]]:
        acked = sum(1 for t, _ in self.acked if start <= t < end)
        errors = Counter(kind for t, kind in self.errors if start <= t < end)
        return acked, errors


def hints(nodes: list[Server]) -> tuple[int | None, dict[str, Any]]:
    """Sum of hints_pending over the nodes (None if one did not answer) and each one's status."""
    total: int | None = 0
    views: dict[str, Any] = {}
    for node in nodes:
        try:
            status = node.status()
        except (OSError, ValueError):
            total = None
            continue
        views[node.name] = status
        if total is not None:
            total += status["hints_pending"]
    return total, views


def wait_settled(nodes: list[Server], timeout: float = 60.0) -> None:
    names = {n.name for n in nodes}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            views = [n.cluster() for n in nodes]
        except (OSError, ValueError):
            views = []
        if views and all(
            {m["name"] for m in v["members"] if m["status"] == "up"} == names
            and v["next_ring"] is None
            and set(v["ring"]["owners"]) == names
            for v in views
        ):
            return
        time.sleep(0.2)
    raise RuntimeError("the cluster did not settle on its five members")


def check_sample(
    victim: Server, ring: Ring, load: Load, keys: list[str], sample: int, n: int, seed: int
) -> dict[str, Any]:
    """Read a sample of `keys` that the victim is a primary of from its own /v1/replica."""

    def replicas(key: str) -> list[str]:
        return ring.preference_list(partition_of_digest(key_digest(BUCKET, key), ring.size), n)

    mine = [k for k in keys if victim.name in replicas(k)]
    chosen = random.Random(seed).sample(mine, min(sample, len(mine)))
    held = wrong = 0
    missing: list[str] = []
    for key in chosen:
        status, body = get_status(f"{victim.url}/v1/replica/{BUCKET}/{key}")
        if status != 200:
            missing.append(key)
            continue
        values = [base64.b64decode(s["value_b64"]) for s in json.loads(body)["siblings"]]
        if values == [load.value(key)]:
            held += 1
        else:
            wrong += 1
    return {
        "outage_keys_acked": len(keys),
        "outage_keys_with_victim_primary": len(mine),
        "sampled": len(chosen),
        "held": held,
        "wrong_value": wrong,
        "missing": len(missing),
        "missing_examples": missing[:10],
    }


def run(opts: argparse.Namespace, index: int) -> dict[str, Any]:
    knobs: dict[str, Any] = {"ring_size": opts.ring_size, "durability": opts.durability}
    samples: list[dict[str, Any]] = []
    loadavg = os.getloadavg()
    with Processes(keep=opts.keep, prefix=f"dynakv-drain-{index}-") as procs:
        config = write_config(procs.root / "node.toml", "bench-drain", 3, 2, 2, **knobs)
        nodes = [procs.server(f"node{i}", config) for i in range(1, opts.nodes + 1)]
        victim = next(n for n in nodes if n.name == opts.victim)
        for node in nodes:
            node.start(join=None if node is nodes[0] else nodes[0].node_addr)
            node.wait_ready()
        wait_settled(nodes)
        ring_view = nodes[0].cluster()["ring"]
        ring = Ring(ring_view["size"], tuple(ring_view["owners"]))
        others = [n for n in nodes if n is not victim]
        load = Load([n.node_addr for n in others], opts.in_flight, opts.clients, opts.value_size)
        print(f"run {index}: {opts.nodes} nodes up; load of {opts.in_flight} puts in flight "
              f"for {opts.warmup:.0f} s before the kill", flush=True)  # fmt: skip
        load.start()
        try:
            t_load = time.time()
            time.sleep(opts.warmup)

            def sample(phase: str, nodes_polled: list[Server]) -> int | None:
                total, views = hints(nodes_polled)
                samples.append(
                    {
                        "t": round(time.time() - t_kill, 3),
                        "phase": phase,
                        "hints_pending": total,
                        "per_node": {k: v["hints_pending"] for k, v in views.items()},
                        "victim_down_at": sorted(
                            k for k, v in views.items() if victim.name in v["down_peers"]
                        ),
                        # admission control's share of background work (where the node has it)
                        "background": {
                            k: v["background"] for k, v in views.items() if "background" in v
                        },
                    }
                )
                return total

            t_kill = time.time()
            victim.kill()
            print(f"run {index}: {victim.name} SIGKILLed; outage of {opts.outage:.0f} s",
                  flush=True)  # fmt: skip
            while time.time() - t_kill < opts.outage:
                sample("outage", others)
                time.sleep(0.5)
            t_restart = time.time()
            victim.start()
            print(f"run {index}: {victim.name} restarted after {t_restart - t_kill:.1f} s; "
                  f"waiting for hints_pending to reach 0", flush=True)  # fmt: skip
            victim.wait_ready()
            t_ready = time.time()
            t_seen_up: float | None = None
            t_drained: float | None = None
            last_print = 0.0
            while time.time() - t_restart < opts.drain_timeout:
                total = sample("drain", nodes)
                last = samples[-1]
                if (
                    t_seen_up is None
                    and len(last["per_node"]) == len(nodes)
                    and not last["victim_down_at"]
                ):
                    t_seen_up = time.time()
                if total == 0:
                    t_drained = time.time()
                    break
                if time.time() - last_print > 10:
                    last_print = time.time()
                    print(f"  {time.time() - t_restart:5.0f} s after restart: "
                          f"hints_pending {total}", flush=True)  # fmt: skip
                if load.failure is not None:
                    raise RuntimeError("the load generator failed") from load.failure
                time.sleep(opts.poll)
            time.sleep(opts.tail)
        finally:
            load.stop()
        t_end = time.time()
        if load.failure is not None:
            raise RuntimeError("the load generator failed") from load.failure
        outage_keys = [k for t, k in load.acked if t_kill <= t < t_restart]
        check = check_sample(
            victim, ring, load, outage_keys, opts.sample, 3, seed=opts.seed + index
        )
        final_total, final_views = hints(nodes)
        dropped = sum(v.get("hints_dropped", 0) for v in final_views.values())
        before = load.between(t_load, t_kill)
        during = load.between(t_kill, t_restart)
        drain_end = t_drained if t_drained is not None else t_end
        after = load.between(t_restart, drain_end)
        peak = max((s["hints_pending"] or 0) for s in samples)
        peak_at = next(s["t"] for s in samples if (s["hints_pending"] or 0) == peak)
        result = {
            "run": index,
            "loadavg_at_start": loadavg,
            "load_1min": round(loadavg[0], 2),
            "victim": victim.name,
            "outage_s": round(t_restart - t_kill, 2),
            "restart_to_ready_s": round(t_ready - t_restart, 2),
            "restart_to_seen_up_by_all_s": None
            if t_seen_up is None
            else round(t_seen_up - t_restart, 2),
            "drain_s": None if t_drained is None else round(t_drained - t_restart, 2),
            "drained": t_drained is not None,
            "peak_hints_pending": peak,
            "peak_at_s_after_kill": peak_at,
            "hints_pending_at_restart": next(
                (s["hints_pending"] for s in reversed(samples) if s["phase"] == "outage"), None
            ),
            "hints_dropped": dropped,
            "hints_pending_at_end": final_total,
            "before_puts_per_s": round(before[0] / max(t_kill - t_load, 1e-9), 1),
            "before_errors": sum(before[1].values()),
            "outage_puts": during[0],
            "outage_puts_per_s": round(during[0] / max(t_restart - t_kill, 1e-9), 1),
            "outage_errors": sum(during[1].values()),
            "outage_error_kinds": dict(during[1]),
            "error_times_after_kill_s": [round(t - t_kill, 2) for t, _ in load.errors][:50],
            "drain_puts_per_s": round(after[0] / max(drain_end - t_restart, 1e-9), 1),
            "drain_errors": sum(after[1].values()),
            "drain_error_kinds": dict(after[1]),
            "sample_check": check,
            "loadavg_at_end": os.getloadavg(),
            "hint_samples": samples,
        }
        if opts.keep is not None:
            result["data_dir"] = str(procs.root)
    return result


ROWS = [
    ("outage, s", "outage_s", "{:.1f}"),
    ("puts/s before the kill", "before_puts_per_s", "{:,.0f}"),
    ("puts/s during the outage", "outage_puts_per_s", "{:,.0f}"),
    ("puts acknowledged during the outage", "outage_puts", "{:,}"),
    ("errors during the outage", "outage_errors", "{:,}"),
    ("peak sum of hints_pending", "peak_hints_pending", "{:,}"),
    ("hints_pending at restart", "hints_pending_at_restart", "{:,}"),
    ("restart -> /v1/status answers, s", "restart_to_ready_s", "{:.2f}"),
    ("restart -> no node sees it down, s", "restart_to_seen_up_by_all_s", "{:.2f}"),
    ("restart -> hints_pending 0, s", "drain_s", "{:.1f}"),
    ("puts/s while draining", "drain_puts_per_s", "{:,.0f}"),
    ("errors while draining", "drain_errors", "{:,}"),
    ("hints dropped", "hints_dropped", "{:,}"),
    ("machine load average (1 min) at start", "load_1min", "{:.1f}"),
]


def report_table(runs: list[dict[str, Any]]) -> str:
    lines = table(runs, ROWS)
    checks = " | ".join(
        f"{c['held']}/{c['sampled']} held ({c['missing']} missing, {c['wrong_value']} wrong)"
        for c in (r["sample_check"] for r in runs)
    )
    lines.append(f"| victim's /v1/replica, sample of outage keys | | {checks} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--victim", default="node5", help="the node SIGKILLed and restarted")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the victim is down")
    parser.add_argument("--tail", type=float, default=5.0,
                        help="seconds of load kept after the drain")  # fmt: skip
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--in-flight", type=int, default=16, help="puts in flight")
    parser.add_argument("--clients", type=int, default=4, help="client connections")
    parser.add_argument("--value-size", type=int, default=1024)
    parser.add_argument("--ring-size", type=int, default=64)
    parser.add_argument("--durability", default="fsync", choices=["fsync", "os", "none"])
    parser.add_argument("--poll", type=float, default=0.25, help="status poll interval, s")
    parser.add_argument("--sample", type=int, default=1000,
                        help="outage keys read back from the victim")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep data dirs and logs under this folder")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    opts = parser.parse_args()
    if opts.nodes < 4:
        parser.error("N=3 with a fallback needs at least 4 nodes")
    if opts.victim == "node1" or opts.victim not in {f"node{i}" for i in range(1, opts.nodes + 1)}:
        parser.error("--victim must be one of node2..nodeN (node1 is the seed)")
    source = begin()
    runs = run_all(opts.runs, lambda index: run(opts, index))
    print()
    print(f"hint drain after a {opts.outage:.0f} s outage of {opts.victim}: {opts.nodes} nodes, "
          f"N=3 R=2 W=2, durability {opts.durability}, {opts.in_flight} puts in flight of "
          f"{opts.value_size} B, {os.cpu_count()} CPUs")  # fmt: skip
    print(report_table(runs))
    drained = [r["drain_s"] for r in runs if r["drain_s"] is not None]
    write_report(
        opts.json,
        "hint_drain",
        opts,
        source,
        runs,
        median_drain_s=statistics.median(drained) if drained else None,
    )


if __name__ == "__main__":
    main()
