"""What the console shows, built from the serving node's membership view and each member's own
report: the per-node load history (request rate and p99 from the request histograms), the
cluster summary, and the alerts an operator must see. Pure: no I/O, no clock (callers pass
`now`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynakv.histogram import Histogram

LOAD_SAMPLES = 150  # kept per node: five minutes at one sample every two seconds


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of observations counted per bucket (not cumulative; one more count than
    bounds: above the last bound), interpolated linearly inside its bucket as Prometheus's
    histogram_quantile does. None when nothing was observed; the last bound when the
    quantile lies above it (there is no upper edge to interpolate to)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index == len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - below) / count
        below += count
    return bounds[-1]


@dataclass(frozen=True)
class LoadSample:
    """A node's client requests between two samples: the rate, the error rate and the p99."""

    t: float  # wall-clock seconds at the end of the interval
    ops_per_s: float
    errors_per_s: float
    p99_ms: float | None  # None: no request in the interval

    def as_json(self) -> dict[str, Any]:
        p99 = None if self.p99_ms is None else round(self.p99_ms, 3)
        return {
            "t": round(self.t, 3),
            "ops_per_s": round(self.ops_per_s, 2),
            "errors_per_s": round(self.errors_per_s, 2),
            "p99_ms": p99,
        }


class LoadHistory:
    """The last LOAD_SAMPLES intervals of a node's request histograms (every operation and
    consistency level merged), as rate and p99: the deltas between two snapshots of the same
    cumulative counters that /metrics renders."""

    def __init__(self, keep: int = LOAD_SAMPLES) -> None:
        self.samples: deque[LoadSample] = deque(maxlen=keep)
        self._last: tuple[float, list[int], int] | None = None  # (t, bucket counts, errors)

    def sample(self, now: float, histograms: Iterable[Histogram], errors: int) -> None:
        """Take a snapshot at `now`; from the second one on, add the interval since the last."""
        bounds: tuple[float, ...] | None = None
        counts: list[int] = []
        for histogram in histograms:
            if bounds is None:
                bounds, counts = histogram.bounds, list(histogram.buckets)
            elif histogram.bounds == bounds:
                counts = [a + b for a, b in zip(counts, histogram.buckets, strict=True)]
        last, self._last = self._last, (now, counts, errors)
        if last is None or now <= last[0]:
            return
        then, before, errors_before = last
        seconds = now - then
        if len(before) < len(counts):
            before = before + [0] * (len(counts) - len(before))
        delta = [max(0, a - b) for a, b in zip(counts, before, strict=True)]
        p99 = quantile(bounds, delta, 0.99) if bounds is not None else None
        self.samples.append(
            LoadSample(
                now,
                sum(delta) / seconds,
                max(0, errors - errors_before) / seconds,
                None if p99 is None else p99 * 1000,
            )
        )

    def as_json(self) -> list[dict[str, Any]]:
        return [s.as_json() for s in self.samples]


def moving_partitions(ring: Mapping[str, Any], next_ring: Mapping[str, Any] | None) -> list[int]:
    """Partitions whose owner the transfer under way changes."""
    if not next_ring:
        return []
    return [
        index
        for index, (now, then) in enumerate(zip(ring["owners"], next_ring["owners"], strict=False))
        if now != then
    ]


