"""Reading a storage-key range of one ring partition from its replicas, merged key by key
(partition_scan.PartitionScan, as key listing does) and settled last-writer-wins: what Query
and Scan are built on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from dynakv import expiry, versions
from dynakv.dynamodb import items
from dynakv.dynamodb.attributes import Item
from dynakv.dynamodb.backend import Backend
from dynakv.dynamodb.errors import ServiceUnavailable
from dynakv.dynamodb.tables import Table
from dynakv.errors import DynakvError
from dynakv.item_keys import storage_key, table_bucket
from dynakv.messages import TransferBatch
from dynakv.partition_scan import PartitionScan

BATCH = 256  # records asked of each replica at a time


def to_the_end(_: bytes) -> bool:
    """A `stop` for read_range that reads the whole partition."""
    return False


def live_value(clock: versions.Clock, now: float) -> bytes | None:
    """The value a merged copy holds under lww (None: deleted, or expired by `now`)."""
    live = expiry.visible(versions.lww(clock), now)
    return live[0].value if live else None


async def read_range(
    backend: Backend,
    partition: int,
    after: bytes,
    stop: Callable[[bytes], bool],
    needed: int,
    batch: int = BATCH,
) -> AsyncIterator[tuple[bytes, str, str, bytes]]:
    """(storage key, bucket, key, value) of the live keys of `partition` after `after`
    (exclusive; b"": from the partition's start), in storage-key order, until `stop(key)`.

    Every replica is asked; ServiceUnavailable once fewer than `needed` of them can answer,
    since the copies the others hold could then be missed.
    """
    addresses = backend.replicas(partition)
    scan = PartitionScan.of(partition, addresses)
    for source in scan.sources:
        source.after = after
    needed = min(needed, len(addresses))
    now = time.time()  # the read's moment: what expired by then is not shown
    while True:
        for bucket, key, clock in scan.ready():
            skey = storage_key(bucket, key)
            if stop(skey):
                return
            value = live_value(clock, now)
            if value is not None:
                yield skey, bucket, key, value
        if scan.done:
            return
        wanted = scan.wanted()
        answers = await backend.batches(partition, wanted, batch)
        for (address, _), answer in zip(wanted, answers, strict=True):
            if isinstance(answer, TransferBatch):
                scan.add(address, answer)
            elif isinstance(answer, DynakvError):
                scan.drop(address)
            else:
                raise answer
        if len(scan.sources) < needed:
            raise ServiceUnavailable(
                f"only {len(scan.sources)} of the {needed} replicas needed could be read"
            )


async def table_items(backend: Backend, table: Table) -> AsyncIterator[tuple[str, Item]]:
    """(key, item) of every item of the table, from whichever replicas answer (one is
    enough): for work in the background, such as counting and deleting a table's items."""
    bucket = table_bucket(table.name)
    for partition in range(backend.ring_size):
        async for _, b, key, value in read_range(backend, partition, b"", to_the_end, 1):
            item = items.decode(table, value) if b == bucket else None
            if item is not None:
                yield key, item
