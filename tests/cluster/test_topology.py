"""Data centers and racks as real processes see them: each node's place, given on its
command line or in its config file, is gossiped and shown by every node, and a bad one is
refused at start with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cluster.harness import ProcessCluster, free_port, http


def test_every_node_shows_where_each_member_runs(tmp_path):
    cluster = ProcessCluster(tmp_path, 3)
    cluster[1].extra_args = ["--datacenter", "east", "--rack", "r2"]
    (tmp_path / "node3.toml").write_text('datacenter = "west"\nrack = "r3"\n')
    cluster[2].extra_args = ["--config", str(tmp_path / "node3.toml")]
    try:
        cluster.start()
        want = {"node1": ("dc1", "rack1"), "node2": ("east", "r2"), "node3": ("west", "r3")}
        for node in cluster.nodes:
            view = http("GET", f"{node.url}/v1/cluster").json()
            places = {m["name"]: (m["datacenter"], m["rack"]) for m in view["members"]}
            assert places == want, node.name
        status = subprocess.run(
            [sys.executable, "-m", "dynakv", "cluster", "status", "--node", cluster[0].node_addr],
            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        rows = [next(i for i, line in enumerate(lines) if name in line) for name in want]
        assert "east" in lines[rows[1]] and "west" in lines[rows[2]]
        assert rows[0] < rows[1] < rows[2]  # grouped by data center: dc1, east, west
    finally:
        cluster.stop()


def test_a_bad_datacenter_is_refused_at_start(tmp_path):
    port = free_port()
    result = subprocess.run(
        [
            sys.executable, "-m", "dynakv", "serve", "--name", "n1", "--data-dir",
            str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}", "--http",
            f"127.0.0.1:{free_port()}", "--datacenter", "east coast",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "invalid datacenter 'east coast'" in result.stderr
