"""The DynamoDB endpoint of simulated nodes: the real dynamodb/ operations over a SimCluster.

`SimBackend` is dynamodb.backend.Backend for one incarnation of one node, as
runtime/dynamodb_http.NodeBackend is for a server: reads and writes are the node's
ClientGet/ClientPut, a range read's batches are TransferRequests (its own copy through the
node, another replica's over the peer link, answered with negative rids that the front end
takes before the core, as runtime/server.py does), and `lock` is a FIFO lock per key on
this node. `DynamoFrontends` is the endpoint itself: it routes a request as
DynamoHandler/Forwarder do (a conditional write or UpdateItem goes to the key's first
primary this node sees up, serialised there; when that node cannot be reached it is served
here), runs the operation and answers the client.

No asyncio: the operations are coroutines driven by hand (`Task`). Whatever they wait for
is a `Waiter`, whose `__await__` yields it to the driver; the simulator resolves it when a
reply (or a timeout) arrives in virtual time, and the task resumes as an event at that
moment. Nothing here draws randomness except the network's delays, so a seed still fixes
the run. A node that stops takes its running operations and its locks with it: their
tasks are closed at their next step, and a restarted node gets a new SimBackend.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from dynakv.core.events import Received
from dynakv.dynamodb import protocol
from dynakv.dynamodb.errors import DynamoError
from dynakv.dynamodb.item_ops import serialised_key
from dynakv.dynamodb.tables import Table, tables_of
from dynakv.errors import DynakvError, Timeout, Unavailable, from_code
from dynakv.item_keys import storage_key, table_bucket
from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    Message,
    TransferBatch,
    TransferRequest,
)
from dynakv.partition_scan import partition_replicas
from dynakv.ring import partition_of_digest
from dynakv.sim.cluster import SimCluster

Answer = Callable[[int, dict[str, Any]], None]  # (HTTP status, JSON body); status 0: refused
REFUSED_BODY: dict[str, Any] = {"__type": "refused", "message": "connection refused"}
CALL_GRACE = 2.0  # as ServerApi.call: the node's request timeout plus this, then Timeout
# Records a range read asks of each replica a round (the runtime asks range_read.BATCH, 256):
# a few, so that a Query of a partition of a few items takes several rounds, and the merging
# of replicas at different progress, some dropped midway, is exercised.
RANGE_BATCH = 3


class Waiter:
    """One thing a hand-driven operation waits for, resolved once with a value or an error."""

    __slots__ = ("done", "error", "schedule", "task", "value")

    def __init__(self, schedule: Callable[[Callable[[], None]], None]) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.task: Task | None = None
        self.schedule = schedule

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if self.done:
            return  # a reply after the timeout, or a duplicate
        self.done, self.value, self.error = True, value, error
        if self.task is not None:
            # Resumed as an event of its own, never inside whoever resolved it.
            self.schedule(self.task.resume)

    def __await__(self) -> Generator[Waiter, None, Any]:
        if not self.done:
            yield self
        if self.error is not None:
            raise self.error
        return self.value


class Task:
    """Drives one coroutine: runs it until it waits on an unresolved Waiter, resumes it when
    that resolves, and calls `done(value, error)` at its end; `alive()` false closes it."""

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        alive: Callable[[], bool],
        done: Callable[[Any, BaseException | None], None],
    ) -> None:
        self.coro = coro
        self.alive = alive
        self.done = done
        self.finished = False

    def resume(self) -> None:
        if self.finished:
            return
        if not self.alive():  # its node stopped: the operation dies with the process
            self.finished = True
            self.coro.close()
            return
        while True:
            try:
                waiter = self.coro.send(None)
            except StopIteration as stop:
                self.finished = True
                self.done(stop.value, None)
                return
            except Exception as exc:  # the operation's own error: its answer
                self.finished = True
                self.done(None, exc)
                return
            if not isinstance(waiter, Waiter):
                raise TypeError(f"a simulated operation awaited {waiter!r}, not a Waiter")
            if not waiter.done:
                waiter.task = self
                return


class _KeyLock(AbstractAsyncContextManager[None]):
    """One key's FIFO lock on one node: the first in the queue holds it."""

    def __init__(self, backend: SimBackend, name: tuple[str, str]) -> None:
        self.backend = backend
        self.name = name

    async def __aenter__(self) -> None:
        queue = self.backend.locks.setdefault(self.name, deque())
        waiter = Waiter(self.backend.frontends.schedule)
        queue.append(waiter)
        if len(queue) > 1:
            await waiter

    async def __aexit__(self, *exc: object) -> None:
        if not self.backend.alive():
            # Its node stopped, and the locks with it. (A dead task's coroutine may also be
            # closed by the garbage collector, at no fixed moment: it must not act then.)
            return
        queue = self.backend.locks[self.name]
        queue.popleft()
        if queue:
            queue[0].resolve()
        else:
            del self.backend.locks[self.name]


