"""`dynakv dev-cluster`: the local cluster of `make run`, its nodes started, watched and
stopped by one process. Runs once: dev-cluster has no security settings of its own, so the
security modes of test_cluster.py would change nothing here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.harness import http


def test_dev_cluster_starts_three_nodes_in_two_datacenters_and_stops_them_on_sigint(tmp_path):
    from tests.cluster.harness import free_port_block

    base, base_http = free_port_block(3), free_port_block(3)
    args = [
        sys.executable, "-m", "dynakv", "dev-cluster", "--nodes", "3",
        "--data-dir", str(tmp_path / "data"),
        "--base-port", str(base), "--base-http-port", str(base_http), "--datacenters", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        output = b""
        assert proc.stdout is not None
        while b"cluster of 3 up" not in output and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output += line
        assert b"cluster of 3 up" in output, output.decode()
        view = http("GET", f"http://127.0.0.1:{base_http + 1}/v1/cluster").json()
        places = {m["name"]: (m["datacenter"], m["rack"]) for m in view["members"]}
        assert places == {
            "node1": ("dc1", "rack1"), "node2": ("dc2", "rack2"), "node3": ("dc1", "rack3"),
        }  # fmt: skip
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert b"all nodes stopped" in rest
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


class _DevCluster:
    """`dynakv dev-cluster` in the background; its output read line by line."""

    def __init__(self, data: Path, base: int, base_http: int) -> None:
        args = [
            sys.executable, "-m", "dynakv", "dev-cluster", "--nodes", "3",
            "--data-dir", str(data), "--base-port", str(base), "--base-http-port", str(base_http),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.nodes: list[int] = []
        self.output = ""

    def wait_for(self, text: str, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output += line.decode(errors="replace")
            self.nodes = sorted(set(self.nodes) | set(_children(self.proc.pid)))
        assert text in self.output, self.output
        return self.output

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.nodes:  # any node it left behind (it stops them; this is a guard)
            _stop_pid(pid)

    def node_pid(self, name: str) -> int:
        for pid in _children(self.proc.pid):
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if f"\0--name\0{name}\0".encode() in handle.read():
                    return pid
        raise AssertionError(f"{name} is not running")


def _stop_pid(pid: int) -> None:
    """Stop a node that dev-cluster started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def test_dev_cluster_keeps_serving_when_a_node_dies_or_leaves_and_starts_again_after(tmp_path):
    from tests.cluster.harness import free_port_block

    base, base_http = free_port_block(3), free_port_block(3)
    url = f"http://127.0.0.1:{base_http + 1}"
    dev = _DevCluster(tmp_path / "data", base, base_http)
    try:
        dev.wait_for("cluster of 3 up")
        leave = subprocess.run(
            [sys.executable, "-m", "dynakv", "cluster", "leave", "node3",
             "--node", f"127.0.0.1:{base + 1}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert leave.returncode == 0, leave.stderr
        dev.wait_for("node3 exited: stopped (code 0", timeout=120)
        assert http("PUT", f"{url}/v1/kv/dev/k", b"v").status == 204
        os.kill(dev.node_pid("node2"), signal.SIGKILL)
        dev.wait_for("node2 exited: killed by SIGKILL; still serving: node1")
        assert dev.proc.poll() is None
        assert http("GET", f"{url}/v1/kv/dev/k?r=1").body == b"v"  # node1 still serves
    finally:
        dev.stop()
    again = _DevCluster(tmp_path / "data", base, base_http)
    try:
        output = again.wait_for("cluster of 2 up")
        assert "node3 did not start: failed with code 1" in output
        assert http("GET", f"{url}/v1/kv/dev/k").body == b"v"
    finally:
        again.stop()
