"""Prometheus metrics of one node: what /v1/status knows, plus requests, commits, event-loop
lag and GC pauses, named by Prometheus conventions (units in names, `_total` counters).

Every figure is a plain counter or histogram.Histogram, rendered by collectors at scrape
time: prometheus-client's own Counter and Histogram take a lock per increment, three times
per request, which cost more than the rest of a read's bookkeeping. Node figures are read
from the node when /metrics is scraped; nothing here runs between scrapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dynakv.bucket_types import LEVELS
from dynakv.histogram import BATCH_BUCKETS, Histogram

if TYPE_CHECKING:
    from dynakv.core.node import Node
    from dynakv.storage.engine import Engine

# Why tombstone reaping is blocked (reaper.Reaper._blocked), as a bounded label.
BLOCKED_REASONS = {
    "not joined": "not_joined",
    "stopping": "stopping",
    "ownership transfer under way": "transfer",
    "members down": "members_down",
}


def consistency_label(level: object) -> str:
    """A request's R or W as a bounded label: a level name, a count, or "default"."""
    if level is None or level == "":
        return "default"
    if isinstance(level, int) and not isinstance(level, bool) and 0 < level <= 64:
        return str(level)
    if isinstance(level, str) and (level in LEVELS or (level.isdecimal() and 0 < int(level) <= 64)):
        return level
    return "other"  # refused anyway: kept out of the label set, which must stay small


def _histogram(name: str, doc: str, labels: list[str] | None = None) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    family.add_metric(labels, histogram.cumulative(), sum_value=histogram.sum)


