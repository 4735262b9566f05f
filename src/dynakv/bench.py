"""`dynakv bench`: a YCSB-style load generator with latency percentiles.

Workloads (YCSB core): A 50% read / 50% update, B 95/5, C read only, F read-modify-write
(a read, then a put with the read's context), W write only. Keys are `user<N>` for N in
[0, records), chosen uniformly or by YCSB's scrambled zipfian (constant 0.99).

A load phase inserts every record, then a run phase issues operations, either as fast as
`concurrency` in-flight requests allow (closed loop) or at a target rate (open loop: request i
is due at start + i/rate and its latency counts from that scheduled instant, so a stalled
server cannot hide its tail behind the requests the generator did not send — "coordinated
omission"). Latencies go into a log-linear histogram (3 significant digits) per operation.

The generator is Python on the same cores as the servers, so it is kept cheap: uvloop, each
in-flight slot a chain of callbacks run by the replies (`AsyncClient.start_get`/`start_put`:
no task, future, coroutine or timer per request), pipelined `AsyncClient` connections
(about one per 8-16 in flight, spread over the nodes), and `--processes K` worker processes
whose histograms are merged. Its CPU time is reported beside the figures.

Updates carry the last context this generator saw for the key (from the load, a read or its
own previous write), as an application that keeps contexts would; `blind_writes` sends none,
and in a `siblings` bucket every such write then adds a sibling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynakv.client import AsyncClient
from dynakv.errors import DynakvError
from dynakv.messages import GetResult, Message, PutResult
from dynakv.processes import stop_processes

# --- key choice ---------------------------------------------------------------------------

ZIPFIAN_CONSTANT = 0.99
# YCSB's ScrambledZipfianGenerator draws from a zipfian over 10^10 items (whose zeta is
# precomputed) and hashes the draw into the record range, so the hot keys are scattered.
SCRAMBLED_ITEM_COUNT = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302
FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
FNV_PRIME_64 = 0x100000001B3
MASK_64 = (1 << 64) - 1


def zeta(n: int, theta: float) -> float:
    """sum_{i=1..n} 1 / i^theta."""
    return math.fsum(i**-theta for i in range(1, n + 1))


def fnv1_64(value: int) -> int:
    """YCSB's `Utils.fnvhash64`: FNV-1 over the 8 low bytes, as a non-negative Java long."""
    # Unrolled (it runs once per zipfian draw): h = (h ^ byte) * prime, low byte first.
    p, m = FNV_PRIME_64, MASK_64
    h = ((FNV_OFFSET_BASIS_64 ^ (value & 0xFF)) * p) & m
    h = ((h ^ ((value >> 8) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 16) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 24) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 32) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 40) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 48) & 0xFF)) * p) & m
    h = ((h ^ ((value >> 56) & 0xFF)) * p) & m
    if h >= 1 << 63:  # Math.abs of the signed long
        h = (1 << 64) - h
    return h


class ZipfianGenerator:
    """Items 0..items-1, item 0 the most popular (Gray et al., SIGMOD 1994; as in YCSB)."""

    def __init__(
        self,
        items: int,
        rng: random.Random,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if items < 1:
            raise ValueError("a zipfian needs at least one item")
        self.items = items
        self.theta = theta
        self.zetan = zeta(items, theta) if zetan is None else zetan
        self.alpha = 1.0 / (1.0 - theta)
        zeta2 = zeta(2, theta)
        self.eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan)
        self.second = 1.0 + 0.5**theta
        self._random = rng.random

    def next(self) -> int:
        u = self._random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.second:
            return 1
        eta = self.eta
        return min(self.items - 1, int(self.items * (eta * u - eta + 1) ** self.alpha))


SCRAMBLED_HEAD = 1 << 16  # draws below this (46% of them) have their key in a table


class ScrambledZipfian:
    """YCSB's ScrambledZipfianGenerator over [0, items): zipfian popularity, hashed placement."""

    next: Callable[[], int]  # a closure made per instance in __init__

    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self._zipf = zipf = ZipfianGenerator(SCRAMBLED_ITEM_COUNT, rng, zetan=SCRAMBLED_ZETAN)
        # `next` runs once per operation: ZipfianGenerator.next inlined with its constants in
        # locals, and the hash of the most popular draws looked up rather than computed.
        head = [fnv1_64(z) % items for z in range(SCRAMBLED_HEAD)]
        draw, zetan, second = zipf._random, zipf.zetan, zipf.second
        eta, alpha, count, top = zipf.eta, zipf.alpha, zipf.items, zipf.items - 1
        first, runner_up = head[0], head[1]

        def next() -> int:
            u = draw()
            uz = u * zetan
            if uz < 1.0:
                return first
            if uz < second:
                return runner_up
            z = min(top, int(count * (eta * u - eta + 1) ** alpha))
            return head[z] if z < SCRAMBLED_HEAD else fnv1_64(z) % items

        self.next = next


