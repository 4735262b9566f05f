"""What Merkle anti-entropy costs (issue 5's figures): tree rebuild time, and the bytes and time
of an exchange between two replicas of 1,000,000 keys that differ in 100 keys.

Two layouts of the same keys: one tree holding them all (ring size 1: a "1M-key partition"),
and the realistic one, a tree per partition of a ring of 64 (about 15.6k keys each; every
partition pair is exchanged). Bytes are counted as the msgpack the node would send: each
`HashRequest` (level, indices) and its reply (the hashes), then the request for the
differing segments and the remote side's ``[digest, version_hash]`` pairs of those segments.
The repair itself (moving the ~100 differing records) is not part of the exchange. The data
size is keys x value size (100 bytes), as the issue states it.

In memory (default): random digests and version hashes; the segment maps of the leaf step
come from a sorted digest list, as a storage range scan would give them. With ``--lmdb``
also: two real LmdbEngines of sealed records with 100-byte values (written through
ReplicaStore); rebuild from a scan (unseal, decode the DVVSet, `version_hash`), and the
exchange with the leaf maps scanned from LMDB.

    .venv/bin/python benchmarks/merkle_cost.py [--keys 1000000] [--differ 100] [--lmdb]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

import msgspec

from dynakv import versions
from dynakv.core.merkle import (
    DEFAULT_BRANCHING,
    DEFAULT_SEGMENTS,
    Exchange,
    HashRequest,
    HashTree,
    KeyDiff,
    SegmentDiff,
    diff_keys,
    version_hash,
)
from dynakv.core.replica import ReplicaStore, unseal
from dynakv.ring import partition_of_digest, partition_range
from dynakv.storage.lmdb import LmdbEngine

VALUE_BYTES = 100
RING = 64
SHAPES = [(1024, 32), (4096, 16), (16384, 32), (16384, 16), (65536, 16)]
_encoder = msgspec.msgpack.Encoder()
Items = list[tuple[bytes, bytes]]
SegmentMap = Callable[[HashTree, int], dict[bytes, bytes]]


def random_items(rng: random.Random, count: int) -> Items:
    return sorted((rng.randbytes(16), rng.randbytes(16)) for _ in range(count))


def diverge(items: Items, differ: int, rng: random.Random) -> tuple[Items, Items, KeyDiff]:
    """Two replicas of `items`: a third of `differ` keys missing on each side, a third changed."""
    chosen = rng.sample(range(len(items)), differ)
    drop_local = set(chosen[: differ // 3])
    drop_remote = set(chosen[differ // 3 : 2 * differ // 3])
    changed = set(chosen[2 * differ // 3 :])
    local = [item for i, item in enumerate(items) if i not in drop_local]
    remote = [
        (d, rng.randbytes(16)) if i in changed else (d, v)
        for i, (d, v) in enumerate(items)
        if i not in drop_remote
    ]
    truth = KeyDiff(
        sorted(items[i][0] for i in drop_local),
        sorted(items[i][0] for i in drop_remote),
        sorted(items[i][0] for i in changed),
    )
    return local, remote, truth


def sorted_map(items: Items) -> SegmentMap:
    """Segment maps from sorted (digest, version_hash) pairs, as a range scan gives them."""
    digests = [d for d, _ in items]

    def segment_map(tree: HashTree, segment: int) -> dict[bytes, bytes]:
        start, end = tree.segment_range(segment)
        lo = bisect_left(digests, start)
        hi = len(digests) if end == b"" else bisect_left(digests, end)
        return dict(items[lo:hi])

    return segment_map


class Stopwatch:
    """Wall and CPU time of a block: the machine may be shared, so both are reported."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._started[0]
        self.cpu += time.process_time() - self._started[1]

    def __str__(self) -> str:
        return f"{self.wall:.2f} s ({self.cpu:.2f} s CPU)"

    def ms(self) -> str:
        return f"{self.wall * 1000:.0f} ms ({self.cpu * 1000:.0f} CPU)"


class Cost:
    """What one or more exchanges sent each way, in msgpack bytes."""

    def __init__(self) -> None:
        self.hash_bytes = 0  # requests for hashes and their replies
        self.leaf_bytes = 0  # the segment list and the remote's key maps
        self.round_trips = 0
        self.segments = 0
        self.time = Stopwatch()

    @property
    def total(self) -> int:
        return self.hash_bytes + self.leaf_bytes


def exchange(
    local: HashTree, remote: HashTree, local_map: SegmentMap, remote_map: SegmentMap, cost: Cost
) -> KeyDiff:
    """One exchange with `remote` answering in-process; adds its bytes and time to `cost`."""
    with cost.time:
        return _exchange(local, remote, local_map, remote_map, cost)


