"""Python clients over the binary protocol: `Client` (blocking) and `AsyncClient` (asyncio).

Both send each request to one node of the list (any node coordinates or forwards), fail over
to the next node when a connection cannot be made, and turn error frames into exceptions.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from dynakv import messages
from dynakv.errors import DynakvError, InvalidRequest, SiblingsError, Unavailable, from_code
from dynakv.messages import (
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientPut,
    ClusterInfo,
    ClusterState,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
)
from dynakv.runtime.transport import LENGTH, frame

Resolver = Callable[[list[bytes]], bytes]


@dataclass(frozen=True)
class ReadResult:
    """What a get returns: every live value, the causal context, and the resolved value."""

    values: list[bytes]
    context: str
    content_types: list[str] = field(default_factory=list)
    resolved: bytes | None = None

    @property
    def found(self) -> bool:
        return bool(self.values)

    @property
    def value(self) -> bytes | None:
        """The single value (None when not found); SiblingsError when there are several."""
        if self.resolved is not None:
            return self.resolved
        if not self.values:
            return None
        if len(self.values) > 1:
            raise SiblingsError(self.values, self.context)
        return self.values[0]


def _nodes(nodes: str | Sequence[str]) -> list[tuple[str, int]]:
    items = [nodes] if isinstance(nodes, str) else list(nodes)
    if not items:
        raise InvalidRequest("give at least one node address HOST:PORT")
    parsed = []
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidRequest(f"node address must be HOST:PORT, got {item!r}")
        parsed.append((host, int(port)))
    return parsed


def _check(reply: Message) -> Message:
    if isinstance(reply, ErrorReply):
        raise from_code(reply.code, reply.message, reply.needed, reply.got)
    return reply


def _read_result(reply: Message, resolve: Resolver | None) -> ReadResult:
    reply = _check(reply)
    assert isinstance(reply, GetResult)
    resolved = None
    if resolve is not None and len(reply.values) > 1:
        resolved = resolve(list(reply.values))
    return ReadResult(list(reply.values), reply.context, list(reply.content_types), resolved)


def _put_context(reply: Message) -> str:
    reply = _check(reply)
    assert isinstance(reply, PutResult)
    return reply.context


class Client:
    """Blocking client. Not thread-safe: use one per thread."""

    def __init__(self, nodes: str | Sequence[str] = "127.0.0.1:7001", timeout: float = 10.0):
        self._nodes = _nodes(nodes)
        self._timeout = timeout
        self._next = 0
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._rids = itertools.count(1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self, bucket: str, key: str, *, r: int | None = None, resolve: Resolver | None = None
    ) -> ReadResult:
        reply = self._call(ClientGet(next(self._rids), bucket, key, r))
        return _read_result(reply, resolve)

    def put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        *,
        context: str | None = None,
        w: int | None = None,
        content_type: str = "",
    ) -> str:
        message = ClientPut(
            next(self._rids), bucket, key, bytes(value), context or "", w, content_type
        )
        return _put_context(self._call(message))

    def delete(
        self, bucket: str, key: str, *, context: str | None = None, w: int | None = None
    ) -> str:
        message = ClientPut(next(self._rids), bucket, key, b"", context or "", w, delete=True)
        return _put_context(self._call(message))

    def cluster(self) -> ClusterState:
        reply = _check(self._call(ClientClusterInfo(next(self._rids))))
        assert isinstance(reply, ClusterInfo)
        return reply.state

    def cluster_change(self, op: str, name: str) -> ClusterState:
        """An operator's "leave" or "remove" of member `name`; the new cluster state."""
        reply = _check(self._call(ClientClusterChange(next(self._rids), op, name)))
        assert isinstance(reply, ClusterInfo)
        return reply.state

    # --- wire ------------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        last: OSError | None = None
        for _ in range(len(self._nodes)):
            host, port = self._nodes[self._next % len(self._nodes)]
            try:
                sock = socket.create_connection((host, port), timeout=self._timeout)
            except OSError as exc:
                last = exc
                self._next += 1
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer.clear()
            return sock
        raise Unavailable(f"no node reachable: {last}", needed=1, got=0)

    def _call(self, message: Message) -> Message:
        if self._sock is None:
            self._sock = self._connect()
        rid = message.rid  # type: ignore[attr-defined]
        try:
            self._sock.sendall(frame(message))
            while True:
                reply = self._read_frame()
                if getattr(reply, "rid", None) == rid:
                    return reply
                if isinstance(reply, ErrorReply) and reply.rid == 0:
                    raise from_code(reply.code, reply.message)
        except (OSError, EOFError) as exc:
            self.close()
            self._next += 1
            raise Unavailable(f"connection to node failed: {exc}", needed=1, got=0) from exc

    def _read_frame(self) -> Message:
        assert self._sock is not None
        while True:
            if len(self._buffer) >= LENGTH:
                length = int.from_bytes(self._buffer[:LENGTH], "big")
                if len(self._buffer) >= LENGTH + length:
                    payload = bytes(self._buffer[LENGTH : LENGTH + length])
                    del self._buffer[: LENGTH + length]
                    return messages.decode(payload)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise EOFError("node closed the connection")
            self._buffer += chunk


