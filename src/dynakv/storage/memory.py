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
    SCAN_BATCH,
    Engine,
    check_bound,
    check_key,
    check_value,
    meta_key,
)

_ABSENT = None  # undo-log marker: the key had no committed value


class MemoryEngine(Engine):
    """Ordered in-memory store; `commit()` is instantaneous, `crash()` drops pending writes."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted keys of _data
        self._undo: dict[bytes, bytes | None] = {}  # key -> committed value / _ABSENT
        self._meta: dict[bytes, bytes] = {}
        self._meta_undo: dict[bytes, bytes | None] = {}
        self._pending = 0
        self._closed = False
        self.scan_batch = SCAN_BATCH

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("storage engine is closed")

    def _set(self, key: bytes, value: bytes | None) -> None:
        """Make `key` hold `value` (None: absent) in the visible state, keeping _keys sorted."""
        if value is None:
            if self._data.pop(key, None) is not None:
                i = bisect_left(self._keys, key)
                del self._keys[i]
        else:
            if key not in self._data:
                self._keys.insert(bisect_left(self._keys, key), key)
            self._data[key] = value

    def _write(self, key: bytes, value: bytes | None) -> None:
        if key not in self._undo:
            self._undo[key] = self._data.get(key, _ABSENT)
        self._set(key, value)
        self._pending += 1

    # --- Engine ----------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._data.get(check_key(key))

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        self._write(check_key(key), check_value(value))

    def delete(self, key: bytes) -> None:
        self._check_open()
        self._write(check_key(key), None)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        start = check_bound(start, "start")
        end = check_bound(end, "end")
        self._check_open()
        return self._scan(start, end)

    def _scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        last: bytes | None = None
        while True:
            self._check_open()
            keys = self._keys
            i = bisect_left(keys, start) if last is None else bisect_right(keys, last)
            batch = keys[i : i + self.scan_batch]
            if end:
                batch = batch[: bisect_left(batch, end)]
            if not batch:
                return
            items = [(k, self._data[k]) for k in batch]
            yield from items
            last = batch[-1]

    def count(self) -> int:
        self._check_open()
        return len(self._data)

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

    def commit(self) -> None:
        self._check_open()
        self._undo.clear()
        self._meta_undo.clear()
        self._pending = 0

    def pending(self) -> int:
        return self._pending

    def crash(self) -> None:
        """Discard every write not yet committed, as a process crash would."""
        for key, value in self._undo.items():
            self._set(key, value)
        for raw, value in self._meta_undo.items():
            if value is None:
                self._meta.pop(raw, None)
            else:
                self._meta[raw] = value
        self._undo.clear()
        self._meta_undo.clear()
        self._pending = 0

    def close(self) -> None:
        if not self._closed:
            self.commit()
            self._closed = True