def _exchange(
    local: HashTree, remote: HashTree, local_map: SegmentMap, remote_map: SegmentMap, cost: Cost
) -> KeyDiff:
    ex = Exchange(local)
    step: HashRequest | SegmentDiff | None = ex.start()
    while isinstance(step, HashRequest):
        hashes = remote.level_hashes(step.level, step.indices)
        cost.hash_bytes += len(_encoder.encode((step.level, step.indices)))
        cost.hash_bytes += len(_encoder.encode(hashes))
        cost.round_trips += 1
        step = ex.on_hashes(step.level, step.indices, hashes)
    assert isinstance(step, SegmentDiff)
    mine: dict[bytes, bytes] = {}
    theirs: dict[bytes, bytes] = {}
    if step.segments:
        cost.round_trips += 1
        cost.segments += len(step.segments)
        cost.leaf_bytes += len(_encoder.encode(step.segments))
        for segment in step.segments:
            remote_segment = remote_map(remote, segment)
            cost.leaf_bytes += len(_encoder.encode(list(remote_segment.items())))
            theirs.update(remote_segment)
            mine.update(local_map(local, segment))
    return diff_keys(mine, theirs)


def merge_diffs(diffs: list[KeyDiff]) -> KeyDiff:
    return KeyDiff(
        *(sorted(d for diff in diffs for d in getattr(diff, f)) for f in KeyDiff._fields)
    )


def split_by_partition(items: Items, ring: int) -> list[Items]:
    parts: list[Items] = [[] for _ in range(ring)]
    for item in items:
        parts[partition_of_digest(item[0], ring)].append(item)
    return parts


