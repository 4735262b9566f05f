"""The LMDB engine (`engine = "lmdb"`; the default wal engine keeps its data in one too): a
copy-on-write B+tree, one writer, many readers.

One LMDB environment lives in the directory `path`, with two named databases: ``objects``
(digest -> encoded value) and ``meta`` (name -> small metadata).

Group commit: one write transaction stays open between commits, so every write of one
event-loop turn lands in one transaction, and `commit()` commits it. Reads go through that
same write transaction, so they see pending writes; when none is open they use a short read
transaction. Durability modes:

- ``fsync``: the environment syncs data and meta pages on every commit — one fsync per
  `commit()`; survives power loss.
- ``os``: no fsync; every `commit()` commits, so the data is in the OS page cache and survives
  a process kill (SIGKILL), but not a power loss or kernel crash.
- ``none``: no fsync, and `commit()` only really commits once `pending() >= 1000`
  (`NONE_COMMIT_EVERY`); a process kill loses up to that many writes. `close()` always commits.
  (The engine never reads a clock, so "or after 1 s" is left to the caller.)

Why `scan` reads in batches: an LMDB cursor belongs to a transaction. Inside the write
transaction, a put or delete through the transaction moves the B+tree pages a cursor points
into, and a `commit()` ends the transaction and invalidates every cursor on it — and the
runtime does write (read repair, handoff, anti-entropy) and commit while a scan of a partition
is in progress. So `scan` opens a cursor, copies out up to `SCAN_BATCH` pairs as `bytes`,
closes it, yields them, and resumes strictly after the last key seen with a cursor on
whatever transaction is current then. No cursor or buffer ever outlives a batch.

A full map (`lmdb.MapFullError`) aborts the pending transaction — its writes are lost, none of
them was acknowledged yet since acknowledgements follow `commit()` — and raises
`dynakv.errors.InternalError` saying to reopen with a larger `map_size`. Any other LMDB error
during a write likewise aborts the transaction and raises `InternalError`.

Do not open the same directory twice in one process (LMDB's file locks are per process).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import lmdb

from dynakv.errors import InternalError, InvalidRequest
from dynakv.storage.engine import (
    OBJECTS,
    SCAN_BATCH,
    TABLES,
    CommitStats,
    Durability,
    Engine,
    Table,
    check_bound,
    check_durability,
    check_key,
    check_table,
    check_value,
    meta_key,
)

NONE_COMMIT_EVERY = 1000  # durability "none": commit() commits once this many writes are pending


DEFAULT_MAP_SIZE = 64 << 30


def open_environment(path: str, fsync: bool, map_size: int = DEFAULT_MAP_SIZE) -> lmdb.Environment:
    """The LMDB environment as dynakv opens it (benchmarks/floor.py opens it the same way)."""
    return lmdb.open(
        path,
        map_size=map_size,
        subdir=True,
        max_dbs=4,  # objects, hints, values, meta
        sync=fsync,
        metasync=fsync,
        writemap=False,
        lock=True,
        max_readers=126,
        readahead=False,
    )


class LmdbEngine(Engine):
    """LMDB-backed engine with group commit; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike,
        durability: Durability = "fsync",
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> None:
        self.durability: Durability = check_durability(durability)
        self.path = os.fspath(path)
        self.map_size = map_size
        self.scan_batch = SCAN_BATCH
        os.makedirs(self.path, exist_ok=True)
        try:
            self._env = open_environment(self.path, durability == "fsync", map_size)
            self._tables = {name: self._env.open_db(name.encode()) for name in TABLES}
            self._meta = self._env.open_db(b"meta")
        except lmdb.Error as e:
            raise InternalError(f"cannot open LMDB environment at {self.path}: {e}") from e
        self._txn: lmdb.Transaction | None = None
        self._reader: lmdb.Transaction | None = None  # get_committed's snapshot
        self._pending = 0
        self._closed = False
        self._commit_stats = CommitStats()

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")

    def _abort(self) -> None:
        txn, self._txn = self._txn, None
        self._pending = 0
        if txn is not None:
            with contextlib.suppress(lmdb.Error):  # already dead after a failed commit
                txn.abort()

    def _failed(self, e: lmdb.Error, doing: str) -> InternalError:
        """Abort the pending transaction after an LMDB error and describe it."""
        lost = self._pending
        self._abort()
        if isinstance(e, lmdb.MapFullError):
            return InternalError(
                f"LMDB map is full at {self.path} (map_size={self.map_size} bytes) while "
                f"{doing}; the uncommitted transaction of {lost} writes was discarded. "
                f"Reopen the engine with a larger map_size."
            )
        return InternalError(
            f"LMDB error at {self.path} while {doing}: {e}; "
            f"the uncommitted transaction of {lost} writes was discarded"
        )

    def _write_txn(self) -> lmdb.Transaction:
        if self._txn is None:
            self._txn = self._env.begin(write=True)
        return self._txn

    def _read(self, key: bytes, db: object) -> bytes | None:
        if self._txn is not None:
            return self._txn.get(key, db=db)
        with self._env.begin(db=db) as txn:
            return txn.get(key)

    # --- Engine ----------------------------------------------------------------------------

    def _db(self, table: str) -> object:
        db = self._tables.get(table)
        if db is None:
            check_table(table)
        return db

    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        key = check_key(key)
        self._check_open()
        return self._read(key, self._db(table))

    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        key = check_key(key)
        value = check_value(value)
        self._check_open()
        db = self._db(table)
        try:
            self._write_txn().put(key, value, db=db)
        except lmdb.Error as e:
            raise self._failed(e, f"putting into {table}") from e
        self._pending += 1

    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        key = check_key(key)
        self._check_open()
        db = self._db(table)
        try:
            self._write_txn().delete(key, db=db)
        except lmdb.Error as e:
            raise self._failed(e, f"deleting from {table}") from e
        self._pending += 1

    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        start = check_bound(start, "start")
        end = check_bound(end, "end")
        self._check_open()
        return self._scan(start, end, self._db(table))

    def _batch(
        self, txn: lmdb.Transaction, lo: bytes, after: bool, end: bytes, db: object
    ) -> list[tuple[bytes, bytes]]:
        """Up to scan_batch pairs from `lo` (exclusive if `after`) to `end`, copied out."""
        out: list[tuple[bytes, bytes]] = []
        with txn.cursor(db=db) as cur:
            found = cur.set_range(lo) if lo else cur.first()
            if found and after and cur.key() == lo:
                found = cur.next()
            while found and len(out) < self.scan_batch:
                key = cur.key()
                if end and key >= end:
                    break
                out.append((key, cur.value()))
                found = cur.next()
        return out

    def scan_committed(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        """A scan of what is committed, never through the open write transaction (safe
        while another thread writes: each batch reads in a read-only transaction)."""
        start = check_bound(start, "start")
        end = check_bound(end, "end")
        self._check_open()
        return self._scan(start, end, self._db(table), committed=True)

    def _scan(
        self, start: bytes, end: bytes, db: object, committed: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        lo, after = start, False
        while True:
            self._check_open()
            if self._txn is not None and not committed:
                batch = self._batch(self._txn, lo, after, end, db)
            else:
                with self._env.begin() as txn:
                    batch = self._batch(txn, lo, after, end, db)
            yield from batch
            if len(batch) < self.scan_batch:
                return
            lo, after = batch[-1][0], True

    def count(self, table: Table = OBJECTS) -> int:
        self._check_open()
        db = self._db(table)
        if self._txn is not None:
            return self._txn.stat(db)["entries"]
        with self._env.begin() as txn:
            return txn.stat(db)["entries"]

    def count_committed(self, keys: list[bytes], table: Table = OBJECTS) -> tuple[int, set[bytes]]:
        """In one read-only snapshot of what is committed (never the open write transaction):
        the table's entry count, and which of `keys` it holds."""
        self._check_open()
        db = self._db(table)
        with self._env.begin(db=db) as txn:
            present = {key for key in keys if txn.get(key) is not None}
            return txn.stat(db)["entries"], present

    def get_committed(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        """A read that never uses the open write transaction (safe while another thread
        writes). It reads in one read-only transaction kept open until `release_reader`,
        which the owner calls once new commits must be seen: beginning a transaction per
        read cost two more calls into LMDB, and each gives up the GIL."""
        reader = self._reader
        if reader is None:
            self._check_open()
            reader = self._reader = self._env.begin()
        return reader.get(key, db=self._db(table))

    def release_reader(self) -> None:
        """End the transaction get_committed reads in; the next read sees every commit."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.abort()

    def meta_get_committed(self, name: str) -> bytes | None:
        with self._env.begin(db=self._meta) as txn:
            return txn.get(meta_key(name))

    def meta_get(self, name: str) -> bytes | None:
        raw = meta_key(name)
        self._check_open()
        return self._read(raw, self._meta)

    def meta_put(self, name: str, value: bytes) -> None:
        raw = meta_key(name)
        value = check_value(value)
        self._check_open()
        try:
            self._write_txn().put(raw, value, db=self._meta)
        except lmdb.Error as e:
            raise self._failed(e, "putting metadata") from e
        self._pending += 1

    def commit(self) -> None:
        self._check_open()
        if self.durability == "none" and self._pending < NONE_COMMIT_EVERY:
            return
        self._commit()

    def _commit(self) -> None:
        txn = self._txn
        if txn is None:
            return
        started = time.perf_counter()
        try:
            txn.commit()
        except lmdb.Error as e:
            raise self._failed(e, "committing") from e
        if self.durability == "fsync":
            self._commit_stats.record(self._pending, time.perf_counter() - started)
        self._txn = None
        self._pending = 0

    def commit_stats(self) -> CommitStats | None:
        # Only synced commits: in the other modes a commit never waits for the disk.
        return self._commit_stats if self.durability == "fsync" else None

    def pending(self) -> int:
        return self._pending

    def backup(self, path: str) -> int:
        """LMDB's own hot copy (mdb_env_copy2, compacted): it reads one snapshot of the
        committed pages through a read transaction, so writers go on meanwhile."""
        self._check_open()
        if os.path.exists(os.path.join(path, "data.mdb")):
            raise InvalidRequest(f"{path} already holds a data.mdb: back up into a new directory")
        os.makedirs(path, exist_ok=True)
        try:
            self._env.copy(path, compact=True)
        except lmdb.Error as e:  # not _failed: the write transaction is another thread's
            raise InternalError(f"LMDB backup of {self.path} into {path} failed: {e}") from e
        return os.path.getsize(os.path.join(path, "data.mdb"))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._commit()
        finally:
            self._abort()
            self.release_reader()
            self._closed = True
            self._env.close()

    def rollback(self) -> None:
        """Abort the open write transaction, if any (on the thread that began it)."""
        self._abort()

    def abandon(self) -> None:
        """Close without committing: the open transaction and its writes are dropped, as a
        process kill would drop them (`WalEngine` after a failure, and tests)."""
        if self._closed:
            return
        self._abort()
        self.release_reader()
        self._closed = True
        self._env.close()
