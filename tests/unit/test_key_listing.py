"""Key listing pages (dynakv.listing), fed by replicas simulated in memory: every live key of
the bucket comes out once over the pages, whatever is written between them; bad cursors and
limits are refused."""

from __future__ import annotations

import pytest

from dynakv import versions
from dynakv.core.replica import seal
from dynakv.errors import InvalidRequest, Unavailable
from dynakv.listing import (
    MAX_LIMIT,
    KeyPage,
    decode_cursor,
    encode_cursor,
    parse_limit,
)
from dynakv.messages import TransferBatch
from dynakv.ring import key_digest, partition_of_digest, partition_range
from dynakv.versions import Sibling

RING = 8
NODES = ["n1", "n2", "n3"]


def _state(value: bytes, deleted: bool = False) -> bytes:
    clock = versions.update(versions.new((), Sibling(value, deleted, "", 5)), None, "n@1")
    return versions.encode(clock)


class Replicas:
    """Each node's store: digest -> sealed record, served as a node serves a transfer."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[bytes, bytes]] = {n: {} for n in NODES}
        self.down: set[str] = set()

    def put(self, bucket: str, key: str, deleted: bool = False, on: list[str] = NODES) -> None:
        for node in on:
            self.stores[node][key_digest(bucket, key)] = seal(bucket, key, _state(b"v", deleted))

    def batch(self, node: str, partition: int, after: bytes, limit: int) -> TransferBatch:
        start, end = partition_range(partition, RING)
        digests = sorted(
            d for d in self.stores[node] if d >= start and (not end or d < end) and d > after
        )
        chosen = digests[:limit]
        last = chosen[-1] if chosen else after
        return TransferBatch(
            1, partition, [self.stores[node][d] for d in chosen], last, len(digests) <= limit
        )

    def page(self, bucket: str, limit: int, cursor: str | None = None) -> KeyPage:
        after = decode_cursor(cursor) if cursor else b""
        page = KeyPage(bucket, limit, RING, lambda _: list(NODES), after)
        page.advance()
        while not page.done:
            for node, partition, after in page.wanted():
                if node in self.down:
                    page.failed(node)
                else:
                    page.add(node, self.batch(node, partition, after, 5))
            page.advance()
        return page

    def list_all(self, bucket: str, limit: int) -> list[str]:
        keys: list[str] = []
        cursor: str | None = None
        while True:
            page = self.page(bucket, limit, cursor)
            keys.extend(page.keys)
            cursor = page.cursor
            if cursor is None:
                return keys


def test_pages_hold_every_live_key_of_the_bucket_once_and_no_other():
    replicas = Replicas()
    for i in range(100):
        replicas.put("carts", f"k{i}")
    for i in range(30):
        replicas.put("other", f"k{i}")
    for i in range(0, 100, 10):
        replicas.put("carts", f"k{i}", deleted=True)
    replicas.put("carts", "only-on-n2", on=["n2"])  # a write that reached one replica
    keys = replicas.list_all("carts", 7)
    expected = {f"k{i}" for i in range(100) if i % 10} | {"only-on-n2"}
    assert sorted(keys) == sorted(expected)


def test_expired_keys_are_not_listed():
    replicas = Replicas()
    now = 1_700_000_000.0
    for i, expires in enumerate((0, int(now * 1000) - 1, int(now * 1000) + 60_000)):
        client = versions.new((), Sibling(b"v", expires=expires))
        state = versions.encode(versions.update(client, None, "n@1"))
        for node in NODES:
            replicas.stores[node][key_digest("s", f"k{i}")] = seal("s", f"k{i}", state)
    page = KeyPage("s", 10, RING, lambda _: list(NODES), now=now)
    page.advance()
    while not page.done:
        for node, partition, after in page.wanted():
            page.add(node, replicas.batch(node, partition, after, 5))
        page.advance()
    assert sorted(page.keys) == ["k0", "k2"]


def test_keys_written_between_pages_never_repeat_a_key():
    replicas = Replicas()
    for i in range(60):
        replicas.put("carts", f"k{i}")
    seen: list[str] = []
    cursor: str | None = None
    round_ = 0
    while True:
        page = replicas.page("carts", 9, cursor)
        seen.extend(page.keys)
        round_ += 1
        for i in range(3):  # new keys land before and after the cursor alike
            replicas.put("carts", f"new{round_}-{i}")
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert {f"k{i}" for i in range(60)} <= set(seen)


def test_a_page_resumes_inside_a_partition_where_the_last_one_stopped():
    replicas = Replicas()
    for i in range(40):
        replicas.put("carts", f"k{i}")
    first = replicas.page("carts", 3)
    assert len(first.keys) == 3 and first.cursor is not None
    digest = key_digest("carts", first.keys[-1])
    assert decode_cursor(first.cursor) == digest
    second = replicas.page("carts", 3, first.cursor)
    assert key_digest("carts", second.keys[0]) > digest
    assert partition_of_digest(key_digest("carts", second.keys[0]), RING) >= first.partition


def test_an_unreachable_replica_is_skipped_and_named():
    replicas = Replicas()
    for i in range(20):
        replicas.put("carts", f"k{i}")
    replicas.down.add("n3")
    page = replicas.page("carts", 1000)
    assert sorted(page.keys) == sorted(f"k{i}" for i in range(20))
    assert page.unreachable == {"n3"} and page.cursor is None


def test_a_node_an_earlier_page_could_not_read_is_not_asked_again():
    replicas = Replicas()
    for i in range(20):
        replicas.put("carts", f"k{i}")
    page = KeyPage("carts", 1000, RING, lambda _: list(NODES), unreachable={"n3"})
    asked: set[str] = set()
    page.advance()
    while not page.done:
        for node, partition, after in page.wanted():
            asked.add(node)
            page.add(node, replicas.batch(node, partition, after, 5))
        page.advance()
    assert asked == {"n1", "n2"} and len(page.keys) == 20


def test_a_partition_no_replica_answers_is_unavailable():
    replicas = Replicas()
    replicas.down.update(NODES)
    with pytest.raises(Unavailable):
        replicas.page("carts", 10)


def test_an_empty_bucket_is_one_empty_page():
    page = Replicas().page("carts", 10)
    assert page.keys == [] and page.cursor is None


@pytest.mark.parametrize("text", ["", "abc", "not base64!", encode_cursor(b"x" * 16)[:-2], "AQ"])
def test_a_cursor_that_is_not_ours_is_refused(text: str):
    with pytest.raises(InvalidRequest, match="cursor"):
        decode_cursor(text)


def test_a_cursor_round_trips_its_digest():
    digest = key_digest("carts", "alice")
    assert decode_cursor(encode_cursor(digest)) == digest


@pytest.mark.parametrize("text", ["0", "-1", str(MAX_LIMIT + 1), "ten", "1.5"])
def test_a_limit_out_of_range_is_refused(text: str):
    with pytest.raises(InvalidRequest, match="limit"):
        parse_limit(text)


def test_the_limit_defaults_to_a_thousand():
    assert parse_limit(None) == 1000 and parse_limit(str(MAX_LIMIT)) == MAX_LIMIT
