"""LMDB behind a write-ahead log: one sequential append and one fdatasync per group commit.

`WalEngine` is an `LmdbEngine` (``fsync`` mode) whose write transaction stays open across
group commits. `commit()` does not commit it: it appends the commit's writes to a log as one
record and fdatasyncs the log, and that makes them durable. Every `checkpoint_bytes` of log
(or `checkpoint_writes` writes, which bound the transaction's dirty pages in memory) the
transaction is committed, synced, and the log starts over. Reads and scans go through the
open transaction, so they see every write, logged or not yet committed.

Why the transaction stays open rather than being committed without sync after each record
(the other way to apply a log to LMDB): an unsynced LMDB commit writes tree pages and a meta
page in no particular order, and reuses pages of the last synced snapshot once two newer
transactions no longer need them; after a power loss the file can hold a meta page whose
tree is half on disk, and no log replay repairs that. Here LMDB on disk only ever changes
by synced commits, so it is always a whole snapshot, and the log holds everything after it.
(A process kill leaves the page cache, and so any layout, intact; a power loss does not.)

The log is one file, ``wal.log`` in the engine's directory, of `segment_bytes` written with
zeros and synced when created, so that an fdatasync of a record flushes data blocks only:
no size or extent change to journal (benchmarks/README.md, "Durable writes"). A record is
a header — payload length (4 bytes), CRC-32 of length, epoch and payload (4), epoch (8),
little-endian — then the writes: per write an op byte (put or delete, in objects or hints,
or a metadata put), key length (2), value length (4), key, value.

The epoch numbers checkpoints. A checkpoint commits ``_wal_epoch`` = E + 1 (a metadata name
this engine reserves) with the data, synced, and only then writes records of epoch E + 1
from offset 0 again, over those of E. Replay at open reads records from offset 0 while
they have the epoch LMDB holds, a length that fits and a matching CRC, and applies them in
order; the first that fails ends the log. A crash loses exactly what was never
acknowledged: a record is acknowledged (`commit()` returns) only after its fdatasync, a torn
or unsynced record fails its CRC, and what follows it is older (a lower epoch) or zeros.
After replay the engine checkpoints, so every open starts a new epoch with an empty log.

A commit whose record would be larger than `direct_bytes` (large values: writing them to
the log and then to LMDB would write them twice) or not fit in the rest of the segment is
made durable by a checkpoint instead.

A failed append or fdatasync leaves the engine failed: its writes may or may not be on
disk, and after a failed fdatasync the page cache cannot be trusted. So does an LMDB error
on a write (a full map, say): LMDB then drops its transaction, which holds every write
since the last checkpoint, acknowledged ones included. Every later call raises
`InternalError`; reopening (with a larger map) replays the log.

A directory a `WalEngine` closed cleanly is a plain LMDB environment with an empty log; an
`LmdbEngine` opens it. After a crash, only a `WalEngine` knows about the log's tail.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator

from dynakv.errors import InternalError
from dynakv.storage.engine import (
    HINTS,
    OBJECTS,
    CommitStats,
    Durability,
    Engine,
    Table,
    check_key,
    check_table,
    check_value,
    meta_key,
)
from dynakv.storage.lmdb import DEFAULT_MAP_SIZE, LmdbEngine

LOG_NAME = "wal.log"
EPOCH_META = "_wal_epoch"  # reserved metadata name: the epoch of the records to replay
HEADER = struct.Struct("<IIQ")  # payload length, CRC-32, epoch
CRC_FIELDS = struct.Struct("<IQ")  # length and epoch, covered by the CRC before the payload
WRITE = struct.Struct("<BHI")  # op, key length, value length

PUT, DELETE, META = 1, 2, 3  # + 0 for objects, + 8 for hints (PUT and DELETE)
HINTS_FLAG = 8

DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_CHECKPOINT_WRITES = 16_384  # about as many dirty 4 KiB pages at most: 64 MiB
DEFAULT_DIRECT_BYTES = 256 << 10
ZEROS = bytes(1 << 20)

_Write = tuple[int, bytes, bytes]  # op, key, value (b"" for deletes)


def encode_record(epoch: int, writes: list[_Write]) -> bytes:
    """A log record holding `writes` (op, key, value) under `epoch`."""
    parts: list[bytes] = []
    for op, key, value in writes:
        parts += (WRITE.pack(op, len(key), len(value)), key, value)
    payload = b"".join(parts)
    crc = zlib.crc32(payload, zlib.crc32(CRC_FIELDS.pack(len(payload), epoch)))
    return HEADER.pack(len(payload), crc, epoch) + payload


def decode_writes(payload: bytes) -> Iterator[_Write]:
    """The writes of a record's payload (whose CRC matched), in order."""
    view = memoryview(payload)
    at = 0
    while at < len(payload):
        op, key_len, value_len = WRITE.unpack_from(payload, at)
        at += WRITE.size
        key = bytes(view[at : at + key_len])
        at += key_len
        yield op, key, bytes(view[at : at + value_len])
        at += value_len


