"""The server: runs a core.Node on asyncio, executing its effects, and offers front ends
their API (frontend.ServerApi).

Every event goes through `dispatch`; the effects of one loop turn are held until the storage
engine has committed that turn's writes (group commit), then frames are written and front
ends' requests answered. It owns the binary protocol's listener and the peer links; the
front ends (http.py, resp.py) do the rest of a node's I/O, through its API.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from dynakv import messages, tls
from dynakv.bucket_types import ResolvedProps
from dynakv.config import NodeConfig
from dynakv.core.events import (
    Event,
    Log,
    Received,
    Send,
    SetTimer,
    Start,
    Stop,
    TimerFired,
    is_client,
)
from dynakv.core.node import Node
from dynakv.errors import DynakvError, InvalidRequest, Timeout, Unavailable
from dynakv.messages import (
    UNGATED,
    BackupResult,
    ClientBackup,
    ClientGet,
    ClientLogin,
    ClientPut,
    ClientUserChange,
    ClusterInfo,
    ErrorReply,
    Hello,
    HelloProof,
    Message,
    TransferBatch,
    TransferRequest,
    error_reply,
)
from dynakv.partition_scan import partition_replicas
from dynakv.runtime.addr import split_addr
from dynakv.runtime.gatekeeper import Gatekeeper, without_secrets
from dynakv.runtime.limits import PortGuard
from dynakv.runtime.login_limits import login_limiter, source_of
from dynakv.runtime.metrics import Metrics, consistency_label
from dynakv.runtime.peer_gate import PeerGate, warn_if_open
from dynakv.runtime.peers import PeerLinks
from dynakv.runtime.probes import Probes
from dynakv.runtime.transport import LENGTH, FrameConnection
from dynakv.storage import open_engine
from dynakv.storage.lmdb import LmdbEngine
from dynakv.storage.pipelined import PipelinedEngine
from dynakv.storage.wal import WalEngine
from dynakv.versions import Clock


class Server:
    """One dynakv node: its Node, storage engine, binary-protocol listener and peer links.

    Front ends use only its API (frontend.ServerApi): `config`, `metrics`, `call`, `submit`,
    `forget`, `status`, `cluster`, `replica`, `uptime`, `stopped`. The process (process.py)
    uses `listen`, `begin` (or `start`, both), `stop`, `stop_requested` and `storage_failed`.
    """

    def __init__(self, config: NodeConfig, join: str | None = None) -> None:
        self.config = config
        self.join = join
        self.metrics = Metrics()
        self.probes = Probes(config.name, self.metrics)
        self.log = self.probes.log
        # Secret and TLS files first: one unusable stops the node before its store opens.
        self.peer_gate = PeerGate(config, self.log, self.metrics)
        if config.security.authentication and not self.peer_gate.required:
            # Without it any client could say Hello, be taken for a peer and skip the checks.
            raise tls.SecurityFilesError(
                "[security] authentication = true needs peers to prove themselves: "
                "set cluster_secret_file (or TLS with tls_cert, tls_key, tls_ca)"
            )
        self._tls, dial_tls = tls.node_contexts(config.security)
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
        engine = open_engine(config.engine, config.data_dir, config.durability)
        if isinstance(engine, LmdbEngine | WalEngine) and config.durability == "fsync":
            # fsync on a writer thread, never in the loop (a WalEngine's log appends and
            # checkpoints too)
            engine = PipelinedEngine(engine, config.commit_interval)
        self.engine = engine
        self.node = Node(config, self.engine, random.Random())
        self.engine.commit()
        self.metrics.watch(self.node, self.engine, config.data_dir, self.uptime)
        self.gate = Gatekeeper(
            config.security.authentication,
            lambda: self.node.state,
            self.log,
            login_limiter(config.security, self.log, self.metrics),
            self.peer_gate.secrets,
        )
        self.links = PeerLinks(
            config, self, self.log, self.dispatch, self.node.address_of, self.peer_gate, dial_tls
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = time.time()
        self._effects_pending: list[Send] = []  # wait for this turn's commit
        self._ready: list[Send] = []  # leave at the end of this turn (messages.UNGATED)
        self._marked: list[Send] = []  # wait for the writes up to their mark (Send.mark)
        self._dirty: set[FrameConnection] = set()
        self._flush_scheduled = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        self._callbacks: dict[str, Callable[[Message], None]] = {}  # "#h" tokens of submit()
        self._tokens = itertools.count(1)
        # Batches this node's front ends pulled from peers (key listing), by rid. Their rids
        # are negative: the node's own rids are positive, so a peer's answer to one of
        # these is never taken for an ownership transfer's, nor the other way round.
        self._batch_waiters: dict[int, asyncio.Future[Message]] = {}
        self._batch_rids = itertools.count(-1, -1)
        self._inflight: dict[tuple[str, int], tuple[str, str, float]] = {}
        self._tcp_server: asyncio.AbstractServer | None = None
        self.guard = PortGuard("node", config, self.metrics, FrameConnection.activity)
        self.stopped = asyncio.Event()
        self.stop_requested = asyncio.Event()  # it left the cluster, or its storage failed
        # A commit failed: requests sent before it (ungated) may carry dots that are not on
        # disk here. The node stops without marking a clean stop, so it starts again with a
        # new incarnation rather than mint those dots a second time.
        self.storage_failed = False
        self.exit_status = 0  # the process's, set by a Stop effect (a refused join: 1)
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen, then start the node (for a server without front ends)."""
        await self.listen()
        self.begin()

    async def listen(self) -> None:
        """Listen for the binary protocol; the node does nothing yet. The process starts the
        front ends between this and `begin`, so a port already taken stops it before the node
        has joined, founded or gossiped anything."""
        self.loop = self.links.loop = asyncio.get_running_loop()
        if isinstance(self.engine, PipelinedEngine):
            self.engine.bind(self.loop.call_soon_threadsafe)
        host, port = split_addr(self.config.node_addr)
        limit = self.config.max_inflight_per_connection
        self._tcp_server = await self.loop.create_server(
            self.guard.factory(lambda: FrameConnection(self, max_inflight=limit)),
            host,
            port,
            reuse_address=True,
            ssl=self._tls,
        )
        self.guard.start()

    def begin(self) -> None:
        """Start the node: join or found a cluster, timers, gossip."""
        assert self.loop is not None, "listen() first"
        self.log.event(
            logging.INFO,
            "node_started",
            node_addr=self.config.node_addr,
            http_addr=self.config.http_addr,
            node_id=self.node.actor,
        )
        warn_if_open(self.config, self.log)
        if not self.gate.enabled:
            self.log.event(
                logging.WARNING,
                "authentication_off",
                clients="anyone who reaches a port may read, write and change the cluster",
                to_enable="[security] authentication = true",
            )
        self.dispatch(Start(join=self.join))
        self.probes.start(self.loop, self.dispatch)

    async def stop(self) -> None:
        """Send what the node still owes, close every connection and the storage engine."""
        failed = self.storage_failed
        if not failed:
            self._flush()
            self.engine.commit()
            await asyncio.sleep(0.05)  # let the last commits' replies go out
        self._stopping = True
        self.probes.stop()
        for handle in self._timers.values():
            handle.cancel()
        if self._tcp_server is not None:
            self._tcp_server.close()
        self.guard.stop()
        self.links.abort_all()
        if not failed:
            self.node.shutdown()
        try:
            self.engine.close()
        except Exception:
            if not failed:
                raise
            self.log.exception("engine_close_failed")
        self.probes.write_summary(force=True)
        self.log.event(logging.INFO, "node_stopped", storage_failed=failed)
        self.stopped.set()

    # --- the event pump --------------------------------------------------------------------
    def dispatch(self, event: Event) -> None:
        if self._stopping:
            return
        try:
            effects = self.node.handle(time.time(), event)
        except Exception:
            self.log.exception("core_failed", extra={"fields": {"event": type(event).__name__}})
            if isinstance(event, Received) and is_client(event.source):
                rid = getattr(event.message, "rid", 0)
                self._hold(Send(event.source, ErrorReply(rid, "internal", "internal error")))
            return
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                self._hold(effect)  # type: ignore[arg-type]
            elif kind is SetTimer:
                self._set_timer(effect)  # type: ignore[arg-type]
            elif kind is Log:
                self._log_effect(effect)  # type: ignore[arg-type]
            elif kind is Stop:
                status = effect.status  # type: ignore[union-attr]
                level = logging.ERROR if status else logging.INFO
                self.log.event(level, "stopping", reason=effect.reason)  # type: ignore[union-attr]
                self.exit_status = max(self.exit_status, status)
                self.stop_requested.set()

    def _hold(self, send: Send) -> None:
        if type(send.message) in UNGATED:
            # Requests to peers and read answers acknowledge nothing: they leave at the end
            # of this turn without waiting for its commit, so a put's local fsync and its
            # replicas' fsyncs overlap, and reads never wait behind a disk sync.
            self._ready.append(send)
        elif send.mark >= 0:
            self._marked.append(send)
        else:
            self._effects_pending.append(send)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """End of a loop turn: commit its writes; its sends leave once they are durable.

        With the pipelined engine the commit (and its fsync) runs on the writer thread while
        the loop goes on; `_release` runs when it is done. Sends that need no durability
        (messages.UNGATED: requests to peers, read answers) go out now, as do frames the
        transport queued directly (hellos, error frames for bad input).
        """
        self._flush_scheduled = False
        pending, self._effects_pending = self._effects_pending, []
        ready, self._ready = self._ready, []
        for send in ready:
            self._deliver(send)
        self._flush_connections()
        self.engine.commit_async(lambda error: self._release(pending, error))
        if self._marked:
            # A put's result waits only for the batch that holds its write (often durable
            # by the time its replica's ack came in), not for this turn's.
            marked, self._marked = self._marked, []
            engine = self.engine
            for send in marked:
                if engine.durable(send.mark):
                    self._deliver(send)
                else:
                    engine.when_durable(send.mark, partial(self._release, [send]))
            self._flush_connections()

    def _release(self, pending: list[Send], error: BaseException | None) -> None:
        if error is None:
            for send in pending:
                self._deliver(send)
        else:
            # A failed commit must not be acknowledged: client replies become errors.
            self.log.event(logging.ERROR, "commit_failed", error=error, then="stopping the node")
            self.storage_failed = True
            self.stop_requested.set()
            for send in pending:
                if is_client(send.to):
                    rid = getattr(send.message, "rid", 0)
                    failure = ErrorReply(rid, "internal", "storage commit failed")
                    self._deliver(Send(send.to, failure))
        self._flush_connections()

    def _flush_connections(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()

    def mark_dirty(self, conn: FrameConnection) -> None:
        self._dirty.add(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush)

    def _deliver(self, send: Send) -> None:
        to = send.to
        if to.startswith("#h"):
            callback = self._callbacks.pop(to, None)
            if callback is not None:
                try:
                    callback(send.message)
                except Exception:  # a bug there must not keep the other replies back
                    fields = {"token": to}
                    self.log.exception("reply_callback_failed", extra={"fields": fields})
                return
            waiter = self._waiters.pop(to, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(send.message)
            return
        if to.startswith("#c"):
            message = send.message
            if type(message) is ClusterInfo and message.state.users:  # type: ignore[attr-defined]
                message = ClusterInfo(message.rid, without_secrets(message.state))  # type: ignore[attr-defined]
            self._record_done(to, message)
            self.links.to_client(to, message)
            return
        self.links.to_peer(to, send.message)

    def _log_effect(self, effect: Log) -> None:
        self.probes.log_effect(effect)

    # --- timers ----------------------------------------------------------------------------
    def _set_timer(self, timer: SetTimer) -> None:
        assert self.loop is not None
        old = self._timers.pop(timer.name, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, timer.at - time.time())
        self._timers[timer.name] = self.loop.call_later(
            delay, self.dispatch, TimerFired(timer.name)
        )

    # --- FrameHandler ----------------------------------------------------------------------
    def on_open(self, conn: FrameConnection) -> None:
        self.links.opened(conn)

    def on_close(self, conn: FrameConnection) -> None:
        self.gate.sessions.pop(conn.token, None)
        self.links.closed(conn)

    def on_bad_length(self, conn: FrameConnection, length: int) -> None:
        if conn.outbound_to is not None and conn.outbound_to.startswith("@"):
            head = length.to_bytes(LENGTH, "big")
            what = messages.other_protocol(head)
            answer = f"it answers {what}" if what else f"it answers {head!r}..., not frames"
            self.links.warn_join_target(conn.outbound_to[1:], f"not a node port ({answer})")
        text = f"frame of {length} bytes exceeds the limit of {messages.MAX_FRAME_BYTES}"
        conn.send(ErrorReply(0, InvalidRequest.code, text))
        conn.close_after_flush()

    def on_frame(self, conn: FrameConnection, payload: bytes | memoryview) -> None:
        try:
            message = messages.decode(payload)
        except (msgspec.MsgspecError, ValueError):  # invalid UTF-8 is a ValueError
            rid, text, usable = messages.describe_bad_frame(payload)
            conn.send(ErrorReply(rid, InvalidRequest.code, text))
            if not usable:
                conn.close_after_flush()
            return
        if not self.peer_gate.admits(conn, message):
            return
        if type(message) is Hello:
            self.links.hello(conn, message)
            return
        if type(message) is HelloProof:
            self.links.proof(conn, message)
            return
        # Only clients are users: peers proved themselves (Hello, HelloProof), and what
        # answers on a connection this node dialled is the peer it chose.
        if conn.peer is None and conn.outbound_to is None and self._refused(conn, message):
            return
        if type(message) is ClientUserChange:
            try:  # an access key's secret is sealed before the core sees it
                message = self.gate.sealed(message)
            except InvalidRequest as exc:
                conn.send(error_reply(message.rid, exc))
                return
        if type(message) is ClientBackup:
            assert self.loop is not None
            self.loop.create_task(self._backup(conn, message))
            return
        if type(message) is TransferBatch and message.rid < 0:
            waiter = self._batch_waiters.pop(message.rid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        source = conn.peer or conn.token
        if source is conn.token and type(message) in (ClientGet, ClientPut):
            if type(message) is ClientGet:
                op, level = "get", message.r
            else:
                op, level = ("delete" if message.delete else "put"), message.w  # type: ignore[union-attr]
            started = (op, consistency_label(level), time.perf_counter())
            self._inflight[(source, message.rid)] = started
            conn.request_started(message.rid)
        self.dispatch(Received(source, message))

    def _refused(self, conn: FrameConnection, message: Message) -> bool:
        """A client's login, or a request it may not make (answered here): True."""
        if type(message) is ClientLogin:
            assert self.loop is not None
            self.loop.create_task(self._login(conn, message))  # type: ignore[arg-type]
            return True
        refusal = self.gate.refusal(conn.token, message) if self.gate.enabled else None
        if refusal is not None:
            conn.send(refusal)
        return refusal is not None

    async def _login(self, conn: FrameConnection, message: ClientLogin) -> None:
        if not self.gate.enabled:
            text = "authentication is off on this node: connect without credentials"
            conn.send(ErrorReply(message.rid, InvalidRequest.code, text))
            return
        conn.send(await self.gate.login_frame(conn.token, message, source_of(conn.transport)))

    async def _backup(self, conn: FrameConnection, request: ClientBackup) -> None:
        """Copy the store on a thread while the loop goes on serving (the engine's copy
        reads one committed snapshot), then answer the operator."""
        started = time.perf_counter()
        self.log.event(logging.INFO, "backup_started", path=request.path)
        try:
            if not Path(request.path).is_absolute():
                raise InvalidRequest(f"backup path {request.path!r} is not absolute")
            size = await asyncio.to_thread(self.engine.backup, request.path)
        except DynakvError as exc:
            self.log.event(logging.ERROR, "backup_failed", path=request.path, error=exc.message)
            conn.send(error_reply(request.rid, exc))
            return
        except OSError as exc:
            self.log.event(logging.ERROR, "backup_failed", path=request.path, error=str(exc))
            conn.send(ErrorReply(request.rid, InvalidRequest.code, f"backup failed: {exc}"))
            return
        seconds = round(time.perf_counter() - started, 3)
        fields = {"path": request.path, "bytes": size, "seconds": seconds}
        self.log.fields(logging.INFO, "backup_finished", fields)
        conn.send(BackupResult(request.rid, request.path, size, seconds))

    # --- the front ends' API (frontend.ServerApi, which documents it) ----------------------
    async def call(self, message: Message, timeout: float | None = None) -> Message:
        """Run one client request through the node and wait for its reply."""
        assert self.loop is not None
        token = f"#h{next(self._tokens)}"
        waiter: asyncio.Future[Message] = self.loop.create_future()
        self._waiters[token] = waiter
        self.dispatch(Received(token, message))
        try:
            limit = self.config.request_timeout + 2.0 if timeout is None else timeout
            return await asyncio.wait_for(waiter, limit)
        except TimeoutError as exc:
            raise Timeout("the node did not answer in time") from exc
        finally:
            self._waiters.pop(token, None)

    def submit(self, message: Message, callback: Callable[[Message], None]) -> str:
        """Run one client request through the node; `callback(reply)` runs when the reply is
        released (after its commit), or never if `forget(token)` came first. No future: the
        Redis front door calls this for every command."""
        token = f"#h{next(self._tokens)}"
        self._callbacks[token] = callback
        self.dispatch(Received(token, message))
        return token

    def forget(self, token: str) -> None:
        self._callbacks.pop(token, None)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.node.status())
        body["uptime_seconds"] = round(self.uptime(), 3)
        body["node_addr"] = self.config.node_addr
        body["http_addr"] = self.config.http_addr
        body["dynamodb_addr"] = self.config.dynamodb_addr  # peers forward to it
        body["durability"] = self.config.durability
        return body

    def cluster(self) -> dict[str, Any]:
        node = self.node
        state = node.state
        ring = state.ring.ring
        ownership = ring.ownership()
        members = [
            {
                "name": m.name,
                "node_addr": m.node_addr,
                "http_addr": m.http_addr,
                "datacenter": m.datacenter,
                "rack": m.rack,
                "status": node.member_status(m),
                "incarnation": m.incarnation,
                "partitions": ownership.get(m.name, 0),
            }
            for m in state.members
        ]
        target = state.ring.next
        return {
            "cluster": state.cluster,
            "epoch": state.ring.epoch,
            "claimant": state.ring.claimant,
            "members": members,
            "ring": {"size": ring.size, "owners": list(ring.owners)},
            "next_ring": None if target is None else {"owners": list(target.owners)},
            "transfers_pending": len(node.view.pending_moves_list()),
            "replication": {
                "placed": node.view.placed_replication,
                "next": None if target is None else node.view.next_replication,
                "wanted": node.view.wanted_replication,
                # replicas per data center, beside N (bucket types that list them)
                "datacenters": dict(node.view.placed_datacenters),
                "next_datacenters": None if target is None else dict(node.view.next_datacenters),
                "wanted_datacenters": dict(node.view.wanted_datacenters),
            },
        }

    def bucket(self, name: str) -> ResolvedProps:
        return self.node.view.bucket(name)

    def bucket_types(self) -> list[dict[str, Any]]:
        return [msgspec.structs.asdict(t) for t in self.node.state.types]

    def replica(self, bucket: str, key: str) -> Clock | None:
        return self.node.replica(bucket, key)

    def uptime(self) -> float:
        return time.time() - self.started

    def partition_replicas(self, partition: int) -> list[str]:
        return partition_replicas(self.node.state, partition)

    async def partition_batch(
        self, address: str, partition: int, after: bytes, limit: int
    ) -> TransferBatch:
        """One batch of a key partition from the node at `address` (its own copy), over the
        peer link; this node's own copy through the node itself."""
        assert self.loop is not None
        name = next((m.name for m in self.node.state.members if m.node_addr == address), None)
        if name == self.config.name or address == self.config.node_addr:
            reply = await self.call(TransferRequest(0, partition, after, limit))
        else:
            if name is None or name in self.node.view.down:
                # No wait for a timeout: the peer link would drop the request anyway.
                raise Unavailable(f"node {address} is down or not a member", 1, 0)
            rid = next(self._batch_rids)
            waiter: asyncio.Future[Message] = self.loop.create_future()
            self._batch_waiters[rid] = waiter
            self._hold(Send(name, TransferRequest(rid, partition, after, limit)))
            try:
                reply = await asyncio.wait_for(waiter, self.config.request_timeout)
            except TimeoutError as exc:
                raise Timeout(f"node {address} did not answer in time") from exc
            finally:
                self._batch_waiters.pop(rid, None)
        if isinstance(reply, ErrorReply):
            raise Unavailable(f"node {address}: {reply.message}", 1, 0)
        assert isinstance(reply, TransferBatch)
        return reply

    def _record_done(self, token: str, message: Message) -> None:
        rid = getattr(message, "rid", None)
        started = self._inflight.pop((token, rid), None) if rid is not None else None
        if started is None:
            return
        op, level, t0 = started
        code = message.code if isinstance(message, ErrorReply) else None
        self.metrics.observe(op, time.perf_counter() - t0, code, level)