class SimBackend:
    """dynamodb.backend.Backend over one incarnation of one simulated node."""

    def __init__(self, frontends: DynamoFrontends, name: str) -> None:
        self.frontends = frontends
        self.cluster = frontends.cluster
        self.name = name
        self.node = self.cluster.nodes[name]
        self.endpoint = frontends.endpoint(name)
        self.ring_size = self.node.config.ring_size
        self.locks: dict[tuple[str, str], deque[Waiter]] = {}

    def alive(self) -> bool:
        return self.name in self.cluster.up and self.cluster.nodes[self.name] is self.node

    def tables(self) -> dict[str, Table]:
        return tables_of([msgspec.structs.asdict(t) for t in self.node.state.types])

    async def set_table(self, table: Table, mode: str) -> None:
        props: dict[str, int | str | dict[str, int]] = {"policy": "lww", "table": table.record()}
        await self._call(lambda rid: ClientBucketChange(rid, table_bucket(table.name), props, mode))

    async def read(self, bucket: str, key: str, consistent: bool) -> tuple[bytes | None, str]:
        reply = await self._call(
            lambda rid: ClientGet(rid, bucket, key, "all" if consistent else None)
        )
        assert isinstance(reply, GetResult)
        return (reply.values[0] if reply.values else None), reply.context

    async def write(
        self, bucket: str, key: str, value: bytes | None, context: str, expires: int = 0
    ) -> None:
        await self._call(
            lambda rid: ClientPut(
                rid, bucket, key, value or b"", context, delete=value is None, expires=expires
            )
        )

    def lock(self, bucket: str, key: str) -> AbstractAsyncContextManager[None]:
        return _KeyLock(self, (bucket, key))

    def replicas(self, partition: int) -> list[str]:
        return partition_replicas(self.node.state, partition)

    def quorum(self, bucket: str) -> int:
        props = self.node.view.bucket(bucket)
        return props.r if isinstance(props.r, int) else props.n // 2 + 1

    async def batch(self, address: str, partition: int, after: bytes, limit: int) -> TransferBatch:
        """As ServerApi.partition_batch: this node's copy through the node, another's over
        the peer link (at once Unavailable when this node sees it down)."""
        members = self.node.state.members
        name = next((m.name for m in members if m.node_addr == address), None)
        if name == self.name:
            reply = await self._call(lambda rid: TransferRequest(rid, partition, after, limit))
        else:
            if name is None or name in self.node.view.down:
                raise Unavailable(f"node {address} is down or not a member", 1, 0)
            frontends = self.frontends
            rid = next(frontends.batch_rids)
            waiter = frontends.wait(rid, frontends.request_timeout)
            self.cluster.send_from(self.name, name, TransferRequest(rid, partition, after, limit))
            reply = await waiter
        if isinstance(reply, ErrorReply):
            raise Unavailable(f"node {address}: {reply.message}", 1, 0)
        assert isinstance(reply, TransferBatch)
        return reply

    async def batches(
        self, partition: int, wanted: list[tuple[str, bytes]], limit: int
    ) -> list[TransferBatch | BaseException]:
        """Every batch asked at once (each its own Task), answered when all are; at most
        `frontends.range_batch` records each (see DynamoFrontends)."""
        limit = min(limit, self.frontends.range_batch)
        results: list[TransferBatch | BaseException | None] = [None] * len(wanted)
        left = len(wanted)
        all_done = Waiter(self.frontends.schedule)

        def finisher(i: int) -> Callable[[Any, BaseException | None], None]:
            def done(value: Any, error: BaseException | None) -> None:
                nonlocal left
                results[i] = error if error is not None else value
                left -= 1
                if left == 0:
                    all_done.resolve()

            return done

        for i, (address, after) in enumerate(wanted):
            Task(self.batch(address, partition, after, limit), self.alive, finisher(i)).resume()
        if left:
            await all_done
        return [r for r in results if r is not None]

    async def _call(self, make: Callable[[int], Message]) -> Message:
        """A client request to this node's core, as ServerApi.call: its reply, dynakv's
        error for an ErrorReply, Timeout after the request timeout plus CALL_GRACE."""
        frontends = self.frontends
        rid = next(frontends.rids)
        waiter = frontends.wait(rid, frontends.request_timeout + CALL_GRACE)
        self.cluster.deliver(self.name, Received(self.endpoint, make(rid)))
        reply = await waiter
        if isinstance(reply, ErrorReply):
            raise from_code(reply.code, reply.message, reply.needed, reply.got)
        return reply


