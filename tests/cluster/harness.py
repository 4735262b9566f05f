"""Real `dynakv serve` processes on loopback for integration tests: start, kill, restart.

Every process is started by this harness and stopped by PID on teardown, even on failure.
Ports are found free on 127.0.0.1 at start.

In the secure mode (secure_mode.py; conftest's `security` fixture turns it on) every node
started here gets a cluster secret, TLS and users in its config, and `http`, `Client`,
`AsyncClient` and the nodes' URLs use the CA and the admin's credentials by themselves.

``DYNAKV_TEST_ENGINE=wal`` (or ``lmdb``) runs every node so started on that storage engine,
through a config file, unless the test passes a ``--config`` of its own (the nemesis adds
the engine to its own). Unset, nodes run on the default engine, as before.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import dynakv
from dynakv.processes import stop_processes
from tests.cluster import secure_mode

# The storage engine of the nodes (README, Configuration: engine), or None: the default.
TEST_ENGINE = os.environ.get("DYNAKV_TEST_ENGINE") or None
# The modes a test module runs under (conftest's `security` fixture): "open" (as `make
# run`), "secret" (peers prove a cluster secret; clients change nothing) and "secure" (the
# secret, TLS on every port and users on: secure_mode.py). `RUN_BOTH_WAYS` is the module mark
# that runs each of its tests open and secure; the peer-auth tests cover the secret alone.
SECURITY = ("open", "secure")
RUN_BOTH_WAYS = [
    pytest.mark.usefixtures("security"),
    pytest.mark.parametrize("security", SECURITY, indirect=True, scope="module"),
]


def engine_setting() -> str:
    """A config file line choosing TEST_ENGINE, or nothing."""
    return f'engine = "{TEST_ENGINE}"\n' if TEST_ENGINE else ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port such that base+1 .. base+count are all free right now."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for offset in range(1, count + 1):
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port block found")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Until `condition()` holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    context: ssl.SSLContext | None = None,  # https: checks the node against its CA
) -> HttpReply:
    """One request; in the secure mode as its admin, and an https URL checked against its
    CA unless `context` says otherwise."""
    headers = dict(headers or {})
    mode = secure_mode.current()
    if mode is not None:
        if not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = mode.authorization()
        if context is None and url.startswith("https://"):
            context = mode.ssl_context()
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            return HttpReply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, dict(exc.headers), exc.read())


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    node_addr: str
    http_addr: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    # the command before `serve`; it must exec (not fork) so proc.pid is the node itself
    launcher: list[str] = field(default_factory=lambda: [sys.executable, "-m", "dynakv"])
    ca_file: str | None = None  # the CA of its certificate, when its config turns TLS on
    founding: bool = field(default=False, init=False)  # started without --join

    def __post_init__(self) -> None:
        mode = secure_mode.current()
        if mode is not None and self.ca_file is None:
            self.ca_file = mode.ca

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://{self.http_addr}"

    @property
    def tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def start(self, join: str | None = None) -> None:
        args = [
            *self.launcher, "serve",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen", self.node_addr,
            "--http", self.http_addr,
            *self.extra_args,
        ]  # fmt: skip
        if join:
            args += ["--join", join]
        self.founding = not join
        args = self._with_test_settings(args)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _with_test_settings(self, args: list[str]) -> list[str]:
        """`args` with a config adding TEST_ENGINE and the secure mode's [security] table to
        the test's own config (if any); unchanged when neither applies. A test config with a
        [security] table of its own keeps it: that test sets its security itself."""
        mode = secure_mode.current()
        given = args.index("--config") + 1 if "--config" in args else None
        text = Path(args[given]).read_text() if given is not None else engine_setting()
        if mode is not None and "security" not in tomllib.loads(text):
            text = text.rstrip("\n") + "\n" + mode.security_table(self.name)
        elif given is not None or not TEST_ENGINE:
            return args
        config = self.log_path.with_suffix(".test.toml")
        config.write_text(text)
        if given is None:
            return [*args, "--config", str(config)]
        return [*args[:given], str(config), *args[given + 1 :]]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the node answers its status (in the secure mode, to the admin, whom a node
        founding a cluster gets by the bootstrap rule first); fails at once if it exits."""
        deadline = time.monotonic() + timeout
        mode = secure_mode.current()
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                reply = http("GET", f"{self.url}/v1/status", context=self.tls)
                if reply.status == 200:
                    return
                if mode and self.founding and reply.status == 401 and self._has_no_users():
                    secure_mode.bootstrap_admin(self.node_addr, mode)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready: {self.log_path.read_text()[-2000:]}")

    def _has_no_users(self) -> bool:
        """Whether the node says, to a request without credentials, that its cluster has
        no user yet (access.BOOTSTRAP_HINT)."""
        anonymous = {"Authorization": ""}
        reply = http("GET", f"{self.url}/v1/status", headers=anonymous, context=self.tls)
        return b"no users yet" in reply.body

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(timeout=20)

    def stop(self) -> None:
        stop_processes([self.proc], timeout=10)

    def status(self) -> dict:
        return http("GET", f"{self.url}/v1/status", context=self.tls).json()


