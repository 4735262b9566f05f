"""Three real `dynakv serve` processes on loopback: the behaviour users rely on, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dynakv.errors import SiblingsError
from tests.cluster.harness import RUN_BOTH_WAYS, Client, ProcessCluster, free_port, http

# Each test runs open and secure: a cluster secret, TLS on every port and users (issue 19).
pytestmark = RUN_BOTH_WAYS

CTX = "X-Dynakv-Context"


def test_write_through_one_node_and_read_through_another(cluster: ProcessCluster):
    value = bytes(range(256)) * 40
    put = http("PUT", f"{cluster[0].url}/v1/kv/carts/alice", value)
    assert put.status == 204
    assert put.headers[CTX]
    got = http("GET", f"{cluster[1].url}/v1/kv/carts/alice")
    assert got.status == 200
    assert got.body == value
    assert got.headers[CTX]


def test_blind_concurrent_writes_become_siblings_and_the_merged_context_resolves_them(
    cluster: ProcessCluster,
):
    url = "/v1/kv/carts/bob"
    assert http("PUT", cluster[0].url + url, b"apple").status == 204
    assert http("PUT", cluster[1].url + url, b"pear").status == 204
    got = http("GET", cluster[2].url + url)
    assert got.status == 300
    body = got.json()
    assert len(body["siblings"]) == 2
    resolved = http("PUT", cluster[2].url + url, b"apple,pear", {CTX: body["context"]})
    assert resolved.status == 204
    final = http("GET", cluster[0].url + url)
    assert final.status == 200
    assert final.body == b"apple,pear"


def test_delete_then_get_is_not_found(cluster: ProcessCluster):
    url = "/v1/kv/carts/carol"
    http("PUT", cluster[0].url + url, b"x")
    context = http("GET", cluster[1].url + url).headers[CTX]
    assert http("DELETE", cluster[1].url + url, headers={CTX: context}).status == 204
    gone = http("GET", cluster[2].url + url)
    assert gone.status == 404
    assert gone.json()["error"] == "not_found"
    assert gone.headers.get(CTX)


def test_python_client_resolves_siblings_or_raises(cluster: ProcessCluster):
    with Client(cluster.node_addrs) as client:
        client.put("carts", "dave", b"a")
        with Client(cluster[1].node_addr) as other:
            other.put("carts", "dave", b"b")
        result = client.get("carts", "dave")
        assert sorted(result.values) == [b"a", b"b"]
        try:
            _ = result.value
            raise AssertionError("expected SiblingsError")
        except SiblingsError as exc:
            assert len(exc.values) == 2
        merged = client.get("carts", "dave", resolve=lambda vs: b"+".join(sorted(vs)))
        assert merged.value == b"a+b"
        client.put("carts", "dave", merged.value, context=merged.context)
        assert client.get("carts", "dave", r=3).value == b"a+b"
        assert client.get("carts", "nobody").value is None


def test_a_one_mebibyte_value_round_trips(cluster: ProcessCluster):
    value = b"m" * (1 << 20)
    assert http("PUT", f"{cluster[0].url}/v1/kv/big/one", value).status == 204
    assert http("GET", f"{cluster[2].url}/v1/kv/big/one").body == value


def test_status_cluster_and_metrics_endpoints(cluster: ProcessCluster):
    status = cluster[0].status()
    for field in (
        "name",
        "node_id",
        "partitions_owned",
        "hints_pending",
        "transfers_pending",
        "tombstone_reaping",
        "keys",
    ):
        assert field in status
    view = http("GET", f"{cluster[0].url}/v1/cluster").json()
    assert sorted(m["name"] for m in view["members"]) == ["node1", "node2", "node3"]
    assert all(m["status"] == "up" for m in view["members"])
    assert view["ring"]["size"] == 64
    http("GET", f"{cluster[0].url}/v1/kv/metrics/probe")
    metrics = http("GET", f"{cluster[0].url}/metrics").body.decode()
    assert 'dynakv_requests_total{consistency="default",op="get"}' in metrics
    assert "dynakv_request_seconds_bucket" in metrics
    assert http("GET", f"{cluster[0].url}/").status == 200


def test_cli_put_get_delete_and_cluster_status(cluster: ProcessCluster):
    node = ["--node", cluster[0].node_addr]
    dynakv = [sys.executable, "-m", "dynakv"]
    put = subprocess.run([*dynakv, "put", "cli", "k", "hello", *node], capture_output=True)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([*dynakv, "get", "cli", "k", *node], capture_output=True)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"hello\n"
    assert got.stderr.startswith(b"context: ")
    deleted = subprocess.run([*dynakv, "delete", "cli", "k", *node], capture_output=True)
    assert deleted.returncode == 0, deleted.stderr
    missing = subprocess.run([*dynakv, "get", "cli", "k", *node], capture_output=True)
    assert missing.returncode == 1
    status = subprocess.run(
        [*dynakv, "cluster", "status", *node], capture_output=True, text=True, env=_wide_env()
    )
    assert status.returncode == 0, status.stderr
    for name in ("node1", "node2", "node3"):
        assert name in status.stdout
    assert "up" in status.stdout
    assert "reaped" in status.stdout


def test_cli_get_prints_siblings_like_a_single_value(cluster: ProcessCluster):
    node = ["--node", cluster[0].node_addr]
    dynakv = [sys.executable, "-m", "dynakv"]
    for value in ("apple", "pear"):  # blind writes: siblings
        put = subprocess.run([*dynakv, "put", "cli", "s", value, *node], capture_output=True)
        assert put.returncode == 0, put.stderr
    got = subprocess.run([*dynakv, "get", "cli", "s", *node], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert sorted(got.stdout.splitlines()) == ["YXBwbGU=", "cGVhcg=="]  # base64, a line each
    assert got.stdout.endswith("\n")
    assert "2 siblings" in got.stderr
    assert got.stderr.splitlines()[-1].startswith("context: ")


def test_cli_pointed_at_an_http_port_says_so_at_once(cluster: ProcessCluster):
    """Said at once: well before the client's timeout (60 s given; cluster status's is 10 s),
    which a reader waiting for a frame would reach; a busy machine's slow start is not one."""
    dynakv = [sys.executable, "-m", "dynakv"]
    for command in (["get", "cli", "k"], ["put", "cli", "k", "v"], ["cluster", "status"]):
        args = [*dynakv, *command, "--node", cluster[0].http_addr]
        if command[0] != "cluster":
            args += ["--timeout", "60"]
        started = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert f"{cluster[0].http_addr} answers HTTP" in done.stderr
        assert "Traceback" not in done.stderr
        assert time.monotonic() - started < (30 if command[0] != "cluster" else 9)


