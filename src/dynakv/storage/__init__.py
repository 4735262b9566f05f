"""Local storage engines: LMDB (default, on disk) and memory (tests, simulator).

See `dynakv.storage.engine` for the interface and its semantics.
"""

from __future__ import annotations

from dynakv.storage.engine import Durability, Engine, check_durability
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.memory import MemoryEngine

__all__ = ["Durability", "Engine", "LmdbEngine", "MemoryEngine", "open_engine"]

ENGINE_KINDS = ("lmdb", "memory")


def open_engine(kind: str, path: str | None, durability: Durability = "fsync") -> Engine:
    """Open a storage engine: "lmdb" (the default engine; needs `path`) or "memory".

    The memory engine ignores `path` and `durability` (which must still be valid).
    ValueError for an unknown kind or durability.
    """
    check_durability(durability)
    if kind == "lmdb":
        if path is None:
            raise ValueError("the lmdb engine needs a path")
        return LmdbEngine(path, durability)
    if kind == "memory":
        return MemoryEngine()
    raise ValueError(f"unknown storage engine {kind!r}; expected one of {ENGINE_KINDS}")
