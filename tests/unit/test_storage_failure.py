"""A failed storage commit stops the node, uncleanly: writes it could not make durable are
answered with errors, and the next start takes a new incarnation (requests sent before the
commit may carry dots that never reached this node's disk)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dynakv.client import AsyncClient
from dynakv.config import NodeConfig
from dynakv.errors import DynakvError
from dynakv.runtime.server import Server


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_commit_answers_errors_and_stops_the_node_without_a_clean_stop():
    async def scenario() -> None:
        config = NodeConfig(
            name="n1",
            engine="memory",
            node_addr=f"127.0.0.1:{_port()}",
            http_addr=f"127.0.0.1:{_port()}",
        )
        server = Server(config)
        await server.start()
        try:
            async with AsyncClient([config.node_addr], route=False) as client:
                await client.put("b", "before", b"ok")  # storage healthy: acknowledged

                def failing_commit() -> None:
                    raise OSError("disk gone")

                server.engine.commit = failing_commit  # type: ignore[method-assign]
                with pytest.raises(DynakvError) as caught:
                    await client.put("b", "after", b"lost")
                assert "commit failed" in str(caught.value)
            assert server.storage_failed
            await asyncio.wait_for(server.stop_requested.wait(), 5)
        finally:
            await server.stop()
        assert server.node.engine.meta_get("running") == b"1"  # not marked as a clean stop

    asyncio.run(scenario())