def local_node(root: Path, name: str, extra_args: list[str] | None = None) -> NodeProcess:
    """A node named `name` on free loopback ports, its data and log under `root`."""
    return NodeProcess(
        name=name,
        data_dir=root / name,
        node_addr=f"127.0.0.1:{free_port()}",
        http_addr=f"127.0.0.1:{free_port()}",
        log_path=root / f"{name}.log",
        extra_args=list(extra_args or []),
    )


def _in_mode(options: dict[str, Any]) -> dict[str, Any]:
    """A client's keyword arguments with, in the secure mode, its CA and the admin's
    credentials unless given."""
    mode = secure_mode.current()
    return options if mode is None else {**mode.client_settings(), **options}


class Client(dynakv.Client):
    """dynakv.Client that, in the secure mode, uses its CA and the admin's credentials."""

    def __init__(
        self, nodes: str | Sequence[str] = "127.0.0.1:7001", timeout: float = 10.0, **options: Any
    ) -> None:
        super().__init__(nodes, timeout, **_in_mode(options))


class AsyncClient(dynakv.AsyncClient):
    """dynakv.AsyncClient that, in the secure mode, uses its CA and the admin's credentials."""

    def __init__(
        self, nodes: str | Sequence[str] = "127.0.0.1:7001", timeout: float = 10.0, **options: Any
    ) -> None:
        super().__init__(nodes, timeout, **_in_mode(options))


def put_many(nodes: list[str], bucket: str, keys: list[str], value: bytes) -> None:
    """Write every key of `keys` with `value`, 64 writes in flight: a data set in seconds."""

    async def run() -> None:
        slots = asyncio.Semaphore(64)
        async with AsyncClient(nodes) as client:

            async def put(key: str) -> None:
                async with slots:
                    await client.put(bucket, key, value)

            await asyncio.gather(*(put(key) for key in keys))

    asyncio.run(run())


class ProcessCluster:
    """N nodes named node1..nodeN; node1 founds the cluster, the others join through it."""

    def __init__(self, root: Path, size: int, extra_args: list[str] | None = None) -> None:
        self.nodes = [local_node(root, f"node{i}", extra_args) for i in range(1, size + 1)]

    def __getitem__(self, index: int) -> NodeProcess:
        return self.nodes[index]

    @property
    def node_addrs(self) -> list[str]:
        return [n.node_addr for n in self.nodes]

    def start(self) -> None:
        first = self.nodes[0]
        first.start()
        first.wait_ready()
        for node in self.nodes[1:]:
            node.start(join=first.node_addr)
            node.wait_ready()
        self.wait_members(len(self.nodes))

    def wait_members(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        views: list[dict] = []
        while time.monotonic() < deadline:
            views = [
                http("GET", f"{n.url}/v1/cluster", context=n.tls).json()
                for n in self.nodes
                if n.proc
            ]
            if (
                all(len(v["members"]) == count for v in views)
                and all(m["status"] == "up" for v in views for m in v["members"])
                and all(v["next_ring"] is None for v in views)
                and len({json.dumps(v["ring"]) for v in views}) == 1
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"cluster did not converge on its membership of {count} in {timeout:.0f} s\n"
            + self.describe(views)
        )

    def describe(self, views: list[dict]) -> str:
        """What each node last said about the cluster, and the tail of its log: for failures."""
        lines = []
        for node, view in zip([n for n in self.nodes if n.proc], views, strict=False):
            members = [(m["name"], m["status"]) for m in view.get("members", [])]
            moving = view.get("next_ring") is not None
            lines.append(
                f"{node.name}: epoch={view.get('epoch')} members={members} "
                f"transfer={moving} pending={view.get('transfers_pending')}"
            )
        for node in self.nodes:
            if node.log_path.exists():
                tail = node.log_path.read_text(errors="replace").splitlines()[-15:]
                lines.append(f"--- {node.name} log tail ---")
                lines.extend(tail)
        return "\n".join(lines)

    def wait_up(self, name: str, timeout: float = 30.0) -> None:
        """Until every running node sees `name` as up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = [
                http("GET", f"{n.url}/v1/cluster", context=n.tls).json()
                for n in self.nodes
                if n.proc and n.proc.poll() is None
            ]
            if all(m["status"] == "up" for v in views for m in v["members"] if m["name"] == name):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not seen up by every node")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
