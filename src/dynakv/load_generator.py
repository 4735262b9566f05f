"""One `dynakv bench` generator process: the spec it runs, its results, and the callback-driven
in-flight slots (closed or open loop) that issue the requests; see bench.py for the whole."""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dynakv.bench_apis import APIS, api_clients
from dynakv.bench_query import DEFAULT_ITEMS_PER_KEY, ScanResult, plan_scan
from dynakv.client import AsyncClient
from dynakv.errors import DynakvError
from dynakv.latency_histogram import Histogram
from dynakv.messages import GetResult, Message, PutResult
from dynakv.ycsb import (
    DISTRIBUTIONS,
    INSERT,
    MAX_SCAN_LENGTH,
    READ,
    RMW,
    SCAN,
    UPDATE,
    WORKLOADS,
)

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
    api: str = "binary"  # or a front end of bench_apis.py: "dynamodb", "http"
    user: str | None = None  # authentication on: the user, and its password or token
    password: str | None = field(default=None, repr=False)
    consistent_read: bool = False  # --api dynamodb: GetItem (and Query) with ConsistentRead
    # Workload E (bench_query.py): records per partition key, the longest scan, and the
    # Limit of one Query page (None: the scan's length, one request unless the node pages).
    items_per_key: int = DEFAULT_ITEMS_PER_KEY
    max_scan_length: int = MAX_SCAN_LENGTH
    query_page: int | None = None

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
        if self.api not in APIS:
            raise ValueError(f"unknown api {self.api!r}: one of {', '.join(APIS)}")
        if self.workload == "e" and self.api != "dynamodb":
            raise ValueError(
                "workload E's scans are DynamoDB Queries: --api dynamodb (the binary "
                "protocol and the KV HTTP API have no range read)"
            )
        if self.items_per_key < 1 or self.max_scan_length < 1:
            raise ValueError("items per key and the scan length must be at least 1")
        if self.query_page is not None and self.query_page < 1:
            raise ValueError("a query page must hold at least 1 item")


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
    not_found: int = 0  # reads that found nothing; scans that found fewer than loaded
    siblings: int = 0
    items: int = 0  # scans: items returned, and the Query requests (pages) they took
    pages: int = 0

    def merge(self, other: OpStats) -> None:
        self.hist.merge(other.hist)
        self.errors.update(other.errors)
        self.not_found += other.not_found
        self.siblings += other.siblings
        self.items += other.items
        self.pages += other.pages


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


PORTS = {"binary": "node port", "dynamodb": "DynamoDB endpoint", "http": "HTTP port"}

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


def _unexpected(reply: object) -> BaseException:
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
        if self.spec.api != "binary":
            return api_clients(self.spec, self.index)  # type: ignore[return-value]
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
                    order,
                    timeout=self.spec.timeout,
                    route=self.spec.route,
                    tls=self.spec.cacert,
                    user=self.spec.user,
                    password=self.spec.password,
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
        ops = {op: OpStats() for op in (READ, UPDATE, RMW, SCAN, INSERT)}
        read_stats, update_stats, rmw_stats = ops[READ], ops[UPDATE], ops[RMW]
        scan_stats, insert_stats = ops[SCAN], ops[INSERT]
        # E's inserts add records after the loaded ones, each process its own numbers.
        insert_key = itertools.count(spec.records + self.index, spec.processes).__next__
        records, per_key, page = spec.records, spec.items_per_key, spec.query_page
        scan_length = functools.partial(self.rng.randint, 1, spec.max_scan_length)
        bucket, r, w, values, contexts = spec.bucket, spec.r, spec.w, self.values, self.contexts
        blind = spec.blind_writes
        update_in_one = spec.api == "dynamodb"
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
                k = insert_key() if op is INSERT else next_key()
                key = f"user{k}"
                if op is READ:
                    client.start_get(bucket, key, read_done, r=r)
                elif op is UPDATE:
                    context = None if blind else contexts.get(k)
                    client.start_put(bucket, key, values[i & 7], update_done, context=context, w=w)
                elif op is SCAN:  # only DynamoClient has it (BenchSpec: E is --api dynamodb)
                    scan = plan_scan(k, scan_length(), per_key, records)
                    client.start_query(bucket, scan, page, scan_done)  # type: ignore[attr-defined]
                elif op is INSERT:
                    client.start_put(bucket, key, values[i & 7], insert_done, w=w)
                elif update_in_one:  # DynamoDB's UpdateItem: the node reads and writes
                    update = client.start_update  # type: ignore[attr-defined]
                    update(bucket, key, values[i & 7], rmw_put_done, w=w)
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
            insert_done = put_done(insert_stats)

            def scan_done(reply: ScanResult | BaseException) -> None:
                if type(reply) is ScanResult:
                    scan_stats.items += reply.items
                    scan_stats.pages += reply.pages
                    if reply.items < reply.expected:
                        scan_stats.not_found += 1
                    completed(scan_stats)
                else:
                    failed(scan_stats, reply)

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

            def failed(stats: OpStats, reply: object) -> None:
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
            f"{self.first_error}; is a dynakv {PORTS[self.spec.api]} listening at "
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


def worker_main(
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
