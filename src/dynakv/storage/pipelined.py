"""Pipelined group commit: LMDB commits (and their fsync) on a writer thread.

The event loop never waits for the disk. Writes of a loop turn go into an in-memory overlay;
`commit_async` hands the overlay to the writer thread as one batch and starts a new one, so
the loop goes on handling events while the previous batch is being fsynced. The writer takes
every batch queued by then into one transaction (batches grow when the disk is slow), commits
it, and reports back through `notify` (the runtime passes `loop.call_soon_threadsafe`), in
commit order. Reads look in the overlay, then in batches not yet reported, then in LMDB.

Scans never wait for the disk either (anti-entropy and the tombstone sweep scan every
second): they read LMDB in read-only transactions and lay over it the writes not yet
reported, as they were when the scan started; counts likewise. Without `notify` (tests,
start-up), `commit()` waits.

Behind a `WalEngine` (``engine = "wal"``) the writer thread does the log's work: per group
it appends the batches to the log with one fdatasync (`WalEngine.commit`), and the
WalEngine's checkpointer thread applies them to LMDB and checkpoints, in the background. A
batch reported durable but not yet in a checkpoint is in the log only, which the loop's
read-only transactions cannot see; so reported batches are kept by epoch (`_logged`, a
`LoggedWrites`: each table's keys sorted for scans) until a report says a checkpoint holds
their epoch: then those are dropped and the loop's read snapshot renewed, in the same step,
so that no read ever falls between the two. Behind an `LmdbEngine` every commit is a
checkpoint and `_logged` stays empty.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dynakv.errors import InternalError
from dynakv.storage.engine import (
    OBJECTS,
    CommitStats,
    Engine,
    Table,
    check_bound,
    check_key,
    check_table,
    check_value,
    meta_key,
)
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.overlay import LoggedWrites, Pending, count_over, merge_scan, pending_range
from dynakv.storage.wal import WalEngine

Done = Callable[[BaseException | None], None]
_META = "meta"


@dataclass
class _Batch:
    writes: dict[tuple[str, bytes], bytes | None]  # (table, key) -> value, None: delete
    meta: dict[str, bytes]
    callbacks: list[Done] = field(default_factory=list)
    # Set by the writer (under PipelinedEngine._committed) once the batch is durable or
    # failed; not a threading.Event each: one per loop turn cost more than the rest here.
    committed: bool = False
    error: BaseException | None = None
    seq: int = 0  # 1, 2, ... in the order batches are handed over: what mark() names
    # Set with `committed`: the epoch (checkpoint) the batch belongs to, and, read after its
    # commit, the first epoch LMDB's committed snapshot may not hold yet. Behind an
    # LmdbEngine each commit is an epoch of its own, committed: stable = epoch + 1.
    epoch: int = 0
    stable: int = 0


class PipelinedEngine(Engine):
    """Wraps an LmdbEngine or a WalEngine; only the writer thread ever opens their write
    transactions (after construction: a WalEngine replays its log in its constructor)."""

    def __init__(self, inner: LmdbEngine | WalEngine, min_interval: float = 0.0) -> None:
        self.inner = inner
        # Committed reads (read-only transactions, the loop's side) go to the LMDB itself.
        self.lmdb: LmdbEngine = inner.inner if isinstance(inner, WalEngine) else inner
        # Least time between the starts of two commits: batches queued meanwhile join the
        # next one (NodeConfig.commit_interval).
        self.min_interval = min_interval
        self.scan_batch = inner.scan_batch
        self._writes: dict[tuple[str, bytes], bytes | None] = {}
        self._meta: dict[str, bytes] = {}
        self._inflight: deque[_Batch] = deque()  # handed to the writer, not yet reported
        # Reported but not yet in a checkpoint (WalEngine only), by epoch; an epoch is
        # dropped when a report says a checkpoint holds it.
        self._logged = LoggedWrites()
        self._stable = 0  # the highest `stable` reported: the loop's snapshot is at least that
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._notify: Callable[[Callable[[], None]], object] | None = None
        self._committed = threading.Condition()  # commit() waits on it for the writer
        self._handed = 0  # seq of the last batch handed to the writer
        self._reported = 0  # seq of the last batch reported (its callbacks run)
        # The first failed commit: it and every batch after it never count as durable (the
        # node stops, but a reply must not claim a lost write meanwhile).
        self._lost: tuple[int, BaseException] | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="dynakv-commit", daemon=True)
        self._writer.start()

    def bind(self, notify: Callable[[Callable[[], None]], object]) -> None:
        """Report commits through `notify(fn)`, which must run fn on the caller's thread."""
        self._notify = notify

    # --- reads -----------------------------------------------------------------------------
    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        self._check_open()
        slot = (check_table(table), check_key(key))
        if slot in self._writes:
            return self._writes[slot]
        for batch in reversed(self._inflight):
            if slot in batch.writes:
                return batch.writes[slot]
        found, value = self._logged.get(slot)
        return value if found else self.lmdb.get_committed(key, table)

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        meta_key(name)  # validates the name
        if name in self._meta:
            return self._meta[name]
        for batch in reversed(self._inflight):
            if name in batch.meta:
                return batch.meta[name]
        value = self._logged.meta_get(name)
        return value if value is not None else self.lmdb.meta_get_committed(name)

    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        check_bound(start, "start")
        check_bound(end, "end")
        check_table(table)
        self._check_open()
        pending = self._overlay(start, end, table)
        return merge_scan(self.lmdb.scan_committed(start, end, table), pending)

    def _overlay(self, start: bytes, end: bytes, table: Table) -> Pending:
        """The writes of [start, end) not yet in LMDB's committed snapshot (not reported, or
        reported but not checkpointed), newest per key, sorted by key."""
        newer = [*(batch.writes for batch in self._inflight), self._writes]
        return pending_range(self._logged, newer, table, start, end)

    def count(self, table: Table = OBJECTS) -> int:
        # Without waiting for the disk (status pages and RESP INFO call this on the loop):
        # a committed snapshot, then each key the writes not yet reported leave present or
        # absent. Exact whichever of those batches the snapshot already holds.
        check_table(table)
        self._check_open()
        return count_over(self.lmdb, self._overlay(b"", b"", table), table)

    # --- writes ----------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        self._check_open()
        self._writes[(check_table(table), check_key(key))] = check_value(value)

    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        self._check_open()
        self._writes[(check_table(table), check_key(key))] = None

    def meta_put(self, name: str, value: bytes) -> None:
        self._check_open()
        meta_key(name)  # validates the name
        self._meta[name] = check_value(value)

    def pending(self) -> int:
        # Logged writes are durable already: not pending, though not checkpointed.
        return (
            len(self._writes)
            + len(self._meta)
            + sum(len(b.writes) + len(b.meta) for b in self._inflight)
        )

    # --- commits ---------------------------------------------------------------------------
    def commit_stats(self) -> CommitStats | None:
        return self.inner.commit_stats()  # recorded by the writer thread, its only writer

    def commit_async(self, done: Done) -> None:
        self._check_open()
        if not self._writes and not self._meta:
            if self._inflight:
                self._inflight[-1].callbacks.append(done)  # after the commits before it
            else:
                done(None)
            return
        self._hand_over([done])

    def _hand_over(self, callbacks: list[Done]) -> None:
        self._handed += 1
        batch = _Batch(self._writes, self._meta, callbacks, seq=self._handed)
        self._writes, self._meta = {}, {}
        self._inflight.append(batch)
        self._queue.put(batch)

    def mark(self) -> int:
        # The batch that holds the latest write: the open one (handed over as the next) or,
        # if that is empty, the last one handed over.
        return self._handed + 1 if self._writes or self._meta else self._handed

    def durable(self, mark: int) -> bool:
        return mark <= self._reported and (self._lost is None or mark < self._lost[0])

    def when_durable(self, mark: int, done: Done) -> None:
        self._check_open()
        if self._lost is not None and mark >= self._lost[0]:
            done(self._lost[1])
        elif mark <= self._reported:
            done(None)
        elif mark > self._handed:
            self.commit_async(done)  # still in the open batch: hand it over now
        else:
            # Reported in order, so once that batch is, every one before it is too.
            next(batch for batch in self._inflight if batch.seq >= mark).callbacks.append(done)

    def commit(self) -> None:
        """Hand over pending writes and wait until everything handed over is durable."""
        self._check_open()
        if self._writes or self._meta:
            self._hand_over([])
        batches = list(self._inflight)
        with self._committed:
            self._committed.wait_for(lambda: all(batch.committed for batch in batches))
        for batch in batches:
            if batch.error is not None:
                raise InternalError(f"commit failed: {batch.error}")
        if self._notify is None:
            self._report()

    def _write_loop(self) -> None:
        last_start = float("-inf")
        commits = 0  # behind an LmdbEngine: each commit is an epoch
        while True:
            first = self._queue.get()
            if first is None:
                self._checkpoint_at_close()
                return
            wait = last_start + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # releases the GIL; the loop goes on queueing batches
            last_start = time.monotonic()
            batches = [first]
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batches.append(more)
            error: BaseException | None = None
            wal = self.inner if isinstance(self.inner, WalEngine) else None
            try:
                for batch in batches:
                    for (table, key), value in batch.writes.items():
                        if value is None:
                            self.inner.delete(key, table)  # type: ignore[arg-type]
                        else:
                            self.inner.put(key, value, table)  # type: ignore[arg-type]
                    for name, value in batch.meta.items():
                        self.inner.meta_put(name, value)
                self.inner.commit()
            except BaseException as exc:
                error = exc
            # Read before taking the lock: the loop must learn them with `committed`.
            commits += 1
            epoch, stable = (
                (wal.logged_epoch, wal.stable_epoch) if wal is not None else (commits, commits + 1)
            )
            with self._committed:
                for batch in batches:
                    batch.error = error
                    batch.epoch, batch.stable = epoch, stable
                    batch.committed = True
                self._committed.notify_all()
            notify = self._notify
            if notify is not None:
                notify(self._report)

    def _checkpoint_at_close(self) -> None:
        """On the writer thread, last: commit a WalEngine's open write transaction, which
        only this thread may end. A failure leaves the WalEngine failed: its close then
        abandons the transaction, and the log still holds every reported batch."""
        if isinstance(self.inner, WalEngine):
            with contextlib.suppress(InternalError):
                self.inner.checkpoint()

    def _report(self) -> None:
        """On the owner's thread: run the callbacks of every committed batch, in order."""
        while self._inflight and self._inflight[0].committed:
            batch = self._inflight.popleft()
            if batch.error is None:
                if batch.epoch >= batch.stable:  # kept readable until a checkpoint holds it
                    self._logged.add(batch.epoch, batch.writes, batch.meta)
                if batch.stable > self._stable:
                    self._checkpointed(batch.stable)
            self._finish(batch)

    def _checkpointed(self, stable: int) -> None:
        """LMDB's committed snapshot holds the epochs below `stable`: forget their logged
        batches and, in the same step, end the read snapshot older than that checkpoint."""
        self.lmdb.release_reader()
        self._logged.drop_before(stable)
        self._stable = stable

    def _finish(self, batch: _Batch) -> None:
        self._reported = batch.seq
        if batch.error is not None and self._lost is None:
            self._lost = (batch.seq, batch.error)
        for callback in batch.callbacks:
            callback(batch.error)

    # --- life ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")

    def backup(self, path: str) -> int:
        # What the writer thread has committed; writes still in flight are not acknowledged.
        # Both engines copy while the writer goes on (WalEngine.backup: from any thread).
        return self.inner.backup(path)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._report_all()
            self.inner.close()

    def _report_all(self) -> None:
        self.lmdb.release_reader()  # the writer checkpointed before it stopped
        self._logged.clear()
        while self._inflight:
            self._finish(self._inflight.popleft())