class _RequestCollector:
    """Client requests by operation and consistency level, errors by code, and the process's
    own figures: event-loop lag and GC pauses."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        requests = CounterMetricFamily(
            "dynakv_requests", "Client requests served", labels=["op", "consistency"]
        )
        latency = _histogram(
            "dynakv_request_seconds",
            "Client request latency, from arrival to reply",
            ["op", "consistency"],
        )
        for (op, level), stats in sorted(metrics.requests.items()):
            requests.add_metric([op, level], stats.count)
            _add(latency, [op, level], stats)
        errors = CounterMetricFamily(
            "dynakv_request_errors", "Client requests that ended in an error", labels=["op", "code"]
        )
        for (op, code), n in sorted(metrics.errors.items()):
            errors.add_metric([op, code], n)
        lag = _histogram(
            "dynakv_event_loop_lag_seconds",
            "How late the event loop ran a timer (a turn that held the loop that long)",
        )
        _add(lag, [], metrics.loop_lag)
        gc_pauses = _histogram(
            "dynakv_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation (the whole process)",
            ["generation"],
        )
        for generation, stats in sorted(metrics.gc_pauses.items()):
            _add(gc_pauses, [str(generation)], stats)
        yield from (requests, errors, latency, lag, gc_pauses)


class _NodeCollector:
    """What /v1/status knows, read from the node, its engine and its data directory."""

    def __init__(self, node: Node, engine: Engine, data_dir: str, uptime: Callable[[], float]):
        self.node = node
        self.engine = engine
        self.data_dir = data_dir
        self.uptime = uptime

    def collect(self) -> Iterator[Metric]:
        node = self.node
        status: dict[str, Any] = node.status()
        yield from self._counters(node, status)
        yield from self._gauges(node, status)
        yield from self._commits()

    def _counters(self, node: Node, status: dict[str, Any]) -> Iterator[Metric]:
        aae = status["anti_entropy"]
        reaping = status["tombstone_reaping"]
        handoff = status["handoff"]
        for name, doc, value in (
            (
                "dynakv_hints_delivered",
                "Hints their primary acknowledged",
                handoff["hints_delivered"],
            ),
            (
                "dynakv_hints_dropped",
                "Hints dropped (age window or byte budget)",
                status["hints_dropped"],
            ),
            (
                "dynakv_handed_back_keys",
                "Surplus copies handed to their primaries, then deleted",
                handoff["handed_back"],
            ),
            (
                "dynakv_transfer_keys",
                "Keys received by ownership transfers",
                status["transfer_keys_moved"],
            ),
            (
                "dynakv_transfer_bytes",
                "Bytes of objects received by ownership transfers",
                status["transfer_bytes_moved"],
            ),
            ("dynakv_aae_exchanges", "Anti-entropy exchanges finished", aae["exchanges"]),
            (
                "dynakv_aae_exchanges_in_sync",
                "Anti-entropy exchanges that found nothing to repair",
                aae["exchanges_in_sync"],
            ),
            (
                "dynakv_aae_keys_repaired",
                "Keys pushed or pulled by anti-entropy",
                aae["keys_repaired"],
            ),
            (
                "dynakv_aae_trees_built",
                "Merkle trees built (rebuilds count again)",
                aae["tree_builds"],
            ),
            (
                "dynakv_tombstones_scanned",
                "Stored records the tombstone sweep read",
                reaping["scanned"],
            ),
            (
                "dynakv_tombstones_reaped",
                "Tombstones removed after every replica agreed",
                reaping["reaped"],
            ),
            (
                "dynakv_tombstone_checks_refused",
                "Tombstones a replica refused to reap",
                reaping["refused"],
            ),
            (
                "dynakv_tombstone_checks_timed_out",
                "Reaping checks no answer came for in time",
                reaping["timed_out"],
            ),
            (
                "dynakv_corrupt_records",
                "Stored records that failed their checksum",
                status["corrupt_records_found"],
            ),
            (
                "dynakv_background_reductions",
                "Times background work was slowed for foreground p99",
                status["background"]["reductions"],
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)

    def _gauges(self, node: Node, status: dict[str, Any]) -> Iterator[Metric]:
        aae = status["anti_entropy"]
        background = status["background"]
        for name, doc, value in (
            ("dynakv_hints_pending", "Hints held for other nodes", status["hints_pending"]),
            ("dynakv_hint_bytes", "Bytes of hinted objects held", node.hints.bytes),
            (
                "dynakv_transfers_pending",
                "Partitions this node still has to receive",
                status["transfers_pending"],
            ),
            (
                "dynakv_transfers_active",
                "Partition transfers being pulled now",
                len(status["transfers"]),
            ),
            ("dynakv_aae_trees", "Merkle trees held", aae["trees_built"]),
            (
                "dynakv_aae_trees_wanted",
                "Merkle trees this node keeps when all are built",
                aae["trees_wanted"],
            ),
            ("dynakv_keys", "Objects stored (replicas and tombstones)", status["keys"]),
            (
                "dynakv_storage_size_bytes",
                "Size of the files in the data directory",
                self._storage_bytes(),
            ),
            ("dynakv_peers_down", "Members this node counts as down", len(status["down_peers"])),
            (
                "dynakv_partitions_owned",
                "Ring partitions this node owns",
                status["partitions_owned"],
            ),
            ("dynakv_ring_epoch", "Epoch of the installed ring", status["epoch"]),
            (
                "dynakv_pending_requests",
                "Requests this node coordinates now",
                status["pending_requests"],
            ),
            (
                "dynakv_background_share",
                "Share of its budget background work may use (0-1)",
                background["share"],
            ),
            (
                "dynakv_foreground_p99_seconds",
                "Foreground p99 latency admission control last saw",
                background["foreground_p99_ms"] / 1000,
            ),
            ("dynakv_uptime_seconds", "Seconds since the node started", self.uptime()),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        peer_up = GaugeMetricFamily(
            "dynakv_peer_up", "1 if this node counts the member as up, 0 if down", labels=["peer"]
        )
        down = set(status["down_peers"])
        for peer in sorted(node.view.peers()):
            peer_up.add_metric([peer], 0 if peer in down else 1)
        yield peer_up
        blocked = GaugeMetricFamily(
            "dynakv_tombstone_reaping_blocked",
            "1 for the reason tombstone reaping is blocked now (all 0: it may run)",
            labels=["reason"],
        )
        why = status["tombstone_reaping"]["blocked"].split(":")[0]
        for text, reason in BLOCKED_REASONS.items():
            blocked.add_metric([reason], 1 if why == text else 0)
        yield blocked

    def _commits(self) -> Iterator[Metric]:
        stats = self.engine.commit_stats()
        batches = _histogram(
            "dynakv_commit_batch_writes", "Writes per durable group commit (fsync mode)"
        )
        syncs = _histogram(
            "dynakv_fsync_duration_seconds",
            "Time of one durable commit: LMDB's commit with its fsync, or the log's fdatasync",
        )
        if stats is not None:
            _add(batches, [], stats.batch_writes)
            _add(syncs, [], stats.sync_seconds)
        else:  # durability os or none: nothing is synced, the families stay empty
            _add(batches, [], Histogram(BATCH_BUCKETS))
            _add(syncs, [], Histogram())
        yield batches
        yield syncs

    def _storage_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.data_dir):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    continue  # removed meanwhile (a log segment)
        return total


class Metrics:
    """A registry per node (not the global one), so several nodes can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recent: list[float] = []
        self.requests: dict[tuple[str, str], Histogram] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.loop_lag = Histogram()
        self.gc_pauses: dict[int, Histogram] = {generation: Histogram() for generation in range(3)}
        self.registry.register(_RequestCollector(self))

    def watch(self, node: Node, engine: Engine, data_dir: str, uptime: Callable[[], float]) -> None:
        """Report the node's own figures (status, storage, commits) at every scrape."""
        self.registry.register(_NodeCollector(node, engine, data_dir, uptime))

    def take_recent(self) -> list[float]:
        """The latencies observed since the last call (for admission control)."""
        recent, self.recent = self.recent, []
        return recent

    def observe(
        self, op: str, seconds: float, error_code: str | None, consistency: str = "default"
    ) -> None:
        """One client request answered; `consistency` is a consistency_label."""
        if len(self.recent) < 100_000:
            self.recent.append(seconds)
        key = (op, consistency)
        stats = self.requests.get(key)
        if stats is None:
            stats = self.requests[key] = Histogram()
        stats.observe(seconds)
        if error_code is not None:
            errors = (op, error_code)
            self.errors[errors] = self.errors.get(errors, 0) + 1

    def observe_gc(self, generation: int, seconds: float) -> None:
        self.gc_pauses.setdefault(generation, Histogram()).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