class Uniform:
    def __init__(self, items: int, rng: random.Random) -> None:
        self.items = items
        self._randrange = rng.randrange

    def next(self) -> int:
        return self._randrange(self.items)


DISTRIBUTIONS: dict[str, type[ScrambledZipfian] | type[Uniform]] = {
    "zipfian": ScrambledZipfian,
    "uniform": Uniform,
}

# --- workloads ----------------------------------------------------------------------------

READ, UPDATE, RMW, INSERT = "read", "update", "rmw", "insert"


@dataclass(frozen=True)
class Workload:
    name: str
    read: float = 0.0
    update: float = 0.0
    rmw: float = 0.0

    def choose(self, u: float) -> str:
        """The operation for a uniform draw u in [0, 1)."""
        if u < self.read:
            return READ
        if u < self.read + self.update:
            return UPDATE
        return RMW if self.rmw else UPDATE


WORKLOADS = {
    "a": Workload("A", read=0.5, update=0.5),
    "b": Workload("B", read=0.95, update=0.05),
    "c": Workload("C", read=1.0),
    "f": Workload("F", read=0.5, rmw=0.5),
    "w": Workload("W", update=1.0),
}

# --- latency histogram --------------------------------------------------------------------

SUB_BITS = 11  # 2048 exact values, then 1024 buckets per power of two: relative error < 0.1%
HALF = 1 << (SUB_BITS - 1)
MAX_TRACKED = (1 << 36) - 1  # microseconds, about 19 hours; larger values are clipped


def bucket_index(value: int) -> int:
    if value < (1 << SUB_BITS):
        return value
    shift = value.bit_length() - SUB_BITS
    return (shift << (SUB_BITS - 1)) + (value >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest and highest value that land in bucket `index`."""
    if index < (1 << SUB_BITS):
        return index, index
    shift = (index >> (SUB_BITS - 1)) - 1
    low = (index - (shift << (SUB_BITS - 1))) << shift
    return low, low + (1 << shift) - 1


BUCKETS = bucket_index(MAX_TRACKED) + 1


class Histogram:
    """HDR-style log-linear histogram of non-negative integers (here: microseconds).

    Values below 2048 are kept exactly; above, each power of two is split into 1024 equal
    buckets, so any reported percentile is within 0.1% of a value that was recorded.
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        elif value > MAX_TRACKED:
            value = MAX_TRACKED
        if value < 2048:
            self.counts[value] += 1
        else:
            shift = value.bit_length() - SUB_BITS
            self.counts[(shift << (SUB_BITS - 1)) + (value >> shift)] += 1
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentiles(self, ps: list[float]) -> list[int]:
        """Nearest-rank percentiles (the value at rank ceil(p/100 * count)), 0 when empty."""
        if self.count == 0:
            return [0 for _ in ps]
        ranks = sorted((max(1, math.ceil(p / 100 * self.count)), i) for i, p in enumerate(ps))
        out = [0] * len(ps)
        seen = 0
        j = 0
        for index, n in enumerate(self.counts):
            if not n:
                continue
            seen += n
            while j < len(ranks) and ranks[j][0] <= seen:
                low, high = bucket_range(index)
                value = (low + high) // 2
                out[ranks[j][1]] = min(max(value, self.min), self.max)
                j += 1
            if j == len(ranks):
                break
        return out

    def percentile(self, p: float) -> int:
        return self.percentiles([p])[0]


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True)
class BenchSpec:
    """Everything a generator process needs; picklable for --processes."""

    nodes: tuple[str, ...]
    workload: str = "a"
    distribution: str = "zipfian"
    records: int = 10_000
    operations: int | None = None
    duration: float | None = 10.0
    concurrency: int = 64
    connections: int | None = None
    value_size: int = 1024
    rate: float | None = None
    r: int | None = None
    w: int | None = None
    processes: int = 1
    seed: int = 1
    bucket: str = "bench"
    load: bool = True
    blind_writes: bool = False
    timeout: float = 10.0
    route: bool = True  # clients send each request to a replica of its key
    cacert: str | None = None  # nodes with TLS on: the CA file their certificates chain to

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}")
        if self.records < 1:
            raise ValueError("records must be at least 1")
        if self.processes < 1 or self.concurrency < self.processes:
            raise ValueError("need processes >= 1 and concurrency >= processes")
        if self.operations is None and self.duration is None:
            raise ValueError("give an operation count or a duration")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.value_size < 0:
            raise ValueError("value size must be non-negative")


def share(total: int, parts: int, index: int) -> tuple[int, int]:
    """The [start, end) slice of range(total) that part `index` of `parts` takes."""
    return total * index // parts, total * (index + 1) // parts


def default_connections(in_flight: int, nodes: int) -> int:
    """About one connection per 8-16 requests in flight, a multiple of the node count."""
    wanted = max(1, math.ceil(in_flight / 16))
    if wanted >= nodes:
        wanted = math.ceil(wanted / nodes) * nodes
    return min(wanted, in_flight)


