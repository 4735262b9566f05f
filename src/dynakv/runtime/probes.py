"""What a node process tells about itself beside its requests: the core's log lines (routine
background events summarised), the foreground p99 it reports to the node each second
(admission control), event-loop lag samples and garbage-collector pauses.

Its own state (the log, the summary, the collection under way) and its own timers; the
server (server.py) starts it once the node runs and stops it first when stopping.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from dynakv.core.events import Event, LoadReport, Log
from dynakv.runtime.logs import NodeLog, ProgressSummary
from dynakv.runtime.metrics import Metrics

LOAD_REPORT_INTERVAL = 1.0
LAG_SAMPLE_INTERVAL = 0.25  # s between two event-loop lag samples


class Probes:
    """The node's log, load reports, loop-lag and GC-pause measurements."""

    def __init__(self, node: str, metrics: Metrics) -> None:
        self.metrics = metrics
        self.log = NodeLog(node)
        self.progress = ProgressSummary()  # routine background events, said as a summary
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatch: Callable[[Event], None] | None = None
        self._running = False
        self._gc_started = 0.0  # perf_counter at the start of the collection under way

    def start(self, loop: asyncio.AbstractEventLoop, dispatch: Callable[[Event], None]) -> None:
        self._loop, self._dispatch, self._running = loop, dispatch, True
        loop.call_later(LOAD_REPORT_INTERVAL, self._report_load)
        self._sample_lag(loop.time() + LAG_SAMPLE_INTERVAL)
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        self._running = False
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def log_effect(self, effect: Log) -> None:
        # At debug level every routine event keeps its own line: whoever asked for debug
        # (and the benchmarks that time transfers from the log) wants each one.
        if not self.log.isEnabledFor(logging.DEBUG) and self.progress.absorb(time.time(), effect):
            return
        level = getattr(logging, effect.level.upper(), logging.INFO)
        self.log.fields(level, effect.event, effect.fields)

    def write_summary(self, force: bool = False) -> None:
        summary = self.progress.take(time.time(), force)
        if summary is not None:
            self.log.fields(logging.INFO, summary.event, summary.fields)

    def _report_load(self) -> None:
        """Every second, tell the node the foreground p99 (admission control), and write the
        background summary once it is due."""
        if not self._running or self._loop is None or self._dispatch is None:
            return
        self.write_summary()
        recent = self.metrics.take_recent()
        p99 = 0.0
        if recent:
            recent.sort()
            p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))]
        self._dispatch(LoadReport(p99))
        self._loop.call_later(LOAD_REPORT_INTERVAL, self._report_load)

    def _sample_lag(self, due: float) -> None:
        """Every LAG_SAMPLE_INTERVAL, how late this timer ran: what a long loop turn (a big
        scan, a GC pause, a slow callback) made everything else wait."""
        if not self._running or self._loop is None:
            return
        now = self._loop.time()
        if due < now - LAG_SAMPLE_INTERVAL * 100:
            due = now  # the first call, or the clock jumped: no sample
        self.metrics.loop_lag.observe(max(0.0, now - due))
        self._loop.call_at(now + LAG_SAMPLE_INTERVAL, self._sample_lag, now + LAG_SAMPLE_INTERVAL)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """gc.callbacks: time each collection (the whole process: the loop stops meanwhile)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.metrics.observe_gc(info["generation"], time.perf_counter() - self._gc_started)
            self._gc_started = 0.0