def read_log(fd: int, epoch: int, limit: int) -> Iterator[tuple[int, bytes]]:
    """``(offset after, payload)`` of each valid record of `epoch` from offset 0, in order,
    up to the first that is not one (a torn or stale record, zeros, the end)."""
    offset = 0
    while offset + HEADER.size <= limit:
        header = os.pread(fd, HEADER.size, offset)
        if len(header) < HEADER.size:
            return
        length, crc, record_epoch = HEADER.unpack(header)
        end = offset + HEADER.size + length
        if record_epoch != epoch or length == 0 or end > limit:
            return
        payload = os.pread(fd, length, offset + HEADER.size)
        if len(payload) < length:
            return
        if zlib.crc32(payload, zlib.crc32(CRC_FIELDS.pack(length, epoch))) != crc:
            return
        yield end, payload
        offset = end


class WalEngine(Engine):
    """An LMDB engine made durable by a write-ahead log; see the module docstring."""

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
        self._writes: list[_Write] = []  # since the last commit: the next record
        self._bytes = HEADER.size  # the size of that record
        self._since_checkpoint = 0  # writes in the open transaction
        self._offset = 0  # where the next record goes
        self._failed: BaseException | None = None
        self._closed = False
        self.replayed = 0  # records applied at open (for tests and logs)
        self.checkpoints = 0
        self._commit_stats = CommitStats()
        log_path = os.path.join(self.path, LOG_NAME)
        created = not os.path.exists(log_path)
        try:
            self._fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self.inner.close()
            raise InternalError(f"cannot open the write-ahead log {log_path}: {e}") from e
        try:
            self._epoch = int(self.inner.meta_get(EPOCH_META) or b"0")
            self._replay()
            self._checkpoint()  # a new epoch: the log is empty from here
            self._preallocate(created)
        except BaseException:
            self.crash()
            raise

    # --- the log ---------------------------------------------------------------------------

    def _replay(self) -> None:
        size = os.fstat(self._fd).st_size
        for _, payload in read_log(self._fd, self._epoch, size):
            for op, key, value in decode_writes(payload):
                self._apply(op, key, value)
            self.replayed += 1

    def _apply(self, op: int, key: bytes, value: bytes) -> None:
        table: Table = HINTS if op & HINTS_FLAG else OBJECTS
        kind = op & ~HINTS_FLAG
        if kind == PUT:
            self.inner.put(key, value, table)
        elif kind == DELETE:
            self.inner.delete(key, table)
        elif kind == META:
            self.inner.meta_put(key.decode("utf-8"), value)
        else:
            raise InternalError(f"write-ahead log {self.path}: unknown op {op} in a valid record")
        self._since_checkpoint += 1

    def _preallocate(self, created: bool) -> None:
        """Zeros up to segment_bytes, synced, so appends change no file metadata."""
        size = os.fstat(self._fd).st_size
        for offset in range(size, self.segment_bytes, len(ZEROS)):
            os.pwrite(self._fd, ZEROS[: self.segment_bytes - offset], offset)
        if size < self.segment_bytes:
            os.fsync(self._fd)
        if created:
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _checkpoint(self) -> None:
        """Commit LMDB's transaction, synced, with the next epoch; the log starts over."""
        epoch = self._epoch + 1
        self.inner.meta_put(EPOCH_META, b"%d" % epoch)
        self.inner.commit()  # LmdbEngine in fsync mode: synced
        self._epoch = epoch
        self._offset = 0
        self._since_checkpoint = 0
        self.checkpoints += 1

    # --- Engine ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")
        if self._failed is not None:
            raise InternalError(f"storage failed: {self._failed}; reopen to replay the log")

    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        self._check_open()
        return self.inner.get(key, table)

    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        key, value = check_key(key), check_value(value)
        op = PUT | (HINTS_FLAG if check_table(table) == HINTS else 0)
        self._check_open()
        try:
            self.inner.put(key, value, table)
        except InternalError as e:  # LMDB dropped its transaction: logged writes too
            self._failed = e
            raise
        self._writes.append((op, key, value))
        self._bytes += WRITE.size + len(key) + len(value)

    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        key = check_key(key)
        op = DELETE | (HINTS_FLAG if check_table(table) == HINTS else 0)
        self._check_open()
        try:
            self.inner.delete(key, table)
        except InternalError as e:  # LMDB dropped its transaction: logged writes too
            self._failed = e
            raise
        self._writes.append((op, key, b""))
        self._bytes += WRITE.size + len(key)

    def meta_put(self, name: str, value: bytes) -> None:
        raw, value = meta_key(name), check_value(value)
        if name == EPOCH_META:
            raise ValueError(f"meta name {EPOCH_META!r} is reserved by the write-ahead log")
        self._check_open()
        try:
            self.inner.meta_put(name, value)
        except InternalError as e:  # LMDB dropped its transaction: logged writes too
            self._failed = e
            raise
        self._writes.append((META, raw, value))
        self._bytes += WRITE.size + len(raw) + len(value)

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        return self.inner.meta_get(name)

    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        return self.inner.scan(start, end, table)

    def count(self, table: Table = OBJECTS) -> int:
        self._check_open()
        return self.inner.count(table)

    def pending(self) -> int:
        return len(self._writes)

    def commit_stats(self) -> CommitStats | None:
        return self._commit_stats

    def commit(self) -> None:
        self._check_open()
        writes = self._writes
        if not writes:
            return
        size, self._writes, self._bytes = self._bytes, [], HEADER.size
        self._since_checkpoint += len(writes)
        started = time.perf_counter()
        try:
            if (
                size > self.direct_bytes
                or self._offset + size > self.segment_bytes
                or self._since_checkpoint >= self.checkpoint_writes
            ):
                self._checkpoint()  # large values are not encoded (copied, summed) for nothing
                self._commit_stats.record(len(writes), time.perf_counter() - started)
                return
            record = encode_record(self._epoch, writes)
            written = os.pwrite(self._fd, record, self._offset)
            if written != len(record):
                raise OSError(f"short write to the log: {written} of {len(record)} bytes")
            os.fdatasync(self._fd)
        except (OSError, InternalError) as e:
            self._failed = e
            raise InternalError(f"commit failed: {e}") from e
        self._commit_stats.record(len(writes), time.perf_counter() - started)
        self._offset += len(record)

    def checkpoint(self) -> None:
        """Make everything written so far durable in LMDB (one synced commit) and empty the
        log: bounds the replay at the next open, e.g. when the node is idle."""
        self._check_open()
        self._writes, self._bytes = [], HEADER.size
        try:
            self._checkpoint()
        except InternalError as e:
            self._failed = e
            raise

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._failed is None:
                self._checkpoint()  # commits pending writes too; the log is empty after
        finally:
            self._closed = True
            os.close(self._fd)
            if self._failed is None:
                self.inner.close()
            else:
                self.inner.abandon()

    def crash(self) -> None:
        """Stop as a process kill would: nothing more is written, the open transaction and
        uncommitted writes are dropped. Reopening replays the log (tests use this)."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        self.inner.abandon()