@dataclass
class OpStats:
    hist: Histogram = field(default_factory=Histogram)
    errors: Counter[str] = field(default_factory=Counter)
    not_found: int = 0
    siblings: int = 0

    def merge(self, other: OpStats) -> None:
        self.hist.merge(other.hist)
        self.errors.update(other.errors)
        self.not_found += other.not_found
        self.siblings += other.siblings


@dataclass
class PhaseResult:
    ops: dict[str, OpStats] = field(default_factory=dict)
    elapsed: float = 0.0
    cpu: float = 0.0

    def merge(self, other: PhaseResult) -> None:
        for name, stats in other.ops.items():
            self.ops.setdefault(name, OpStats()).merge(stats)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.cpu += other.cpu


LOAD, RUN, DONE = 0, 1, 2
Sink = Callable[[int, int, int], None]  # (phase, operations done, errors)
Finished = Callable[[BaseException | None], None]  # a slot is done (None) or failed the bench
Slot = Callable[[AsyncClient, Finished], None]  # starts one in-flight slot on a connection

# What a request may end with and is counted as an error of its operation; anything else
# is a bug and fails the bench.
REQUEST_ERRORS = (DynakvError, OSError, TimeoutError)


# A phase whose first FAIL_FAST requests all failed stops there: nothing is listening, or the
# cluster cannot serve at all, and figures of failures measure nothing.
FAIL_FAST = 200


class NothingSucceeded(RuntimeError):
    """Every request of a phase failed: the bench stops and `dynakv bench` exits non-zero."""


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, DynakvError):
        return exc.code
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


def _unexpected(reply: Message | BaseException) -> BaseException:
    if isinstance(reply, BaseException):
        return reply
    return TypeError(f"unexpected reply {type(reply).__name__}")


# --- one generator process ----------------------------------------------------------------