class AsyncClient:
    """asyncio client: many requests in flight on one connection, matched by request id."""

    def __init__(self, nodes: str | Sequence[str] = "127.0.0.1:7001", timeout: float = 10.0):
        self._nodes = _nodes(nodes)
        self._timeout = timeout
        self._next = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiters: dict[int, asyncio.Future[Message]] = {}
        self._rids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(
        self, bucket: str, key: str, *, r: int | None = None, resolve: Resolver | None = None
    ) -> ReadResult:
        reply = await self._call(ClientGet(next(self._rids), bucket, key, r))
        return _read_result(reply, resolve)

    async def put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        *,
        context: str | None = None,
        w: int | None = None,
        content_type: str = "",
    ) -> str:
        message = ClientPut(
            next(self._rids), bucket, key, bytes(value), context or "", w, content_type
        )
        return _put_context(await self._call(message))

    async def delete(
        self, bucket: str, key: str, *, context: str | None = None, w: int | None = None
    ) -> str:
        message = ClientPut(next(self._rids), bucket, key, b"", context or "", w, delete=True)
        return _put_context(await self._call(message))

    async def cluster(self) -> ClusterState:
        reply = _check(await self._call(ClientClusterInfo(next(self._rids))))
        assert isinstance(reply, ClusterInfo)
        return reply.state

    async def _ensure(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is not None:
                return self._writer
            last: OSError | None = None
            for _ in range(len(self._nodes)):
                host, port = self._nodes[self._next % len(self._nodes)]
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), self._timeout
                    )
                except (OSError, TimeoutError) as exc:
                    last = exc if isinstance(exc, OSError) else OSError(str(exc))
                    self._next += 1
                    continue
                self._writer = writer
                self._reader_task = asyncio.create_task(self._read_loop(reader))
                return writer
            raise Unavailable(f"no node reachable: {last}", needed=1, got=0)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        error: DynakvError = Unavailable("connection to node closed", needed=1, got=0)
        try:
            while True:
                header = await reader.readexactly(LENGTH)
                payload = await reader.readexactly(int.from_bytes(header, "big"))
                try:
                    reply = messages.decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                waiter = self._waiters.pop(getattr(reply, "rid", 0), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._writer = None
            self._next += 1
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(error)
            self._waiters.clear()

    async def _call(self, message: Message) -> Message:
        writer = await self._ensure()
        rid = message.rid  # type: ignore[attr-defined]
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = waiter
        writer.write(frame(message))
        try:
            return await asyncio.wait_for(waiter, self._timeout)
        except TimeoutError as exc:
            from dynakv.errors import Timeout

            raise Timeout("no answer from the node in time") from exc
        finally:
            self._waiters.pop(rid, None)
