"""`dynakv serve` with probes for tail latency: what holds the event loop, and for how long.

    python benchmarks/loop_probe.py serve --name node1 --data-dir ... [any serve options]

Every 5 s the node prints one line to stderr:
- commits: how many group commits were handed to the storage engine, and the time from
  hand-over to the moment their replies could go out (p50 / p99 / p99.9 / max);
- lag: how late a 5 ms timer fired (p99 / max): the loop was busy with something else;
- slow: every event `Node.handle` took more than 3 ms over, by kind (count, max);
- gc: the cyclic collector's runs (count, how many were full collections, the longest pause,
  the cyclic garbage they found) and the young generation's allocation count now;
- puts (p50 / p90 / p99, when there were any): on a coordinator, from the client's put
  reaching the node to its result being made (W replicas answered), and from made to sent
  (the coordinator's own batch durable); on a replica, from a `ReplicaPut` arriving to its
  acknowledgement being sent (after the replica's commit).

Start a cluster's nodes with it instead of `python -m dynakv serve` and drive it with
`dynakv bench --nodes ...` (for example at a fixed `--rate`). It wraps the server's methods
from outside; nothing in dynakv depends on it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

import dynakv.core.node as node_module
import dynakv.runtime.server as server_module
import dynakv.storage.pipelined as pipelined_module
from dynakv.cli import main
from dynakv.messages import ClientPut, ErrorReply, PutResult, ReplicaPut, ReplicaPutReply

SLOW = 0.003  # seconds: handler runs above this are listed
TICK = 0.005  # seconds: the lag timer's period
REPORT = 5.0  # seconds between report lines

commits: list[float] = []
lags: list[float] = []
slow: dict[str, list[float]] = {}
# Put anatomy. Keys: (client token, rid) for a client's put, (peer, rid) for a replica put.
put_started: dict[tuple[str, int], float] = {}
put_made: dict[tuple[str, int], float] = {}
replica_started: dict[tuple[str, int], float] = {}
to_made: list[float] = []
made_to_sent: list[float] = []
replica_to_ack: list[float] = []
gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
gc_collected = [0]  # objects the collections found unreachable (cyclic garbage)
_gc_started = [0.0]


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        gc_pauses.append((info["generation"], time.perf_counter() - _gc_started[0]))
        gc_collected[0] += info["collected"]


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


_dispatch = server_module.Server.dispatch


def dispatch(self: Any, event: Any) -> None:
    message = getattr(event, "message", None)
    kind = type(message)
    if kind is ClientPut:
        put_started[(event.source, message.rid)] = time.perf_counter()  # type: ignore[union-attr]
    elif kind is ReplicaPut:
        replica_started[(event.source, message.rid)] = time.perf_counter()  # type: ignore[union-attr]
    _dispatch(self, event)


_hold = server_module.Server._hold


def hold(self: Any, send: Any) -> None:
    if type(send.message) is PutResult:
        key = (send.to, send.message.rid)
        if key in put_started:
            put_made[key] = time.perf_counter()
    _hold(self, send)


_deliver = server_module.Server._deliver


def deliver(self: Any, send: Any) -> None:
    kind = type(send.message)
    if kind is PutResult:
        key = (send.to, send.message.rid)
        started, made = put_started.pop(key, None), put_made.pop(key, None)
        if started is not None and made is not None:
            now = time.perf_counter()
            to_made.append(made - started)
            made_to_sent.append(now - made)
    elif kind is ErrorReply:  # a failed put: forget it
        put_started.pop((send.to, send.message.rid), None)
        put_made.pop((send.to, send.message.rid), None)
    elif kind is ReplicaPutReply:
        started = replica_started.pop((send.to, send.message.rid), None)
        if started is not None:
            replica_to_ack.append(time.perf_counter() - started)
    _deliver(self, send)


def _spread(name: str, values: list[float]) -> str:
    if not values:
        return ""
    return (
        f" | {name} p50 {_quantile(values, 0.5):.1f} p90 {_quantile(values, 0.9):.1f}"
        f" p99 {_quantile(values, 0.99):.1f} ms"
    )


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
            f" | slow: {slowest}"
            f"{_spread('put to made', to_made)}{_spread('made to sent', made_to_sent)}"
            f"{_spread('replica put to ack', replica_to_ack)}"
            f" | gc n={len(gc_pauses)} full={sum(g == 2 for g, _ in gc_pauses)}"
            f" max {max((t for _, t in gc_pauses), default=0.0) * 1e3:.1f} ms"
            f" collected {gc_collected[0]} young count {gc.get_count()[0]}",
            file=sys.stderr,
            flush=True,
        )
        for values in (commits, lags, to_made, made_to_sent, replica_to_ack, gc_pauses):
            values.clear()
        slow.clear()
        gc_collected[0] = 0
        loop.call_later(REPORT, report)

    loop.call_later(TICK, tick)
    loop.call_later(REPORT, report)


if __name__ == "__main__":
    pipelined_module.PipelinedEngine.commit_async = commit_async  # type: ignore[method-assign]
    node_module.Node.handle = handle  # type: ignore[method-assign]
    server_module.Server.start = start  # type: ignore[method-assign]
    server_module.Server.dispatch = dispatch  # type: ignore[method-assign]
    server_module.Server._hold = hold  # type: ignore[method-assign]
    server_module.Server._deliver = deliver  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    sys.argv = ["dynakv", *sys.argv[1:]]
    main()