def in_memory(keys: int, differ: int, seed: int) -> None:
    rng = random.Random(seed)
    items = random_items(rng, keys)
    local, remote, truth = diverge(items, differ, rng)
    data = keys * VALUE_BYTES
    print(f"## In memory: {keys:,} keys, {differ} differing, data {data / 1e6:.0f} MB\n")

    tree = HashTree(0, 1)
    with Stopwatch() as rebuild:
        tree.rebuild(items)
        tree.root()
    print(f"rebuild, one tree of {keys:,} keys (default shape): {rebuild}")
    sample = items[: min(keys, 100_000)]
    with Stopwatch() as updates:
        for d, v in sample:
            tree.update(d, v, v[::-1])
        tree.root()
    print(
        f"incremental replace of {len(sample):,} keys, then root: "
        f"{updates.cpu / len(sample) * 1e6:.1f} µs CPU per key\n"
    )

    print(
        "| layout | segments | branching | depth | round trips | hash bytes | leaf bytes | "
        "total | % of data | find time | tree memory |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    local_map, remote_map = sorted_map(local), sorted_map(remote)
    local_parts, remote_parts = split_by_partition(local, RING), split_by_partition(remote, RING)
    part_maps = [
        (sorted_map(a), sorted_map(b)) for a, b in zip(local_parts, remote_parts, strict=True)
    ]
    for segments, branching in SHAPES:
        a, b = HashTree(0, 1, segments, branching), HashTree(0, 1, segments, branching)
        a.rebuild(local)
        b.rebuild(remote)
        a.root(), b.root()
        cost = Cost()
        found = exchange(a, b, local_map, remote_map, cost)
        assert found == truth, "the exchange must find exactly the true differences"
        row("1 partition", a, cost, data, memory=segments * 20)

        cost = Cost()
        diffs = []
        for p in range(RING):
            a, b = HashTree(p, RING, segments, branching), HashTree(p, RING, segments, branching)
            a.rebuild(local_parts[p])
            b.rebuild(remote_parts[p])
            a.root(), b.root()
            diffs.append(exchange(a, b, *part_maps[p], cost))
        assert merge_diffs(diffs) == truth
        row(f"{RING} partitions", a, cost, data, memory=RING * segments * 20)
    print()


def row(layout: str, tree: HashTree, cost: Cost, data: int, memory: int) -> None:
    _, _, segments, branching = tree.shape
    print(
        f"| {layout} | {segments} | {branching} | {tree.depth} | {cost.round_trips} | "
        f"{cost.hash_bytes:,} | {cost.leaf_bytes:,} | {cost.total:,} | "
        f"{100 * cost.total / data:.3f}% | {cost.time.ms()} | "
        f"{memory / 1024:,.0f} KiB |"
    )


def lmdb_pair(directory: str, keys: int, differ: int, seed: int) -> tuple[LmdbEngine, ...]:
    """Two engines holding keys k0..k(keys-1), as `diverge` makes them differ."""
    rng = random.Random(seed)
    chosen = rng.sample(range(keys), differ)
    drop = [set(chosen[: differ // 3]), set(chosen[differ // 3 : 2 * differ // 3])]
    changed = set(chosen[2 * differ // 3 :])
    engines = tuple(
        LmdbEngine(os.path.join(directory, side), durability="none", map_size=8 << 30)
        for side in ("local", "remote")
    )
    stores = [ReplicaStore(engine) for engine in engines]
    for i in range(keys):
        key = f"key{i:09d}"
        value = versions.Sibling(rng.randbytes(VALUE_BYTES))
        clock = versions.update(versions.new((), value), None, "n1@0f3a9c")
        for side, store in enumerate(stores):
            if i in drop[side]:
                continue
            if side == 1 and i in changed:  # a later write the local side missed
                store.put("b", key, versions.update(versions.new((), value), clock, "n2@77b01e"))
            else:
                store.put("b", key, clock)
        if i % 10_000 == 0:
            for engine in engines:
                engine.commit()
    for engine in engines:
        engine.commit()
    return engines


def version_items(engine: LmdbEngine, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(digest, version_hash) of the stored records in [start, end): what a rebuild reads."""
    for digest, raw in engine.scan(start, end):
        yield digest, version_hash(versions.decode(unseal(raw)[2]))


def with_lmdb(keys: int, differ: int, seed: int, directory: str) -> None:
    print(f"## LMDB: {keys:,} records of {VALUE_BYTES}-byte values per replica\n")
    with Stopwatch() as fill:
        local, remote = lmdb_pair(directory, keys, differ, seed)
    size = sum(
        os.path.getsize(os.path.join(d, f))
        for d in (local.path, remote.path)
        for f in os.listdir(d)
    )
    print(f"filled both in {fill}; files {size / 1e6:.0f} MB")

    with Stopwatch() as scan:
        scanned = sum(1 for _ in local.scan(b"", b""))
    with Stopwatch() as decode:
        for _, raw in local.scan(b"", b""):
            versions.decode(unseal(raw)[2])
    with Stopwatch() as hashing:
        for _ in version_items(local, b"", b""):
            pass
    tree = HashTree(0, 1)
    with Stopwatch() as rebuild:
        tree.rebuild(version_items(local, b"", b""))
        tree.root()
    print(
        f"rebuild from a scan of {scanned:,} records: {rebuild}; of which scan alone {scan}, "
        f"scan+unseal+decode {decode}, scan+unseal+decode+version_hash {hashing}"
    )

    def engine_map(engine: LmdbEngine) -> SegmentMap:
        return lambda t, segment: dict(version_items(engine, *t.segment_range(segment)))

    other = HashTree(0, 1)
    other.rebuild(version_items(remote, b"", b""))
    cost = Cost()
    found = exchange(tree, other, engine_map(local), engine_map(remote), cost)
    data = keys * VALUE_BYTES
    print(
        f"exchange, one tree: {cost.total:,} bytes ({100 * cost.total / data:.3f}% of "
        f"{data / 1e6:.0f} MB), {cost.round_trips} round trips, found {sum(map(len, found))} "
        f"differing keys in {cost.time.ms()}"
    )

    cost = Cost()
    total = 0
    pairs = []
    with Stopwatch() as rebuild:
        for p in range(RING):
            start, end = partition_range(p, RING)
            a, b = HashTree(p, RING), HashTree(p, RING)
            a.rebuild(version_items(local, start, end))
            b.rebuild(version_items(remote, start, end))
            a.root(), b.root()
            pairs.append((a, b))
    for a, b in pairs:
        total += sum(map(len, exchange(a, b, engine_map(local), engine_map(remote), cost)))
    print(
        f"{RING} partition trees: rebuilt both replicas in {rebuild}; exchanges "
        f"{cost.total:,} bytes ({100 * cost.total / data:.3f}%), {cost.round_trips} round "
        f"trips, found {total} differing keys in {cost.time.ms()}\n"
    )
    for engine in (local, remote):
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--differ", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--lmdb", action="store_true", help="also measure with real LMDB stores")
    parser.add_argument("--dir", default=None, help="where the LMDB stores go (a temp dir)")
    args = parser.parse_args()
    print(f"defaults: segments={DEFAULT_SEGMENTS}, branching={DEFAULT_BRANCHING}\n")
    in_memory(args.keys, args.differ, args.seed)
    if args.lmdb:
        directory = tempfile.mkdtemp(prefix="merkle-cost-", dir=args.dir)
        try:
            with_lmdb(args.keys, args.differ, args.seed, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
