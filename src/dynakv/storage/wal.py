"""LMDB behind a write-ahead log: one sequential append and one fdatasync per group commit,
with LMDB's checkpoints off the commit path.

`commit()` appends the commit's writes to the log as one record and fdatasyncs it: that makes
them durable, and `commit()` returns. It then hands the batch to a checkpointer thread
(wal_checkpointer.py), which owns LMDB's one write transaction, applies the batch to it, and
at each checkpoint commits it, synced. A checkpoint is due after `checkpoint_writes` writes
(which bound the transaction's dirty pages in memory) or half a segment of log, and it runs
while the log goes on: the commits meanwhile go to the other segment, are acknowledged after
their own fdatasync, and are applied to the next transaction once the checkpoint's commit
returns. A checkpoint due while the one before it still runs waits for it, and the log goes
on in the same segment meanwhile; only a full segment makes a commit wait. Until a
checkpoint holds them, batches are kept in memory (`LoggedWrites`, by epoch) and laid over
LMDB's committed snapshot for reads and scans, after the writes not yet committed; a
finished checkpoint drops its epoch's batches, after which reads use a new snapshot.

Why LMDB is written only by synced commits of a transaction kept open, rather than committed
without sync after each record: an unsynced LMDB commit writes tree pages and a meta page in
no particular order, and reuses pages of the last synced snapshot once two newer transactions
no longer need them; after a power loss the file can hold a meta page whose tree is half on
disk, and no log replay repairs that. Here LMDB on disk only ever changes by synced commits,
so it is always a whole snapshot, and the log holds everything after it. (A process kill
leaves the page cache, and so any layout, intact; a power loss does not.)

The log (wal_log.py) is two files of `segment_bytes`, preallocated: the records of epoch E go
to segment E mod 2 from offset 0. A record is a header — payload length (4 bytes), CRC-32 of
length, epoch and payload (4), epoch (8), little-endian — then the writes: per write an op
byte (put or delete, in objects or hints, or a metadata put), key length (2), value length
(4), key, value. LMDB's committed snapshot records ``_wal_epoch`` = S (a metadata name this
engine reserves): it holds every record of the epochs below S.

The crash argument. (1) A record is acknowledged only after its fdatasync, and the next one
is written only after that: a torn or unsynced record is the last one written, and fails its
CRC (or is whole, unacknowledged, and harmless to replay). (2) The checkpoint of epoch E
(commit ``_wal_epoch`` = E + 1) is handed over when the log moves to epoch E + 1, and the log
moves only once S = E, i.e. once the checkpoint of E - 1 is synced: so at most one checkpoint
is in flight, every record not in LMDB is of epoch S or S + 1, and segment (E + 1) mod 2 is
reused only when LMDB already holds the records of E - 1 it held. (3) Replay at open reads
segment S mod 2 for records of epoch S, then segment (S + 1) mod 2 for records of S + 1, each
up to the first record that is not a valid one of that epoch, and applies them in order.
Records of S + 1 exist only if the log moved on after the last record of S was synced, so
the first part stops at no acknowledged record; stale records behind a tail are of an older
epoch (or zeros) and stop it too. (4) After replay the engine commits ``_wal_epoch`` = S + 2,
synced, and logs from there: never S + 1 again, whose segment still holds valid records of
S + 1 that must never follow newer ones of the same epoch. So a kill or a power loss at any
point — before a checkpoint's commit, during it, after it, while the batches logged meanwhile
are being applied — loses exactly unacknowledged writes, and LMDB is never torn.

A commit whose record would be larger than `direct_bytes` (large values: writing them to the
log and then to LMDB would write them twice) or than a segment is made durable by a
checkpoint instead, which it waits for; `checkpoint()` does the same for whatever is pending.

A failed append or fdatasync leaves the engine failed: its writes may or may not be on disk,
and after a failed fdatasync the page cache cannot be trusted. So does an LMDB error on the
checkpointer (a full map, say): LMDB then drops its transaction. Every later call raises
`InternalError`; reopening (with a larger map) replays the log.

A directory a `WalEngine` closed cleanly is a plain LMDB environment whose log holds nothing
to replay; an `LmdbEngine` opens it. After a crash, only a `WalEngine` knows about the log.
A ``wal.log`` left by the earlier one-segment format (records of the epoch LMDB holds, from
offset 0, the same record format) is replayed first at open, then removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from dynakv.errors import InternalError
from dynakv.storage.engine import (
    OBJECTS,
    CommitStats,
    Durability,
    Engine,
    Table,
    check_bound,
    check_key,
    check_table,
    check_value,
    meta_key,
)
from dynakv.storage.lmdb import DEFAULT_MAP_SIZE, LmdbEngine
from dynakv.storage.overlay import LoggedWrites, count_over, merge_scan, pending_range
from dynakv.storage.wal_checkpointer import Checkpointer
from dynakv.storage.wal_log import (
    DELETE,
    EPOCH_META,
    FLAG_TABLES,
    HEADER,
    HINTS_FLAG,
    META,
    PUT,
    VALUES_FLAG,
    Segments,
    decode_writes,
    encode_record,
    encode_writes,
    legacy_records,
    record_size,
    remove_legacy,
)

DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_CHECKPOINT_WRITES = 16_384  # about as many dirty 4 KiB pages at most: 64 MiB
DEFAULT_DIRECT_BYTES = 256 << 10


class WalEngine(Engine):
    """An LMDB engine made durable by a write-ahead log; see the module docstring. Used from
    one thread (any one); its checkpointer thread is its own business."""

    durability: Durability = "fsync"

    def __init__(
        self,
        path: str | os.PathLike,
        map_size: int = DEFAULT_MAP_SIZE,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        checkpoint_writes: int = DEFAULT_CHECKPOINT_WRITES,
        direct_bytes: int = DEFAULT_DIRECT_BYTES,
    ) -> None:
        if segment_bytes < HEADER.size + 1 or checkpoint_writes < 1:
            raise ValueError("segment_bytes and checkpoint_writes are too small")
        self.path = os.fspath(path)
        self.segment_bytes = segment_bytes
        self.checkpoint_writes = checkpoint_writes
        self.direct_bytes = direct_bytes
        self.inner = LmdbEngine(self.path, "fsync", map_size)
        self.scan_batch = self.inner.scan_batch
        self._writes: dict[tuple[str, bytes], bytes | None] = {}  # since the last commit
        self._meta: dict[str, bytes] = {}
        self._pending_writes = 0  # writes made since the last commit (one key may count twice)
        self._logged = LoggedWrites()  # committed, not yet in LMDB's snapshot (by epoch)
        self._renew_reader = False  # _logged dropped an epoch: read a newer snapshot first
        self._since_checkpoint = 0  # writes logged in the current epoch
        self._offset = 0  # where the next record goes in the current epoch's segment
        self._failed: BaseException | None = None
        self._closed = False
        self.replayed = 0  # records applied at open (for tests and logs)
        self.checkpoints = 0  # started (each is handed to the checkpointer in order)
        self.logged_epoch = 0  # the epoch of the last commit's writes (PipelinedEngine)
        self._commit_stats = CommitStats()
        try:
            self._log = Segments(self.path, segment_bytes)
        except InternalError:
            self.inner.close()
            raise
        try:
            stable = int(self.inner.meta_get(EPOCH_META) or b"0")
            self._replay(legacy_records(self.path, stable))  # before the segments: older
            self._replay(self._log.records(stable))
            self._replay(self._log.records(stable + 1))
            self._epoch = stable + 2  # never stable + 1 again: see the module docstring, (4)
            self.inner.meta_put(EPOCH_META, b"%d" % self._epoch)
            self.inner.commit()  # synced; on this thread, before the checkpointer starts
            self.checkpoints += 1
            remove_legacy(self.path)
        except BaseException:
            self._log.close()
            self.inner.abandon()
            raise
        self._checkpointer = Checkpointer(self.inner, self._epoch)

    def _replay(self, payloads: Iterable[bytes]) -> None:
        for payload in payloads:
            for op, key, value in decode_writes(payload):
                table = FLAG_TABLES.get(op & (HINTS_FLAG | VALUES_FLAG))
                kind = op & ~(HINTS_FLAG | VALUES_FLAG)
                if table is None:
                    raise InternalError(f"write-ahead log {self.path}: unknown op {op}")
                if kind == PUT:
                    self.inner.put(key, value, table)
                elif kind == DELETE:
                    self.inner.delete(key, table)
                elif kind == META:
                    self.inner.meta_put(key.decode("utf-8"), value)
                else:
                    raise InternalError(f"write-ahead log {self.path}: unknown op {op}")
            self.replayed += 1

    @property
    def stable_epoch(self) -> int:
        """LMDB's committed snapshot holds every write of the epochs below this."""
        return self._checkpointer.stable

    # --- checkpoints -----------------------------------------------------------------------

    def _next_epoch(self) -> None:
        """Hand the current epoch's checkpoint over and log to the other segment, once the
        checkpoint before it is synced (the records that segment holds are in LMDB)."""
        self._checkpointer.wait_for(self._epoch)
        self._checkpointer.checkpoint(self._epoch + 1)
        self._epoch += 1
        self._offset = 0
        self._since_checkpoint = 0
        self.checkpoints += 1

    def _checkpoint_due(self) -> bool:
        """Whether to start a checkpoint once the one before it is synced: the rest of the
        segment is what the log may take meanwhile, before it has to wait for that one."""
        return (
            self._since_checkpoint >= self.checkpoint_writes
            or self._offset * 2 >= self.segment_bytes
        )

    def _take_pending(self) -> tuple[dict[tuple[str, bytes], bytes | None], dict[str, bytes]]:
        writes, meta = self._writes, self._meta
        self._writes, self._meta, self._pending_writes = {}, {}, 0
        self.logged_epoch = self._epoch
        self._logged.add(self._epoch, writes, meta)
        return writes, meta

    def _checkpoint_now(self) -> None:
        """Make pending writes durable by a checkpoint (and everything before them)."""
        self._checkpointer.apply(*self._take_pending())
        self._next_epoch()
        self._checkpointer.wait_for(self._epoch)

    def _settle(self) -> None:
        """Forget the batches a finished checkpoint holds. Only the reader's snapshot may be
        older than that checkpoint, so it is renewed before the next read (not here: a
        PipelinedEngine's loop reads that LMDB's snapshot while its writer commits here)."""
        stable = self._checkpointer.stable
        if self._logged and self._logged.epochs()[0] < stable:
            self._logged.drop_before(stable)
            self._renew_reader = True

    def _snapshot(self) -> LmdbEngine:
        """LMDB, for a read of its committed snapshot with `_logged` laid over it."""
        self._check_open()
        self._settle()
        if self._renew_reader:
            self.inner.release_reader()
            self._renew_reader = False
        return self.inner

    # --- Engine ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")
        failure = self._failed or self._checkpointer.error
        if failure is not None:
            raise InternalError(f"storage failed: {failure}; reopen to replay the log")

    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        slot = (check_table(table), check_key(key))
        lmdb = self._snapshot()
        if slot in self._writes:
            return self._writes[slot]
        found, value = self._logged.get(slot)
        return value if found else lmdb.get_committed(key, table)

    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        slot = (check_table(table), check_key(key))
        value = check_value(value)
        self._check_open()
        self._writes[slot] = value
        self._pending_writes += 1

    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        slot = (check_table(table), check_key(key))
        self._check_open()
        self._writes[slot] = None
        self._pending_writes += 1

    def meta_put(self, name: str, value: bytes) -> None:
        meta_key(name)  # validates the name
        value = check_value(value)
        if name == EPOCH_META:
            raise ValueError(f"meta name {EPOCH_META!r} is reserved by the write-ahead log")
        self._check_open()
        self._meta[name] = value
        self._pending_writes += 1

    def meta_get(self, name: str) -> bytes | None:
        meta_key(name)  # validates the name
        lmdb = self._snapshot()
        if name in self._meta:
            return self._meta[name]
        value = self._logged.meta_get(name)
        return value if value is not None else lmdb.meta_get_committed(name)

    def _pending(self, start: bytes, end: bytes, table: Table) -> list[tuple[bytes, bytes | None]]:
        return pending_range(self._logged, [self._writes], table, start, end)

    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        check_bound(start, "start")
        check_bound(end, "end")
        check_table(table)
        lmdb = self._snapshot()
        pending = self._pending(start, end, table)
        return merge_scan(lmdb.scan_committed(start, end, table), pending)

    def count(self, table: Table = OBJECTS) -> int:
        check_table(table)
        lmdb = self._snapshot()
        return count_over(lmdb, self._pending(b"", b"", table), table)

    def pending(self) -> int:
        return self._pending_writes

    def commit_stats(self) -> CommitStats | None:
        return self._commit_stats

    def commit(self) -> None:
        self._check_open()
        if not self._writes and not self._meta:
            return
        writes = len(self._writes) + len(self._meta)
        size = record_size(self._writes, self._meta)
        started = time.perf_counter()
        try:
            self._settle()
            if size > self.direct_bytes or size > self.segment_bytes:
                self._checkpoint_now()  # large values are not encoded (copied, summed) for nothing
            else:
                if self._offset + size > self.segment_bytes:
                    self._next_epoch()
                record = encode_record(self._epoch, encode_writes(self._writes, self._meta))
                self._log.append(self._epoch, self._offset, record)  # durable from here
                self._offset += len(record)
                self._since_checkpoint += writes
                self._checkpointer.apply(*self._take_pending())
                if self._checkpoint_due() and self._checkpointer.stable >= self._epoch:
                    self._next_epoch()  # without waiting: the checkpoint before is synced
        except (OSError, InternalError) as e:
            self._failed = e
            raise InternalError(f"commit failed: {e}") from e
        self._commit_stats.record(writes, time.perf_counter() - started)

    def checkpoint(self) -> None:
        """Make everything written so far durable in LMDB (one synced commit), so the next
        open replays nothing: bounds the replay, e.g. when the node is idle."""
        self._check_open()
        try:
            self._checkpoint_now()
        except InternalError as e:
            self._failed = e
            raise

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._failed is None and self._checkpointer.error is None:
                self.checkpoint()  # commits pending writes too; nothing to replay after
        finally:
            self._closed = True
            self._checkpointer.stop(halt=False)
            self._log.close()
            if self._failed is None and self._checkpointer.error is None:
                self.inner.close()
            else:
                self.inner.abandon()

    def crash(self) -> None:
        """Stop as a process kill would: nothing more is written, the open transaction and
        uncommitted writes are dropped. Reopening replays the log (tests use this)."""
        if self._closed:
            return
        self._closed = True
        self._checkpointer.stop(halt=True)
        self._log.close()
        self.inner.abandon()
