"""Key listing over HTTP against real processes: paging through a bucket with
`GET /v1/kv/{bucket}?list=keys` returns each live key once, from any node, and bad listing
requests are 400s that say what is wrong."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

from dynakv import AsyncClient, Client
from tests.cluster.harness import ProcessCluster, http


async def _load(nodes: list[str], puts: list[tuple[str, str]], deletes: list[str]) -> None:
    """Write `puts` (bucket, key), then delete `deletes` from bucket "big", 64 at a time."""
    slots = asyncio.Semaphore(64)
    async with AsyncClient(nodes) as client:

        async def put(bucket: str, key: str) -> None:
            async with slots:
                await client.put(bucket, key, f"value of {key}".encode())

        async def delete(key: str) -> None:
            async with slots:
                context = (await client.get("big", key)).context
                await client.delete("big", key, context=context)

        await asyncio.gather(*(put(b, k) for b, k in puts))
        await asyncio.gather(*(delete(k) for k in deletes))


def test_paging_lists_every_live_key_of_the_bucket_exactly_once(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3)
    try:
        cluster.start()
        big = [f"key-{i:05d}" for i in range(2500)]
        deleted = big[::50]  # 50 keys that now hold only tombstones
        puts = [("big", k) for k in big] + [("small", f"key-{i:05d}") for i in range(40)]
        asyncio.run(_load(cluster.node_addrs, puts, deleted))

        stop_writing = threading.Event()

        def write_more() -> None:
            # Writes go on while the pages are read: a new key may be listed or not.
            with Client(cluster.node_addrs) as client:
                i = 0
                while not stop_writing.is_set():
                    client.put("big", f"late-{i}", b"late")
                    i += 1

        writer = threading.Thread(target=write_more)
        writer.start()
        listed: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            # Each page from another node: the cursor means the same on all of them.
            node = cluster[pages % 3]
            query = "list=keys&limit=100" + (f"&cursor={quote(cursor)}" if cursor else "")
            reply = http("GET", f"{node.url}/v1/kv/big?{query}")
            assert reply.status == 200, reply.body
            body = reply.json()
            assert len(body["keys"]) <= 100 and "unreachable" not in body
            listed.extend(body["keys"])
            pages += 1
            cursor = body["cursor"]
            if cursor is None:
                break
        stop_writing.set()
        writer.join()
        assert len(listed) == len(set(listed))  # none twice, writes or not
        old = [k for k in listed if not k.startswith("late-")]
        assert sorted(old) == sorted(set(big) - set(deleted))  # every live one, no other
        assert pages >= 25

        small = http("GET", f"{cluster[1].url}/v1/kv/small?list=keys").json()
        assert sorted(small["keys"]) == [f"key-{i:05d}" for i in range(40)]
        assert small["cursor"] is None  # the default limit (1000) holds them all
        empty = http("GET", f"{cluster[2].url}/v1/kv/nothing-here?list=keys").json()
        assert empty == {"keys": [], "cursor": None}

        # The Python client and the CLI walk the same pages over the node port.
        late = {k for k in listed if k.startswith("late-")}
        with Client(cluster.node_addrs) as client:
            unreachable: set[str] = set()
            walked = list(client.list_keys("big", page=300, unreachable=unreachable))
        assert len(walked) == len(set(walked)) and not unreachable
        assert set(big) - set(deleted) | late <= set(walked)
        printed = subprocess.run(
            [sys.executable, "-m", "dynakv", "keys", "small", "--node", cluster[1].node_addr],
            capture_output=True,
            timeout=60,
        )
        assert printed.returncode == 0, printed.stderr
        assert sorted(printed.stdout.decode().split()) == [f"key-{i:05d}" for i in range(40)]
    finally:
        cluster.stop()


def test_bad_listing_requests_are_400_and_say_why(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 1)
    try:
        cluster.start()
        url = cluster[0].url
        for query, says in [
            ("list=keys&cursor=bm90LWEtY3Vyc29y", "cursor"),
            ("list=keys&cursor=", "cursor"),
            ("list=keys&limit=0", "limit"),
            ("list=keys&limit=10001", "limit"),
            ("list=keys&limit=many", "limit"),
            ("list=values", "list must be 'keys'"),
            ("list=keys&r=2", "unknown query parameter"),
        ]:
            reply = http("GET", f"{url}/v1/kv/big?{query}")
            assert reply.status == 400, (query, reply.body)
            body = reply.json()
            assert body["error"] == "invalid_request" and says in body["message"], query
        # Without list=, a bucket alone is still a malformed key path.
        assert http("GET", f"{url}/v1/kv/big").status == 400
        assert http("PUT", f"{url}/v1/kv/big?list=keys", b"v").status == 400
    finally:
        cluster.stop()


def test_a_dead_node_is_named_and_its_keys_come_from_the_other_replicas(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3)
    try:
        cluster.start()
        keys = [f"k{i}" for i in range(300)]
        asyncio.run(_load(cluster.node_addrs, [("big", k) for k in keys], []))
        cluster[2].kill()
        dead = cluster[2].node_addr
        listed: list[str] = []
        named: set[str] = set()
        cursor: str | None = None
        while True:
            query = "list=keys&limit=120" + (f"&cursor={quote(cursor)}" if cursor else "")
            body = http("GET", f"{cluster[0].url}/v1/kv/big?{query}").json()
            listed.extend(body["keys"])
            named.update(body.get("unreachable", []))
            cursor = body["cursor"]
            if cursor is None:
                break
        assert sorted(listed) == sorted(keys)  # n=3: the two live replicas hold every key
        assert named == {dead}
    finally:
        cluster.stop()
