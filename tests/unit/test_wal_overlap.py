"""WalEngine: commits go on while a checkpoint runs, and survive a crash at every point of it.

The checkpointer thread is held at one point (before its LMDB commit, after it, or while it
applies the batches logged meanwhile) by wrapping one of its steps; commits made meanwhile
must be acknowledged, readable (gets, scans, counts; deletes hiding LMDB's values), and
survive a crash there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv.storage.wal import WalEngine
from dynakv.storage.wal_log import HEADER, encode_record, segment_path

MAP = 64 << 20


def key(i: int) -> bytes:
    return b"key-%06d" % i


class Hold:
    """Holds the checkpointer thread inside a step until released, or killed: then the step
    is skipped, as if the process died there (the crash that follows drops the rest)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.killed = False

    def wait_entered(self) -> None:
        assert self.entered.wait(30), "the checkpointer never got there"

    def kill(self) -> None:
        self.killed = True
        self.released.set()

    def hold(self, step: Callable[[], None]) -> None:
        self.entered.set()
        assert self.released.wait(30)
        if not self.killed:
            step()


def hold_checkpointer(eng: WalEngine, point: str) -> Hold:
    """Hold `eng`'s next checkpoint at `point`: "before_commit", "after_commit" or
    "during_apply" (after its commit, before the second batch applied after it)."""
    hold = Hold()
    lmdb = eng.inner
    real_commit, real_apply = lmdb.commit, eng._checkpointer._apply
    applied_after: list[int] = []

    def commit() -> None:
        if point == "before_commit":
            hold.hold(real_commit)
            return
        real_commit()
        applied_after.append(0)
        if point == "after_commit":
            hold.hold(lambda: None)

    def apply(*batch: object) -> None:
        if point == "during_apply" and applied_after and len(applied_after) == 2:
            hold.hold(lambda: real_apply(*batch))  # type: ignore[arg-type]
        else:
            real_apply(*batch)  # type: ignore[arg-type]
        if applied_after:
            applied_after.append(1)

    lmdb.commit = commit  # type: ignore[method-assign]
    eng._checkpointer._apply = apply  # type: ignore[method-assign]
    return hold


def open_wal(path: Path, segment_bytes: int = 16 << 20) -> WalEngine:
    return WalEngine(path, MAP, segment_bytes, checkpoint_writes=6)


def held_checkpoint(path: Path, segment_bytes: int = 16 << 20) -> tuple[WalEngine, Hold]:
    """A WalEngine at `path` whose checkpoint of keys 0-5 (b"v") is held before its commit."""
    eng = open_wal(path, segment_bytes)
    hold = hold_checkpointer(eng, "before_commit")
    for i in range(6):
        eng.put(key(i), b"v")
        if i % 3 == 2:
            eng.commit()  # the second: 6 writes, the checkpoint starts
    hold.wait_entered()
    return eng, hold


def state(eng: WalEngine) -> dict[bytes, bytes]:
    return dict(eng.scan(b"", b""))


@pytest.mark.parametrize("point", ["before_commit", "after_commit", "during_apply"])
def test_commits_during_a_checkpoint_are_acknowledged_readable_and_survive_a_crash(
    tmp_path: Path, point: str
) -> None:
    eng = open_wal(tmp_path)
    for i in range(10):
        eng.put(key(i), b"old")
    eng.checkpoint()  # in LMDB: keys 0-9
    hold = hold_checkpointer(eng, point)
    expected = {key(i): b"old" for i in range(10)}
    for b in range(2):  # 6 writes: the second commit starts a checkpoint
        for i in range(b * 3, b * 3 + 3):
            eng.put(key(i), b"v%d" % b)
            expected[key(i)] = b"v%d" % b
        eng.commit()
    if point != "during_apply":
        hold.wait_entered()
    # While the checkpoint is held: these commits are logged, fdatasynced and acknowledged.
    eng.delete(key(6))
    eng.put(key(20), b"new")
    eng.commit()
    eng.put(key(7), b"newer")
    eng.meta_put("incarnation", b"9")
    eng.commit()
    del expected[key(6)]
    expected[key(20)], expected[key(7)] = b"new", b"newer"
    if point == "during_apply":
        hold.wait_entered()  # the first batch applied to the next transaction, not the second
    assert not hold.released.is_set()  # all of that while the checkpointer was held
    assert eng.inner.get_committed(key(6)) == b"old"  # LMDB's snapshot has none of it...
    assert eng.inner.get_committed(key(20)) is None
    # ...and reads see it, laid over LMDB: a delete hides LMDB's value
    assert eng.get(key(6)) is None and eng.get(key(20)) == b"new"
    assert eng.get(key(0)) == b"v0" and eng.get(key(7)) == b"newer"
    assert eng.meta_get("incarnation") == b"9"
    assert state(eng) == expected
    assert list(eng.scan(key(5), key(8))) == [(key(5), b"v1"), (key(7), b"newer")]
    assert eng.count() == len(expected)
    hold.kill()
    eng.crash()

    eng = open_wal(tmp_path)
    try:
        # before the commit, LMDB holds neither epoch: both segments are replayed
        assert eng.replayed == (4 if point == "before_commit" else 2)
        assert state(eng) == expected
        assert eng.meta_get("incarnation") == b"9"
    finally:
        eng.close()


