"""An in-memory engine for tests and the deterministic simulator.

State is the *visible* state (committed writes plus pending ones) — a dict plus a sorted key
list kept with `bisect` — together with an undo log holding, for every key written since the
last commit, its committed value (or absence). This is equivalent to "committed state plus a
pending overlay" but makes reads and scans a single lookup instead of a merge: `commit()`
forgets the undo log, `crash()` replays it, restoring exactly the committed state as a
process crash would. (`sortedcontainers` is not used: it is only a dev dependency, pulled in
by Hypothesis.)

`scan` reads in batches of `SCAN_BATCH` keys and resumes after the last key it yielded, so
the caller may write, delete, commit or crash while iterating (see `dynakv.storage.engine`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from dynakv.errors import InternalError
from dynakv.storage.engine import (
    OBJECTS,
    SCAN_BATCH,
    TABLES,
    Engine,
    Table,
    check_bound,
    check_key,
    check_table,
    check_value,
    meta_key,
)

_ABSENT = None  # undo-log marker: the key had no committed value


class _Table:
    """One ordered table: visible state, sorted keys, and the undo log since the last commit."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.keys: list[bytes] = []  # sorted keys of data
        self.undo: dict[bytes, bytes | None] = {}  # key -> committed value / _ABSENT

    def set(self, key: bytes, value: bytes | None) -> None:
        """Make `key` hold `value` (None: absent) in the visible state, keeping keys sorted."""
        if value is None:
            if self.data.pop(key, None) is not None:
                del self.keys[bisect_left(self.keys, key)]
        else:
            if key not in self.data:
                self.keys.insert(bisect_left(self.keys, key), key)
            self.data[key] = value

    def write(self, key: bytes, value: bytes | None) -> None:
        if key not in self.undo:
            self.undo[key] = self.data.get(key, _ABSENT)
        self.set(key, value)

    def rollback(self) -> None:
        for key, value in self.undo.items():
            self.set(key, value)
        self.undo.clear()


class MemoryEngine(Engine):
    """Ordered in-memory store; `commit()` is instantaneous, `crash()` drops pending writes."""

    def __init__(self) -> None:
        self._tables = {name: _Table() for name in TABLES}
        self._meta: dict[bytes, bytes] = {}
        self._meta_undo: dict[bytes, bytes | None] = {}
        self._pending = 0
        self._written = 0  # writes ever made: mark()
        self._durable = 0  # of those, committed
        self._closed = False
        self.scan_batch = SCAN_BATCH

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")

    def _table(self, table: str) -> _Table:
        found = self._tables.get(table)
        if found is None:
            check_table(table)
        assert found is not None
        return found

    # --- Engine ----------------------------------------------------------------------------

    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        self._check_open()
        return self._table(table).data.get(check_key(key))

    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        self._check_open()
        self._table(table).write(check_key(key), check_value(value))
        self._pending += 1
        self._written += 1

    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        self._check_open()
        self._table(table).write(check_key(key), None)
        self._pending += 1
        self._written += 1

    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        start = check_bound(start, "start")
        end = check_bound(end, "end")
        self._check_open()
        return self._scan(start, end, self._table(table))

    def _scan(self, start: bytes, end: bytes, table: _Table) -> Iterator[tuple[bytes, bytes]]:
        last: bytes | None = None
        while True:
            self._check_open()
            keys = table.keys
            i = bisect_left(keys, start) if last is None else bisect_right(keys, last)
            batch = keys[i : i + self.scan_batch]
            if end:
                batch = batch[: bisect_left(batch, end)]
            if not batch:
                return
            items = [(k, table.data[k]) for k in batch]
            yield from items
            last = batch[-1]

    def count(self, table: Table = OBJECTS) -> int:
        self._check_open()
        return len(self._table(table).data)

    def meta_get(self, name: str) -> bytes | None:
        self._check_open()
        return self._meta.get(meta_key(name))

    def meta_put(self, name: str, value: bytes) -> None:
        self._check_open()
        raw = meta_key(name)
        value = check_value(value)
        if raw not in self._meta_undo:
            self._meta_undo[raw] = self._meta.get(raw, _ABSENT)
        self._meta[raw] = value
        self._pending += 1
        self._written += 1

    def commit(self) -> None:
        self._check_open()
        for table in self._tables.values():
            table.undo.clear()
        self._meta_undo.clear()
        self._pending = 0
        self._durable = self._written

    def pending(self) -> int:
        return self._pending

    def mark(self) -> int:
        return self._written

    def durable(self, mark: int) -> bool:
        return mark <= self._durable

    def crash(self) -> None:
        """Discard every write not yet committed, as a process crash would. (Marks of the lost
        writes die with the node that took them: a restarted node is a new Node.)"""
        for table in self._tables.values():
            table.rollback()
        for raw, value in self._meta_undo.items():
            if value is None:
                self._meta.pop(raw, None)
            else:
                self._meta[raw] = value
        self._meta_undo.clear()
        self._pending = 0

    def close(self) -> None:
        if not self._closed:
            self.commit()
            self._closed = True
