"""The node process composed in runtime/process.py: the server, then its front ends, stopped
in reverse; and the front ends reach the server only through frontend.ServerApi."""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from dynakv.bucket_types import ResolvedProps
from dynakv.config import NodeConfig
from dynakv.messages import Message, PutResult
from dynakv.runtime import frontend
from dynakv.runtime.gatekeeper import Gatekeeper
from dynakv.runtime.metrics import Metrics
from dynakv.runtime.process import CannotListen, running
from dynakv.runtime.resp import RespFrontend
from tests.cluster.harness import free_port

RUNTIME = Path(frontend.__file__).parent
FRONT_ENDS = ("http.py", "resp.py", "resp_commands.py", "resp_protocol.py")
ADDRS = ("node_addr", "http_addr", "resp_addr")


async def _resp(addr: str, command: bytes) -> bytes:
    host, _, port = addr.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(command)
        first = await reader.readline()
        if not first.startswith(b"$"):
            return first
        return await reader.readexactly(int(first[1:]) + 2)
    finally:
        writer.close()


def test_a_node_process_serves_http_and_resp_and_closes_them_on_leaving():
    async def scenario() -> None:
        addrs = {field: f"127.0.0.1:{free_port()}" for field in ADDRS}
        config = NodeConfig(name="n1", engine="memory", **addrs)
        async with running(config) as server, aiohttp.ClientSession() as http:
            assert await _resp(config.resp_addr or "", b"SET k v\r\n") == b"+OK\r\n"
            async with http.get(f"http://{config.http_addr}/v1/status") as reply:
                status = await reply.json()
            assert status["name"] == "n1"
            assert status["keys"] == 1
            assert status["http_addr"] == config.http_addr
            async with http.get(f"http://{config.http_addr}/v1/cluster") as reply:
                cluster = await reply.json()
            assert [m["name"] for m in cluster["members"]] == ["n1"]
            assert cluster == server.cluster()
            info = await _resp(config.resp_addr or "", b"INFO dynakv\r\n")
            assert b"members:1\r\n" in info
            assert b"keys:1\r\n" in info
        for addr in addrs.values():
            host, _, port = addr.rpartition(":")
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                continue
            writer.close()
            raise AssertionError(f"{addr} still listens after the process stopped")

    asyncio.run(scenario())


class HeldServer:
    """The part of a ServerApi RESP's SET needs; it holds every request until told to answer."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.held: list[Callable[[Message], None]] = []
        self.stopped = asyncio.Event()
        self.gate = Gatekeeper(False, lambda: None, logging.getLogger("unused"))  # type: ignore[arg-type,return-value]

    def submit(self, message: Message, callback: Callable[[Message], None]) -> str:
        self.held.append(callback)
        return f"#h{len(self.held)}"

    def forget(self, token: str) -> None:
        pass

    def bucket(self, name: str) -> ResolvedProps:
        props = self.config.bucket(name)
        limit = self.config.max_value_bytes
        return ResolvedProps(props.n, 2, 2, props.policy, limit, "")  # r, w: unused


async def _a_set_in_flight() -> tuple[
    HeldServer, RespFrontend, asyncio.StreamReader, asyncio.StreamWriter
]:
    """A RESP front end over a HeldServer, and a client whose SET the server holds."""
    config = NodeConfig(name="n1", engine="memory", resp_addr=f"127.0.0.1:{free_port()}")
    server = HeldServer(config)
    resp = RespFrontend(cast(frontend.ServerApi, server))
    await resp.start()
    host, _, port = (config.resp_addr or "").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"SET k v\r\n")
    while not server.held:
        await asyncio.sleep(0.01)
    return server, resp, reader, writer


def test_stopping_resp_stops_reading_and_answers_the_commands_in_flight_first():
    async def scenario() -> None:
        server, resp, reader, writer = await _a_set_in_flight()
        [conn] = resp.connections
        stopping = asyncio.create_task(resp.stop())
        writer.write(b"SET k w\r\n")  # not read: the front end is stopping
        await asyncio.sleep(0.1)
        assert not stopping.done()
        assert len(server.held) == 1
        server.held[0](PutResult(0, ""))
        assert await reader.readline() == b"+OK\r\n"
        await asyncio.wait_for(stopping, 5)
        assert conn.closed
        writer.close()

    asyncio.run(scenario())


def test_resp_does_not_wait_for_answers_a_stopped_server_will_never_give():
    """After a storage failure the server stops first; RESP then closes at once."""

    async def scenario() -> None:
        server, resp, _, writer = await _a_set_in_flight()
        server.stopped.set()
        await asyncio.wait_for(resp.stop(), 1.0)  # not request_timeout + 2 s
        writer.close()

    asyncio.run(scenario())


def test_a_front_end_port_already_taken_stops_the_process_before_the_node_starts(caplog):
    async def scenario() -> None:
        taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = taken.sockets[0].getsockname()[1]
        config = NodeConfig(
            name="n1", engine="memory", node_addr=f"127.0.0.1:{free_port()}",
            http_addr=f"127.0.0.1:{port}",
        )  # fmt: skip
        try:
            with pytest.raises(CannotListen) as caught:
                async with running(config, join="127.0.0.1:9"):
                    raise AssertionError("the process must not start")
            assert caught.value.strerror == (
                f"cannot listen on 127.0.0.1:{port}, the HTTP port (--http): Address already in use"
            )
        finally:
            taken.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    # Never started: no join sent, no cluster founded, nothing gossiped.
    assert "node_started" not in caplog.text


def _imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_server_imports_no_front_end_and_front_ends_not_the_server():
    server = _imports(RUNTIME / "server.py")
    assert not server & {f"dynakv.runtime.{name}" for name in ("http", "resp", "process")}
    for name in (*FRONT_ENDS, "frontend.py"):
        imported = _imports(RUNTIME / name)
        assert "dynakv.runtime.server" not in imported, name
        assert "dynakv.runtime.process" not in imported, name
        assert not any(module.startswith("dynakv.core") for module in imported), name


def test_front_ends_use_only_the_server_api():
    api = {name for name in vars(frontend.ServerApi) if not name.startswith("_")}
    api |= set(frontend.ServerApi.__annotations__)
    for name in FRONT_ENDS:
        for node in ast.walk(ast.parse((RUNTIME / name).read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            owner_name = (
                owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            )
            if owner_name == "server":
                assert node.attr in api, f"{name} uses server.{node.attr}"