class Generator:
    """The load generator of one process: slot `index` of `spec.processes`."""

    def __init__(self, spec: BenchSpec, index: int = 0, sink: Sink | None = None) -> None:
        self.spec = spec
        self.index = index
        self.sink = sink
        parts = spec.processes
        self.rng = random.Random(spec.seed * 1_000_003 + index)
        self.keys = DISTRIBUTIONS[spec.distribution](spec.records, self.rng)
        self.workload = WORKLOADS[spec.workload]
        self.load_range = share(spec.records, parts, index)
        lo, hi = share(spec.concurrency, parts, index)
        self.in_flight = hi - lo
        if spec.operations is not None:
            lo, hi = share(spec.operations, parts, index)
            self.operations: int | None = hi - lo
        else:
            self.operations = None
        self.interval = parts / spec.rate if spec.rate else None
        self.values = [self.rng.randbytes(spec.value_size) for _ in range(8)]
        self.contexts: dict[int, str] = {}
        self.done = 0
        self.errors = 0
        self.first_error = ""  # the first failure of the phase, for NothingSucceeded
        self.phase = LOAD
        self.stopping = False

    # -- plumbing
    def _clients(self) -> list[AsyncClient]:
        nodes = list(self.spec.nodes)
        count = self.spec.connections or default_connections(self.in_flight, len(nodes))
        count = max(1, min(count, self.in_flight))
        if self.spec.route:  # a routing client keeps a connection to every node
            count = math.ceil(count / len(nodes))
        clients = []
        for j in range(count):
            first = (self.index * count + j) % len(nodes)
            order = nodes[first:] + nodes[:first]
            clients.append(
                AsyncClient(
                    order, timeout=self.spec.timeout, route=self.spec.route, tls=self.spec.cacert
                )
            )
        return clients

    async def _ticker(self) -> None:
        while True:
            if self.sink is not None:
                self.sink(self.phase, self.done, self.errors)
            await asyncio.sleep(0.2)

    async def _phase(self, slot: Slot) -> float:
        """Start `in_flight` copies of `slot` over the connections and wait until each one has
        called its `finished`; Ctrl-C stops them cleanly."""
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        interrupted = False
        all_done: asyncio.Future[None] = loop.create_future()
        running = self.in_flight

        def finished(error: BaseException | None) -> None:
            nonlocal running
            running -= 1
            if all_done.done():
                return
            if error is not None:  # not an error a request may end with: the bench fails
                all_done.set_exception(error)
            elif running == 0:
                all_done.set_result(None)

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = self.stopping = True
            main.cancel()  # 3.11's wait_for may swallow it; slots also check self.stopping

        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in handlers:
            loop.add_signal_handler(sig, interrupt)
        clients = self._clients()
        ticker = asyncio.create_task(self._ticker())
        started = time.perf_counter()
        try:
            for j in range(self.in_flight):
                slot(clients[j % len(clients)], finished)
            await all_done
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if not all_done.done():  # interrupted or failed: slots start nothing more
                self.stopping = True
            ticker.cancel()
            for client in clients:
                await client.close()
            for sig, handler in handlers.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)
        return time.perf_counter() - started

    # Each in-flight slot is a chain of callbacks, not a coroutine: a reply's callback records
    # it and sends the slot's next request straight away, so a request costs no future, task
    # wake-up or coroutine frames (see AsyncClient.start_get).

    # -- load phase
    async def _load(self) -> PhaseResult:
        spec = self.spec
        stats = OpStats()
        bucket, w, values, contexts = spec.bucket, spec.w, self.values, self.contexts
        start, end = self.load_range
        cursor = start
        record, errors = stats.hist.record, stats.errors
        clock = time.perf_counter

        def slot(client: AsyncClient, finished: Finished) -> None:
            k = 0
            began = 0.0

            def put() -> None:
                nonlocal cursor, k, began
                if cursor >= end or self.stopping:
                    finished(None)
                    return
                k = cursor
                cursor += 1
                began = clock()
                client.start_put(bucket, f"user{k}", values[k & 7], put_done, w=w)

            def put_done(reply: Message | BaseException) -> None:
                if type(reply) is PutResult:
                    record(int((clock() - began) * 1e6))
                    contexts[k] = reply.context
                    self.done += 1
                elif isinstance(reply, REQUEST_ERRORS):
                    errors[error_kind(reply)] += 1
                    if self._failed(reply):
                        finished(self._nothing_succeeded())
                        return
                else:
                    finished(_unexpected(reply))
                    return
                put()

            put()

        cpu = time.process_time()
        elapsed = await self._phase(slot)
        return PhaseResult({INSERT: stats}, elapsed, time.process_time() - cpu)

    # -- run phase
    async def _run(self) -> PhaseResult:
        spec = self.spec
        ops = {READ: OpStats(), UPDATE: OpStats(), RMW: OpStats()}
        read_stats, update_stats, rmw_stats = ops[READ], ops[UPDATE], ops[RMW]
        bucket, r, w, values, contexts = spec.bucket, spec.r, spec.w, self.values, self.contexts
        blind = spec.blind_writes
        choose, next_key, rand = self.workload.choose, self.keys.next, self.rng.random
        limit, interval = self.operations, self.interval
        clock = time.perf_counter
        loop = asyncio.get_running_loop()
        began = clock()
        deadline = began + spec.duration if spec.duration is not None else None
        issued = 0
        last_done = began

        def slot(client: AsyncClient, finished: Finished) -> None:
            # the slot's current operation: request number, key and latency origin
            i = 0
            k = 0
            key = ""
            start = 0.0

            def begin() -> None:
                nonlocal issued, i, start
                if self.stopping:
                    finished(None)
                    return
                i = issued
                if limit is not None and i >= limit:
                    finished(None)
                    return
                issued = i + 1
                if interval is not None:
                    due = began + i * interval
                    if deadline is not None and due >= deadline:
                        finished(None)
                        return
                    delay = due - clock()
                    if delay > 0.0015:  # timers tick in ms: wake early rather than late
                        loop.call_later(delay - 0.001, resume, due)
                        return
                    start = min(due, clock())  # late: count from due; early: from now
                else:
                    start = clock()
                    if deadline is not None and start >= deadline:
                        finished(None)
                        return
                issue()

            def resume(due: float) -> None:
                nonlocal start
                start = min(due, clock())
                issue()

            def issue() -> None:
                nonlocal k, key
                op = choose(rand())
                k = next_key()
                key = f"user{k}"
                if op is READ:
                    client.start_get(bucket, key, read_done, r=r)
                elif op is UPDATE:
                    context = None if blind else contexts.get(k)
                    client.start_put(bucket, key, values[i & 7], update_done, context=context, w=w)
                else:
                    client.start_get(bucket, key, rmw_read_done, r=r)

            def read_done(reply: Message | BaseException) -> None:
                if type(reply) is GetResult:
                    contexts[k] = reply.context
                    found = reply.values
                    if not found:
                        read_stats.not_found += 1
                    elif len(found) > 1:
                        read_stats.siblings += 1
                    completed(read_stats)
                else:
                    failed(read_stats, reply)

            def put_done(stats: OpStats) -> Callable[[Message | BaseException], None]:
                def done(reply: Message | BaseException) -> None:
                    if type(reply) is PutResult:
                        contexts[k] = reply.context
                        completed(stats)
                    else:
                        failed(stats, reply)

                return done

            update_done = put_done(update_stats)

            def rmw_read_done(reply: Message | BaseException) -> None:
                if type(reply) is GetResult:
                    if len(reply.values) > 1:
                        rmw_stats.siblings += 1
                    client.start_put(
                        bucket, key, values[i & 7], rmw_put_done, context=reply.context, w=w
                    )
                else:
                    failed(rmw_stats, reply)

            rmw_put_done = put_done(rmw_stats)

            def completed(stats: OpStats) -> None:
                nonlocal last_done
                done = clock()
                stats.hist.record(int((done - start) * 1e6))
                last_done = done
                self.done += 1
                begin()

            def failed(stats: OpStats, reply: Message | BaseException) -> None:
                nonlocal last_done
                if not isinstance(reply, REQUEST_ERRORS):
                    finished(_unexpected(reply))
                    return
                last_done = clock()  # the phase lasts until its last answer, success or not
                stats.errors[error_kind(reply)] += 1
                if self._failed(reply):
                    finished(self._nothing_succeeded())
                    return
                begin()

            begin()

        cpu = time.process_time()
        await self._phase(slot)
        used = {name: s for name, s in ops.items() if s.hist.count or s.errors}
        return PhaseResult(used, last_done - began, time.process_time() - cpu)

    def _failed(self, reply: BaseException) -> bool:
        """Count a failed request; True when the phase must stop (FAIL_FAST, none succeeded)."""
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{error_kind(reply)}: {reply}"
        return self.done == 0 and self.errors >= FAIL_FAST

    def _nothing_succeeded(self) -> NothingSucceeded:
        phase = "load" if self.phase == LOAD else "run"
        return NothingSucceeded(
            f"all {self.errors} requests of the {phase} phase failed, the first with "
            f"{self.first_error}; is a dynakv node port listening at "
            f"{', '.join(self.spec.nodes)}? (`make run` starts a local cluster)"
        )

    def _check_some_succeeded(self) -> None:
        if self.done == 0 and self.errors:
            raise self._nothing_succeeded()

    # -- driver
    def run(self, between: Callable[[], None] | None = None) -> tuple[PhaseResult, PhaseResult]:
        """Load (unless disabled), call `between` (a barrier), then run. Uses uvloop."""
        import uvloop

        loaded = PhaseResult()
        if self.spec.load:
            loaded = uvloop.run(self._load())
            self._check_some_succeeded()
        if between is not None:
            between()
        self.phase, self.done, self.errors, self.first_error = RUN, 0, 0, ""
        result = uvloop.run(self._run())
        self._check_some_succeeded()
        self.phase = DONE
        if self.sink is not None:
            self.sink(DONE, self.done, self.errors)
        return loaded, result


