"""Durable writes: LMDB sync commits vs a write-ahead log vs RocksDB (issue 17, lever 1).

    PYTHONPATH=src:/path/to/rocksdict .venv/bin/python benchmarks/durable_writes.py
        [--runs 3] [--records 20000] [--batches 1 8 32 64] [--value-size 1104]
        [--big-batches 1 4] [--big-value-size 1048576]
        [--stores lmdb wal wal-overlay wal-txn wal-engine rocksdb]
        [--segment zeroed|fallocate|append] [--checkpoint-mib 64] [--dir /tmp]

One process, no network: the storage alone, as a node's writer thread drives it. For each
batch size, `--runs` interleaved rounds (the order of the stores rotates every round); each
round opens every store fresh in a temporary directory, loads `--records` values (not timed),
then makes batches of random overwrites durable one after the other, each batch durable
before the next starts (the "ack"):

- ``lmdb``: today's path, `LmdbEngine` in ``fsync`` mode: one synced LMDB commit per batch
  (LMDB writes the tree's pages, fdatasyncs, then writes the meta page through an O_DSYNC
  descriptor).
- ``wal``: a write-ahead log, the issue's design: the batch as one record (length, CRC-32,
  epoch, then the puts) written with one `os.pwrite` into a preallocated segment and one
  `os.fdatasync`; then applied to LMDB opened without sync (``sync=False, metasync=False``).
  Once the segment holds `--checkpoint-mib`, a checkpoint: `env.sync(True)`, then the log
  starts over at offset 0 under the next epoch (stale records of the old epoch end replay).
- ``wal-overlay``: the same log, but the batch goes into an in-memory overlay (a dict) and
  LMDB is written only at a checkpoint, as one synced commit: LMDB on disk is then always a
  synced snapshot, which the ``wal`` variant's unsynced commits do not guarantee after a
  power loss (see benchmarks/README.md).
- ``wal-txn``: the same log, with the batch put into one LMDB write transaction that stays
  open between checkpoints (reads go through it) and is committed, synced, at a checkpoint:
  the overlay is LMDB's own dirty pages.
- ``wal-engine``: `dynakv.storage.wal.WalEngine`: the same log, with LMDB's write transaction
  on a checkpointer thread that applies the batches and commits at checkpoints while the log
  goes on (its segment is `--checkpoint-mib`; a commit over 256 KiB is made durable by a
  checkpoint, which it waits for).
- ``rocksdb``: RocksDB through `rocksdict` (raw mode, default column family, default options:
  its write-ahead log on), one `WriteBatch` per batch written with ``WriteOptions.sync =
  True``.

Every timed phase ends with the work each store still owes the disk: a final checkpoint for
``wal`` and ``wal-overlay``, a memtable flush for ``rocksdb`` (compactions it would run later
are not counted). Per configuration it reports the batch's wall time (median, p99, p99.9 and
max, without that final step: a checkpoint that stalls the batches behind it shows in the
tail), and per put the wall time and the process's CPU, user and system, from
`getrusage` (all threads: RocksDB's background threads count), including the final step.
Then `--reads` reads of recently written keys, before that final step (so the ``wal-overlay``
and ``rocksdb`` reads hit their in-memory tables): wall and CPU per read.

`--segment` chooses how the log's segment is prepared: ``zeroed`` (written with zeros and
synced once, so an fdatasync flushes data blocks only), ``fallocate`` (`posix_fallocate`:
unwritten extents, whose conversion on first write is a metadata change each fdatasync must
journal) or ``append`` (a file that grows, truncated at each checkpoint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from typing import Protocol

import lmdb

from dynakv.storage.lmdb import LmdbEngine, open_environment
from dynakv.storage.wal import WalEngine

HEADER = struct.Struct("<III")  # payload length, CRC-32 of (epoch + payload), epoch
PUT = struct.Struct("<BHI")  # op (1 = put), key length, value length


class Store(Protocol):
    def load(self, items: list[tuple[bytes, bytes]]) -> None: ...
    def write(self, batch: list[tuple[bytes, bytes]]) -> None: ...
    def get(self, key: bytes) -> bytes | None: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


class LmdbSync:
    """Today's engine: one synced LMDB commit per batch."""

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        self.engine = LmdbEngine(path, "fsync")

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            self.engine.put(key, value)
        self.engine.commit()

    def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        for key, value in batch:
            self.engine.put(key, value)
        self.engine.commit()

    def get(self, key: bytes) -> bytes | None:
        return self.engine.get_committed(key)  # the pipelined engine's read path

    def finish(self) -> None:
        self.engine.release_reader()

    def close(self) -> None:
        self.engine.close()