def test_cluster_status_fits_80_columns_when_piped_and_speaks_json(cluster: ProcessCluster):
    node = ["--node", cluster[0].node_addr]
    dynakv = [sys.executable, "-m", "dynakv", "cluster"]
    env = {**os.environ, "COLUMNS": "80"}
    status = subprocess.run([*dynakv, "status", *node], capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr
    assert max(len(line.rstrip()) for line in status.stdout.splitlines()) <= 80
    assert "…" not in status.stdout  # nothing cut short
    for member in cluster.nodes:
        assert member.node_addr in status.stdout
    as_json = subprocess.run([*dynakv, "status", "--json", *node], capture_output=True, text=True)
    view = json.loads(as_json.stdout)
    assert sorted(m["name"] for m in view["members"]) == ["node1", "node2", "node3"]
    assert view["member_status"]["node2"]["name"] == "node2"
    ring = subprocess.run([*dynakv, "ring", "--json", *node], capture_output=True, text=True)
    assert len(json.loads(ring.stdout)["owners"]) == 64


@pytest.mark.parametrize("partition", ["64", "-2"])
def test_cluster_repair_checks_the_partition_is_in_the_ring(cluster: ProcessCluster, partition):
    args = [sys.executable, "-m", "dynakv", "cluster", "repair", "--partition", partition]
    done = subprocess.run([*args, "--node", cluster[0].node_addr], capture_output=True, text=True)
    assert done.returncode == 2
    assert "the ring has 64, 0 to 63" in done.stderr
    url = f"{cluster[0].url}/v1/repair?partition={partition}"
    assert http("POST", url, b"").json()["error"] == "invalid_request"


def _wide_env() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "200"}


