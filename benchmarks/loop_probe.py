"""`dynakv serve` with probes for tail latency: what holds the event loop, and for how long.

    python benchmarks/loop_probe.py serve --name node1 --data-dir ... [any serve options]

Every 5 s the node prints one line to stderr:
- commits: how many group commits were handed to the storage engine, and the time from
  hand-over to the moment their replies could go out (p50 / p99 / p99.9 / max);
- lag: how late a 5 ms timer fired (p99 / max): the loop was busy with something else;
- slow: every event `Node.handle` took more than 3 ms over, by kind (count, max).

Start a cluster's nodes with it instead of `python -m dynakv serve` and drive it with
`dynakv bench --nodes ...` (for example at a fixed `--rate`). It wraps the server's methods
from outside; nothing in dynakv depends on it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import dynakv.core.node as node_module
import dynakv.runtime.server as server_module
import dynakv.storage.pipelined as pipelined_module
from dynakv.cli import main

SLOW = 0.003  # seconds: handler runs above this are listed
TICK = 0.005  # seconds: the lag timer's period
REPORT = 5.0  # seconds between report lines

commits: list[float] = []
lags: list[float] = []
slow: dict[str, list[float]] = {}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


_commit_async = pipelined_module.PipelinedEngine.commit_async


def commit_async(self: Any, done: Any) -> None:
    handed = time.perf_counter()

    def reported(error: BaseException | None) -> None:
        commits.append(time.perf_counter() - handed)
        done(error)

    _commit_async(self, reported)


_handle = node_module.Node.handle


def handle(self: Any, now: float, event: Any) -> Any:
    started = time.perf_counter()
    effects = _handle(self, now, event)
    took = time.perf_counter() - started
    if took > SLOW:
        kind = type(event).__name__
        if hasattr(event, "message"):
            kind += ":" + type(event.message).__name__
        if hasattr(event, "name"):
            kind += ":" + str(event.name)
        slow.setdefault(kind, []).append(took)
    return effects


_start = server_module.Server.start


async def start(self: Any) -> None:
    await _start(self)
    loop = asyncio.get_running_loop()
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        lags.append(now - last[0] - TICK)
        last[0] = now
        loop.call_later(TICK, tick)

    def report() -> None:
        slowest = ", ".join(
            f"{kind} n={len(times)} max={max(times) * 1e3:.1f}" for kind, times in slow.items()
        )
        print(
            f"[{self.config.name}] commits {len(commits)}/{REPORT:.0f}s"
            f" p50 {_quantile(commits, 0.5):.1f} p99 {_quantile(commits, 0.99):.1f}"
            f" p99.9 {_quantile(commits, 0.999):.1f} max {_quantile(commits, 1.0):.1f} ms"
            f" | lag p99 {_quantile(lags, 0.99):.1f} max {_quantile(lags, 1.0):.1f} ms"
            f" | slow: {slowest}",
            file=sys.stderr,
            flush=True,
        )
        commits.clear()
        lags.clear()
        slow.clear()
        loop.call_later(REPORT, report)

    loop.call_later(TICK, tick)
    loop.call_later(REPORT, report)


if __name__ == "__main__":
    pipelined_module.PipelinedEngine.commit_async = commit_async  # type: ignore[method-assign]
    node_module.Node.handle = handle  # type: ignore[method-assign]
    server_module.Server.start = start  # type: ignore[method-assign]
    sys.argv = ["dynakv", *sys.argv[1:]]
    main()
