"""Writes that are durable but not yet in LMDB's committed snapshot, laid over it for reads.

A `LoggedWrites` holds them by epoch (the checkpoint that will put them in LMDB), so a
finished checkpoint drops exactly its own; `merge_scan` and `count_over` read LMDB's
committed snapshot with such writes on top. No I/O of its own beyond those LMDB reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping

from dynakv.storage.engine import Table
from dynakv.storage.lmdb import LmdbEngine

Slot = tuple[str, bytes]  # (table, key)
Pending = list[tuple[bytes, bytes | None]]  # (key, value or None: deleted), sorted by key


class _Generation:
    """One epoch's writes: the newest value per slot, and each table's keys, sorted when a
    scan needs them (a sorted run plus a tail sorts in about the tail's time, where keeping
    them sorted cost a list insertion per write on the commit path)."""

    __slots__ = ("keys", "meta", "unsorted", "writes")

    def __init__(self) -> None:
        self.writes: dict[Slot, bytes | None] = {}
        self.meta: dict[str, bytes] = {}
        self.keys: dict[str, list[bytes]] = {}
        self.unsorted: set[str] = set()  # tables whose keys were appended to since sorted

    def sorted_keys(self, table: str) -> list[bytes]:
        keys = self.keys.get(table, [])
        if table in self.unsorted:
            keys.sort()
            self.unsorted.discard(table)
        return keys


class LoggedWrites:
    """Writes by epoch, newest epoch winning; epochs are added in increasing order."""

    def __init__(self) -> None:
        self._generations: dict[int, _Generation] = {}  # ascending epochs

    def __bool__(self) -> bool:
        return bool(self._generations)

    def epochs(self) -> list[int]:
        return list(self._generations)

    def add(
        self, epoch: int, writes: Mapping[Slot, bytes | None], meta: Mapping[str, bytes]
    ) -> None:
        generation = self._generations.get(epoch)
        if generation is None:
            generation = self._generations[epoch] = _Generation()
        held = generation.writes
        for slot, value in writes.items():
            if slot not in held:
                generation.keys.setdefault(slot[0], []).append(slot[1])
                generation.unsorted.add(slot[0])
            held[slot] = value
        generation.meta.update(meta)

    def drop_before(self, epoch: int) -> None:
        """Forget the epochs below `epoch`: LMDB's committed snapshot holds them now."""
        for old in [e for e in self._generations if e < epoch]:
            del self._generations[old]

    def clear(self) -> None:
        self._generations = {}

    def get(self, slot: Slot) -> tuple[bool, bytes | None]:
        """(found, value): value None is a delete, which hides what LMDB holds."""
        for generation in reversed(self._generations.values()):
            if slot in generation.writes:
                return True, generation.writes[slot]
        return False, None

    def meta_get(self, name: str) -> bytes | None:
        for generation in reversed(self._generations.values()):
            if name in generation.meta:
                return generation.meta[name]
        return None

    def in_range(
        self, table: str, start: bytes, end: bytes, into: dict[bytes, bytes | None]
    ) -> None:
        """Put the newest write of each key in [start, end) of `table` into `into`."""
        for generation in self._generations.values():  # oldest first: newer ones overwrite
            keys = generation.sorted_keys(table)  # a scan takes its range, not every write
            if not keys:
                continue
            lo = bisect.bisect_left(keys, start)
            hi = bisect.bisect_left(keys, end) if end else len(keys)
            for key in keys[lo:hi]:
                into[key] = generation.writes[(table, key)]


def pending_range(
    logged: LoggedWrites,
    newer: Iterable[Mapping[Slot, bytes | None]],
    table: str,
    start: bytes,
    end: bytes,
) -> Pending:
    """The writes of [start, end) in `logged` and then in `newer` (oldest first), newest
    per key, sorted by key: what a scan lays over LMDB's committed snapshot."""
    newest: dict[bytes, bytes | None] = {}
    logged.in_range(table, start, end, newest)
    for writes in newer:
        for (in_table, key), value in writes.items():
            if in_table == table and key >= start and (not end or key < end):
                newest[key] = value
    return sorted(newest.items())


def merge_scan(
    committed: Iterator[tuple[bytes, bytes]], pending: Pending
) -> Iterator[tuple[bytes, bytes]]:
    """Committed pairs with `pending` laid over them (pending wins; None: deleted). Writes
    made while iterating may or may not be seen, as the Engine contract allows."""
    i = 0
    for key, value in committed:
        while i < len(pending) and pending[i][0] < key:
            pending_key, pending_value = pending[i]
            i += 1
            if pending_value is not None:
                yield pending_key, pending_value
        if i < len(pending) and pending[i][0] == key:
            pending_value = pending[i][1]
            i += 1
            if pending_value is not None:
                yield key, pending_value
            continue
        yield key, value
    for pending_key, pending_value in pending[i:]:
        if pending_value is not None:
            yield pending_key, pending_value


def count_over(lmdb: LmdbEngine, pending: Pending, table: Table) -> int:
    """The table's entries: a committed snapshot, then each key `pending` leaves present or
    absent. Exact whichever of those writes the snapshot already holds."""
    committed, present = lmdb.count_committed([key for key, _ in pending], table)
    return committed + sum((value is not None) - (key in present) for key, value in pending)
