"""The thread that owns a WalEngine's LMDB write transaction: it applies logged batches to it
in log order and commits it, synced, at each checkpoint, while the log goes on taking commits.
Also `replay`, which applies the log's records at open, before that thread starts.

It never touches the log, and LMDB on disk only ever changes by its synced commits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from dynakv.errors import InternalError
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.wal_log import (
    DELETE,
    EPOCH_META,
    FLAG_TABLES,
    HINTS_FLAG,
    META,
    PUT,
    VALUES_FLAG,
    Meta,
    Writes,
    decode_writes,
)

_STOP = None


def replay(lmdb: LmdbEngine, payloads: Iterable[bytes]) -> int:
    """Apply the writes of the log records `payloads` to LMDB's open transaction, in order;
    returns how many records there were."""
    records = 0
    for payload in payloads:
        for op, key, value in decode_writes(payload):
            table = FLAG_TABLES.get(op & (HINTS_FLAG | VALUES_FLAG))
            kind = op & ~(HINTS_FLAG | VALUES_FLAG)
            if table is None:
                raise InternalError(f"write-ahead log {lmdb.path}: unknown op {op}")
            if kind == PUT:
                lmdb.put(key, value, table)
            elif kind == DELETE:
                lmdb.delete(key, table)
            elif kind == META:
                lmdb.meta_put(key.decode("utf-8"), value)
            else:
                raise InternalError(f"write-ahead log {lmdb.path}: unknown op {op}")
        records += 1
    return records

_Job = tuple[Writes, Meta] | int | None  # a batch to apply, a checkpoint (its new epoch), stop


class Checkpointer:
    """Applies batches and checkpoints in the order they are handed over, on its own thread
    (an LMDB write transaction belongs to the thread that began it)."""

    def __init__(self, lmdb: LmdbEngine, stable: int) -> None:
        self.lmdb = lmdb
        # LMDB's committed snapshot holds every record of the epochs below `stable`. Read
        # without the lock by the engine's threads (an int: each read sees a whole value).
        self.stable = stable
        self.error: BaseException | None = None
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._changed = threading.Condition()
        self._halted = False
        self._stopped = False  # what a wait_for from another thread (a backup) must know
        self._thread = threading.Thread(target=self._run, name="dynakv-checkpoint", daemon=True)
        self._thread.start()

    def apply(self, writes: Writes, meta: Meta) -> None:
        """Apply a logged batch to the open transaction (after everything handed over)."""
        self._jobs.put((writes, meta))

    def checkpoint(self, epoch: int) -> None:
        """Commit the open transaction, synced, recording that records of `epoch` come next."""
        self._jobs.put(epoch)

    def wait_for(self, epoch: int) -> None:
        """Return once LMDB's committed snapshot holds every epoch below `epoch`;
        InternalError if a failure means it never will."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.stable >= epoch or self.error is not None or self._stopped
            )
        if self.stable < epoch:
            why = f"failed: {self.error}" if self.error is not None else "stopped: engine closed"
            raise InternalError(f"checkpoint {why}")

    def stop(self, halt: bool) -> None:
        """End the thread after the jobs handed over (or, if `halt`, skipping those not begun,
        as a process kill would): it aborts the transaction left open."""
        self._halted = halt
        self._jobs.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                self.lmdb.rollback()
                with self._changed:
                    self._stopped = True
                    self._changed.notify_all()
                return
            if self._halted or self.error is not None:
                continue  # after a failure the log holds the batches: reopening replays them
            try:
                if isinstance(job, int):
                    self._checkpoint(job)
                else:
                    self._apply(*job)
            except BaseException as e:
                with self._changed:
                    self.error = e
                    self._changed.notify_all()

    def _apply(self, writes: Writes, meta: Meta) -> None:
        lmdb = self.lmdb
        for (table, key), value in writes.items():
            if value is None:
                lmdb.delete(key, table)  # type: ignore[arg-type]
            else:
                lmdb.put(key, value, table)  # type: ignore[arg-type]
        for name, value in meta.items():
            lmdb.meta_put(name, value)

    def _checkpoint(self, epoch: int) -> None:
        self.lmdb.meta_put(EPOCH_META, b"%d" % epoch)
        self.lmdb.commit()  # LmdbEngine in fsync mode: synced
        with self._changed:
            self.stable = epoch
            self._changed.notify_all()
