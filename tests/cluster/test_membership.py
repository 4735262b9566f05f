"""Membership changes of real processes under write load: a node joins, one leaves, one is
SIGKILLed and removed, while clients keep writing. No acknowledged write may be lost and
ownership must end balanced within one partition."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from dynakv.errors import DynakvError
from tests.cluster.harness import (
    SECURITY,
    AsyncClient,
    Client,
    NodeProcess,
    ProcessCluster,
    free_port,
    http,
)

# The nodes run open or secure (a cluster secret, TLS on every port and users: issue 19).
pytestmark = pytest.mark.usefixtures("security")

# The issue asks for a 60-second load: `make test-long` runs that, open and secure. `make
# test` runs the same sequence secure, with the load lasting as long as the membership changes
# take (at least LOAD_SECONDS); open, a join is also shown by test_console.py and a leave by
# test_dev_cluster.py, and the restart below runs both ways.
LOAD_SECONDS = float(os.environ.get("DYNAKV_MEMBERSHIP_LOAD_SECONDS", "5"))


class Writers:
    """Background clients writing unique keys; remembers which writes were acknowledged."""

    def __init__(self, addrs: list[str], concurrency: int = 8) -> None:
        self.addrs = addrs
        self.concurrency = concurrency
        self.acked: dict[str, bytes] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        await asyncio.gather(*(self._writer(i) for i in range(self.concurrency)))

    async def _writer(self, index: int) -> None:
        addrs = self.addrs[index % len(self.addrs) :] + self.addrs[: index % len(self.addrs)]
        client = AsyncClient(addrs, timeout=10)
        n = 0
        while not self._stop.is_set():
            key, value = f"w{index}-{n}", f"value {index} {n}".encode()
            n += 1
            try:
                await client.put("load", key, value)
            except DynakvError:
                self.errors += 1
                await asyncio.sleep(0.05)
                continue
            self.acked[key] = value
        await client.close()


def _view(node: NodeProcess) -> dict:
    return http("GET", f"{node.url}/v1/cluster").json()


def wait_settled(nodes: list[NodeProcess], names: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            views = [_view(n) for n in nodes]
        except OSError:
            views = []
        if views and all(
            {m["name"] for m in v["members"] if m["status"] == "up"} == names
            and v["next_ring"] is None
            and set(v["ring"]["owners"]) == names
            for v in views
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"cluster did not settle on {sorted(names)}: {views!r}")


@pytest.mark.parametrize(
    ("security", "load_seconds"),
    [
        pytest.param("secure", LOAD_SECONDS, id=f"secure-{LOAD_SECONDS:g}s"),
        pytest.param("open", 60.0, marks=pytest.mark.long, id="open-60s"),
        pytest.param("secure", 60.0, marks=pytest.mark.long, id="secure-60s"),
    ],
    indirect=["security"],
    scope="module",
)
def test_join_leave_and_remove_under_write_load_lose_nothing(tmp_path, load_seconds: float):
    cluster = ProcessCluster(tmp_path, 4)
    joiner = NodeProcess(
        "node5",
        tmp_path / "node5",
        f"127.0.0.1:{free_port()}",
        f"127.0.0.1:{free_port()}",
        tmp_path / "node5.log",
    )
    writers = None
    try:
        cluster.start()
        n1, n2, n3, n4 = cluster.nodes
        started = time.monotonic()
        writers = Writers([n1.node_addr, n4.node_addr])
        writers.start()
        time.sleep(2)

        joiner.start(join=n1.node_addr)
        joiner.wait_ready()
        wait_settled([n1, n2, n3, n4, joiner], {"node1", "node2", "node3", "node4", "node5"})

        with Client(n1.node_addr) as admin:
            admin.cluster_change("leave", "node2")
        assert n2.proc is not None
        n2.proc.wait(timeout=120)  # a leaving node stops by itself once its data has moved
        wait_settled([n1, n3, n4, joiner], {"node1", "node3", "node4", "node5"})

        n3.kill(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = {m["name"]: m["status"] for m in _view(n1)["members"]}
            if statuses["node3"] == "down":
                break
            time.sleep(0.2)
        with Client(n1.node_addr) as admin:
            admin.cluster_change("remove", "node3")
        wait_settled([n1, n4, joiner], {"node1", "node4", "node5"})

        remaining = load_seconds - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        writers.stop()
        acked = dict(writers.acked)
        elapsed = time.monotonic() - started
        print(f"load {elapsed:.0f}s: {len(acked)} writes acknowledged, {writers.errors} errors")
        assert len(acked) > 100

        owners = _view(n1)["ring"]["owners"]
        counts = [owners.count(name) for name in ("node1", "node4", "node5")]
        assert max(counts) - min(counts) <= 1

        lost = []
        with Client([n1.node_addr, n4.node_addr, joiner.node_addr]) as client:
            for key, value in acked.items():
                if client.get("load", key).values != [value]:
                    lost.append(key)
        assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:10]}"
    finally:
        if writers is not None:
            writers.stop()
        joiner.stop()
        cluster.stop()


@pytest.mark.parametrize("security", SECURITY, indirect=True, scope="module")
def test_a_whole_cluster_restart_keeps_ring_and_data(fresh_cluster):
    written = {f"r{i}": f"value {i}".encode() for i in range(50)}
    with Client(fresh_cluster[0].node_addr) as client:
        for key, value in written.items():
            client.put("restart", key, value)
    ring = _view(fresh_cluster[0])["ring"]
    for node in fresh_cluster.nodes:
        node.kill(signal.SIGKILL)
    for node in fresh_cluster.nodes:
        node.start()
    for node in fresh_cluster.nodes:
        node.wait_ready()
    fresh_cluster.wait_members(3)
    assert all(_view(node)["ring"] == ring for node in fresh_cluster.nodes)
    with Client([n.node_addr for n in fresh_cluster.nodes]) as client:
        for key, value in written.items():
            assert client.get("restart", key).value == value