class Log:
    """A write-ahead log segment: one record per batch, one fdatasync per record."""

    def __init__(self, path: str, size: int, mode: str) -> None:
        self.size, self.mode = size, mode
        flags = os.O_RDWR | os.O_CREAT
        self.fd = os.open(path, flags, 0o644)
        if mode == "zeroed":
            zeros = bytes(1 << 20)
            for offset in range(0, size, len(zeros)):
                os.pwrite(self.fd, zeros, offset)
            os.fsync(self.fd)
        elif mode == "fallocate":
            os.posix_fallocate(self.fd, 0, size)
            os.fsync(self.fd)
        self.offset = 0
        self.epoch = 1
        self.records = 0

    def append(self, batch: list[tuple[bytes, bytes]]) -> None:
        parts = []
        for key, value in batch:
            parts += (PUT.pack(1, len(key), len(value)), key, value)
        payload = b"".join(parts)
        epoch = self.epoch.to_bytes(4, "little")
        crc = zlib.crc32(payload, zlib.crc32(epoch))
        record = HEADER.pack(len(payload), crc, self.epoch) + payload
        os.pwrite(self.fd, record, self.offset)
        os.fdatasync(self.fd)
        self.offset += len(record)
        self.records += 1

    def full(self, incoming: int) -> bool:
        return self.offset + incoming > self.size

    def restart(self) -> None:
        """After a synced checkpoint: the next record goes to offset 0 under a new epoch."""
        if self.mode == "append":
            os.ftruncate(self.fd, 0)
        self.offset = 0
        self.epoch += 1

    def close(self) -> None:
        os.close(self.fd)


def batch_bytes(batch: list[tuple[bytes, bytes]]) -> int:
    return HEADER.size + sum(PUT.size + len(k) + len(v) for k, v in batch)


