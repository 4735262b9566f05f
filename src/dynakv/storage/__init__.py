"""Local storage engines: LMDB behind a write-ahead log (the default, on disk), LMDB (on
disk) and memory (tests, simulator).

See `dynakv.storage.engine` for the interface and its semantics.
"""

from __future__ import annotations

import contextlib
import os

from dynakv.storage.engine import Durability, Engine, check_durability
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.memory import MemoryEngine
from dynakv.storage.wal import WalEngine
from dynakv.storage.wal_log import LEGACY_NAME, SEGMENT_NAMES

__all__ = [
    "Durability",
    "Engine",
    "LmdbEngine",
    "MemoryEngine",
    "WalEngine",
    "open_engine",
    "open_lmdb",
]

ENGINE_KINDS = ("lmdb", "wal", "memory")


def open_engine(kind: str, path: str | None, durability: Durability = "fsync") -> Engine:
    """Open a storage engine: "wal" (the default engine: LMDB behind a write-ahead log; needs
    `path`), "lmdb" (needs `path`) or "memory".

    The memory engine ignores `path` and `durability` (which must still be valid).
    ValueError for an unknown kind or durability.
    """
    check_durability(durability)
    if kind in ("lmdb", "wal"):
        if path is None:
            raise ValueError(f"the {kind} engine needs a path")
        if kind == "lmdb":
            return open_lmdb(path, durability)
        return WalEngine(path, durability=durability)
    if kind == "memory":
        return MemoryEngine()
    raise ValueError(f"unknown storage engine {kind!r}; expected one of {ENGINE_KINDS}")


def open_lmdb(path: str, durability: Durability = "fsync") -> LmdbEngine:
    """An LmdbEngine on `path`. A write-ahead log that the wal engine left there (a node
    switched from engine "wal" to "lmdb", maybe after a crash) is first replayed into LMDB
    by a WalEngine and removed: LMDB alone would not see its tail of acknowledged writes."""
    logs = [os.path.join(path, name) for name in (*SEGMENT_NAMES, LEGACY_NAME)]
    if any(os.path.exists(log) for log in logs):
        WalEngine(path).close()  # replays, then checkpoints: the log holds nothing more
        for log in logs:
            with contextlib.suppress(FileNotFoundError):
                os.remove(log)
    return LmdbEngine(path, durability)
