"""The storage engine interface: a local, synchronous, byte-oriented ordered key-value store.

Objects are stored under 16-byte digests (`dynakv.ring.key_digest`), or for a DynamoDB item
that digest followed by its sort key's bytes (`dynakv.item_keys.storage_key`), so a ring
partition — a contiguous digest range ``[start, end)`` — is a range scan. Values are opaque
bytes; the caller encodes bucket, key and causal version into them. Every data method takes
a `table`: "objects" (the default: the node's replicas), "hints" (hinted-handoff records,
kept apart so partition scans never see them) or "values" (large values stored apart from
their key's record, which points to them: `core/values_apart.py`). A separate namespace
(`meta_get` / `meta_put`) holds small node metadata such as the incarnation and ring state.

Writes are buffered until `commit()`: the runtime issues every write of one event-loop turn,
calls `commit()` once (group commit) and only then releases that turn's sends and replies,
so an acknowledgement always follows durability. Reads (`get`, `scan`, `count`,
`meta_get`) see the engine's own uncommitted writes.

Engines are single-threaded: use one from the thread that created it (the event loop's).

`scan` yields ``(key, value)`` pairs sorted by key with ``start <= key < end`` (``end ==
b""`` means no upper bound; ``start == b""`` means from the first key). It is *not* a
snapshot: it reads in batches (engine attribute `scan_batch`, default `SCAN_BATCH`) and
resumes strictly after the last key of the previous batch, so the caller may put, delete and
even `commit()` while iterating. Guarantees: keys are yielded in increasing order, each at
most once; a key present with the same value for the whole scan is yielded exactly once.
Whether a write made during the scan is seen is unspecified (each batch reflects the state
when it was read; a key written behind the last batch read is not seen).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Literal, get_args

from dynakv.errors import InvalidRequest
from dynakv.histogram import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram

Durability = Literal["fsync", "os", "none"]
Table = Literal["objects", "hints", "values"]
TABLES: tuple[str, ...] = get_args(Table)
OBJECTS: Table = "objects"
HINTS: Table = "hints"
VALUES: Table = "values"
DURABILITIES: tuple[str, ...] = get_args(Durability)

MAX_KEY_BYTES = 511  # LMDB's default maximum key size; every engine enforces it
SCAN_BATCH = 256  # keys read per batch by `scan`


def check_key(key: bytes) -> bytes:
    """Return `key` as bytes, or raise ValueError unless it is 1..MAX_KEY_BYTES bytes long."""
    if type(key) is bytes and 0 < len(key) <= MAX_KEY_BYTES:
        return key  # every stored write passes here, mostly twice: the common case first
    if not isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"storage key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if not 1 <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"storage key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}")
    return key


def check_value(value: bytes) -> bytes:
    """Return `value` as an immutable bytes copy (so later mutation by the caller is harmless)."""
    if type(value) is bytes:
        return value  # immutable already
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"storage value must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_bound(bound: bytes, what: str) -> bytes:
    """A scan bound: b"" (unbounded) or a valid key."""
    if not isinstance(bound, bytes | bytearray | memoryview):
        raise TypeError(f"scan {what} must be bytes, not {type(bound).__name__}")
    bound = bytes(bound)
    if len(bound) > MAX_KEY_BYTES:
        raise ValueError(f"scan {what} must be at most {MAX_KEY_BYTES} bytes, got {len(bound)}")
    return bound


def meta_key(name: str) -> bytes:
    """Encode a metadata name; ValueError unless it is 1..MAX_KEY_BYTES bytes of UTF-8."""
    if not isinstance(name, str):
        raise TypeError(f"meta name must be str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= MAX_KEY_BYTES:
        raise ValueError(f"meta name must be 1..{MAX_KEY_BYTES} bytes of UTF-8, got {len(raw)}")
    return raw


def check_table(table: str) -> Table:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    return table  # type: ignore[return-value]


def check_durability(durability: str) -> Durability:
    if durability not in DURABILITIES:
        raise ValueError(f"unknown durability {durability!r}; expected one of {DURABILITIES}")
    return durability  # type: ignore[return-value]


class CommitStats:
    """An engine's durable commits, for /metrics: writes per commit, and the time each took
    to reach the disk (LMDB's commit with its fsync; the write-ahead log's fdatasync)."""

    def __init__(self) -> None:
        self.batch_writes = Histogram(BATCH_BUCKETS)
        self.sync_seconds = Histogram(LATENCY_BUCKETS)

    def record(self, writes: int, seconds: float) -> None:
        self.batch_writes.observe(writes)
        self.sync_seconds.observe(seconds)


class Engine(abc.ABC):
    """A local ordered key-value store with buffered writes and group commit."""

    def commit_stats(self) -> CommitStats | None:
        """Its durable commits so far; None for an engine that never syncs."""
        return None

    @abc.abstractmethod
    def get(self, key: bytes, table: Table = OBJECTS) -> bytes | None:
        """The value stored under `key`, or None; sees this engine's own uncommitted writes."""

    @abc.abstractmethod
    def put(self, key: bytes, value: bytes, table: Table = OBJECTS) -> None:
        """Store `value` under `key`; buffered until `commit()`."""

    @abc.abstractmethod
    def delete(self, key: bytes, table: Table = OBJECTS) -> None:
        """Remove `key` (no error if absent); buffered until `commit()`."""

    @abc.abstractmethod
    def scan(
        self, start: bytes, end: bytes, table: Table = OBJECTS
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` sorted by key, ``start <= key < end``; ``end == b""``: unbounded.

        Sees uncommitted writes; safe to write and commit while iterating (see module doc).
        """

    @abc.abstractmethod
    def count(self, table: Table = OBJECTS) -> int:
        """Number of entries in the table (including uncommitted writes)."""

    @abc.abstractmethod
    def meta_get(self, name: str) -> bytes | None:
        """A metadata value, or None; a namespace separate from objects."""

    @abc.abstractmethod
    def meta_put(self, name: str, value: bytes) -> None:
        """Set a metadata value; buffered like `put`."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Group commit: make every write since the last commit durable per the durability mode."""

    def commit_async(self, done: Callable[[BaseException | None], None]) -> None:
        """Commit, then call `done(error)` once the writes are durable.

        Engines that commit synchronously call `done` before returning; a pipelined engine
        calls it later, on the thread its `notify` runs callbacks on. Callbacks run in the
        order of their commits, and a commit with nothing new waits for the ones before it,
        so whatever a caller releases from `done` never depends on a write not yet durable.
        """
        try:
            self.commit()
        except BaseException as exc:
            done(exc)
            return
        done(None)

    def mark(self) -> int:
        """A position after every write made so far, for `durable` and `when_durable`: a
        reply that acknowledges only earlier writes need not wait for later ones."""
        return 0

    def durable(self, mark: int) -> bool:
        """Whether every write up to `mark` is durable. By default no: what waits for a mark
        then leaves after the next commit (`when_durable`), like every other reply."""
        return False

    def when_durable(self, mark: int, done: Callable[[BaseException | None], None]) -> None:
        """Call `done(error)` once every write up to `mark` is durable (by default, after
        committing everything written so far)."""
        self.commit_async(done)

    @abc.abstractmethod
    def pending(self) -> int:
        """Number of writes (put, delete, meta_put) buffered since the last commit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Commit pending writes, then release the engine. Closing twice is harmless."""

    def backup(self, path: str) -> int:
        """Write a consistent copy of the committed state into the empty directory `path`
        (a data directory a node can start on); returns its size in bytes. May run on a
        thread other than the one writing, while it writes. Engines that cannot say so."""
        raise InvalidRequest(f"the {type(self).__name__} engine takes no backups")

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
