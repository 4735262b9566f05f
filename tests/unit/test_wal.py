"""WalEngine: replay, torn and stale records, checkpoints, failures (storage/wal.py).

The shared engine behaviour, the model test and the SIGKILL test run it in test_storage.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynakv.errors import InternalError
from dynakv.storage import LmdbEngine
from dynakv.storage import wal as wal_module
from dynakv.storage.wal import WalEngine
from dynakv.storage.wal_log import HEADER, SEGMENT_NAMES, encode_record, segment_path

MAP = 64 << 20


def key(i: int) -> bytes:
    return b"key-%06d" % i


def other(i: int) -> bytes:
    """A key outside the batches."""
    return b"other-%06d" % i


def open_wal(path: Path, **kwargs: int) -> WalEngine:
    return WalEngine(path, MAP, **kwargs)


def write_batches(eng: WalEngine, first: int, last: int, per: int = 3) -> None:
    """Batches first..last-1, each `per` puts of "v<batch>", each committed."""
    for b in range(first, last):
        for j in range(per):
            eng.put(key(b * per + j), b"v%d" % b)
        eng.commit()


def crash_then_write_into_log(eng: WalEngine, record: bytes) -> None:
    """Crash `eng`, then put `record` where its next record would have gone."""
    offset, epoch = eng._offset, eng._epoch
    eng.crash()
    fd = os.open(segment_path(eng.path, epoch), os.O_RDWR)
    try:
        os.pwrite(fd, record, offset)
    finally:
        os.close(fd)


def batches_present(eng: WalEngine, per: int = 3) -> list[int]:
    found: dict[int, int] = {}
    for k, _ in eng.scan(b"key-", b"key."):
        found[int(k[4:]) // per] = found.get(int(k[4:]) // per, 0) + 1
    assert all(n == per for n in found.values()), found  # each batch all or nothing
    return sorted(found)


def test_a_crash_keeps_every_commit_and_loses_what_was_not_committed(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 10)
    eng.delete(key(0))
    eng.meta_put("incarnation", b"7")
    eng.put(key(1), b"hint", table="hints")
    eng.commit()
    assert eng.checkpoints == 1  # only the one at open: everything since is in the log
    eng.put(other(999), b"never committed")
    eng.crash()
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 11
        assert eng.get(key(0)) is None and eng.get(key(1)) == b"v0"
        assert eng.get(key(29)) == b"v9"
        assert eng.meta_get("incarnation") == b"7"
        assert eng.get(key(1), table="hints") == b"hint"
        assert eng.get(other(999)) is None
        assert eng.count() == 29
    finally:
        eng.close()


def test_a_torn_record_ends_the_log(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 5)
    # The write of a sixth record was cut short: its header and half its payload landed.
    record = encode_record(eng._epoch, [(1, other(100), b"torn")] * 4)
    crash_then_write_into_log(eng, record[: HEADER.size + 20])
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 5
        assert batches_present(eng) == [0, 1, 2, 3, 4]
        assert eng.get(other(100)) is None
    finally:
        eng.close()


def test_a_record_written_but_not_acknowledged_may_survive(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 2)
    # whole, but the writer died before its fdatasync returned
    crash_then_write_into_log(eng, encode_record(eng._epoch, [(1, other(100), b"whole")]))
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 3 and eng.get(other(100)) == b"whole"
    finally:
        eng.close()


def test_records_of_an_older_epoch_are_never_replayed(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 20)  # epoch E: 20 records
    eng.crash()
    eng = open_wal(tmp_path)  # replays them, checkpoints: epoch E + 2 from offset 0
    assert eng.replayed == 20
    for j in range(3):
        eng.delete(key(j))  # batch 0 deleted, in the first record of the new epoch
    eng.commit()
    eng.crash()  # segment E mod 2: 1 record of E + 2, then 19 stale ones of E
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 1
        assert batches_present(eng) == list(range(1, 20))  # batch 0 stays deleted
    finally:
        eng.close()


def test_checkpoints_when_the_segment_is_full_or_after_checkpoint_writes(tmp_path: Path) -> None:
    eng = open_wal(tmp_path, segment_bytes=1024)
    write_batches(eng, 0, 40)  # each record ~80 bytes: about 13 per segment
    assert eng.checkpoints >= 3
    for name in SEGMENT_NAMES:  # preallocated, never grown
        assert os.path.getsize(tmp_path / name) == 1024
    eng.crash()
    eng = open_wal(tmp_path, segment_bytes=1024)
    assert batches_present(eng) == list(range(40))
    eng.close()

    eng = open_wal(tmp_path / "w", checkpoint_writes=10)
    for b in range(12):  # 3 writes per commit: a checkpoint every fourth commit...
        write_batches(eng, b, b + 1)
        eng._checkpointer.wait_for(eng._epoch)  # ...when the one before it is done by then
    assert eng.checkpoints == 1 + 3
    eng.close()


def test_a_large_commit_is_made_durable_by_a_checkpoint_not_the_log(tmp_path: Path) -> None:
    eng = open_wal(tmp_path, direct_bytes=4096)
    write_batches(eng, 0, 3)
    assert eng._offset > 0
    eng.put(other(100), b"x" * 5000)
    eng.commit()
    assert eng._offset == 0 and eng.checkpoints == 2
    eng.crash()
    eng = open_wal(tmp_path, direct_bytes=4096)
    try:
        assert eng.replayed == 0
        assert eng.get(other(100)) == b"x" * 5000 and batches_present(eng) == [0, 1, 2]
    finally:
        eng.close()


def test_a_failed_fdatasync_fails_the_engine_and_reopening_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 3)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal_module.os, "fdatasync", failing)
    eng.put(other(100), b"unknown")
    with pytest.raises(InternalError, match="commit failed"):
        eng.commit()
    with pytest.raises(InternalError, match="storage failed"):
        eng.get(key(0))
    with pytest.raises(InternalError, match="storage failed"):
        eng.put(other(101), b"no")
    monkeypatch.undo()
    eng.close()  # no checkpoint of a failed engine: the log decides
    eng = open_wal(tmp_path)
    try:
        assert batches_present(eng) == [0, 1, 2]  # other(100) may or may not be there
    finally:
        eng.close()


def test_the_epoch_name_is_reserved(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        eng.meta_put("_wal_epoch", b"1")
    eng.close()


def test_a_cleanly_closed_directory_is_a_plain_lmdb_environment(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 4)
    eng.put(other(50), b"pending at close")
    eng.close()  # commits and checkpoints
    lmdb_engine = LmdbEngine(tmp_path, "fsync", map_size=MAP)
    try:
        assert lmdb_engine.count() == 13
        assert lmdb_engine.get(other(50)) == b"pending at close"
    finally:
        lmdb_engine.close()
    eng = open_wal(tmp_path)  # and back
    try:
        assert eng.replayed == 0 and eng.count() == 13
    finally:
        eng.close()


def test_checkpoint_empties_the_log_and_commits_pending_writes(tmp_path: Path) -> None:
    eng = open_wal(tmp_path)
    write_batches(eng, 0, 5)
    eng.put(other(1), b"pending")
    eng.checkpoint()
    assert eng._offset == 0 and eng.pending() == 0
    eng.crash()
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 0
        assert batches_present(eng) == [0, 1, 2, 3, 4] and eng.get(other(1)) == b"pending"
    finally:
        eng.close()


def test_a_full_map_fails_the_engine_and_a_larger_map_replays_every_commit(
    tmp_path: Path,
) -> None:
    eng = WalEngine(tmp_path, 1 << 20)
    value = b"x" * 1024
    committed = 0
    with pytest.raises(InternalError, match="map_size"):
        for i in range(5000):
            eng.put(key(i), value)
            if i % 10 == 9:
                eng.commit()
                committed = i + 1
    # LMDB dropped its transaction, logged writes included: the engine refuses to answer
    with pytest.raises(InternalError, match="storage failed"):
        eng.get(key(0))
    eng.close()
    eng = WalEngine(tmp_path, 64 << 20)
    try:
        assert eng.replayed > 0
        assert all(eng.get(key(i)) == value for i in range(committed))
    finally:
        eng.close()


def test_a_log_of_the_one_segment_format_is_replayed_then_removed(tmp_path: Path) -> None:
    """A WalEngine killed before the upgrade to two segments left its tail in wal.log, as
    records of the epoch LMDB holds from offset 0: they are replayed, then the file goes."""
    eng = open_wal(tmp_path)
    eng.put(key(0), b"checkpointed")
    eng.close()
    lmdb_engine = LmdbEngine(tmp_path, "fsync", map_size=MAP)
    epoch = int(lmdb_engine.meta_get("_wal_epoch") or b"")
    lmdb_engine.close()
    records = [
        encode_record(epoch, [(1, key(1), b"logged"), (2, key(0), b"")]),
        encode_record(epoch, [(1, key(2), b"logged too")]),
        encode_record(epoch - 1, [(1, key(3), b"stale")]),  # an older epoch ends the log
    ]
    (tmp_path / "wal.log").write_bytes(b"".join(records))
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 2
        assert eng.get(key(0)) is None and eng.get(key(1)) == b"logged"
        assert eng.get(key(2)) == b"logged too" and eng.get(key(3)) is None
        assert not (tmp_path / "wal.log").exists()
    finally:
        eng.close()