def test_with_one_node_killed_quorum_writes_and_reads_succeed_and_read_repair_heals_it(
    fresh_cluster: ProcessCluster,
):
    victim = fresh_cluster[2]
    victim.kill(signal.SIGKILL)
    with Client([fresh_cluster[0].node_addr, fresh_cluster[1].node_addr]) as client:
        for i in range(20):
            client.put("repair", f"k{i}", f"v{i}".encode(), w=2)
        for i in range(20):
            assert client.get("repair", f"k{i}", r=2).value == f"v{i}".encode()
    assert http("GET", f"{fresh_cluster[0].url}/v1/replica/repair/k0").status == 200
    victim.start()
    victim.wait_ready()
    fresh_cluster.wait_up(victim.name)
    assert http("GET", f"{victim.url}/v1/replica/repair/k0").status == 404
    with Client(fresh_cluster[0].node_addr) as client:
        for i in range(20):
            assert client.get("repair", f"k{i}", r=3).value == f"v{i}".encode()
    deadline = time.monotonic() + 10
    missing = list(range(20))
    while missing and time.monotonic() < deadline:
        missing = [
            i for i in missing if http("GET", f"{victim.url}/v1/replica/repair/k{i}").status != 200
        ]
        time.sleep(0.1)
    assert missing == []
    replica = http("GET", f"{victim.url}/v1/replica/repair/k3").json()
    assert [s["value_b64"] for s in replica["siblings"]] == ["djM="]


def test_a_node_of_another_cluster_cannot_join(tmp_path, cluster: ProcessCluster):
    stranger = ProcessCluster(tmp_path, 1, extra_args=["--cluster", "elsewhere"])
    try:
        stranger[0].start(join=cluster[0].node_addr)
        assert stranger[0].proc is not None
        assert stranger[0].proc.wait(timeout=30) == 1  # refused: it stops, failed
        view = http("GET", f"{cluster[0].url}/v1/cluster").json()
        assert sorted(m["name"] for m in view["members"]) == ["node1", "node2", "node3"]
        log = stranger[0].log_path.read_text()
        assert "join_refused" in log and "elsewhere" in log
    finally:
        stranger.stop()


@pytest.mark.parametrize(
    ("target", "said"),
    [("http", "not a node port (it answers HTTP)"), ("dead", "unreachable")],
)
def test_a_join_target_that_is_no_node_port_is_logged_at_once(
    tmp_path, cluster: ProcessCluster, target, said
):
    joiner = ProcessCluster(tmp_path, 1)
    joiner[0].name = "node9"
    addr = cluster[0].http_addr if target == "http" else f"127.0.0.1:{free_port()}"
    try:
        joiner[0].start(join=addr)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and said not in joiner[0].log_path.read_text():
            time.sleep(0.1)
        log = joiner[0].log_path.read_text()
        assert f"join_target_unusable addr={addr} problem={said}" in log
    finally:
        joiner.stop()


def test_the_nodes_run_open_or_secure_as_the_module_says(cluster, security):
    """The `security` parameter reaches the nodes: open, each says security and users are
    off; secure, neither (their peers proved the secret, users are on), and every port of
    theirs speaks TLS only."""
    for node in cluster.nodes:
        log = node.log_path.read_text(errors="replace")
        assert ("security_off" in log) == (security == "open"), node.name
        assert ("authentication_off" in log) == (security == "open"), node.name
    assert cluster[0].url.startswith("https://" if security == "secure" else "http://")
    if security == "secure":
        anonymous = http("GET", f"{cluster[0].url}/v1/kv/carts/x", headers={"Authorization": ""})
        assert anonymous.status == 401
