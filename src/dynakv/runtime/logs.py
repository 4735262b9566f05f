"""A node's log: standard `logging` records that name their node, as text or one JSON object
a line, and the summary that stands for routine background progress.

Never formats a line by hand outside a logging.Formatter; never drops a warning or error.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from dynakv.core.events import Log

LogFormat = Literal["text", "json"]
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s node=%(node)s %(message)s"

# Info events of routine background progress: counted and said once per SUMMARY_INTERVAL
# in a `background_progress` line instead of a line each (a join moves 64 partitions, each
# node builds a Merkle tree per partition it holds). Their warnings and errors stay lines.
ROUTINE = frozenset(
    {"aae_tree_built", "aae_exchange", "transfer_started", "transfer_finished", "tombstones_reaped"}
)
SUMMARY_INTERVAL = 10.0  # s between two background_progress lines (none when idle)


def event_fields(record: logging.LogRecord) -> dict[str, object]:
    """The facts of a record logged with `extra={"fields": {...}}` ({} for others)."""
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class TextFormatter(logging.Formatter):
    """`time LEVEL node=NAME event key=value ...`: the message, then the record's fields."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = event_fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, node, event (the message), then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "node": getattr(record, "node", ""),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in event_fields(record).items():
            entry.setdefault(key, value)  # a field never hides the line's own keys
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class NodeName(logging.Filter):
    """Names the node on every record that does not already name one (aiohttp's, asyncio's):
    a process runs one node, so its name is the handler's default."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "node", None):
            record.node = self.node
        return True


def configure(node: str, level: str = "info", fmt: LogFormat = "text") -> logging.Handler:
    """`dynakv serve`'s logging: one handler on stderr for the root logger, in `fmt`, at
    `level`; the handler, so a test can remove it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(NodeName(node))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


class NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The `dynakv` logger of one node: records carry its name and their fields as extras
    (several nodes may share a process in tests)."""

    def __init__(self, node: str, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("dynakv"), {"node": node})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = {"node": self.extra["node"]} if self.extra else {}  # type: ignore[index]
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs

    def event(self, level: int, event: str, **fields: object) -> None:
        """One event with its facts as fields: `log.event(INFO, "node_started", addr=...)`."""
        self.fields(level, event, fields)

    def fields(self, level: int, event: str, fields: dict[str, object]) -> None:
        """One event with its facts as fields, given as a dict (any key, `level` too)."""
        if self.isEnabledFor(level):
            self.log(level, event, extra={"fields": fields})


@dataclass
class ProgressSummary:
    """Routine background progress of one node, counted between two summary lines. Pure:
    fed Log effects and the time, it answers with the Log to write (if any)."""

    interval: float = SUMMARY_INTERVAL
    counts: dict[str, int] = field(default_factory=dict)
    due: float | None = None  # when the next summary is written; None: nothing counted

    def absorb(self, now: float, effect: Log) -> bool:
        """Count `effect` if it is routine progress (then no line of its own)."""
        if effect.event not in ROUTINE or effect.level != "info":
            return False
        if "problem" in effect.fields:
            return False  # an exchange that failed says why, on a line of its own
        counts = self.counts
        for name, value in _tallies(effect):
            counts[name] = counts.get(name, 0) + value
        if self.due is None:
            self.due = now + self.interval
        return True

    def take(self, now: float, force: bool = False) -> Log | None:
        """The summary line once it is due (or now, with `force`), and start counting anew."""
        if self.due is None or (now < self.due and not force):
            return None
        counts, self.counts, self.due = self.counts, {}, None
        return Log("info", "background_progress", dict(sorted(counts.items())))


def _tallies(effect: Log) -> list[tuple[str, int]]:
    """What one routine event adds to the summary's counts."""
    fields = effect.fields

    def number(name: str) -> int:
        value = fields.get(name, 0)
        return value if isinstance(value, int) else 0

    if effect.event == "aae_tree_built":
        return [("trees_built", 1)]
    if effect.event == "aae_exchange":
        return [
            ("exchanges_repairing", 1),
            ("keys_pushed", number("pushed")),
            ("keys_pulled", number("pulled")),
        ]
    if effect.event == "transfer_started":
        return [("transfers_started", 1)]
    if effect.event == "transfer_finished":
        return [
            ("transfers_finished", 1),
            ("transfer_keys", number("keys")),
            ("transfer_bytes", number("bytes")),
        ]
    return [("tombstones_reaped", number("keys"))]
