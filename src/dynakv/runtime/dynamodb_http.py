"""The DynamoDB-compatible endpoint of a node (`--dynamodb HOST:PORT`, aiohttp): `POST /` with
`X-Amz-Target: DynamoDB_20120810.<Op>`, served by dynamodb.protocol's operations over
`NodeBackend`, this node seen through frontend.ServerApi.

With `[security] authentication` off a SigV4 Authorization header is accepted and not
checked; on, it must be a valid signature by a user's access key and the user's grants must
cover the tables (dynamodb_auth.py). With TLS configured the port speaks only TLS (tls.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from dynakv import tls
from dynakv.dynamodb import protocol
from dynakv.dynamodb.errors import DynamoError, ValidationException
from dynakv.dynamodb.item_ops import serialised_key
from dynakv.dynamodb.tables import Table, tables_of
from dynakv.errors import DynakvError, from_code
from dynakv.item_keys import table_bucket
from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    TransferBatch,
)
from dynakv.runtime import dynamodb_auth
from dynakv.runtime.addr import split_addr
from dynakv.runtime.dynamodb_forward import FORWARDED, Forwarder
from dynakv.runtime.frontend import ServerApi

MAX_BODY = 17 << 20  # a BatchWriteItem of 25 items of 400 KB, with room for its JSON
log = logging.getLogger(__name__)


def _check(reply: Any) -> Any:
    if isinstance(reply, ErrorReply):
        raise from_code(reply.code, reply.message, reply.needed, reply.got)
    return reply


class NodeBackend:
    """dynamodb.backend.Backend over a node's ServerApi."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self.ring_size = server.config.ring_size
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def tables(self) -> dict[str, Table]:
        return tables_of(self.server.bucket_types())

    async def set_table(self, table: Table, mode: str) -> None:
        props: dict[str, int | str | dict[str, int]] = {"policy": "lww", "table": table.record()}
        _check(await self.server.call(ClientBucketChange(0, table_bucket(table.name), props, mode)))

    async def read(self, bucket: str, key: str, consistent: bool) -> tuple[bytes | None, str]:
        reply = _check(
            await self.server.call(ClientGet(0, bucket, key, "all" if consistent else None))
        )
        assert isinstance(reply, GetResult)
        return (reply.values[0] if reply.values else None), reply.context

    async def write(
        self, bucket: str, key: str, value: bytes | None, context: str, expires: int = 0
    ) -> None:
        message = ClientPut(
            0, bucket, key, value or b"", context, delete=value is None, expires=expires
        )
        _check(await self.server.call(message))

    @asynccontextmanager
    async def lock(self, bucket: str, key: str) -> AsyncIterator[None]:
        """One lock a key while anyone holds or waits for it; dropped after the last."""
        name = (bucket, key)
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    def replicas(self, partition: int) -> list[str]:
        return self.server.partition_replicas(partition)

    def quorum(self, bucket: str) -> int:
        props = self.server.bucket(bucket)
        return props.r if isinstance(props.r, int) else props.n // 2 + 1

    async def batch(self, address: str, partition: int, after: bytes, limit: int) -> TransferBatch:
        return await self.server.partition_batch(address, partition, after, limit)

    async def batches(
        self, partition: int, wanted: list[tuple[str, bytes]], limit: int
    ) -> list[TransferBatch | BaseException]:
        return await asyncio.gather(
            *(self.batch(a, partition, at, limit) for a, at in wanted), return_exceptions=True
        )


class DynamoHandler:
    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self.backend = NodeBackend(server)
        self.forwarder = Forwarder(server)
        self.secure = server.gate.enabled

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        target = request.headers.get("X-Amz-Target")
        name = (target or "").removeprefix(protocol.TARGET_PREFIX) or "unknown"
        try:
            raw = await request.read()
            user = dynamodb_auth.signer(self.server.gate, request, raw) if self.secure else None
            if request.method != "POST":
                raise protocol.UnknownOperationException()
            operation = protocol.operation(target)
            body = protocol.parse_body(raw)
            if user is not None:
                dynamodb_auth.check(user, name, body, dynamodb_auth.region_of(request))
            where = (
                None if FORWARDED in request.headers else serialised_key(self.backend, name, body)
            )
            if where is not None:
                forwarded = await self.forwarder.forward(*where, dict(request.headers), raw)
                if forwarded is not None:
                    status, headers, data = forwarded
                    return web.Response(body=data, status=status, headers=headers)
            answer, status = await operation(self.backend, body), 200
        except web.HTTPRequestEntityTooLarge:
            error = ValidationException(f"Request size exceeds {MAX_BODY} bytes")
            answer, status = protocol.error_body(error), error.status
        except Exception as exc:  # every failure is a DynamoDB error; the node keeps serving
            error = protocol.as_dynamo(exc)
            if not isinstance(exc, DynamoError | DynakvError):
                log.exception("DynamoDB %s failed", name)
            answer, status = protocol.error_body(error), error.status
        data, crc = protocol.encode(answer)
        code = None if status == 200 else str(answer["__type"]).rsplit("#", 1)[-1]
        op = f"dynamodb_{name}" if name in protocol.OPERATIONS else "dynamodb_unknown"
        self.server.metrics.observe(op, time.perf_counter() - started, code)
        return web.Response(
            body=data,
            status=status,
            headers={"x-amz-crc32": crc, "x-amzn-RequestId": f"{time.time_ns():x}"},
            content_type=protocol.CONTENT_TYPE,
        )


def build_app(server: ServerApi) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    handler = DynamoHandler(server)
    app.router.add_route("*", "/{tail:.*}", handler.handle)

    async def forwarding(app: web.Application) -> AsyncIterator[None]:
        yield
        await handler.forwarder.stop()

    app.cleanup_ctx.append(forwarding)
    return app


class DynamoFrontend:
    """The DynamoDB endpoint on `config.dynamodb_addr` (a Frontend)."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.server), access_log=None)
        await runner.setup()
        self._runner = runner
        assert self.server.config.dynamodb_addr is not None
        host, port = split_addr(self.server.config.dynamodb_addr)
        context = tls.server_context(self.server.config.security)
        await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
