"""Anti-entropy with real processes: a node whose data directory was deleted while it was
stopped gets every key back from its peers without any client read; `dynakv cluster
repair` runs a round on demand."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time

from dynakv import Client
from tests.cluster.harness import ProcessCluster, http


def test_a_node_whose_data_directory_was_deleted_is_refilled_by_anti_entropy(tmp_path):
    config = tmp_path / "aae.toml"
    config.write_text("aae_interval = 0.2\naae_concurrency = 4\nread_repair = false\n")
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--config", str(config)])
    try:
        cluster.start()
        # Every tenth value is large (~60 KiB): stored apart, handed on whole (format v2).
        written = {f"k{i}": f"value {i}".encode() * (1 + 7999 * (i % 10 == 0)) for i in range(150)}
        with Client(cluster[0].node_addr) as client:
            for key, value in written.items():
                client.put("aae", key, value, w=3)
        victim = cluster[2]
        victim.stop()
        shutil.rmtree(victim.data_dir)
        victim.start(join=cluster[0].node_addr)
        victim.wait_ready()
        missing = list(written)
        deadline = time.monotonic() + 120
        while missing and time.monotonic() < deadline:
            missing = [
                key
                for key in missing
                if http("GET", f"{victim.url}/v1/replica/aae/{key}").status != 200
            ]
            time.sleep(0.5)
        assert missing == [], f"{len(missing)} keys not restored: {missing[:5]}"
        for key in ["k0", "k70", "k140"]:
            siblings = http("GET", f"{victim.url}/v1/replica/aae/{key}").json()["siblings"]
            assert [base64.b64decode(s["value_b64"]) for s in siblings] == [written[key]]
        status = victim.status()
        assert status["anti_entropy"]["keys_repaired"] > 0 or any(
            n.status()["anti_entropy"]["keys_repaired"] > 0 for n in cluster.nodes
        )
    finally:
        cluster.stop()


def test_cluster_repair_command_reports_its_exchanges(cluster: ProcessCluster):
    with Client(cluster[0].node_addr) as client:
        client.put("aae", "repair-me", b"x")
    result = subprocess.run(
        [sys.executable, "-m", "dynakv", "cluster", "repair", "--node", cluster[0].node_addr],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "exchanges" in result.stdout
    bad = http("POST", f"{cluster[0].url}/v1/repair?partition=99999", b"")
    assert bad.status == 400
    assert bad.json()["error"] == "invalid_request"
