"""DescribeTable's ItemCount and TableSizeBytes: estimates, as DynamoDB's are (it refreshes
them about every six hours). A node counts a table's items with a background scan when a
DescribeTable finds its last count older than REFRESH seconds, and answers with the last
count it has (0 before the first one is done).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from dynakv.dynamodb.attributes import item_size
from dynakv.dynamodb.backend import Backend
from dynakv.dynamodb.range_read import table_items
from dynakv.dynamodb.tables import Table

REFRESH = 60.0  # seconds a count is kept before a DescribeTable starts a new one
log = logging.getLogger(__name__)


@dataclass
class _Count:
    items: int = 0
    size: int = 0
    at: float = float("-inf")  # time.monotonic() when the count started
    task: asyncio.Task[None] | None = None


_counts: dict[tuple[str, float], _Count] = {}  # (table name, generation) -> its last count


def estimate(backend: Backend, table: Table) -> tuple[int, int]:
    """(items, bytes) of the last count of the table; starts a new count when it is stale."""
    count = _counts.setdefault((table.name, table.created), _Count())
    now = time.monotonic()
    if now - count.at > REFRESH and (count.task is None or count.task.done()):
        count.at = now
        count.task = asyncio.get_running_loop().create_task(_count(backend, table, count))
    return count.items, count.size


async def _count(backend: Backend, table: Table, count: _Count) -> None:
    found = size = 0
    try:
        async for _, item in table_items(backend, table):
            found += 1
            size += item_size(item)
    except Exception:  # a background task: keep the last count, say why this one stopped
        log.exception("counting the items of table %s stopped", table.name)
        return
    count.items, count.size = found, size
