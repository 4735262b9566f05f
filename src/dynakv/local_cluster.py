"""`LocalCluster`: `dynakv serve` processes on free loopback ports for `dynakv bench --local`
and the benchmarks, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynakv.processes import stop_processes

if TYPE_CHECKING:
    from dynakv.bench_secure import LocalSecurity

# --- a local cluster ----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _get_json(url: str, cacert: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """GET a node's JSON over http, or https checked against `cacert` when given."""
    context = None
    if cacert:
        url = url.replace("http://", "https://", 1)
        context = ssl.create_default_context(cafile=cacert)
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return json.load(response)


@dataclass
class LocalNode:
    name: str
    node_addr: str
    http_addr: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    dynamodb_addr: str | None = None
    cpu_mark: float = 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, from /proc (0 where unavailable)."""
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return 0.0
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def check_settings(settings: dict[str, str]) -> dict[str, str]:
    """Node settings for a local cluster: NodeConfig fields with TOML values, e.g.
    {"anti_entropy": "false"}; ValueError naming what is wrong."""
    import tomllib
    from dataclasses import fields

    from dynakv.config import NodeConfig

    known = {f.name for f in fields(NodeConfig)} - {"name", "data_dir", "node_addr", "http_addr"}
    for key, value in settings.items():
        if key not in known:
            raise ValueError(f"unknown node setting {key!r}")
        try:
            tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"node setting {key}={value}: not a TOML value ({exc})") from exc
    return settings


class LocalCluster:
    """`count` `dynakv serve` processes on free loopback ports, stopped by PID."""

    def __init__(
        self,
        count: int,
        data_dir: str | None = None,
        durability: str = "fsync",
        n: int | None = None,
        r: int | None = None,
        w: int | None = None,
        settings: dict[str, str] | None = None,
        cacert: str | None = None,  # TLS on (a `security` setting): the CA of the nodes
        dynamodb: bool = False,  # each node serves the DynamoDB endpoint too
        security: LocalSecurity | None = None,  # --secure: secret, TLS, users (bench_secure)
    ) -> None:
        if count < 1:
            raise ValueError("a local cluster needs at least one node")
        self.settings = check_settings(settings or {})
        self.security = security
        self.cacert = cacert  # with `security`, its CA once start() has made it
        self.dynamodb = dynamodb
        self.count = count
        self.n = n if n is not None else min(3, count)
        self.r = r if r is not None else self.n // 2 + 1
        self.w = w if w is not None else self.n // 2 + 1
        if not 1 <= self.n <= count:
            raise ValueError(f"--n must be between 1 and the node count {count}")
        if not (1 <= self.r <= self.n and 1 <= self.w <= self.n):
            raise ValueError(f"--r and --w must be between 1 and n={self.n}")
        self.durability = durability
        self._own_dir = data_dir is None
        self.root = Path(data_dir or tempfile.mkdtemp(prefix="dynakv-bench-"))
        self.nodes: list[LocalNode] = []

    @property
    def node_addrs(self) -> tuple[str, ...]:
        return tuple(node.node_addr for node in self.nodes)

    def addrs(self, api: str) -> tuple[str, ...]:
        """The nodes' addresses for a client of `api` (binary, dynamodb or http)."""
        if api == "dynamodb":
            return tuple(node.dynamodb_addr or "" for node in self.nodes)
        if api == "http":
            return tuple(node.http_addr for node in self.nodes)
        return self.node_addrs

    def client_settings(self) -> dict[str, Any]:
        """What a client needs beyond the addresses: the CA and a user, with --secure."""
        if self.security is None:
            return {}
        return {
            "cacert": self.cacert,
            "user": self.security.user,
            "password": self.security.password,
        }

    def _headers(self) -> dict[str, str]:
        return self.security.headers() if self.security is not None else {}

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": self.count,
            "durability": self.durability,
            "n": self.n,
            "r": self.r,
            "w": self.w,
            "data_dir": None if self._own_dir else str(self.root),
            "settings": dict(self.settings),
            "secure": self.security is not None,
            "dynamodb": self.dynamodb,
        }

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "bench.toml"
        extra = "".join(f"{key} = {value}\n" for key, value in self.settings.items())
        secure = ""
        if self.security is not None:
            secure = self.security.prepare(self.root)
            self.cacert = self.security.cacert
        config.write_text(
            f'cluster = "bench"\ndurability = "{self.durability}"\n{extra}'
            f"[defaults]\nn = {self.n}\nr = {self.r}\nw = {self.w}\n{secure}"
        )
        for i in range(1, self.count + 1):
            node = LocalNode(
                f"node{i}",
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
                self.root / f"node{i}.log",
            )
            args = [
                sys.executable, "-m", "dynakv", "serve",
                "--name", node.name,
                "--data-dir", str(self.root / node.name),
                "--listen", node.node_addr,
                "--http", node.http_addr,
                "--config", str(config),
            ]  # fmt: skip
            if self.dynamodb:
                node.dynamodb_addr = f"127.0.0.1:{free_port()}"
                args += ["--dynamodb", node.dynamodb_addr]
            if self.nodes:
                args += ["--join", self.nodes[0].node_addr]
            with open(node.log, "ab") as log:
                # A session of its own: Ctrl-C reaches only us, and we stop it by PID.
                node.proc = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.nodes.append(node)
            self._wait_ready(node)
            if self.security is not None and len(self.nodes) == 1:
                self.security.add_admin(node.node_addr)  # the bootstrap rule: no user yet
        self._wait_converged()

    def _wait_ready(self, node: LocalNode, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert node.proc is not None
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {self._tail(node)}")
            with contextlib.suppress(OSError, ValueError):
                try:
                    _get_json(f"http://{node.http_addr}/v1/status", self.cacert)
                except urllib.error.HTTPError as exc:
                    if exc.code != 401:  # authentication on: a 401 is an answer
                        raise
                if node.dynamodb_addr:  # its endpoint may open after the HTTP port
                    host, _, port = node.dynamodb_addr.rpartition(":")
                    socket.create_connection((host, int(port)), timeout=2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{node.name} did not start: {self._tail(node)}")

    def _wait_converged(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                views = [
                    _get_json(f"http://{n.http_addr}/v1/cluster", self.cacert, self._headers())
                    for n in self.nodes
                ]
                if all(len(v["members"]) == self.count for v in views) and (
                    len({json.dumps(v["ring"], sort_keys=True) for v in views}) == 1
                ):
                    return
            time.sleep(0.1)
        raise RuntimeError("the local cluster did not agree on its membership in time")

    @staticmethod
    def _tail(node: LocalNode) -> str:
        try:
            return node.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def mark_cpu(self) -> None:
        for node in self.nodes:
            node.cpu_mark = node.cpu_seconds()

    def usage(self, elapsed: float) -> list[dict[str, Any]]:
        """CPU since mark_cpu and resident memory, per node."""
        out = []
        for node in self.nodes:
            cpu = node.cpu_seconds() - node.cpu_mark
            out.append(
                {
                    "name": node.name,
                    "pid": node.proc.pid if node.proc else None,
                    "cpu_s": round(cpu, 3),
                    "cpu_cores": round(cpu / elapsed, 3) if elapsed > 0 else 0.0,
                    "rss_mb": round(node.rss_mb(), 1),
                }
            )
        return out

    def stop(self) -> None:
        stop_processes(node.proc for node in self.nodes)
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)
