"""What an operator runs a node by: /metrics parsed as Prometheus parses it, and the log's
formats and levels, from real `dynakv serve` processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.harness import NodeProcess, ProcessCluster, free_port, http

# family (as the parser names it: counters without _total) -> its type
FAMILIES = {
    # requests and latency per operation and consistency level, errors by code
    "dynakv_requests": "counter",
    "dynakv_request_seconds": "histogram",
    "dynakv_request_errors": "counter",
    # hints
    "dynakv_hints_pending": "gauge",
    "dynakv_hint_bytes": "gauge",
    "dynakv_hints_delivered": "counter",
    "dynakv_hints_dropped": "counter",
    "dynakv_handed_back_keys": "counter",
    # transfers
    "dynakv_transfers_pending": "gauge",
    "dynakv_transfers_active": "gauge",
    "dynakv_transfer_keys": "counter",
    "dynakv_transfer_bytes": "counter",
    # anti-entropy
    "dynakv_aae_exchanges": "counter",
    "dynakv_aae_exchanges_in_sync": "counter",
    "dynakv_aae_keys_repaired": "counter",
    "dynakv_aae_trees_built": "counter",
    "dynakv_aae_trees": "gauge",
    "dynakv_aae_trees_wanted": "gauge",
    # tombstones
    "dynakv_tombstones_scanned": "counter",
    "dynakv_tombstones_reaped": "counter",
    "dynakv_tombstone_checks_refused": "counter",
    "dynakv_tombstone_checks_timed_out": "counter",
    "dynakv_tombstone_reaping_blocked": "gauge",
    # integrity, peers, size
    "dynakv_corrupt_records": "counter",
    "dynakv_peers_down": "gauge",
    "dynakv_peer_up": "gauge",
    "dynakv_keys": "gauge",
    "dynakv_storage_size_bytes": "gauge",
    "dynakv_partitions_owned": "gauge",
    "dynakv_ring_epoch": "gauge",
    "dynakv_pending_requests": "gauge",
    "dynakv_uptime_seconds": "gauge",
    # admission control
    "dynakv_background_share": "gauge",
    "dynakv_background_reductions": "counter",
    "dynakv_foreground_p99_seconds": "gauge",
    # the disk and the process
    "dynakv_commit_batch_writes": "histogram",
    "dynakv_fsync_duration_seconds": "histogram",
    "dynakv_event_loop_lag_seconds": "histogram",
    "dynakv_gc_pause_seconds": "histogram",
}
# Families measured in a unit must say it in their name (Prometheus: base units).
UNITS = {
    "dynakv_request_seconds": "_seconds",
    "dynakv_hint_bytes": "_bytes",
    "dynakv_transfer_bytes": "_bytes",
    "dynakv_storage_size_bytes": "_bytes",
    "dynakv_uptime_seconds": "_seconds",
    "dynakv_foreground_p99_seconds": "_seconds",
    "dynakv_fsync_duration_seconds": "_seconds",
    "dynakv_event_loop_lag_seconds": "_seconds",
    "dynakv_gc_pause_seconds": "_seconds",
}


def scrape(node: NodeProcess) -> dict:
    text = http("GET", f"{node.url}/metrics").body.decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_has_every_family_with_its_type_and_units(cluster: ProcessCluster):
    url = cluster[0].url
    for i in range(20):
        assert http("PUT", f"{url}/v1/kv/obs/k{i}?w=quorum", b"v").status == 204
        assert http("GET", f"{url}/v1/kv/obs/k{i}").status == 200
    assert http("DELETE", f"{url}/v1/kv/obs/k0?w=2").status == 204
    assert http("PUT", f"{url}/v1/kv/obs/bad?w=9", b"v").status == 400  # w above n
    families = scrape(cluster[0])
    for name, kind in FAMILIES.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)
        assert name.endswith(UNITS.get(name, "")), name
        if kind == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in families[name].samples)
    requests = {
        (s.labels["op"], s.labels["consistency"]): s.value
        for s in families["dynakv_requests"].samples
    }
    assert requests[("put", "quorum")] == 20
    assert requests[("get", "default")] == 20
    assert requests[("delete", "2")] == 1
    errors = {(s.labels["op"], s.labels["code"]) for s in families["dynakv_request_errors"].samples}
    assert ("put", "invalid_request") in errors
    peers = {s.labels["peer"]: s.value for s in families["dynakv_peer_up"].samples}
    assert peers == {"node2": 1.0, "node3": 1.0}
    keys = families["dynakv_keys"].samples[0].value
    assert keys >= 19
    commits = families["dynakv_commit_batch_writes"]
    assert next(s.value for s in commits.samples if s.name.endswith("_count")) > 0
    lag = families["dynakv_event_loop_lag_seconds"]
    assert next(s.value for s in lag.samples if s.name.endswith("_count")) > 0


def _node(tmp_path: Path, *flags: str) -> NodeProcess:
    node = NodeProcess(
        name="lognode",
        data_dir=tmp_path / "data",
        node_addr=f"127.0.0.1:{free_port()}",
        http_addr=f"127.0.0.1:{free_port()}",
        log_path=tmp_path / "node.log",
        extra_args=list(flags),
    )
    return node


def test_json_logs_are_one_object_a_line_naming_the_node(tmp_path: Path):
    node = _node(tmp_path, "--log-format", "json")
    try:
        node.start()
        node.wait_ready()
        http("GET", f"{node.url}/v1/kv/b/missing")
        time.sleep(0.5)
    finally:
        node.stop()
    lines = node.log_path.read_text().splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]
    assert all(entry["node"] == "lognode" for entry in entries)
    events = [entry["event"] for entry in entries]
    assert "node_started" in events and "node_stopped" in events
    started = next(e for e in entries if e["event"] == "node_started")
    assert started["node_addr"] == node.node_addr and started["level"] == "info"


def test_log_level_warning_silences_info(tmp_path: Path):
    node = _node(tmp_path, "--log-level", "warning")
    try:
        node.start()
        node.wait_ready()
        time.sleep(1.0)  # trees are built meanwhile: info progress that must not show
    finally:
        node.stop()
    text = node.log_path.read_text()
    assert "node_started" not in text and "INFO" not in text, text
