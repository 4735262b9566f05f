"""The node's log: routine progress summarised, warnings kept, formats that name the node."""

from __future__ import annotations

import io
import json
import logging

from dynakv.core.events import Log
from dynakv.runtime.logs import JsonFormatter, NodeLog, NodeName, ProgressSummary, TextFormatter


def test_routine_progress_becomes_one_summary_line_when_due():
    summary = ProgressSummary(interval=10.0)
    assert summary.absorb(0.0, Log("info", "aae_tree_built", {"partition": 3}))
    assert summary.absorb(1.0, Log("info", "transfer_started", {"partition": 3, "sources": []}))
    finished = Log("info", "transfer_finished", {"partition": 3, "keys": 5, "bytes": 80})
    assert summary.absorb(2.0, finished)
    assert summary.take(9.0) is None  # not due yet
    line = summary.take(10.0)
    assert line == Log(
        "info",
        "background_progress",
        {
            "transfer_bytes": 80,
            "transfer_keys": 5,
            "transfers_finished": 1,
            "transfers_started": 1,
            "trees_built": 1,
        },
    )
    assert summary.take(100.0) is None  # nothing counted since: no line


def test_warnings_errors_and_failed_exchanges_keep_their_own_lines():
    summary = ProgressSummary()
    assert not summary.absorb(0.0, Log("warning", "peer_unreachable", {"peer": "n2"}))
    assert not summary.absorb(0.0, Log("error", "corrupt_transfer_record", {"error": "x"}))
    failed = {"partition": 1, "peer": "n2", "pushed": 0, "pulled": 0, "problem": "timeout"}
    assert not summary.absorb(0.0, Log("info", "aae_exchange", failed))
    assert not summary.absorb(0.0, Log("info", "member_joining", {"name": "n3"}))
    assert summary.take(0.0, force=True) is None


def _logger(formatter: logging.Formatter) -> tuple[NodeLog, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(NodeName("process-node"))
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"dynakv.test.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return NodeLog("n1", logger), stream


def test_json_lines_name_the_node_and_carry_the_fields():
    log, stream = _logger(JsonFormatter())
    log.event(logging.INFO, "member_joining", name="n3", addr="127.0.0.1:7003")
    log.fields(logging.WARNING, "odd", {"level": "a field named level", "node": "not me"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["node"] == "n1" and first["event"] == "member_joining"
    assert first["name"] == "n3" and first["level"] == "info"
    assert second["level"] == "warning" and second["node"] == "n1"  # fields never hide these


def test_text_lines_name_the_node_then_the_event_and_its_fields():
    log, stream = _logger(TextFormatter("%(levelname)s node=%(node)s %(message)s"))
    log.event(logging.INFO, "transfer_planned", moves=64)
    log.logger.info("a line from elsewhere")  # no adapter: the handler names the process's
    lines = stream.getvalue().splitlines()
    assert lines == [
        "INFO node=n1 transfer_planned moves=64",
        "INFO node=process-node a line from elsewhere",
    ]