def _member(
    member: Mapping[str, Any], report: Mapping[str, Any] | str | None, size: int
) -> dict[str, Any]:
    """One row of the page: the member as the serving node sees it, and what it says of itself
    (or why it could not be asked)."""
    row: dict[str, Any] = {
        "name": member["name"],
        "status": member["status"],
        "datacenter": member.get("datacenter", ""),
        "rack": member.get("rack", ""),
        "node_addr": member["node_addr"],
        "http_addr": member["http_addr"],
        "console_url": f"http://{member['http_addr']}/",
        "partitions": member.get("partitions", 0),
        "share": round(member.get("partitions", 0) / size, 4) if size else 0.0,
        "reachable": isinstance(report, Mapping),
        "error": report if isinstance(report, str) else None,
        "report": None,
        "load": [],
    }
    if isinstance(report, Mapping):
        status = report.get("status") or {}
        reaping = status.get("tombstone_reaping") or {}
        handoff = status.get("handoff") or {}
        row["report"] = {
            "node_id": status.get("node_id"),
            "uptime_seconds": status.get("uptime_seconds"),
            "keys": status.get("keys"),
            "epoch": status.get("epoch"),
            "pending_requests": status.get("pending_requests"),
            "down_peers": status.get("down_peers", []),
            "hints_pending": status.get("hints_pending", 0),
            "hints_delivered": handoff.get("hints_delivered", 0),
            "hints_dropped": status.get("hints_dropped", 0),
            "surplus_in_flight": handoff.get("surplus_in_flight", 0),
            "handed_back": handoff.get("handed_back", 0),
            "transfers_pending": status.get("transfers_pending", 0),
            "transfers": status.get("transfers", []),
            "anti_entropy": status.get("anti_entropy", {}),
            "reaping": {
                "blocked": reaping.get("blocked") or "",
                "reaped": reaping.get("reaped", 0),
                "scanned": reaping.get("scanned", 0),
                "refused": reaping.get("refused", 0),
            },
            "background": status.get("background", {}),
            "corrupt_records_found": status.get("corrupt_records_found", 0),
        }
        row["load"] = list(report.get("load") or [])
    return row


def _alerts(serving: str, rows: list[dict[str, Any]]) -> list[str]:
    """What needs an operator's eye, most urgent first: members down or unreachable, members
    whose view of who is down differs from the serving node's, why reaping waits (one line per
    reason, naming the nodes), corrupt records, dropped hints."""
    alerts: list[str] = []
    down_here = set()
    for row in rows:
        if row["status"] == "removed":
            continue
        if row["status"] == "down":
            down_here.add(row["name"])
            why = f" ({row['error']})" if row["error"] else ""
            alerts.append(f"{row['name']} is down as {serving} sees it{why}")
        elif not row["reachable"]:
            alerts.append(f"{row['name']} did not answer {serving}: {row['error']}")
    waits: dict[str, list[str]] = {}
    for row in rows:
        report = row["report"]
        if report is None:
            continue
        down = [p for p in report["down_peers"] if p != row["name"] and p not in down_here]
        if down:
            alerts.append(f"{row['name']} counts {', '.join(down)} as down")
        if report["reaping"]["blocked"]:
            waits.setdefault(report["reaping"]["blocked"], []).append(row["name"])
    for reason, names in waits.items():
        alerts.append(f"tombstone reaping waits on {', '.join(names)}: {reason}")
    for row in rows:
        report = row["report"]
        if report is not None and report["corrupt_records_found"]:
            alerts.append(f"{row['name']} found {report['corrupt_records_found']} corrupt records")
        if report is not None and report["hints_dropped"]:
            alerts.append(f"{row['name']} dropped {report['hints_dropped']} hints")
    return alerts


def summarize(
    serving: str,
    cluster: Mapping[str, Any],
    reports: Mapping[str, Mapping[str, Any] | str],
    now: float,
) -> dict[str, Any]:
    """The body of GET /v1/console. `cluster` is the serving node's /v1/cluster; `reports`
    maps each member asked to its /v1/console/node answer, or to the reason it gave none
    (a member missing from it was not asked: removed)."""
    size = cluster["ring"]["size"]
    members = sorted(
        cluster["members"], key=lambda m: (m.get("datacenter", ""), m.get("rack", ""), m["name"])
    )
    rows = [_member(m, reports.get(m["name"]), size) for m in members]
    transfers = [
        {"node": row["name"], **transfer}
        for row in rows
        if row["report"] is not None
        for transfer in row["report"]["transfers"]
    ]
    next_ring = cluster.get("next_ring")
    return {
        "serving": serving,
        "generated_at": round(now, 3),
        "cluster": cluster.get("cluster"),
        "epoch": cluster.get("epoch"),
        "claimant": cluster.get("claimant"),
        "ring": {
            "size": size,
            "owners": list(cluster["ring"]["owners"]),
            "next_owners": None if not next_ring else list(next_ring["owners"]),
            "moving": moving_partitions(cluster["ring"], next_ring),
        },
        "replication": cluster.get("replication", {}),
        "transfers_pending": cluster.get("transfers_pending", 0),
        "transfers": transfers,
        "members": rows,
        "alerts": _alerts(serving, rows),
    }