def _worker_main(
    spec: BenchSpec, index: int, shared: Any, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a spawned process
    def sink(phase: int, done: int, errors: int) -> None:
        shared[3 * index], shared[3 * index + 1], shared[3 * index + 2] = phase, done, errors

    def between() -> None:
        barrier.wait(timeout=3600)

    try:
        results.put((index, Generator(spec, index, sink).run(between)))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        results.put((index, f"{type(exc).__name__}: {exc}"))


# --- a local cluster ----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _get_json(url: str, cacert: str | None = None) -> Any:
    """GET a node's JSON over http, or https checked against `cacert` when given."""
    context = None
    if cacert:
        url = url.replace("http://", "https://", 1)
        context = ssl.create_default_context(cafile=cacert)
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return json.load(response)


@dataclass
class LocalNode:
    name: str
    node_addr: str
    http_addr: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    cpu_mark: float = 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, from /proc (0 where unavailable)."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return 0.0
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def check_settings(settings: dict[str, str]) -> dict[str, str]:
    """Node settings for a local cluster: NodeConfig fields with TOML values, e.g.
    {"anti_entropy": "false"}; ValueError naming what is wrong."""
    import tomllib
    from dataclasses import fields

    from dynakv.config import NodeConfig

    known = {f.name for f in fields(NodeConfig)} - {"name", "data_dir", "node_addr", "http_addr"}
    for key, value in settings.items():
        if key not in known:
            raise ValueError(f"unknown node setting {key!r}")
        try:
            tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"node setting {key}={value}: not a TOML value ({exc})") from exc
    return settings


