"""CreateTable, DescribeTable, ListTables, UpdateTable and DeleteTable, as changes of the
tables' bucket types (gossiped and acknowledged by every member before they answer).

DeleteTable marks the table's record deleted (so it is gone at once everywhere) and
deletes its items in the background from the node that served it; an item that deletion
misses (that node stopped) stays unseen, since a later table of the same name has another
generation (tables.py), and is overwritten or deleted only by a key of that generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from dynakv.dynamodb import table_stats
from dynakv.dynamodb.backend import Backend, Request, table_of
from dynakv.dynamodb.range_read import table_items
from dynakv.dynamodb.tables import Table, billing_of, list_page, new_table
from dynakv.item_keys import table_bucket

log = logging.getLogger(__name__)
_background: set[asyncio.Task[None]] = set()  # deletions in progress, kept from the GC


async def create_table(backend: Backend, request: Request) -> dict[str, Any]:
    table = new_table(request, backend.tables(), time.time())
    await backend.set_table(table, "put")
    return {"TableDescription": table.describe()}


async def describe_table(backend: Backend, request: Request) -> dict[str, Any]:
    table = table_of(backend, request)
    return {"Table": table.describe(*table_stats.estimate(backend, table))}


async def list_tables(backend: Backend, request: Request) -> dict[str, Any]:
    names, last = list_page(
        backend.tables(), request.get("ExclusiveStartTableName"), request.get("Limit")
    )
    out: dict[str, Any] = {"TableNames": names}
    if last is not None:
        out["LastEvaluatedTableName"] = last
    return out


async def update_table(backend: Backend, request: Request) -> dict[str, Any]:
    """Billing mode and provisioned throughput change; the key schema never can."""
    table = table_of(backend, request)
    if "BillingMode" in request or "ProvisionedThroughput" in request:
        changed = dict(request)
        changed.setdefault("BillingMode", table.billing)
        if changed["BillingMode"] == "PAY_PER_REQUEST":
            changed.pop("ProvisionedThroughput", None)
        billing, read_units, write_units = billing_of(changed, table.billing)
        table = dataclasses.replace(
            table, billing=billing, read_units=read_units, write_units=write_units
        )
        await backend.set_table(table, "put")
    return {"TableDescription": table.describe()}


async def delete_table(backend: Backend, request: Request) -> dict[str, Any]:
    table = table_of(backend, request)
    gone = dataclasses.replace(table, deleted=True)
    await backend.set_table(gone, "put")
    task = asyncio.get_running_loop().create_task(delete_items(backend, table))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return {"TableDescription": gone.describe()}


async def delete_items(backend: Backend, table: Table) -> None:
    """Delete every item of a (deleted) table: tombstones, reaped as any others are."""
    bucket = table_bucket(table.name)
    deleted = 0
    try:
        async for key, _ in table_items(backend, table):
            await backend.write(bucket, key, None, "")
            deleted += 1
    except Exception:  # a background task: say why it stopped; the items stay unseen
        log.exception("deleting the items of table %s stopped", table.name)
    log.info("deleted %d items of table %s", deleted, table.name)
