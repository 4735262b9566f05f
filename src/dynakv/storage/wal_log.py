"""The write-ahead log's on-disk format: records, and the two preallocated segment files.

Pure format and file I/O: it knows nothing of LMDB or of when a checkpoint happens (wal.py).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator, Mapping

from dynakv.errors import InternalError
from dynakv.storage.engine import HINTS, OBJECTS, VALUES, Table

SEGMENT_NAMES = ("wal.0.log", "wal.1.log")  # epoch E's records go to SEGMENT_NAMES[E % 2]
LEGACY_NAME = "wal.log"  # the one segment of the earlier format: replayed at open, then removed
EPOCH_META = "_wal_epoch"  # reserved metadata name: the epoch of the records to replay first
HEADER = struct.Struct("<IIQ")  # payload length, CRC-32, epoch
CRC_FIELDS = struct.Struct("<IQ")  # length and epoch, covered by the CRC before the payload
WRITE = struct.Struct("<BHI")  # op, key length, value length

PUT, DELETE, META = 1, 2, 3  # + 0 for objects, + 8 for hints, + 16 for values (PUT, DELETE)
HINTS_FLAG = 8
VALUES_FLAG = 16
TABLE_FLAGS: dict[str, int] = {OBJECTS: 0, HINTS: HINTS_FLAG, VALUES: VALUES_FLAG}
FLAG_TABLES: dict[int, Table] = {0: OBJECTS, HINTS_FLAG: HINTS, VALUES_FLAG: VALUES}

ZEROS = bytes(1 << 20)

Write = tuple[int, bytes, bytes]  # op, key, value (b"" for deletes)
Writes = Mapping[tuple[str, bytes], bytes | None]  # (table, key) -> value; None: a delete
Meta = Mapping[str, bytes]


def segment_path(directory: str, epoch: int) -> str:
    """The file epoch `epoch`'s records are appended to."""
    return os.path.join(directory, SEGMENT_NAMES[epoch % 2])


def record_size(writes: Writes, meta: Meta) -> int:
    """The size `encode_record` would give, without encoding (copying) anything."""
    size = HEADER.size + WRITE.size * (len(writes) + len(meta))
    for (_, key), value in writes.items():
        size += len(key) + (len(value) if value is not None else 0)
    for name, value in meta.items():
        size += len(name.encode("utf-8")) + len(value)
    return size


def encode_writes(writes: Writes, meta: Meta) -> list[Write]:
    """A batch's writes as ops of the log, in the order they are applied at replay."""
    out: list[Write] = []
    for (table, key), value in writes.items():
        flag = TABLE_FLAGS[table]
        out.append((PUT | flag, key, value) if value is not None else (DELETE | flag, key, b""))
    out += [(META, name.encode("utf-8"), value) for name, value in meta.items()]
    return out


def encode_record(epoch: int, writes: list[Write]) -> bytes:
    """A log record holding `writes` (op, key, value) under `epoch`."""
    parts: list[bytes] = []
    for op, key, value in writes:
        parts += (WRITE.pack(op, len(key), len(value)), key, value)
    payload = b"".join(parts)
    crc = zlib.crc32(payload, zlib.crc32(CRC_FIELDS.pack(len(payload), epoch)))
    return HEADER.pack(len(payload), crc, epoch) + payload


def decode_writes(payload: bytes) -> Iterator[Write]:
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


def legacy_records(directory: str, epoch: int) -> list[bytes]:
    """The payloads of the records of `epoch` in a log of the one-segment format (the same
    records, from offset 0), which a WalEngine killed before an upgrade leaves behind."""
    try:
        fd = os.open(os.path.join(directory, LEGACY_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        return [payload for _, payload in read_log(fd, epoch, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


def remove_legacy(directory: str) -> None:
    """Remove the one-segment log, once LMDB holds its records (synced)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, LEGACY_NAME))


class Segments:
    """The log's two files, each `segment_bytes` of zeros synced when created, so that an
    fdatasync of a record flushes data blocks only: no size or extent change to journal
    (benchmarks/README.md, "Durable writes")."""

    def __init__(self, directory: str, segment_bytes: int, sync: bool = True) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.sync = sync  # False: appends reach the page cache only (durability os, none)
        self._fds: list[int] = []
        try:
            created = False
            for name in SEGMENT_NAMES:
                path = os.path.join(directory, name)
                created |= not os.path.exists(path)
                self._fds.append(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
                self._preallocate(self._fds[-1])
            if created:
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as e:
            self.close()
            raise InternalError(f"cannot open the write-ahead log in {directory}: {e}") from e

    def _preallocate(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        for offset in range(size, self.segment_bytes, len(ZEROS)):
            os.pwrite(fd, ZEROS[: self.segment_bytes - offset], offset)
        if size < self.segment_bytes:
            os.fsync(fd)

    def records(self, epoch: int) -> Iterator[bytes]:
        """The payloads of epoch `epoch`'s valid records, in order (see `read_log`)."""
        fd = self._fds[epoch % 2]
        for _, payload in read_log(fd, epoch, os.fstat(fd).st_size):
            yield payload

    def append(self, epoch: int, offset: int, record: bytes) -> None:
        """Write `record` at `offset` of epoch `epoch`'s segment and fdatasync it (if `sync`)."""
        fd = self._fds[epoch % 2]
        written = os.pwrite(fd, record, offset)
        if written != len(record):
            raise OSError(f"short write to the log: {written} of {len(record)} bytes")
        if self.sync:
            os.fdatasync(fd)

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
