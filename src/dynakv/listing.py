"""Key listing (`GET /v1/kv/{bucket}?list=keys`): one page of a bucket's live keys, walked
partition by partition over `export.PartitionScan`, and the cursor that continues it.

Pure: `KeyPage` names the batches it wants and is fed the answers; the runtime
(runtime/http.py) fetches them. No I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from dynakv import expiry
from dynakv.errors import InvalidRequest, Unavailable
from dynakv.item_keys import MAX_STORAGE_KEY, storage_key
from dynakv.messages import TransferBatch
from dynakv.partition_scan import PartitionScan
from dynakv.ring import partition_of_digest
from dynakv.versions import Clock

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
BATCH = 512  # records per TransferRequest: a bounded answer from each replica
_CURSOR_VERSION = b"\x01"  # first byte of a decoded cursor, so the format can change
_DIGEST_BYTES = 16


def encode_cursor(digest: bytes) -> str:
    """The opaque cursor after the key whose digest is `digest`: URL-safe base64, no padding."""
    return base64.urlsafe_b64encode(_CURSOR_VERSION + digest).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> bytes:
    """The digest a cursor continues after; InvalidRequest if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    # A table item's storage key is longer than a digest (item_keys.storage_key).
    if not 1 + _DIGEST_BYTES <= len(raw) <= 1 + MAX_STORAGE_KEY or raw[:1] != _CURSOR_VERSION:
        raise InvalidRequest(
            f"cursor {text[:64]!r} is not a cursor a key listing returned; "
            "omit it to start from the beginning"
        )
    return raw[1:]


def parse_limit(text: str | None) -> int:
    """The `limit` query parameter: 1 to MAX_LIMIT keys, DEFAULT_LIMIT when absent."""
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise InvalidRequest(f"limit must be an integer, got {text[:64]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}, got {limit}")
    return limit


def is_live(clock: Clock, now: float) -> bool:
    """Whether a key holds a value that is neither a tombstone nor expired by `now` (a
    deleted or expired key is not listed)."""
    return bool(expiry.visible(clock, now))


@dataclass
class KeyPage:
    """Up to `limit` live keys of `bucket`, in (partition, digest) order, after `after`.

    The order is that of the stored digests, so a cursor (the last digest handed out) cuts
    the key space in two: a key is on this page or a later one, never both, whatever is
    written meanwhile. `wanted()` names the batches to fetch next; feed each answer to
    `add`, or `failed` for a replica that could not be read. Done when `done` is true:
    `keys`, and `cursor` (None at the end of the bucket).
    """

    bucket: str
    limit: int
    ring_size: int
    replicas: Callable[[int], list[str]]  # node addresses holding a partition
    after: bytes = b""
    # Nodes not to ask (those an earlier page of the same listing could not read, so a
    # down node costs one timeout per listing, not one per page), and those this one could not.
    unreachable: set[str] = field(default_factory=set)
    now: float = 0.0  # the listing's wall-clock time: keys expired by then are left out
    keys: list[str] = field(default_factory=list)
    cursor: str | None = None
    done: bool = False
    partition: int = 0
    scan: PartitionScan | None = None
    _answered: bool = False

    def __post_init__(self) -> None:
        if self.after:
            self.partition = partition_of_digest(self.after, self.ring_size)
        self._open(self.partition, self.after)

    def _open(self, partition: int, after: bytes) -> None:
        self.partition = partition
        addresses = [a for a in self.replicas(partition) if a not in self.unreachable]
        self.scan = PartitionScan.of(partition, addresses)
        for source in self.scan.sources:
            source.after = after
        self._answered = False

    def wanted(self) -> list[tuple[str, int, bytes]]:
        """(address, partition, after) of each batch to fetch before the page can go on."""
        if self.done or self.scan is None:
            return []
        return [(a, self.partition, after) for a, after in self.scan.wanted()]

    def add(self, address: str, batch: TransferBatch) -> None:
        assert self.scan is not None
        if batch.partition == self.partition:
            self.scan.add(address, batch)
            self._answered = True

    def failed(self, address: str) -> None:
        """A replica that could not be read: skipped for the rest of the page (the others
        hold its keys; a key only it holds is missed, and `unreachable` names it)."""
        self.unreachable.add(address)
        if self.scan is not None:
            self.scan.drop(address)

    def advance(self) -> None:
        """Hand out what the answers so far allow; open the next partition when one is done.
        Call after each round of `add` / `failed`."""
        while not self.done and self.scan is not None:
            scan = self.scan
            if not scan.sources and not self._answered:
                raise Unavailable(f"no replica of partition {self.partition} could be read", 1, 0)
            for bucket, key, clock in scan.ready():
                if bucket != self.bucket or not is_live(clock, self.now):
                    continue
                self.keys.append(key)
                if len(self.keys) >= self.limit:
                    # Later keys of this batch are read again by the next page: the
                    # cursor says where this one stopped, not where the replicas did.
                    self.cursor = encode_cursor(storage_key(bucket, key))
                    self.done = True
                    return
            if not scan.done:
                return  # waiting for more batches
            if self.partition + 1 >= self.ring_size:
                self.done = True  # the end of the key space: cursor stays None
                return
            self._open(self.partition + 1, b"")