class WalLmdb:
    """The issue's design: log + fdatasync, LMDB without sync, synced checkpoints."""

    lmdb_sync = False  # LMDB's own commits: unsynced here; synced checkpoints in the others

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        os.makedirs(path)
        self.env = open_environment(os.path.join(path, "db"), fsync=self.lmdb_sync)
        self.db = self.env.open_db(b"objects")
        self.log = Log(os.path.join(path, "log"), options.checkpoint_mib << 20, options.segment)
        self.checkpoints = 0
        self.reader: lmdb.Transaction | None = None

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            for key, value in items:
                txn.put(key, value)
        self.env.sync(True)

    def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        size = batch_bytes(batch)
        if self.log.full(size):
            self.checkpoint()
        self.log.append(batch)
        self.apply(batch)

    def apply(self, batch: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            for key, value in batch:
                txn.put(key, value)
        self.release()

    def release(self) -> None:
        if self.reader is not None:
            self.reader.abort()
            self.reader = None

    def checkpoint(self) -> None:
        self.env.sync(True)
        self.log.restart()
        self.checkpoints += 1

    def get(self, key: bytes) -> bytes | None:
        if self.reader is None:
            self.reader = self.env.begin(db=self.db)
        return self.reader.get(key)

    def finish(self) -> None:
        self.release()
        self.checkpoint()

    def close(self) -> None:
        self.release()
        self.log.close()
        self.env.close()


class WalOverlay(WalLmdb):
    """The log + an in-memory overlay; LMDB written only at checkpoints, synced."""

    lmdb_sync = True

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        super().__init__(path, options)
        self.overlay: dict[bytes, bytes] = {}

    def apply(self, batch: list[tuple[bytes, bytes]]) -> None:
        self.overlay.update(batch)

    def checkpoint(self) -> None:
        with self.env.begin(write=True, db=self.db) as txn:  # a synced commit
            for key, value in self.overlay.items():
                txn.put(key, value)
        self.release()
        self.overlay = {}
        self.log.restart()
        self.checkpoints += 1

    def get(self, key: bytes) -> bytes | None:
        value = self.overlay.get(key)
        return value if value is not None else super().get(key)


class WalTxn(WalLmdb):
    """The log + one LMDB write transaction left open between checkpoints (the overlay),
    committed with sync at each checkpoint: on disk LMDB is always a synced snapshot."""

    lmdb_sync = True

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        super().__init__(path, options)
        self.txn: lmdb.Transaction | None = None

    def apply(self, batch: list[tuple[bytes, bytes]]) -> None:
        if self.txn is None:
            self.txn = self.env.begin(write=True, db=self.db)
        for key, value in batch:
            self.txn.put(key, value)

    def checkpoint(self) -> None:
        if self.txn is not None:
            self.txn.commit()  # synced
            self.txn = None
        self.log.restart()
        self.checkpoints += 1

    def get(self, key: bytes) -> bytes | None:
        if self.txn is not None:
            return self.txn.get(key)
        return super().get(key)

    def close(self) -> None:
        if self.txn is not None:
            self.txn.abort()
        super().close()


class WalEngineStore:
    """dynakv's WalEngine (storage/wal.py) itself, as the node would use it."""

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        self.engine = WalEngine(path, segment_bytes=options.checkpoint_mib << 20)

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            self.engine.put(key, value)
        self.engine.close()  # a checkpoint: the load in LMDB, synced
        self.engine = WalEngine(self.engine.path, segment_bytes=self.engine.segment_bytes)

    def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        for key, value in batch:
            self.engine.put(key, value)
        self.engine.commit()

    def get(self, key: bytes) -> bytes | None:
        return self.engine.get(key)

    @property
    def checkpoints(self) -> int:
        return self.engine.checkpoints

    def finish(self) -> None:
        self.engine.checkpoint()

    def close(self) -> None:
        self.engine.close()


class Rocks:
    """RocksDB through rocksdict: a WriteBatch per batch, WriteOptions.sync = True."""

    def __init__(self, path: str, options: argparse.Namespace) -> None:
        import rocksdict  # an optional dependency: only this store needs it

        self.rocksdict = rocksdict
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = rocksdict.Rdict(path, options=opts)
        self.sync = rocksdict.WriteOptions()
        self.sync.sync = True
        self.nosync = rocksdict.WriteOptions()
        self.checkpoints = 0

    def load(self, items: list[tuple[bytes, bytes]]) -> None:
        wb = self.rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            wb.put(key, value)
        self.db.write(wb, self.nosync)
        self.db.flush(True)
        self.db.flush_wal(True)

    def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        wb = self.rocksdict.WriteBatch(raw_mode=True)
        for key, value in batch:
            wb.put(key, value)
        self.db.write(wb, self.sync)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def finish(self) -> None:
        self.db.flush(True)
        self.checkpoints += 1

    def close(self) -> None:
        self.db.close()


STORES = {
    "lmdb": LmdbSync,
    "wal": WalLmdb,
    "wal-overlay": WalOverlay,
    "wal-txn": WalTxn,
    "wal-engine": WalEngineStore,
    "rocksdb": Rocks,
}


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(
    name: str, batch: int, value_size: int, records: int, batches: int, args: argparse.Namespace
) -> dict[str, object]:
    root = tempfile.mkdtemp(prefix="durable-writes-", dir=args.dir)
    try:
        rng = random.Random(batch * 7919 + value_size)
        keys = [hashlib.md5(b"key%d" % i).digest() for i in range(records)]
        value = os.urandom(value_size)
        store: Store = STORES[name](os.path.join(root, name), args)
        try:
            store.load([(key, value) for key in keys])
            work = [
                [(keys[rng.randrange(records)], value) for _ in range(batch)]
                for _ in range(batches)
            ]
            for b in work[:5]:  # warm-up, untimed
                store.write(b)
            times = []
            user0, sys0 = cpu()
            wall0 = time.perf_counter()
            for b in work:
                t0 = time.perf_counter()
                store.write(b)
                times.append(time.perf_counter() - t0)
            wall1 = time.perf_counter()
            user1, sys1 = cpu()
            recent = list(dict.fromkeys(key for b in reversed(work) for key, _ in b))[:2000]
            reads = [recent[i % len(recent)] for i in range(args.reads)]
            rng.shuffle(reads)
            r_user0, r_sys0 = cpu()
            r0 = time.perf_counter()
            for key in reads:
                if store.get(key) is None:
                    raise AssertionError(f"{name}: a written key is missing")
            r1 = time.perf_counter()
            r_user1, r_sys1 = cpu()
            f_user0, f_sys0 = cpu()
            f0 = time.perf_counter()
            store.finish()
            f1 = time.perf_counter()
            f_user1, f_sys1 = cpu()
            checkpoints = getattr(store, "checkpoints", 0)
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    puts = batch * batches
    times.sort()
    us = 1e6
    return {
        "store": name,
        "batch": batch,
        "value_size": value_size,
        "batches": batches,
        "batch_p50_ms": statistics.median(times) * 1e3,
        "batch_p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3,
        "batch_p999_ms": times[min(len(times) - 1, int(len(times) * 0.999))] * 1e3,
        "batch_max_ms": times[-1] * 1e3,
        "put_wall_us": ((wall1 - wall0) + (f1 - f0)) / puts * us,
        "put_user_us": ((user1 - user0) + (f_user1 - f_user0)) / puts * us,
        "put_sys_us": ((sys1 - sys0) + (f_sys1 - f_sys0)) / puts * us,
        "finish_ms": (f1 - f0) * 1e3,
        "checkpoints": checkpoints,
        "read_wall_us": (r1 - r0) / len(reads) * us,
        "read_cpu_us": ((r_user1 - r_user0) + (r_sys1 - r_sys0)) / len(reads) * us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 8, 32, 64])
    parser.add_argument("--value-size", type=int, default=1104, help="1 KiB + a DVVSet record")
    parser.add_argument("--puts", type=int, default=4000, help="puts per configuration")
    parser.add_argument("--min-batches", type=int, default=250)
    parser.add_argument("--big-batches", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--big-value-size", type=int, default=1 << 20)
    parser.add_argument("--big-records", type=int, default=64)
    parser.add_argument("--big-puts", type=int, default=120)
    parser.add_argument("--stores", nargs="*", default=list(STORES), choices=list(STORES))
    parser.add_argument("--segment", default="zeroed", choices=["zeroed", "fallocate", "append"])
    parser.add_argument("--checkpoint-mib", type=int, default=64)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--out", help="also write every result as JSON lines here")
    args = parser.parse_args()

    configs = [
        (b, args.value_size, args.records, max(args.min_batches, args.puts // b))
        for b in args.batches
    ]
    configs += [
        (b, args.big_value_size, args.big_records, max(20, args.big_puts // b))
        for b in args.big_batches
    ]
    results: list[dict[str, object]] = []
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    try:
        for run in range(args.runs):
            for batch, size, records, batches in configs:
                shift = run % len(args.stores)
                for name in args.stores[shift:] + args.stores[:shift]:
                    row = measure(name, batch, size, records, batches, args)
                    row["run"] = run
                    row["load"] = os.getloadavg()[0]
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if out is not None:
                        print(json.dumps(row), file=out, flush=True)
    finally:
        if out is not None:
            out.close()
    print(
        f"median of {args.runs} interleaved runs; segment {args.segment}, checkpoint "
        f"{args.checkpoint_mib} MiB; load average {os.getloadavg()}"
    )
    print(
        "| value | batch | store | batch p50 ms | batch p99 ms | batch p99.9 ms | batch max ms "
        "| put wall µs | put CPU µs (user + sys medians) | final step ms | read wall µs "
        "| read CPU µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for batch, size, _, _ in configs:
        for name in args.stores:
            rows = [
                r
                for r in results
                if r["store"] == name and r["batch"] == batch and r["value_size"] == size
            ]

            def med(field: str, rows: list[dict[str, object]] = rows) -> float:
                return statistics.median(float(r[field]) for r in rows)  # type: ignore[arg-type]

            total = statistics.median(
                float(r["put_user_us"]) + float(r["put_sys_us"]) for r in rows
            )  # type: ignore[arg-type]
            user, sys_ = med("put_user_us"), med("put_sys_us")
            print(
                f"| {size} | {batch} | {name} | {med('batch_p50_ms'):.2f} | "
                f"{med('batch_p99_ms'):.2f} | {med('batch_p999_ms'):.2f} | "
                f"{med('batch_max_ms'):.2f} | {med('put_wall_us'):.0f} | "
                f"{total:.0f} ({user:.0f} + {sys_:.0f}) | {med('finish_ms'):.0f} | "
                f"{med('read_wall_us'):.2f} | {med('read_cpu_us'):.2f} |"
            )


if __name__ == "__main__":
    main()