class DynamoFrontends:
    """The DynamoDB endpoints of every node of a SimCluster."""

    def __init__(
        self, cluster: SimCluster, request_timeout: float, range_batch: int = RANGE_BATCH
    ) -> None:
        self.cluster = cluster
        self.request_timeout = request_timeout
        self.range_batch = range_batch
        self.rids = itertools.count(1)
        self.batch_rids = itertools.count(-1, -1)  # peer batches: negative, as the runtime's
        self._waiting: dict[int, Waiter] = {}
        self._backends: dict[str, SimBackend] = {}
        self.internal_errors: list[str] = []  # operations that failed with a bug, not an error
        self.forwarded = self.forward_fallbacks = 0
        for name in cluster.names:
            cluster.attach_client(self.endpoint(name), self._reply)
            cluster.intercepts[name] = self._intercept

    @staticmethod
    def endpoint(name: str) -> str:
        return f"#ddb-{name}"

    def schedule(self, action: Callable[[], None]) -> None:
        self.cluster.call_at(self.cluster.now, action)

    def wait(self, rid: int, timeout: float) -> Waiter:
        """A Waiter for the reply with this rid, resolved with Timeout after `timeout`."""
        waiter = Waiter(self.schedule)
        self._waiting[rid] = waiter

        def expire() -> None:
            if self._waiting.pop(rid, None) is waiter:
                waiter.resolve(error=Timeout("the node did not answer in time"))

        self.cluster.call_at(self.cluster.now + timeout, expire)
        return waiter

    def _reply(self, now: float, message: Message) -> None:
        waiter = self._waiting.pop(getattr(message, "rid", 0), None)
        if waiter is not None:
            waiter.resolve(message)

    def _intercept(self, source: str, message: Message) -> bool:
        if type(message) is TransferBatch and message.rid < 0:
            self._reply(self.cluster.now, message)
            return True
        return False

    def backend(self, name: str) -> SimBackend:
        """The backend of the node's current incarnation (a restart makes a new one)."""
        backend = self._backends.get(name)
        if backend is None or not backend.alive():
            backend = self._backends[name] = SimBackend(self, name)
        return backend

    # --- requests ------------------------------------------------------------------------------
    def request(self, node: str, operation: str, body: dict[str, Any], answer: Answer) -> None:
        """A client sends `operation` to `node`'s endpoint over a link that only delays; the
        answer comes back the same way (never, when the node stops first)."""
        cluster = self.cluster
        data = json.dumps(body)  # the request as bytes on the wire: nothing shared

        def back(status: int, reply: dict[str, Any]) -> None:
            text = json.dumps(reply)
            cluster.call_at(
                cluster.now + cluster.network.delay(), lambda: answer(status, json.loads(text))
            )

        cluster.call_at(
            cluster.now + cluster.network.delay(),
            lambda: self._arrive(node, operation, json.loads(data), False, back),
        )

    def _arrive(
        self, name: str, operation: str, body: dict[str, Any], forwarded: bool, answer: Answer
    ) -> None:
        if name not in self.cluster.up:
            answer(0, REFUSED_BODY)
            return
        backend = self.backend(name)
        where = None if forwarded else serialised_key(backend, operation, body)
        if where is not None:
            primary = self._primary(backend, *where)
            if primary is not None and primary != name:
                self._forward(backend, primary, operation, body, answer)
                return
        self._serve(backend, operation, body, answer)

    def _primary(self, backend: SimBackend, bucket: str, key: str) -> str | None:
        """As Forwarder.primary: the key's first replica this node sees up."""
        partition = partition_of_digest(storage_key(bucket, key), backend.ring_size)
        node = backend.node
        members = {m.node_addr: m for m in node.state.members}
        for address in backend.replicas(partition):
            member = members.get(address)
            if member is not None and node.member_status(member) == "up":
                return member.name
        return None

    def _forward(
        self, backend: SimBackend, primary: str, operation: str, body: dict[str, Any],
        answer: Answer,
    ) -> None:  # fmt: skip
        """To the primary's endpoint over the network between the nodes (HTTP: delayed, or
        lost on a cut link); served here when it refuses or does not answer in three request
        timeouts, as Forwarder.forward does, while the primary may still apply it."""
        cluster = self.cluster
        sender = backend.name
        settled = False
        self.forwarded += 1

        def locally() -> None:
            nonlocal settled
            if settled or not backend.alive():
                return
            settled = True
            self.forward_fallbacks += 1
            self._serve(backend, operation, body, answer)

        def relayed(status: int, reply: dict[str, Any]) -> None:
            nonlocal settled
            if settled or not backend.alive():
                return
            if status == 0:  # refused: the primary is down, serve it here at once
                locally()
                return
            settled = True
            answer(status, reply)

        def back(status: int, reply: dict[str, Any]) -> None:
            if (primary, sender) in cluster.network.cut:
                return
            delay = cluster.network.delay(primary, sender)
            cluster.call_at(cluster.now + delay, lambda: relayed(status, reply))

        cluster.call_at(cluster.now + self.request_timeout * 3, locally)
        if (sender, primary) in cluster.network.cut:
            return
        delay = cluster.network.delay(sender, primary)
        cluster.call_at(
            cluster.now + delay, lambda: self._arrive(primary, operation, body, True, back)
        )

    def _serve(
        self, backend: SimBackend, operation: str, body: dict[str, Any], answer: Answer
    ) -> None:
        run = protocol.OPERATIONS[operation]

        def done(value: Any, error: BaseException | None) -> None:
            if not backend.alive():
                return
            if error is None:
                answer(200, value)
                return
            assert isinstance(error, Exception)
            if not isinstance(error, DynamoError | DynakvError):  # a bug, as the runtime logs
                self.internal_errors.append(f"{operation} on {backend.name}: {error!r}")
            dynamo = protocol.as_dynamo(error)
            answer(dynamo.status, protocol.error_body(dynamo))

        Task(run(backend, body), backend.alive, done).resume()
