"""`dynakv bench` through the DynamoDB endpoint and the KV HTTP API, and against nodes with
security on (`--secure`, `--user`, `--cacert`): real node processes, a few hundred records
and a few seconds each. Nothing here asserts on speed: only that operations went through,
none failed, and the nodes ran with what the options say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv.bench_secure import LocalSecurity
from dynakv.local_cluster import LocalCluster
from tests.cluster.harness import free_port

SHORT = ["--records", "300", "--duration", "2", "--concurrency", "8", "--no-progress"]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dynakv", "bench", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})}
    )


def report_of(done: subprocess.CompletedProcess[str], path: Path) -> dict:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(path.read_text())


def assert_ran_clean(report: dict, ops: set[str]) -> None:
    """Every record loaded, each operation of the mix done, none failed, every read found
    its record (the load wrote them all)."""
    assert report["load"]["ops"]["insert"]["count"] == report["config"]["records"]
    assert report["load"]["errors"] == {}
    run = report["run"]
    assert run["errors"] == {}
    assert set(run["ops"]) == ops
    for op in run["ops"].values():
        assert op["count"] > 0
        assert op["errors"] == 0
        assert op["not_found"] == 0


def test_bench_through_the_dynamodb_endpoint_of_a_local_cluster(tmp_path: Path) -> None:
    """YCSB-F: PutItem loads, GetItem reads, UpdateItem read-modify-writes."""
    out = tmp_path / "ddb.json"
    done = bench(
        "--local", "3", "--durability", "none", "--api", "dynamodb", "--workload", "f",
        *SHORT, "--json", str(out),
    )  # fmt: skip
    report = report_of(done, out)
    assert report["config"]["api"] == "dynamodb"
    assert report["local"]["dynamodb"] is True
    assert all(":" in addr for addr in report["nodes"])  # the endpoints, not node ports
    assert_ran_clean(report, {"read", "rmw"})
    assert len(report["servers"]) == 3
    assert all(server["cpu_s"] > 0 for server in report["servers"])
    assert "dynamodb API" in done.stdout


def test_bench_query_workload_through_the_dynamodb_endpoint(tmp_path: Path) -> None:
    """YCSB-E: PutItem loads items under partition keys of 50, Queries scan sort-key ranges
    in pages of at most 20 items, 5% PutItem inserts; every scan found what was loaded."""
    out = tmp_path / "query.json"
    done = bench(
        "--local", "1", "--durability", "none", "--api", "dynamodb", "--workload", "e",
        "--items-per-key", "50", "--query-page", "20", *SHORT, "--json", str(out),
    )  # fmt: skip
    report = report_of(done, out)
    assert report["config"]["workload"] == "E"
    assert_ran_clean(report, {"scan", "insert"})
    scans = report["run"]["ops"]["scan"]
    assert scans["items"] > scans["count"]  # scans of 1 to 100 items within keys of 50
    assert scans["pages"] > scans["count"]  # some scans longer than a page of 20
    assert "Query requests" in done.stdout


def test_bench_query_workload_refuses_a_table_without_its_range_key(tmp_path: Path) -> None:
    """A table left by a GetItem workload has no range key: E stops before its load,
    naming the table's key schema, rather than measuring failed requests."""
    cluster = LocalCluster(1, str(tmp_path / "cluster"), durability="none", dynamodb=True)
    try:
        cluster.start()
        args = ["--nodes", cluster.addrs("dynamodb")[0], "--api", "dynamodb", "--bucket", "items"]
        first = bench(
            *args, "--workload", "c", "--records", "20", "--operations", "20", "--no-progress"
        )
        assert first.returncode == 0, first.stdout + first.stderr
        second = bench(*args, "--workload", "e", *SHORT)
        assert second.returncode == 1
        assert "key schema" in second.stderr
        assert "give another --bucket" in second.stderr
    finally:
        cluster.stop()


def test_bench_through_the_kv_http_api(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    done = bench(
        "--local", "1", "--durability", "none", "--api", "http", "--workload", "a",
        *SHORT, "--json", str(out),
    )  # fmt: skip
    report = report_of(done, out)
    assert report["config"]["api"] == "http"
    assert_ran_clean(report, {"read", "update"})


def test_bench_secure_runs_with_secret_tls_and_users(tmp_path: Path) -> None:
    out = tmp_path / "secure.json"
    data = tmp_path / "cluster"
    done = bench(
        "--local", "3", "--durability", "none", "--secure", "--workload", "a",
        "--data-dir", str(data), *SHORT, "--json", str(out),
    )  # fmt: skip
    report = report_of(done, out)
    assert report["local"]["secure"] is True
    assert_ran_clean(report, {"read", "update"})
    assert report["config"]["user"] == "bench-admin"
    assert "password" not in report["config"]
    logs = [(data / f"node{i}.log").read_text() for i in (1, 2, 3)]
    assert not any("security_off" in log for log in logs)
    assert "bootstrap_user" in logs[0]  # the run's admin, made while no user existed
    config = (data / "bench.toml").read_text()
    for setting in ("authentication = true", "cluster_secret_file", "tls_cert", "tls_ca"):
        assert setting in config


@pytest.fixture(scope="module")
def secure_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One node with everything on; its admin's password is the test's to give. The
    failed-login limit is raised: the tests log in wrong, then right, from one address."""
    security = LocalSecurity(failed_login_burst=100_000)
    cluster = LocalCluster(
        1, str(tmp_path_factory.mktemp("secure")), durability="none", security=security
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("api", ["binary", "http"])
def test_bench_user_and_cacert_against_a_secure_node(
    secure_node: LocalCluster, tmp_path: Path, api: str
) -> None:
    """--user with DYNAKV_PASSWORD and --cacert work; a wrong password or none fails the
    bench with the node's refusal named, and the node serves the good run after them."""
    security = secure_node.security
    assert security is not None and secure_node.cacert is not None
    args = [
        "--nodes", secure_node.addrs(api)[0], "--api", api, "--cacert", secure_node.cacert,
        "--bucket", f"b-{api}", *SHORT,
    ]  # fmt: skip
    wrong = bench(*args, "--user", security.user, env={"DYNAKV_PASSWORD": "not-it"})
    assert wrong.returncode == 1
    assert "unauthenticated" in wrong.stderr
    anonymous = bench(*args)
    assert anonymous.returncode == 1
    assert "unauthenticated" in anonymous.stderr
    out = tmp_path / "user.json"
    done = bench(
        *args, "--user", security.user, "--json", str(out),
        env={"DYNAKV_PASSWORD": security.password},
    )  # fmt: skip
    report = report_of(done, out)
    assert report["config"]["user"] == security.user
    assert_ran_clean(report, {"read", "update"})
    assert security.password not in out.read_text()


def test_bench_with_no_dynamodb_endpoint_listening_says_where_it_looked() -> None:
    address = f"127.0.0.1:{free_port()}"
    done = bench("--nodes", address, "--api", "dynamodb", *SHORT)
    assert done.returncode == 1
    assert "DynamoDB endpoint" in done.stderr
    assert address in done.stderr
