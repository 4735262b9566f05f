"""`dynakv bench`: a YCSB-style load generator with latency percentiles.

Workloads (YCSB core): A 50% read / 50% update, B 95/5, C read only, E short ranges (95%
scans as DynamoDB Queries, 5% inserts; bench_query.py), F read-modify-write (a read, then a
put with the read's context), W write only. Keys are `user<N>` for N in
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

This module runs a benchmark and reports it; the parts live beside it: ycsb.py (key choice,
workloads), load_generator.py (one generator process), latency_histogram.py and
local_cluster.py (`--local`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import queue
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dynakv.bench_apis import ensure_table
from dynakv.load_generator import (
    DONE,
    LOAD,
    RUN,
    BenchSpec,
    Generator,
    OpStats,
    PhaseResult,
    share,
    worker_main,
)
from dynakv.local_cluster import LocalCluster
from dynakv.ycsb import INSERT, READ, RMW, SCAN, UPDATE, WORKLOADS

# --- running and reporting ----------------------------------------------------------------

PERCENTILES = [("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9)]


def summarize(phase: PhaseResult) -> dict[str, Any]:
    """JSON-ready figures of one phase: per operation, plus all operations together."""
    elapsed = phase.elapsed
    total = OpStats()
    ops: dict[str, Any] = {}
    for name in (INSERT, READ, UPDATE, SCAN, RMW):
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
    figures: dict[str, Any] = {
        "count": hist.count,
        "throughput": round(hist.count / elapsed, 1) if elapsed > 0 else 0.0,
        "errors": sum(stats.errors.values()),
        "errors_by_kind": dict(sorted(stats.errors.items())),
        "not_found": stats.not_found,
        "siblings": stats.siblings,
        "latency_ms": latency,
    }
    if stats.pages:  # scans: what they returned, and in how many Query requests
        figures.update(items=stats.items, pages=stats.pages)
        figures["items_per_s"] = round(stats.items / elapsed, 1) if elapsed > 0 else 0.0
    return figures


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
        ctx.Process(target=worker_main, args=(spec, i, shared, barrier, results), daemon=True)
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
            spec = replace(spec, nodes=cluster.addrs(spec.api), **cluster.client_settings())
            for node in cluster.nodes:
                pid = node.proc.pid if node.proc else "?"
                ddb = f", dynamodb {node.dynamodb_addr}" if node.dynamodb_addr else ""
                console.print(
                    f"  {node.name}: {node.node_addr} (http {node.http_addr}{ddb}) pid {pid}"
                )
        if spec.api == "dynamodb":
            ensure_table(list(spec.nodes), spec.bucket, spec.cacert, ranged=spec.workload == "e")
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
            "config": {k: v for k, v in asdict(spec).items() if k not in ("nodes", "password")},
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
    if (report.get("local") or {}).get("secure"):
        where += ", secret + TLS + users"
    api = config.get("api", "binary")
    title = (
        f"YCSB-{config['workload']} {config['distribution']}, {config['records']:,} records, "
        f"{config['value_size']} B values, {config['concurrency']} in flight, {rate}; {where}"
        f"; {api} API"
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
    scans = run["ops"].get("scan")
    if scans and scans["count"]:
        console.print(
            f"scans: {scans['items']:,} items in {scans['pages']:,} Query requests, "
            f"{scans['items'] / scans['count']:.1f} items per scan, {scans['items_per_s']:,.0f} "
            f"items/s ({config['items_per_key']:,} items per partition key, scans of 1 to "
            f"{config['max_scan_length']}); {scans['not_found']:,} scans found fewer than loaded"
        )
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
