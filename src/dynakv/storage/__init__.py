"""Local storage engines: LMDB behind a write-ahead log (the default, on disk), LMDB (on
disk) and memory (tests, simulator).

See `dynakv.storage.engine` for the interface and its semantics.
"""

from __future__ import annotations

from dynakv.storage.engine import Durability, Engine, check_durability
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.memory import MemoryEngine
from dynakv.storage.wal import WalEngine

__all__ = ["Durability", "Engine", "LmdbEngine", "MemoryEngine", "WalEngine", "open_engine"]

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
            return LmdbEngine(path, durability)
        return WalEngine(path, durability=durability)
    if kind == "memory":
        return MemoryEngine()
    raise ValueError(f"unknown storage engine {kind!r}; expected one of {ENGINE_KINDS}")
