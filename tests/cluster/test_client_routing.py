"""Client-driven coordination against three real nodes: each request goes straight to a
replica of its key, a client given one node reaches them all, and a killed node's keys fail
over to the next replicas."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv import AsyncClient, Client
from dynakv.ring import Ring, key_digest, partition_of_digest
from tests.cluster.harness import ProcessCluster, http

SOLO = "solo"  # a bucket with one replica: a put that reaches any other node is forwarded
KEYS = [f"user{i}" for i in range(90)]


@pytest.fixture(scope="module")
def solo_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    root = tmp_path_factory.mktemp("routing")
    config = root / "node.toml"
    config.write_text(f"[buckets.{SOLO}]\nn = 1\nr = 1\nw = 1\n")
    procs = ProcessCluster(root, 3, extra_args=["--config", str(config)])
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


def walk(cluster: ProcessCluster, bucket: str, key: str) -> list[str]:
    """The node addresses of the key's partition walk, as the nodes see the ring."""
    view = http("GET", f"{cluster[0].url}/v1/cluster").json()
    ring = Ring(view["ring"]["size"], tuple(view["ring"]["owners"]))
    address = {m["name"]: m["node_addr"] for m in view["members"]}
    return [address[n] for n in ring.walk(partition_of_digest(key_digest(bucket, key), ring.size))]


def puts_served(cluster: ProcessCluster) -> dict[str, float]:
    """dynakv_requests_total{op="put"} of each node, over every consistency level: puts that
    arrived from a client there."""
    counts = {}
    for node in cluster.nodes:
        text = http("GET", f"{node.url}/metrics").body.decode()
        found = re.findall(
            r'^dynakv_requests_total\{consistency="[^"]*",op="put"\} (\S+)$', text, re.MULTILINE
        )
        counts[node.node_addr] = sum(float(n) for n in found)
    return counts


def delta(before: dict[str, float], after: dict[str, float]) -> Counter[str]:
    return Counter({a: int(after[a] - before[a]) for a in after if after[a] != before[a]})


def test_routed_puts_reach_the_only_replica_directly(solo_cluster: ProcessCluster):
    owner = {key: walk(solo_cluster, SOLO, key)[0] for key in KEYS}
    expected = Counter(owner.values())
    assert len(expected) == 3  # the keys are spread over every node

    before = puts_served(solo_cluster)
    with Client(solo_cluster.node_addrs) as client:
        for key in KEYS:
            client.put(SOLO, key, key.encode())
            assert client.last_node == owner[key]
        for key in KEYS:
            assert client.get(SOLO, key).value == key.encode()
            assert client.last_node == owner[key]
    # Every put was counted at its key's single replica: none reached a node that forwards.
    assert delta(before, puts_served(solo_cluster)) == expected

    # The control: without routing every put lands on the first given node, which forwards
    # the others' keys; they are stored all the same.
    before = puts_served(solo_cluster)
    with Client(solo_cluster.node_addrs, route=False) as client:
        for key in KEYS:
            client.put(SOLO, key, b"again")
            assert client.last_node == solo_cluster[0].node_addr
    assert delta(before, puts_served(solo_cluster)) == {solo_cluster[0].node_addr: len(KEYS)}
    with Client(solo_cluster.node_addrs) as client:
        for key in KEYS:  # a blind write: a sibling beside the first value
            assert sorted(client.get(SOLO, key).values) == sorted([b"again", key.encode()])


def test_the_async_client_routes_too_and_keeps_one_connection_per_node(
    solo_cluster: ProcessCluster,
):
    owner = {key: walk(solo_cluster, SOLO, key)[0] for key in KEYS}

    async def main() -> tuple[Counter[str], set[str]]:
        async with AsyncClient(solo_cluster.node_addrs) as client:
            for key in KEYS[:30]:  # one at a time: last_node is that request's node
                await client.put(SOLO, key, b"async")
                assert client.last_node == owner[key]
            before = puts_served(solo_cluster)
            # Many requests in flight at once, over the same connections.
            await asyncio.gather(*(client.put(SOLO, key, b"many") for key in KEYS))
            values = await asyncio.gather(*(client.get(SOLO, key) for key in KEYS))
            assert all(b"many" in v.values for v in values)
            return delta(before, puts_served(solo_cluster)), set(client._conns)

    served, connections = asyncio.run(main())
    assert served == Counter(owner.values())
    assert connections == set(solo_cluster.node_addrs)


def test_a_client_given_one_node_reaches_every_replica(solo_cluster: ProcessCluster):
    seed = solo_cluster[1].node_addr
    used = set()
    with Client(seed) as client:
        for key in KEYS:
            client.put("carts", key, b"x")  # N=3: the key's first replica coordinates
            assert client.last_node == walk(solo_cluster, "carts", key)[0]
            used.add(client.last_node)
    assert used == set(solo_cluster.node_addrs)

    async def main() -> set[str]:
        async with AsyncClient(seed) as client:
            await asyncio.gather(*(client.get("carts", key) for key in KEYS))
            return set(client._conns)

    assert asyncio.run(main()) == set(solo_cluster.node_addrs)


def test_with_a_replica_killed_requests_fail_over_to_the_next_replicas(tmp_path: Path):
    cluster = ProcessCluster(tmp_path, 3)
    try:
        cluster.start()
        victim = cluster[2]
        walks = {key: walk(cluster, "carts", key) for key in KEYS}
        first_on_victim = [k for k in KEYS if walks[k][0] == victim.node_addr]
        assert first_on_victim
        client = Client(cluster.node_addrs, timeout=5)
        for key in KEYS:  # a connection to every node is open when the victim dies
            client.put("carts", key, b"before", w=2)

        async def warm() -> AsyncClient:
            aclient = AsyncClient(cluster.node_addrs, timeout=5)
            await asyncio.gather(*(aclient.get("carts", key) for key in KEYS))
            return aclient

        loop = asyncio.new_event_loop()
        try:
            aclient = loop.run_until_complete(warm())
            victim.kill(signal.SIGKILL)

            for key in KEYS:
                context = client.get("carts", key, r=2).context
                client.put("carts", key, b"after", context=context, w=2)
                assert client.last_node != victim.node_addr
                if key in first_on_victim:
                    assert client.last_node == walks[key][1]  # the next replica coordinated
            for key in KEYS:
                assert client.get("carts", key, r=2).value == b"after"
            client.close()

            async def after_kill() -> None:
                await asyncio.sleep(0.2)  # the loop sees the victim's connection close
                results = await asyncio.gather(
                    *(aclient.put("carts", key, b"async", w=2) for key in KEYS),
                    return_exceptions=True,
                )
                assert [r for r in results if isinstance(r, BaseException)] == []
                values = await asyncio.gather(*(aclient.get("carts", key, r=2) for key in KEYS))
                assert all(b"async" in v.values for v in values)  # blind: beside "after"
                assert victim.node_addr not in aclient._conns
                await aclient.close()

            loop.run_until_complete(after_kill())
        finally:
            loop.close()
    finally:
        cluster.stop()