class LocalCluster:
    """`count` `dynakv serve` processes on free loopback ports, stopped by PID."""

    def __init__(
        self,
        count: int,
        data_dir: str | None = None,
        durability: str = "fsync",
        n: int | None = None,
        r: int | None = None,
        w: int | None = None,
        settings: dict[str, str] | None = None,
        cacert: str | None = None,  # TLS on (a `security` setting): the CA of the nodes
    ) -> None:
        if count < 1:
            raise ValueError("a local cluster needs at least one node")
        self.settings = check_settings(settings or {})
        self.cacert = cacert
        self.count = count
        self.n = n if n is not None else min(3, count)
        self.r = r if r is not None else self.n // 2 + 1
        self.w = w if w is not None else self.n // 2 + 1
        if not 1 <= self.n <= count:
            raise ValueError(f"--n must be between 1 and the node count {count}")
        if not (1 <= self.r <= self.n and 1 <= self.w <= self.n):
            raise ValueError(f"--r and --w must be between 1 and n={self.n}")
        self.durability = durability
        self._own_dir = data_dir is None
        self.root = Path(data_dir or tempfile.mkdtemp(prefix="dynakv-bench-"))
        self.nodes: list[LocalNode] = []

    @property
    def node_addrs(self) -> tuple[str, ...]:
        return tuple(node.node_addr for node in self.nodes)

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": self.count,
            "durability": self.durability,
            "n": self.n,
            "r": self.r,
            "w": self.w,
            "data_dir": None if self._own_dir else str(self.root),
            "settings": dict(self.settings),
        }

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "bench.toml"
        extra = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        config.write_text(
            f'cluster = "bench"\ndurability = "{self.durability}"\n{extra}'
            f"[defaults]\nn = {self.n}\nr = {self.r}\nw = {self.w}\n"
        )
        for i in range(1, self.count + 1):
            node = LocalNode(
                f"node{i}",
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
                self.root / f"node{i}.log",
            )
            args = [
                sys.executable, "-m", "dynakv", "serve",
                "--name", node.name,
                "--data-dir", str(self.root / node.name),
                "--listen", node.node_addr,
                "--http", node.http_addr,
                "--config", str(config),
            ]  # fmt: skip
            if self.nodes:
                args += ["--join", self.nodes[0].node_addr]
            with open(node.log, "ab") as log:
                # A session of its own: Ctrl-C reaches only us, and we stop it by PID.
                node.proc = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.nodes.append(node)
            self._wait_ready(node)
        self._wait_converged()

    def _wait_ready(self, node: LocalNode, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert node.proc is not None
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self._tail(node)}")
            with contextlib.suppress(OSError, ValueError):
                _get_json(f"http://{node.http_addr}/v1/status", self.cacert)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{node.name} did not start: {self._tail(node)}")

    def _wait_converged(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                views = [
                    _get_json(f"http://{n.http_addr}/v1/cluster", self.cacert) for n in self.nodes
                ]
                if all(len(v["members"]) == self.count for v in views) and (
                    len({json.dumps(v["ring"], sort_keys=True) for v in views}) == 1
                ):
                    return
            time.sleep(0.1)
        raise RuntimeError("the local cluster did not agree on its membership in time")

    @staticmethod
    def _tail(node: LocalNode) -> str:
        try:
            return node.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def mark_cpu(self) -> None:
        for node in self.nodes:
            node.cpu_mark = node.cpu_seconds()

    def usage(self, elapsed: float) -> list[dict[str, Any]]:
        """CPU since mark_cpu and resident memory, per node."""
        out = []
        for node in self.nodes:
            cpu = node.cpu_seconds() - node.cpu_mark
            out.append(
                {
                    "name": node.name,
                    "pid": node.proc.pid if node.proc else None,
                    "cpu_s": round(cpu, 3),
                    "cpu_cores": round(cpu / elapsed, 3) if elapsed > 0 else 0.0,
                    "rss_mb": round(node.rss_mb(), 1),
                }
            )
        return out

    def stop(self) -> None:
        stop_processes(node.proc for node in self.nodes)
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)


# --- running and reporting ----------------------------------------------------------------

PERCENTILES = [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9)]


def summarize(phase: PhaseResult) -> dict[str, Any]:
    """JSON-ready figures of one phase: per operation, plus all operations together."""
    elapsed = phase.elapsed
    total = OpStats()
    ops: dict[str, Any] = {}
    for name in (INSERT, READ, UPDATE, RMW):
        stats = phase.ops.get(name)
        if stats is None:
            continue
        total.merge(stats)
        ops[name] = _op_figures(stats, elapsed)
    errors = Counter[str]()
    for stats in phase.ops.values():
        errors.update(stats.errors)
    return {
        "elapsed_s": round(elapsed, 3),
        "throughput": round(total.hist.count / elapsed, 1) if elapsed > 0 else 0.0,
        "ops": ops,
        "total": _op_figures(total, elapsed),
        "errors": dict(sorted(errors.items())),
        "client_cpu_s": round(phase.cpu, 3),
        "client_cpu_cores": round(phase.cpu / elapsed, 3) if elapsed > 0 else 0.0,
    }


def _op_figures(stats: OpStats, elapsed: float) -> dict[str, Any]:
    hist = stats.hist
    values = hist.percentiles([p for _, p in PERCENTILES])
    latency = {"mean": round(hist.mean / 1000, 3)}
    latency.update({label: v / 1000 for (label, _), v in zip(PERCENTILES, values, strict=True)})
    latency["max"] = hist.max / 1000
    return {
        "count": hist.count,
        "throughput": round(hist.count / elapsed, 1) if elapsed > 0 else 0.0,
        "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(sorted(stats.errors.items())),
        "not_found": stats.not_found,
        "siblings": stats.siblings,
        "latency_ms": latency,
    }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), 0 where unknown."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...
    ticks = [int(v) for v in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    memory_mb = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
    }


