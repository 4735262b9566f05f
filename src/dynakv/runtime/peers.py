"""The node's TCP links: every open connection (a client's by its token), one link to each
peer by member name (or "@addr" while joining through an address), connecting on first use
with the messages queued meanwhile, a short back-off after a failed attempt, the Hello
exchange (through the peer gate, peer_gate.py, when peers must prove themselves), and the
warnings about a --join target that cannot be used.

Its own state; the server (server.py) is the connections' FrameHandler and hands it the
connection events. Tells the node a peer is up or down through `dispatch`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from dynakv.config import NodeConfig
from dynakv.core.events import Event, PeerDown, PeerUp
from dynakv.errors import ClusterError
from dynakv.messages import ErrorReply, Hello, HelloProof, Message
from dynakv.peer_auth import Step
from dynakv.runtime.addr import split_addr
from dynakv.runtime.logs import NodeLog
from dynakv.runtime.peer_gate import HANDSHAKE_TIMEOUT, PeerGate
from dynakv.runtime.transport import FrameConnection, FrameHandler

RECONNECT_BACKOFF = 0.5
JOIN_WARNING_EVERY = 30.0  # s between two warnings about one unusable join target
HANDSHAKE_SECONDS = 10.0  # a dialled peer that has not proven itself by then is dropped


class PeerLinks:
    """Connections by token and by peer, and the connecting to peers."""

    def __init__(
        self,
        config: NodeConfig,
        handler: FrameHandler,
        log: NodeLog,
        dispatch: Callable[[Event], None],
        address_of: Callable[[str], str | None],
        gate: PeerGate,
        dial_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.dial_tls = dial_tls
        self.handler = handler
        self.log = log
        self.dispatch = dispatch
        self.address_of = address_of
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[FrameConnection] = set()
        self._peers: dict[str, FrameConnection] = {}  # by member name or "@addr"
        self._by_token: dict[str, FrameConnection] = {}
        self._connecting: dict[str, list[Message]] = {}
        self._failed_at: dict[str, float] = {}
        self._join_warned_at: dict[str, float] = {}  # join targets said to be unusable

    def to_client(self, token: str, message: Message) -> None:
        conn = self._by_token.get(token)
        if conn is not None:
            conn.send(message)

    def to_peer(self, to: str, message: Message) -> None:
        """Send on the link to `to`, connecting first when there is none."""
        conn = self._peers.get(to)
        if conn is not None and not conn.closed:
            conn.send(message)
            return
        queue = self._connecting.get(to)
        if queue is not None:
            queue.append(message)
            return
        if time.monotonic() - self._failed_at.get(to, float("-inf")) < RECONNECT_BACKOFF:
            return  # recently unreachable: the node already counts it as down
        addr = to[1:] if to.startswith("@") else self.address_of(to)
        if addr is None:
            self.log.event(logging.WARNING, "send_dropped", to=to, reason="unknown_member")
            return
        self._connecting[to] = [message]
        assert self.loop is not None
        self.loop.create_task(self._connect(to, addr))

    async def _connect(self, to: str, addr: str) -> None:
        assert self.loop is not None
        try:
            host, port = split_addr(addr)
            # Leave from our own listen address, so per-address firewall rules (partition
            # tests on one loopback) can tell the nodes apart.
            local_host = split_addr(self.config.node_addr)[0]
            connection = self.loop.create_connection(
                lambda: FrameConnection(self.handler, to), host, port, local_addr=(local_host, 0),
                ssl=self.dial_tls, server_hostname=host if self.dial_tls else None,
            )  # fmt: skip
            _, conn = await asyncio.wait_for(connection, timeout=2.0)
        except (OSError, TimeoutError, ValueError) as exc:
            self._connecting.pop(to, None)
            self._failed_at[to] = time.monotonic()
            self.log.event(logging.DEBUG, "connect_failed", to=to, addr=addr, error=exc)
            if to.startswith("@"):
                self.warn_join_target(addr, f"unreachable: {exc or type(exc).__name__}")
            else:
                self.dispatch(PeerDown(to))
            return
        if self.gate.required:
            # Nothing leaves before the peer has proven itself (`_linked` sends the queue).
            self.loop.call_later(HANDSHAKE_SECONDS, self._handshake_due, conn)
            return
        queue = self._connecting.pop(to, [])
        self._peers[to] = conn
        self._failed_at.pop(to, None)
        for message in queue:
            conn.send(message)

    def opened(self, conn: FrameConnection) -> None:
        self.connections.add(conn)
        self._by_token[conn.token] = conn
        if conn.outbound_to is not None:
            conn.send(self.gate.dial(conn))
            conn.hello_sent = True

    def closed(self, conn: FrameConnection) -> None:
        """Forget the connection; a peer left without any link to it is down."""
        self.connections.discard(conn)
        self._by_token.pop(conn.token, None)
        self.gate.forget(conn)
        to = conn.outbound_to
        if conn.peer is None and to is not None and self.gate.required and to in self._connecting:
            self._connecting.pop(to)  # it never proved itself: as if unreachable
            self._failed_at[to] = time.monotonic()
            if to.startswith("@"):
                self.warn_join_target(to[1:], "refused or failed the peer handshake")
            else:
                self.dispatch(PeerDown(to))
        for key in (conn.peer, conn.outbound_to):
            if key is not None and self._peers.get(key) is conn:
                del self._peers[key]
                replacement = self._other_connection(key)
                if replacement is not None:
                    self._peers[key] = replacement
        if conn.peer is not None and conn.peer not in self._peers:
            self.dispatch(PeerDown(conn.peer))

    def _other_connection(self, name: str) -> FrameConnection | None:
        for conn in self.connections:
            if conn.peer == name and not conn.closed:
                return conn
        return None

    def hello(self, conn: FrameConnection, hello: Hello) -> None:
        """A peer named itself: refuse another cluster's; else, once it has proven itself
        (the gate), link it and say it is up."""
        if hello.cluster != self.config.cluster:
            text = (
                f"node {hello.name!r} belongs to cluster {hello.cluster!r}; "
                f"this is cluster {self.config.cluster!r}"
            )
            self.log.event(logging.WARNING, "foreign_peer", name=hello.name, cluster=hello.cluster)
            conn.send(ErrorReply(0, ClusterError.code, text))
            conn.close_after_flush()
            return
        self._step(conn, self.gate.on_hello(conn, hello), hello.name)

    def proof(self, conn: FrameConnection, proof: HelloProof) -> None:
        self._step(conn, self.gate.on_proof(conn, proof), "")

    def _step(self, conn: FrameConnection, step: Step, name: str) -> None:
        for message in step.send:
            conn.send(message)
        if step.send:
            conn.hello_sent = True
        if step.refused is not None:
            self.gate.refuse(conn, step.refused, step.detail, name)
        elif step.peer is not None:
            self._linked(conn, step.peer)

    def _linked(self, conn: FrameConnection, name: str) -> None:
        conn.peer = name
        if not conn.hello_sent:
            conn.send(Hello(self.config.name, self.config.cluster))
            conn.hello_sent = True
        current = self._peers.get(name)
        if current is None or current.closed:
            self._peers[name] = conn
        to = conn.outbound_to
        if to is not None and self.gate.required and to in self._connecting:
            self._peers[to] = conn
            self._failed_at.pop(to, None)
            for message in self._connecting.pop(to):
                conn.send(message)
        self.dispatch(PeerUp(name))

    def _handshake_due(self, conn: FrameConnection) -> None:
        if conn.peer is None and not conn.closed:
            detail = f"no proof within {HANDSHAKE_SECONDS:.0f} s"
            self.gate.refuse(conn, HANDSHAKE_TIMEOUT, detail, conn.outbound_to or "")

    def warn_join_target(self, addr: str, problem: str) -> None:
        """Say at once that the --join target cannot be used, then every 30 s while the
        join is retried (the target may yet come up)."""
        now = time.monotonic()
        if now - self._join_warned_at.get(addr, float("-inf")) >= JOIN_WARNING_EVERY:
            self._join_warned_at[addr] = now
            self.log.event(
                logging.WARNING, "join_target_unusable", addr=addr, problem=problem, then="retrying"
            )

    def abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
