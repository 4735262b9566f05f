"""WalEngine backups (storage/wal.py, `backup`) and its durability modes os and none.

A backup is a checkpoint that holds every commit made before it, copied by LMDB: taken from
another thread while commits go on, it holds each such commit whole, nothing half, and
opens on either engine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dynakv.errors import InternalError, InvalidRequest
from dynakv.storage import Engine, LmdbEngine, WalEngine, open_engine
from dynakv.storage.lmdb import NONE_COMMIT_EVERY
from dynakv.storage.pipelined import PipelinedEngine

MAP = 64 << 20
PER = 4  # puts per batch


def key(batch: int, j: int) -> bytes:
    return b"key-%06d-%d" % (batch, j)


def write_batch(eng: Engine, batch: int) -> None:
    for j in range(PER):
        eng.put(key(batch, j), b"v%d" % batch)
    eng.commit()


def batches_in(eng: Engine) -> list[int]:
    """The batches `eng` holds; AssertionError unless each is whole."""
    found: dict[int, int] = {}
    for k, v in eng.scan(b"key-", b"key."):
        batch = int(k[4:10])
        assert v == b"v%d" % batch
        found[batch] = found.get(batch, 0) + 1
    assert all(n == PER for n in found.values()), found
    return sorted(found)


def small_wal(path: Path, **kwargs: object) -> WalEngine:
    # Small segments and checkpoints: backups land on every state of the log.
    return WalEngine(path, MAP, segment_bytes=8192, checkpoint_writes=24, **kwargs)  # type: ignore[arg-type]


def test_a_backup_holds_every_commit_before_it_and_opens_on_either_engine(tmp_path: Path) -> None:
    eng = small_wal(tmp_path / "live")
    try:
        for batch in range(47):
            write_batch(eng, batch)
        eng.checkpoint()
        for batch in range(47, 50):  # 12 writes, fewer than a checkpoint's: in the log only
            write_batch(eng, batch)
        eng.meta_put("incarnation", b"abc")
        eng.commit()
        assert eng._offset > 0  # so the backup must checkpoint them
        eng.put(b"uncommitted", b"x")  # not committed: not in the backup
        size = eng.backup(str(tmp_path / "bk"))
        assert size == (tmp_path / "bk" / "data.mdb").stat().st_size > 0
        write_batch(eng, 50)  # the engine goes on
        assert batches_in(eng) == list(range(51))
    finally:
        eng.close()
    for kind in ("lmdb", "wal"):
        opened = (
            LmdbEngine(tmp_path / "bk", map_size=MAP)
            if kind == "lmdb"
            else small_wal(tmp_path / "bk")
        )
        try:
            assert batches_in(opened) == list(range(50))
            assert opened.meta_get("incarnation") == b"abc"
            assert opened.get(b"uncommitted") is None
        finally:
            opened.close()
    eng = small_wal(tmp_path / "bk")  # a node restored from it writes on
    try:
        write_batch(eng, 50)
    finally:
        eng.close()
    eng = small_wal(tmp_path / "bk")
    try:
        assert batches_in(eng) == list(range(51))
    finally:
        eng.close()


@pytest.mark.parametrize("pipelined", [False, True])
def test_backups_taken_while_commits_go_on_hold_every_commit_before_them_whole(
    tmp_path: Path, pipelined: bool
) -> None:
    wal = small_wal(tmp_path / "live")
    eng: Engine = PipelinedEngine(wal) if pipelined else wal
    results: list[tuple[int, str, BaseException | None]] = []
    try:
        batch = 0
        for round_ in range(6):
            for _ in range(20):
                write_batch(eng, batch)
                batch += 1
            before = batch  # batches 0..before-1 committed before this backup began
            target = str(tmp_path / f"bk{round_}")

            def take(target: str = target, before: int = before) -> None:
                try:
                    eng.backup(target)
                    results.append((before, target, None))
                except BaseException as exc:
                    results.append((before, target, exc))

            thread = threading.Thread(target=take)
            thread.start()
            while thread.is_alive():  # commits go on, through the backup's checkpoint
                write_batch(eng, batch)
                batch += 1
            thread.join()
    finally:
        eng.close()
    assert len(results) == 6
    for before, target, error in results:
        assert error is None, error
        copy = LmdbEngine(target, "fsync", map_size=MAP)
        try:
            present = batches_in(copy)
            # every batch committed before it, and a prefix of the log: a consistent state
            assert present == list(range(len(present))) and len(present) >= before
        finally:
            copy.close()


def test_a_backup_into_a_used_directory_is_refused_and_the_engine_goes_on(tmp_path: Path) -> None:
    eng = small_wal(tmp_path / "live")
    try:
        write_batch(eng, 0)
        eng.backup(str(tmp_path / "bk"))
        with pytest.raises(InvalidRequest, match="already holds a data"):
            eng.backup(str(tmp_path / "bk"))
        write_batch(eng, 1)
        assert batches_in(eng) == [0, 1]
    finally:
        eng.close()


def test_a_backup_of_a_closed_or_crashed_engine_is_refused(tmp_path: Path) -> None:
    eng = small_wal(tmp_path / "a")
    eng.close()
    with pytest.raises(InternalError, match="closed"):
        eng.backup(str(tmp_path / "bk-a"))
    eng = small_wal(tmp_path / "b")
    write_batch(eng, 0)
    eng.crash()
    with pytest.raises(InternalError, match="closed"):
        eng.backup(str(tmp_path / "bk-b"))
    assert not (tmp_path / "bk-b").exists()


def test_a_wait_for_a_checkpoint_ends_when_the_engine_crashes(tmp_path: Path) -> None:
    """A backup waiting for its checkpoint while the engine is killed gets an error rather
    than waiting for ever (a crash skips the checkpoints handed over)."""
    eng = small_wal(tmp_path)
    write_batch(eng, 0)
    errors: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            eng._checkpointer.wait_for(eng._epoch + 5)  # a checkpoint never handed over
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait()
    eng.crash()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(errors) == 1 and "stopped" in str(errors[0])


@pytest.mark.parametrize("durability", ["os", "none"])
def test_wal_without_fsync_reopens_with_every_write(tmp_path: Path, durability: str) -> None:
    eng = small_wal(tmp_path, durability=durability)
    assert eng.commit_stats() is None and eng.inner.durability == "os"
    for batch in range(30):
        write_batch(eng, batch)
    eng.meta_put("incarnation", b"abc")
    eng.close()  # commits whatever is pending
    eng = small_wal(tmp_path, durability=durability)
    try:
        assert batches_in(eng) == list(range(30))
        assert eng.meta_get("incarnation") == b"abc"
    finally:
        eng.close()


def test_wal_os_survives_a_crash_from_its_log(tmp_path: Path) -> None:
    eng = small_wal(tmp_path, durability="os")
    for batch in range(30):
        write_batch(eng, batch)
    eng.crash()  # what a process kill leaves: the page cache holds the log
    eng = small_wal(tmp_path)
    try:
        assert batches_in(eng) == list(range(30))
    finally:
        eng.close()


def test_wal_none_logs_once_1000_writes_are_pending(tmp_path: Path) -> None:
    eng = WalEngine(tmp_path, MAP, durability="none")
    try:
        for i in range(NONE_COMMIT_EVERY - 1):
            eng.put(b"k%06d" % i, b"v")
            eng.commit()
        assert eng.pending() == NONE_COMMIT_EVERY - 1 and eng._offset == 0  # nothing logged
        assert eng.get(b"k000000") == b"v"  # reads see what waits
        eng.put(b"k%06d" % NONE_COMMIT_EVERY, b"v")
        eng.commit()
        assert eng.pending() == 0 and eng._offset > 0
    finally:
        eng.close()


def test_switching_a_crashed_wal_directory_to_lmdb_replays_its_log_first(tmp_path: Path) -> None:
    eng = small_wal(tmp_path)
    for batch in range(27):
        write_batch(eng, batch)
    eng.checkpoint()
    for batch in range(27, 30):  # 12 writes, fewer than a checkpoint's: in the log only
        write_batch(eng, batch)
    assert eng._offset > 0
    eng.crash()
    lmdb_engine = open_engine("lmdb", str(tmp_path))
    try:
        assert isinstance(lmdb_engine, LmdbEngine)
        assert batches_in(lmdb_engine) == list(range(30))
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("wal.")]
        write_batch(lmdb_engine, 30)
    finally:
        lmdb_engine.close()
    eng = small_wal(tmp_path)  # and back to the wal engine: nothing stale replayed
    try:
        assert eng.replayed == 0 and batches_in(eng) == list(range(31))
    finally:
        eng.close()
