"""Durability of one real node on each storage engine: every write it acknowledged, with
hundreds in flight (so group commit batches them), is there after a SIGKILL and restart.
Runs once: it is about the engines and group commit, not who may connect, which the
front-end tests cover open and secure."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.cluster.harness import AsyncClient, Client, ProcessCluster


@pytest.mark.parametrize("engine", ["lmdb", "wal"])
def test_acknowledged_writes_survive_sigkill(tmp_path, engine):
    config = tmp_path / "single.toml"
    config.write_text(f'engine = "{engine}"\n[defaults]\nn = 1\nr = 1\nw = 1\n')
    single = ProcessCluster(tmp_path, 1, extra_args=["--config", str(config)])
    try:
        single.start()
        node = single[0]
        acknowledged = _write_concurrently(node.node_addr, 400)
        node.kill(signal.SIGKILL)
        node.start()
        node.wait_ready()
        with Client(node.node_addr) as client:
            for key, value in acknowledged.items():
                assert client.get("durable", key).value == value, key
    finally:
        single.stop()


def _write_concurrently(addr: str, count: int) -> dict[str, bytes]:
    """Many puts in flight at once (so group commit batches them); returns the acknowledged."""

    async def main() -> dict[str, bytes]:
        async with AsyncClient(addr) as client:
            keys = {f"key{i}": f"value-{i}".encode() * 10 for i in range(count)}
            results = await asyncio.gather(
                *(client.put("durable", k, v) for k, v in keys.items()), return_exceptions=True
            )
            return {
                k: v for (k, v), r in zip(keys.items(), results, strict=True) if isinstance(r, str)
            }

    acknowledged = asyncio.run(main())
    assert len(acknowledged) == count
    return acknowledged