class _Progress:
    """Two rich progress bars (load, run) fed with (phase, done, errors) per generator."""

    def __init__(self, spec: BenchSpec, console: Any, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.spec = spec
        self.progress = Progress(
            TextColumn("{task.description:<6}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[ops]:>10,} ops  {task.fields[rate]:>8,.0f}/s"),
            TextColumn("[red]{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.load_task = None
        if spec.load:
            self.load_task = self.progress.add_task(
                "load", total=spec.records, ops=0, rate=0.0, errors=0
            )
        self.run_task = self.progress.add_task(
            "run",
            total=spec.operations if spec.operations is not None else spec.duration,
            ops=0,
            rate=0.0,
            errors=0,
            start=False,
        )
        self.phase_started: dict[int, float] = {}
        self.on_run_start: Callable[[], None] | None = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, states: list[tuple[int, int, int]]) -> None:
        """`states`: (phase, done, errors) of every generator process."""
        now = time.monotonic()
        phase = min(state[0] for state in states)
        if phase >= RUN and RUN not in self.phase_started:
            self.phase_started[RUN] = now
            self.progress.start_task(self.run_task)
            if self.on_run_start is not None:
                self.on_run_start()
        if phase == LOAD and self.load_task is not None:
            self.phase_started.setdefault(LOAD, now)
            done = sum(s[1] for s in states if s[0] == LOAD) + sum(
                share(self.spec.records, len(states), i)[1]
                - share(self.spec.records, len(states), i)[0]
                for i, s in enumerate(states)
                if s[0] > LOAD
            )
            errors = sum(s[2] for s in states if s[0] == LOAD)
            elapsed = max(now - self.phase_started[LOAD], 1e-9)
            self.progress.update(
                self.load_task, completed=done, ops=done, rate=done / elapsed, errors=errors
            )
        elif phase >= RUN:
            if self.load_task is not None and LOAD in self.phase_started:
                loaded = self.spec.records
                elapsed = max(self.phase_started[RUN] - self.phase_started[LOAD], 1e-9)
                self.progress.update(
                    self.load_task, completed=loaded, ops=loaded, rate=loaded / elapsed
                )
                del self.phase_started[LOAD]
            done = sum(s[1] for s in states)
            errors = sum(s[2] for s in states)
            elapsed = max(now - self.phase_started[RUN], 1e-9)
            if self.spec.operations is not None:
                completed: float = done
            else:
                completed = min(elapsed, self.spec.duration or 0.0)
            if phase == DONE:
                completed = self.spec.operations or self.spec.duration or 0.0
            self.progress.update(
                self.run_task, completed=completed, ops=done, rate=done / elapsed, errors=errors
            )


def run_generators(spec: BenchSpec, progress: _Progress) -> tuple[PhaseResult, PhaseResult]:
    """Run the generator in-process (processes=1) or in spawned workers, merging results."""
    if spec.processes == 1:
        states = [(LOAD, 0, 0)]

        def sink(phase: int, done: int, errors: int) -> None:
            states[0] = (phase, done, errors)
            progress.update(states)

        return Generator(spec, 0, sink).run()

    ctx = multiprocessing.get_context("spawn")
    shared = ctx.Array("q", 3 * spec.processes, lock=False)
    barrier = ctx.Barrier(spec.processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_main, args=(spec, i, shared, barrier, results), daemon=True)
        for i in range(spec.processes)
    ]
    for worker in workers:
        worker.start()
    got: dict[int, Any] = {}
    try:
        while len(got) < len(workers):
            progress.update(
                [(shared[3 * i], shared[3 * i + 1], shared[3 * i + 2]) for i in range(len(workers))]
            )
            try:
                index, value = results.get(timeout=0.2)
            except queue.Empty:
                dead = [i for i, w in enumerate(workers) if i not in got and w.exitcode is not None]
                if not dead:
                    continue
                try:  # its result may still be in the pipe
                    index, value = results.get(timeout=2.0)
                except queue.Empty:
                    code = workers[dead[0]].exitcode
                    raise RuntimeError(f"generator process {dead[0]} exited ({code})") from None
            if isinstance(value, str):
                raise RuntimeError(f"generator process {index} failed: {value}")
            got[index] = value
        progress.update([(DONE, shared[3 * i + 1], shared[3 * i + 2]) for i in range(len(workers))])
    finally:
        failed = len(got) < len(workers)
        if failed:
            barrier.abort()
        for worker in workers:
            if failed and worker.is_alive():
                worker.terminate()
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    loaded, ran = PhaseResult(), PhaseResult()
    for index in sorted(got):
        load_part, run_part = got[index]
        loaded.merge(load_part)
        ran.merge(run_part)
    return loaded, ran


def bench(
    spec: BenchSpec,
    cluster: LocalCluster | None = None,
    console: Any = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the benchmark (starting and stopping `cluster` if given) and return the report."""
    from rich.console import Console

    console = console or Console()
    # Ctrl-C and SIGTERM both end up in the `finally` that stops the local cluster; SIGINT is
    # set explicitly because a shell that starts us in the background ignores it.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cluster is not None:
            console.print(f"starting a local cluster of {cluster.count} in {cluster.root}")
            cluster.start()
            spec = _with_nodes(spec, cluster.node_addrs)
            for node in cluster.nodes:
                pid = node.proc.pid if node.proc else "?"
                console.print(f"  {node.name}: {node.node_addr} (http {node.http_addr}) pid {pid}")
        marks: dict[str, float] = {}

        def run_started() -> None:
            marks["wall"], marks["busy"] = time.monotonic(), machine_busy_seconds()
            if cluster is not None:
                cluster.mark_cpu()

        with _Progress(spec, console, show_progress) as progress:
            progress.on_run_start = run_started
            loaded, ran = run_generators(spec, progress)
        wall = time.monotonic() - marks.get("wall", time.monotonic())
        report: dict[str, Any] = {
            "config": {k: v for k, v in asdict(spec).items() if k != "nodes"},
            "nodes": list(spec.nodes),
            "local": cluster.describe() if cluster is not None else None,
            "machine": machine(),
            "load": summarize(loaded) if spec.load else None,
            "run": summarize(ran),
        }
        report["config"]["workload"] = WORKLOADS[spec.workload].name
        # How busy the whole machine was during the run phase, and how much of that was
        # neither this generator nor the local servers (other work distorts the figures).
        cpu: dict[str, Any] = {"client_cores": round(ran.cpu / wall, 3) if wall > 0 else 0.0}
        if cluster is not None:
            report["servers"] = cluster.usage(wall)
            cpu["servers_cores"] = round(sum(s["cpu_cores"] for s in report["servers"]), 3)
        if "busy" in marks and wall > 0:
            busy = (machine_busy_seconds() - marks["busy"]) / wall
            cpu["machine_busy_cores"] = round(busy, 3)
            if cluster is not None:
                other = busy - cpu["client_cores"] - cpu["servers_cores"]
                cpu["other_cores"] = round(max(0.0, other), 3)
        report["cpu"] = cpu
        return report
    finally:
        if cluster is not None:
            cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _with_nodes(spec: BenchSpec, nodes: tuple[str, ...]) -> BenchSpec:
    from dataclasses import replace

    return replace(spec, nodes=nodes)


def render(report: dict[str, Any], console: Any) -> None:
    """The final tables: throughput and latency per operation, errors by kind, CPU."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal and console.width < 120:  # piped: do not squeeze the table
        console = Console(width=120, file=console.file)
    config = report["config"]
    where = (
        f"local cluster of {report['local']['nodes']} ({report['local']['durability']}, "
        f"N={report['local']['n']} R={report['local']['r']} W={report['local']['w']})"
        if report.get("local")
        else ", ".join(report["nodes"])
    )
    rate = f"target {config['rate']:,.0f}/s" if config["rate"] else "closed loop"
    title = (
        f"YCSB-{config['workload']} {config['distribution']}, {config['records']:,} records, "
        f"{config['value_size']} B values, {config['concurrency']} in flight, {rate}; {where}"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    columns = ("op", "count", "ops/s", "mean", *[p for p, _ in PERCENTILES], "max", "errors")
    for column in columns:
        table.add_column(column, justify="left" if column == "op" else "right", no_wrap=True)
    for phase in ("load", "run"):
        figures = report.get(phase)
        if not figures:
            continue
        rows = list(figures["ops"].items())
        if phase == "run" and len(rows) > 1:
            rows.append(("run total", figures["total"]))
        for name, op in rows:
            lat = op["latency_ms"]
            table.add_row(
                f"{name} (load)" if phase == "load" else name,
                f"{op['count']:,}", f"{op['throughput']:,.0f}",
                *(f"{lat[k]:.2f}" for k in ("mean", *[p for p, _ in PERCENTILES], "max")),
                f"{op['errors']:,}",
            )  # fmt: skip
    console.print(table)
    console.print("latencies in ms; open-loop latencies count from each request's scheduled time")
    run = report["run"]
    if run["errors"]:
        errors = Table(title="run errors by kind")
        errors.add_column("kind")
        errors.add_column("count", justify="right")
        for kind, count in run["errors"].items():
            errors.add_row(kind, f"{count:,}")
        console.print(errors)
    line = (
        f"run: {run['throughput']:,.0f} ops/s over {run['elapsed_s']:.1f} s; client CPU "
        f"{run['client_cpu_s']:.1f} s ({run['client_cpu_cores']:.2f} cores, "
        f"{config['processes']} process(es))"
    )
    console.print(line)
    cpu = report.get("cpu") or {}
    if "machine_busy_cores" in cpu:
        others = f", of which {cpu['other_cores']:.2f} not ours" if "other_cores" in cpu else ""
        console.print(
            f"machine: {cpu['machine_busy_cores']:.2f} of {report['machine']['nproc']} cores busy"
            f" during the run{others}"
        )
    for server in report.get("servers") or []:
        console.print(
            f"  {server['name']}: CPU {server['cpu_s']:.1f} s ({server['cpu_cores']:.2f} cores),"
            f" RSS {server['rss_mb']:.0f} MB"
        )
