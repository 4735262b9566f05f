"""What the core alone costs per YCSB operation: Node.handle on three real Nodes, no sockets.

    .venv/bin/python benchmarks/core_cost.py [--engine memory|lmdb] [--keys 500] [--ops 2000]
                                             [--thrash MB] [--value-size BYTES]

Three Nodes joined in the simulator (N=3, R=2, W=2, bucket `bench`, 1 KiB values, updates
with the context of the previous write). Then, timed with the thread's CPU clock and driving
`Node.handle` directly (the simulator's network and clock are not involved):

- read: the coordinator's ClientGet, one replica's ReplicaGet, the coordinator's
  ReplicaGetReply;
- write: the coordinator's ClientPut, two replicas' ReplicaPut, the coordinator's two
  ReplicaPutReply, then a commit on each node.

Prints the best of 5 passes of `--ops` operations, in µs of CPU per operation summed over the
three nodes. Compare it with `dynakv bench`'s server CPU per operation: the difference is
the runtime (framing, sockets, group commit, the writer thread) and what a busy machine does
to the interpreter's caches. `--thrash MB` writes one byte per 64 in a buffer of that size
before every operation (its own cost measured and subtracted), to show the latter.
`--engine lmdb` stores in LmdbEngine (durability `none`: reads and writes go straight to
LMDB, commits every 1,000 writes; not the pipelined engine of `fsync` mode), in a temporary
directory.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dynakv.core.events import Received, Send  # noqa: E402
from dynakv.messages import (  # noqa: E402
    ClientGet,
    ClientPut,
    PutResult,
    ReplicaGet,
    ReplicaPut,
)
from dynakv.sim import cluster as sim  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("memory", "lmdb"), default="memory")
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--thrash", type=int, default=0, help="MB touched before each op")
    parser.add_argument("--value-size", type=int, default=1024, help="bytes per value")
    opts = parser.parse_args()
    dirs: list[str] = []
    if opts.engine == "lmdb":
        from dynakv.storage.lmdb import LmdbEngine

        def lmdb_engine() -> LmdbEngine:
            dirs.append(tempfile.mkdtemp(prefix="core-cost-", dir="/tmp"))
            return LmdbEngine(dirs[-1], "none")

        sim.MemoryEngine = lmdb_engine  # type: ignore[misc,assignment]
    try:
        run(opts.keys, opts.ops, opts.thrash, opts.value_size)
    finally:
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


def run(nkeys: int, ops: int, thrash_mb: int, value_size: int = 1024) -> None:
    cluster = sim.SimCluster(["n1", "n2", "n3"], seed=1, config=sim.default_config)
    assert cluster.run_until(
        lambda: all(
            len(n.ring.members()) == 3 and n.state.ring.next is None for n in cluster.nodes.values()
        )
    )
    nodes = cluster.nodes
    any_node = next(iter(nodes.values()))
    rids = itertools.count(1)
    value = b"x" * value_size
    keys = [f"user{i}" for i in range(nkeys)]
    coordinator = {k: any_node.placement("bench", k).primaries[0] for k in keys}
    contexts = {k: "" for k in keys}
    now = cluster.now + 1.0

    def deliver(to: str, source: str, message: object) -> list[object]:
        return nodes[to].handle(now, Received(source, message))  # type: ignore[arg-type]

    def read(key: str) -> None:
        co = coordinator[key]
        for effect in deliver(co, "#c", ClientGet(next(rids), "bench", key)):
            if type(effect) is Send and type(effect.message) is ReplicaGet:
                for answer in deliver(effect.to, co, effect.message):
                    deliver(co, effect.to, answer.message)  # type: ignore[attr-defined]

    def write(key: str) -> None:
        co = coordinator[key]
        put = ClientPut(next(rids), "bench", key, value, contexts[key])
        effects = deliver(co, "#c", put)
        for effect in list(effects):
            if type(effect) is Send and type(effect.message) is ReplicaPut:
                for answer in deliver(effect.to, co, effect.message):
                    effects.extend(deliver(co, effect.to, answer.message))  # type: ignore[attr-defined]
        for effect in effects:
            if type(effect) is Send and type(effect.message) is PutResult:
                contexts[key] = effect.message.context
        for node in nodes.values():
            node.engine.commit()

    junk = bytearray(thrash_mb << 20)
    ones = b"\x01" * len(range(0, len(junk), 64))

    def thrash(key: str) -> None:
        if junk:
            junk[::64] = ones

    for key in keys:
        write(key)  # load
    base = best_of(thrash, keys, ops, lambda k: None)
    for name, op in (("read", read), ("write", write)):
        cost = best_of(thrash, keys, ops, op) - base
        print(f"{name}: {cost:.1f} µs CPU per operation (three nodes' Node.handle calls)")


def best_of(
    thrash: Callable[[str], None], keys: list[str], ops: int, op: Callable[[str], None]
) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        for i in range(ops):
            key = keys[i % len(keys)]
            thrash(key)
            op(key)
        best = min(best, (time.thread_time() - start) / ops * 1e6)
    return best


if __name__ == "__main__":
    main()