def test_a_checkpoint_released_makes_the_overlay_go_and_lmdb_hold_it(tmp_path: Path) -> None:
    eng, hold = held_checkpoint(tmp_path)
    eng.put(key(10), b"during")
    eng.commit()
    assert eng._logged.epochs() == [eng._epoch - 1, eng._epoch]
    hold.released.set()
    eng._checkpointer.wait_for(eng._epoch)
    assert eng.get(key(10)) == b"during"  # a read forgets the epoch LMDB holds now
    assert eng._logged.epochs() == [eng._epoch]
    assert eng.inner.get_committed(key(0)) == b"v"
    eng.close()
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 0 and eng.count() == 7
    finally:
        eng.close()


def test_records_replayed_at_open_are_never_followed_by_newer_ones_of_their_epoch(
    tmp_path: Path,
) -> None:
    """After replaying epoch S + 1 the engine logs under S + 2: a new record of S + 1 the
    size of the first old one would be followed, at the next replay, by the old second."""
    eng, hold = held_checkpoint(tmp_path)
    eng.put(key(20), b"aaaa")
    eng.commit()
    eng.put(key(21), b"old")
    eng.commit()
    hold.kill()
    eng.crash()
    eng = open_wal(tmp_path)
    assert eng.replayed == 4 and eng.get(key(21)) == b"old"
    eng.put(key(21), b"xxxx")  # a record as long as the first one logged above
    eng.commit()
    eng.crash()
    eng = open_wal(tmp_path)
    try:
        assert eng.get(key(21)) == b"xxxx" and eng.get(key(20)) == b"aaaa"
    finally:
        eng.close()


def test_a_torn_record_after_a_checkpoint_ends_only_its_own_segment(tmp_path: Path) -> None:
    eng, hold = held_checkpoint(tmp_path)
    eng.put(key(10), b"acknowledged")
    eng.commit()
    # The next record was being written to the new segment when the power went.
    offset, epoch = eng._offset, eng._epoch
    torn = encode_record(epoch, [(1, key(11), b"never acknowledged")] * 3)
    hold.kill()
    eng.crash()
    fd = os.open(segment_path(str(tmp_path), epoch), os.O_RDWR)
    try:
        os.pwrite(fd, torn[: HEADER.size + 10], offset)
    finally:
        os.close(fd)
    eng = open_wal(tmp_path)
    try:
        assert eng.replayed == 3
        assert eng.get(key(10)) == b"acknowledged" and eng.get(key(11)) is None
        assert eng.count() == 7
    finally:
        eng.close()


def test_a_checkpoint_due_during_another_waits_and_only_a_full_segment_stops_the_log(
    tmp_path: Path,
) -> None:
    """Two checkpoints are never in flight: the segment the next epoch would overwrite still
    holds records LMDB lacks until the earlier checkpoint is synced. So a checkpoint due
    meanwhile is put off, the log going on in its segment, until that segment is full."""
    eng, hold = held_checkpoint(tmp_path, segment_bytes=2048)
    started = eng.checkpoints
    for b in range(3):  # 9 writes: a checkpoint is due, and put off
        for i in range(3):
            eng.put(key(10 + b * 3 + i), b"a")
        eng.commit()
    assert eng.checkpoints == started and eng._offset > 0
    done = threading.Event()

    def fill_the_segment() -> None:
        for i in range(20, 200):  # ~40 bytes a record: the 2 KiB segment fills
            eng.put(key(i), b"b")
            eng.commit()
        done.set()

    writer = threading.Thread(target=fill_the_segment)
    writer.start()
    try:
        assert not done.wait(1)  # not a timing claim: it cannot finish while held
    finally:
        hold.released.set()
        writer.join(30)
    assert done.is_set() and eng.checkpoints > started
    eng.crash()
    eng = open_wal(tmp_path, segment_bytes=2048)
    try:
        assert eng.count() == 6 + 9 + 180
    finally:
        eng.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 15), st.one_of(st.none(), st.binary(max_size=40)))),
        max_size=25,
    ),
    checkpoint_writes=st.integers(1, 12),
    segment_bytes=st.integers(64, 600),
    direct_bytes=st.integers(40, 400),
)
def test_every_acknowledged_commit_survives_a_crash_whatever_the_checkpoints_do(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[int, bytes | None]]],
    checkpoint_writes: int,
    segment_bytes: int,
    direct_bytes: int,
) -> None:
    """Whatever point the checkpointer thread has reached at the crash (it runs freely here),
    every commit acknowledged is there after reopening, and nothing else."""
    path = tmp_path_factory.mktemp("wal")
    eng = WalEngine(path, MAP, segment_bytes, checkpoint_writes, direct_bytes)
    model: dict[bytes, bytes] = {}
    for batch in batches:
        for i, value in batch:
            if value is None:
                eng.delete(key(i))
                model.pop(key(i), None)
            else:
                eng.put(key(i), value)
                model[key(i)] = value
        eng.commit()
        assert state(eng) == model
    eng.put(key(99), b"not committed")
    eng.crash()
    eng = WalEngine(path, MAP, segment_bytes, checkpoint_writes, direct_bytes)
    try:
        assert state(eng) == model and eng.count() == len(model)
    finally:
        eng.close()
