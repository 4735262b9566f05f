"""A failed storage commit stops the node, uncleanly: writes it could not make durable are
answered with errors, and the next start takes a new incarnation (requests sent before the
commit may carry dots that never reached this node's disk)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from dynakv.client import AsyncClient
from dynakv.config import NodeConfig
from dynakv.errors import DynakvError
from dynakv.runtime.server import Server
from dynakv.storage import WalEngine, wal
from dynakv.storage.pipelined import PipelinedEngine


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("engine", ["memory", "wal"])
def test_a_failed_commit_answers_errors_and_stops_the_node_without_a_clean_stop(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        config = NodeConfig(
            name="n1",
            engine=engine,  # type: ignore[arg-type]
            data_dir=str(tmp_path),
            node_addr=f"127.0.0.1:{_port()}",
            http_addr=f"127.0.0.1:{_port()}",
        )
        server = Server(config)
        # the log's fdatasync fails on the writer thread, as it runs in the server
        assert isinstance(server.engine, PipelinedEngine) == (engine == "wal")
        await server.start()
        try:
            async with AsyncClient([config.node_addr], route=False) as client:
                await client.put("b", "before", b"ok")  # storage healthy: acknowledged

                def failing_commit() -> None:
                    raise OSError("disk gone")

                def failing_fdatasync(fd: int) -> None:
                    raise OSError(5, "disk gone")

                if engine == "wal":  # the log's fdatasync fails, inside the engine
                    monkeypatch.setattr(wal.os, "fdatasync", failing_fdatasync)
                else:
                    server.engine.commit = failing_commit  # type: ignore[method-assign]
                with pytest.raises(DynakvError) as caught:
                    await client.put("b", "after", b"lost")
                assert "commit failed" in str(caught.value)
            assert server.storage_failed
            await asyncio.wait_for(server.stop_requested.wait(), 5)
        finally:
            await server.stop()
            monkeypatch.undo()
        if engine == "wal":  # a failed WalEngine refuses everything: what is on disk counts
            reopened = WalEngine(tmp_path)
            try:
                assert reopened.meta_get("running") == b"1"  # not marked as a clean stop
                # "before"; "after" was written, but its fdatasync failed: it may be there
                assert reopened.count() in (1, 2)
            finally:
                reopened.close()
        else:
            assert server.node.engine.meta_get("running") == b"1"  # not a clean stop

    asyncio.run(scenario())
