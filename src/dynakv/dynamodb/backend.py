"""What the DynamoDB operations need of a node (`Backend`, provided by the runtime), and
the request helpers every operation shares: its table, its expression attributes, reading
and writing one item.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from dynakv.dynamodb import items
from dynakv.dynamodb.attributes import Item
from dynakv.dynamodb.errors import SerializationException, ValidationException
from dynakv.dynamodb.expressions import Names, Values, validate_expression_attributes
from dynakv.dynamodb.tables import Table, lookup
from dynakv.messages import TransferBatch

Request = dict[str, Any]


class Backend(Protocol):
    """A node as the DynamoDB operations use it. Reads and writes raise dynakv's
    Unavailable or Timeout when too few replicas answer."""

    ring_size: int

    def tables(self) -> dict[str, Table]:
        """The live tables, from the bucket types this node knows."""
        ...

    async def set_table(self, table: Table, mode: str) -> None:
        """Create ("create") or change ("put") a table's bucket type cluster-wide."""
        ...

    async def read(self, bucket: str, key: str, consistent: bool) -> tuple[bytes | None, str]:
        """The key's value (None: absent or deleted) and the context to write after it;
        `consistent` reads every replica."""
        ...

    async def write(
        self, bucket: str, key: str, value: bytes | None, context: str, expires: int = 0
    ) -> None:
        """Store value (None: delete) after the version `context` names, expiring at
        `expires` (epoch ms; 0: never)."""
        ...

    def lock(self, bucket: str, key: str) -> AbstractAsyncContextManager[None]:
        """Serialises read-modify-writes of one key on this node."""
        ...

    def replicas(self, partition: int) -> list[str]:
        """Node addresses holding a ring partition, preference list first."""
        ...

    def quorum(self, bucket: str) -> int:
        """How many replicas a read of the bucket asks (its R as a number)."""
        ...

    async def batch(self, address: str, partition: int, after: bytes, limit: int) -> TransferBatch:
        """Stored records of a partition after storage key `after`, from one node."""
        ...

    async def batches(
        self, partition: int, wanted: list[tuple[str, bytes]], limit: int
    ) -> list[TransferBatch | BaseException]:
        """`batch(address, partition, after, limit)` for each (address, after) of `wanted`,
        asked at once; each answer in order, or the exception its request raised. A method
        of the backend rather than asyncio.gather in the caller, so that a backend can run
        the operations without an asyncio loop (the simulator drives them by hand)."""
        ...


def table_of(backend: Backend, request: Request) -> Table:
    return lookup(backend.tables(), request.get("TableName"))


def expression_attributes(request: Request) -> tuple[Names, Values]:
    return validate_expression_attributes(
        request.get("ExpressionAttributeNames"), request.get("ExpressionAttributeValues")
    )


def text_param(request: Request, name: str) -> str | None:
    value = request.get(name)
    if value is not None and not isinstance(value, str):
        raise SerializationException(f"{name} must be a string")
    return value


def bool_param(request: Request, name: str) -> bool:
    value = request.get(name, False)
    if not isinstance(value, bool):
        raise SerializationException(f"{name} must be a boolean")
    return value


def choice(request: Request, name: str, allowed: tuple[str, ...], message: str) -> str:
    value = request.get(name, allowed[0])
    if value not in allowed:
        raise ValidationException(message)
    return value


LEGACY = ("Expected", "AttributesToGet", "AttributeUpdates", "ConditionalOperator",
          "KeyConditions", "QueryFilter", "ScanFilter")  # fmt: skip


def refuse_legacy(request: Request) -> None:
    """The pre-expression parameters are not supported: say so rather than ignore them."""
    for name in LEGACY:
        if name in request:
            raise ValidationException(
                f"{name} is a legacy parameter this endpoint does not support; "
                "use the expression parameters instead"
            )


async def read_item(
    backend: Backend, table: Table, key: Item, consistent: bool = False
) -> tuple[Item | None, str]:
    """The item with this validated key (None: none, or expired) and the context to write
    after it."""
    bucket, skey = items.location(table, key)
    value, context = await backend.read(bucket, skey, consistent)
    return (None if value is None else items.decode(table, value, time.time())), context


async def write_item(
    backend: Backend, table: Table, key: Item, item: Item | None, context: str = ""
) -> None:
    """Store the item under its key (None: delete it), with the expiry its TTL attribute
    gives when the table's TimeToLive is on."""
    bucket, skey = items.location(table, key)
    if item is None:
        await backend.write(bucket, skey, None, context)
        return
    expires = items.expires_of(table, item, time.time())
    await backend.write(bucket, skey, items.encode(table, item), context, expires)
