"""Python clients over the binary protocol: `Client` (blocking) and `AsyncClient` (asyncio).

Client-driven coordination (Dynamo section 6.4): a client fetches the cluster's membership
(`ClientClusterInfo`) from any reachable node on first use, every `REFRESH_INTERVAL` seconds
and soon after an error that suggests a stale view, and sends each request straight to the
first owner of the key's partition in the installed ring -- a replica of the key whatever
the bucket's N -- then, if that node cannot be reached, to the next nodes of the partition's
walk (the next replicas, then the rest of the ring), then to the given nodes. A node that is
not a replica of the key forwards a put to one (one extra hop), so a stale view costs time,
never correctness. Members marked removed are never chosen. With `route=False` the given
nodes are used in order, as before routing existed.

Connections are kept per node address: the blocking client keeps one socket per node, the
asyncio client one multiplexed connection per node with many requests in flight, matched by
request id. A node whose connection fails is tried last for a while (a back-off doubling
from 1 s to 16 s). A get whose connection is lost after it was sent is retried on the next
node (reads are idempotent); a put or delete is not, since it may have been applied: it
raises `Unavailable`, as a connection lost after sending always did.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import msgspec

from dynakv import bucket_types as bt
from dynakv import listing, messages
from dynakv import tls as tls_contexts
from dynakv.bucket_types import BucketType, ResolvedProps
from dynakv.core.membership import Membership
from dynakv.errors import (
    DynakvError,
    InvalidRequest,
    SiblingsError,
    Timeout,
    Unavailable,
    from_code,
)
from dynakv.item_keys import storage_key
from dynakv.messages import (
    MAX_FRAME_BYTES,
    BackupResult,
    ClientBackup,
    ClientBucketChange,
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientLogin,
    ClientPut,
    ClientUserChange,
    ClusterInfo,
    ClusterState,
    ErrorReply,
    GetResult,
    LoginResult,
    Message,
    PutResult,
    TransferBatch,
    TransferRequest,
)
from dynakv.partition_scan import partition_replicas
from dynakv.ring import partition_of_digest
from dynakv.runtime.transport import LENGTH, frame

Resolver = Callable[[list[bytes]], bytes]

REFRESH_INTERVAL = 10.0  # seconds between membership fetches
STALE_REFRESH_GAP = 1.0  # an error asks for a fetch no sooner than this after the last one
DOWN_BACKOFF = (1.0, 16.0)  # a failed node is tried last for this long, doubling to the max
KEY_MEMO = 1 << 17  # routing remembers the partitions of up to this many keys per bucket


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


def _parse(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"node address must be HOST:PORT, got {address!r}")
    return host, int(port)


def _nodes(nodes: str | Sequence[str]) -> list[str]:
    """The given node addresses, checked, as "host:port" strings without repeats."""
    items = [nodes] if isinstance(nodes, str) else list(nodes)
    if not items:
        raise InvalidRequest("give at least one node address HOST:PORT")
    parsed = []
    for item in items:
        host, port = _parse(item)
        parsed.append(f"{host}:{port}")
    return list(dict.fromkeys(parsed))


def _error(reply: ErrorReply) -> DynakvError:
    """The exception a node's error reply stands for."""
    return from_code(reply.code, reply.message, reply.needed, reply.got)


def _check(reply: Message) -> Message:
    if isinstance(reply, ErrorReply):
        raise _error(reply)
    return reply


def _put_message(
    rid: int,
    bucket: str,
    key: str,
    value: bytes,
    context: str | None,
    w: int | str | None,
    content_type: str = "",
    delete: bool = False,
) -> ClientPut:
    """The frame of a put (or, with `delete`, a delete) as every client method sends it."""
    return ClientPut(rid, bucket, key, bytes(value), context or "", w, content_type, delete)


def _read_result(reply: Message, resolve: Resolver | None) -> ReadResult:
    reply = _check(reply)
    assert isinstance(reply, GetResult)
    resolved = None
    if resolve is not None and len(reply.values) > 1:
        resolved = resolve(list(reply.values))
    return ReadResult(list(reply.values), reply.context, list(reply.content_types), resolved)


def _bucket_props(types: tuple[BucketType, ...], name: str) -> ResolvedProps:
    found = bt.type_of(types, name)
    if found is None:
        raise InvalidRequest("the node asked knows no bucket types: it has not joined yet")
    return bt.resolve(found)


def _changed_type(reply: Message, name: str) -> BucketType:
    """The type `name` as a bucket type change's answer shows it."""
    reply = _check(reply)
    assert isinstance(reply, ClusterInfo)
    return next(t for t in reply.state.types if t.name == name)


def _put_context(reply: Message) -> str:
    reply = _check(reply)
    assert isinstance(reply, PutResult)
    return reply.context


# --- routing: pure --------------------------------------------------------------------------


class Routes:
    """Where requests go, computed from one membership state and the given nodes; no I/O.

    `for_key` is the order in which to try nodes for a key: the owners of the key's partition
    and of the partitions after it in the installed ring (`Ring.walk`, the order a node
    builds preference lists in, so the first is a replica for any N and the first N are the
    N replicas), then members that own nothing yet, then the given nodes. `everyone` is the
    order for requests about no key: the given nodes, then the members. Members marked
    removed are left out. Without a state (or before the cluster has a ring) both are the
    given nodes.

    When the ring spans data centers, the walk's nodes in the client's own data center come
    first (the first of them is the key's nearest replica): `datacenter` when given, else
    the data center of the first given node, learnt from the membership.
    """

    __slots__ = (
        "_addrs",
        "_cache",
        "_local",
        "_partitions",
        "_ring",
        "_shift",
        "_tail",
        "datacenter",
        "epoch",
        "everyone",
        "seeds",
    )

    def __init__(
        self,
        state: Membership | None,
        seeds: Sequence[str],
        previous: Routes | None = None,
        datacenter: str | None = None,
    ) -> None:
        self.seeds = tuple(dict.fromkeys(seeds))
        self.datacenter = datacenter
        self._local: frozenset[str] = frozenset()  # members in this client's data center
        # bucket -> key -> partition, for the keys seen lately: hashing a key costs more than
        # the rest of routing. Kept from `previous` while the ring size stays the same.
        self._partitions: dict[str, dict[str, int]] = {}
        if state is None or state.ring.epoch == 0:
            self.epoch = 0
            self._ring = None
            self._shift = 0
            self._addrs: dict[str, str] = {}
            self._tail = self.seeds
            self._cache: list[tuple[str, ...] | None] = []
            self.everyone = self.seeds
            return
        self.epoch = state.ring.epoch
        ring = self._ring = state.ring.ring
        # partition_of_digest without its checks: the top log2(Q) bits of the 128-bit digest
        self._shift = 128 - partition_of_digest(b"\xff" * 16, ring.size).bit_length()
        if previous is not None and previous._shift == self._shift:
            self._partitions = previous._partitions
        self._addrs = {m.name: m.node_addr for m in state.members if m.status != "removed"}
        if ring.places:  # several places: route to this client's data center first
            if datacenter is None:
                first = next((m for m in state.members if m.node_addr == self.seeds[0]), None)
                datacenter = self.datacenter = None if first is None else first.datacenter
            places = ring.place_map()
            self._local = frozenset(n for n, place in places.items() if place[0] == datacenter)
        owners = set(ring.owners)
        idle = [addr for name, addr in self._addrs.items() if name not in owners]
        self._tail = tuple(dict.fromkeys([*idle, *self.seeds]))
        self._cache = [None] * ring.size
        self.everyone = tuple(dict.fromkeys([*self.seeds, *self._addrs.values()]))

    def for_key(self, bucket: str, key: str) -> tuple[str, ...]:
        ring = self._ring
        if ring is None:
            return self.seeds
        known = self._partitions.get(bucket)
        partition = known.get(key) if known is not None else None
        if partition is None:
            try:
                partition = int.from_bytes(storage_key(bucket, key)[:16], "big") >> self._shift
            except (AttributeError, TypeError, UnicodeError):  # not a str: the node refuses it
                return self.everyone
            if known is None:
                known = self._partitions[bucket] = {}
            elif len(known) >= KEY_MEMO:  # bounded: a wider key space is hashed again
                known.clear()
            known[key] = partition
        route = self._cache[partition]
        if route is None:
            route = self._cache[partition] = self.for_partition(partition)
        return route

    def for_partition(self, partition: int) -> tuple[str, ...]:
        assert self._ring is not None
        addrs = self._addrs
        walk = [name for name in self._ring.walk(partition) if name in addrs]
        if self._local:
            walk.sort(key=lambda name: name not in self._local)  # stable: walk order kept
        return tuple(dict.fromkeys([*(addrs[name] for name in walk), *self._tail]))


class _Router:
    """A client's view (Routes), when to refresh it, and which nodes failed lately."""

    __slots__ = (
        "datacenter",
        "down",
        "down_until",
        "fetched_at",
        "refresh_at",
        "route",
        "routes",
        "seeds",
    )

    def __init__(
        self, nodes: str | Sequence[str], route: bool, datacenter: str | None = None
    ) -> None:
        self.seeds = _nodes(nodes)
        self.route = route
        self.datacenter = datacenter
        self.routes = Routes(None, self.seeds, datacenter=datacenter)
        self.refresh_at = 0.0 if route else float("inf")  # monotonic time a fetch is due
        self.fetched_at = float("-inf")
        self.down: dict[str, tuple[float, float]] = {}  # address -> (until, back-off)
        self.down_until = 0.0  # the latest `until` of `down`: past it, no node is shunned

    def install(self, state: Membership, now: float) -> None:
        self.routes = Routes(state, self.seeds, self.routes, self.datacenter)
        self.fetched_at = now
        self.refresh_at = now + REFRESH_INTERVAL

    def fetch_failed(self, now: float) -> None:
        self.fetched_at = now
        self.refresh_at = now + STALE_REFRESH_GAP

    def fetch_order(self, connected: Container[str]) -> list[str]:
        """Where to fetch the membership: a node already connected first (no new connection)."""
        nodes = self.for_any()
        return [a for a in nodes if a in connected] + [a for a in nodes if a not in connected]

    def fetched(self, reply: Message | DynakvError) -> None:
        """Install what a membership fetch answered; an error or odd reply: try again soon."""
        if isinstance(reply, ClusterInfo):
            self.install(reply.state, time.monotonic())
        else:
            self.fetch_failed(time.monotonic())

    def stale(self) -> None:
        """Something suggests the view is out of date: fetch again soon, not in a storm."""
        if self.route:
            self.refresh_at = min(self.refresh_at, self.fetched_at + STALE_REFRESH_GAP)

    def failed(self, address: str) -> None:
        backoff = self.down.get(address, (0.0, DOWN_BACKOFF[0] / 2))[1] * 2
        backoff = min(max(backoff, DOWN_BACKOFF[0]), DOWN_BACKOFF[1])
        until = time.monotonic() + backoff
        self.down[address] = (until, backoff)
        self.down_until = max(self.down_until, until)
        self.stale()

    def reached(self, address: str) -> None:
        if self.down:
            self.down.pop(address, None)

    def order(self, route: tuple[str, ...]) -> Sequence[str]:
        """route with the nodes that failed lately moved to the end (tried as a last resort)."""
        down = self.down
        if not down:
            return route
        now = time.monotonic()
        if now >= self.down_until:  # back-offs over (the marks stay, to double next time)
            return route
        healthy: list[str] = []
        later: list[str] = []
        for address in route:
            mark = down.get(address)
            (later if mark is not None and mark[0] > now else healthy).append(address)
        return healthy + later

    def for_key(self, bucket: str, key: str) -> Sequence[str]:
        return self.order(self.routes.for_key(bucket, key) if self.route else self.seeds)

    def for_any(self) -> Sequence[str]:
        return self.order(self.routes.everyone if self.route else self.seeds)


class _Lost(Unavailable):
    """The connection closed or failed after the request was sent: it may have been applied."""


class _NotANodePort(Exception):
    """What answered is no node port: its first bytes are no frame (`kind` says what)."""

    def __init__(self, head: bytes) -> None:
        what = messages.other_protocol(head)
        port = {"HTTP": "HTTP", "the Redis protocol": "RESP"}.get(what or "")
        self.kind = f"{what}: it is a node's {port} port" if port else f"{head[:8]!r}..."
        super().__init__(self.kind)

    def error(self, address: str) -> InvalidRequest:
        """Said at once, where a frame reader would wait for a gigabyte that never comes."""
        return InvalidRequest(
            f"{address} answers {self.kind}, not a node port. Give a node's binary-protocol "
            f"port (`make run`: 127.0.0.1:7001 to 7003; its HTTP ports are 8001 to 8003)"
        )


# --- blocking client --------------------------------------------------------------------------


class _Socket:
    __slots__ = ("buffer", "poll", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.poll = select.poll()
        self.poll.register(sock, select.POLLIN)

    def idle_and_open(self) -> bool:
        """Between requests nothing is due from the node; readable means it closed (or sent
        a late reply, which is read and skipped)."""
        try:
            if not self.poll.poll(0):
                return True
            if isinstance(self.sock, ssl.SSLSocket):
                return self._tls_still_open()
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _tls_still_open(self) -> bool:
        # TLS cannot peek, and a readable socket may hold only TLS records (a session
        # ticket): read what there is without waiting, and keep any late reply's bytes.
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(1 << 16)
        except ssl.SSLWantReadError:
            return True
        finally:
            self.sock.settimeout(timeout)
        self.buffer += chunk
        return chunk != b""

    def read_frame(self) -> Message:
        buffer = self.buffer
        while True:
            if len(buffer) >= LENGTH:
                length = int.from_bytes(buffer[:LENGTH], "big")
                if length > MAX_FRAME_BYTES:
                    raise _NotANodePort(bytes(buffer[:16]))
                if len(buffer) >= LENGTH + length:
                    payload = bytes(buffer[LENGTH : LENGTH + length])
                    del buffer[: LENGTH + length]
                    return messages.decode(payload)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("node closed the connection")
            buffer += chunk


class Client:
    """Blocking client. Not thread-safe: use one per thread.

    `route=True` (the default) sends each request to a replica of its key (see the module
    docstring), in `datacenter` first when the cluster spans several (default: the data
    center of the first node given); `route=False` uses the given nodes in order.
    `last_node` is the address of the node that answered the last request. `tls`: an
    ssl.SSLContext, or the CA file (PEM) that signed the nodes' certificates, for nodes
    with TLS on (README, Security); None: plain TCP.
    """

    def __init__(
        self,
        nodes: str | Sequence[str] = "127.0.0.1:7001",
        timeout: float = 10.0,
        *,
        route: bool = True,
        datacenter: str | None = None,
        tls: ssl.SSLContext | str | None = None,
        user: str | None = None,
        password: str | None = None,
    ):
        self._router = _Router(nodes, route, datacenter)
        self._timeout = timeout
        self._tls = tls_contexts.client_context(tls)
        # Sent on every new connection (ClientLogin) when the cluster has authentication
        # on; `password` is the user's password or bearer token.
        self._login = None if user is None else (user, password or "")
        self._socks: dict[str, _Socket] = {}
        self._rids = itertools.count(1)
        self.last_node: str | None = None

    def close(self) -> None:
        for conn in self._socks.values():
            conn.sock.close()
        self._socks.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self, bucket: str, key: str, *, r: int | str | None = None, resolve: Resolver | None = None
    ) -> ReadResult:
        message = ClientGet(next(self._rids), bucket, key, r)
        return _read_result(self._call(message, self._for_key(bucket, key), True), resolve)

    def put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        *,
        context: str | None = None,
        w: int | str | None = None,
        content_type: str = "",
    ) -> str:
        message = _put_message(next(self._rids), bucket, key, value, context, w, content_type)
        return _put_context(self._call(message, self._for_key(bucket, key), False))

    def delete(
        self, bucket: str, key: str, *, context: str | None = None, w: int | str | None = None
    ) -> str:
        message = _put_message(next(self._rids), bucket, key, b"", context, w, delete=True)
        return _put_context(self._call(message, self._for_key(bucket, key), False))

    def restore(self, bucket: str, key: str, state: bytes, *, w: int | str | None = None) -> str:
        """Merge an exported state (an encoded DVVSet, `dynakv import`) into the key's
        replicas as they merge each other's: no dot is minted, siblings stay siblings.
        Returns the context of that state."""
        message = ClientPut(next(self._rids), bucket, key, b"", "", w, state=state)
        return _put_context(self._call(message, self._for_key(bucket, key), False))

    def partition_batch(
        self, address: str, partition: int, after: bytes, limit: int
    ) -> TransferBatch:
        """Up to `limit` stored records of key `partition` after digest `after`, from the
        node at `address` alone (its own copy, as an ownership transfer pulls it)."""
        message = TransferRequest(next(self._rids), partition, after, limit)
        reply = _check(self._call(message, [address], True))
        assert isinstance(reply, TransferBatch)
        return reply

    def list_keys(
        self, bucket: str, page: int = listing.DEFAULT_LIMIT, unreachable: set[str] | None = None
    ) -> Iterator[str]:
        """Every live key of `bucket`, read `page` keys at a time: a full scan of every
        partition on each of its replicas, as `GET /v1/kv/{bucket}?list=keys` (README, HTTP
        API), so a key present throughout comes out once. `unreachable`, if given, gets the
        nodes that could not be read (a key only they hold is missing)."""
        state = self.cluster()
        skipped: set[str] = set()
        after = b""
        while True:
            keys = listing.KeyPage(
                bucket, page, state.ring.ring.size, lambda p: partition_replicas(state, p),
                after, set(skipped),
            )  # fmt: skip
            keys.advance()
            while not keys.done:
                for address, partition, start in keys.wanted():
                    try:
                        batch = self.partition_batch(address, partition, start, listing.BATCH)
                        keys.add(address, batch)
                    except DynakvError:
                        keys.failed(address)
                keys.advance()
            skipped |= keys.unreachable
            if unreachable is not None:
                unreachable |= keys.unreachable
            yield from keys.keys
            if keys.cursor is None:
                return
            after = listing.decode_cursor(keys.cursor)

    def backup(self, path: str) -> BackupResult:
        """Have the first node given copy its store into directory `path` on its host."""
        message = ClientBackup(next(self._rids), path)
        reply = _check(self._call(message, self._router.seeds[:1], False))
        assert isinstance(reply, BackupResult)
        return reply

    def cluster(self) -> ClusterState:
        message = ClientClusterInfo(next(self._rids))
        reply = _check(self._call(message, self._router.for_any(), True))
        assert isinstance(reply, ClusterInfo)
        if self._router.route:
            self._router.install(reply.state, time.monotonic())
        return reply.state

    def cluster_change(self, op: str, name: str) -> ClusterState:
        """An operator's "leave" or "remove" of member `name`; the new cluster state."""
        message = ClientClusterChange(next(self._rids), op, name)
        reply = _check(self._call(message, self._router.for_any(), False))
        assert isinstance(reply, ClusterInfo)
        self._router.stale()
        return reply.state

    def bucket_types(self) -> tuple[BucketType, ...]:
        """The cluster's bucket types as the node asked knows them, sorted by name."""
        return self.cluster().types

    def bucket(self, name: str) -> ResolvedProps:
        """The properties bucket `name` has: its own type's, else the default type's."""
        return _bucket_props(self.bucket_types(), name)

    def set_bucket_type(
        self, name: str, mode: str = "put", **props: int | str | dict[str, int]
    ) -> BucketType:
        """Create (mode "create"), update ("update") or either ("put") bucket type `name`
        with props among n, r, w (numbers or one, quorum, all), policy, max_value_bytes,
        datacenters ({data center: replicas there}; n becomes their sum).
        Returns the type as the cluster now keeps it; InvalidRequest when refused."""
        message = ClientBucketChange(next(self._rids), name, props, mode)
        return _changed_type(self._call(message, self._router.for_any(), False), name)

    def change_user(self, change: ClientUserChange) -> ClusterState:
        """An operator's user change (cli_user.py builds it, a password already hashed);
        the cluster state after it, its users without their hashes."""
        change.rid = next(self._rids)
        reply = _check(self._call(change, self._router.for_any(), False))
        assert isinstance(reply, ClusterInfo)
        return reply.state

    # --- routing -------------------------------------------------------------------------
    def _for_key(self, bucket: str, key: str) -> Sequence[str]:
        router = self._router
        if router.refresh_at <= time.monotonic():
            self._refresh()
        return router.for_key(bucket, key)

    def _refresh(self) -> None:
        nodes = self._router.fetch_order(self._socks)
        try:
            reply: Message | DynakvError = self._call(
                ClientClusterInfo(next(self._rids)), nodes, True
            )
        except DynakvError as exc:
            reply = exc
        self._router.fetched(reply)

    # --- wire ------------------------------------------------------------------------------
    def _connect(self, address: str) -> _Socket:
        host, port = _parse(address)
        sock = socket.create_connection((host, port), timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            except OSError:
                sock.close()
                raise
        conn = _Socket(sock)
        if self._login is not None:
            try:
                _log_in(conn, next(self._rids), *self._login)
            except _NotANodePort as exc:  # the login's answer is the first thing read
                sock.close()
                raise exc.error(address) from None
            except BaseException:
                sock.close()
                raise
        self._socks[address] = conn
        return conn

    def _drop(self, address: str) -> None:
        conn = self._socks.pop(address, None)
        if conn is not None:
            conn.sock.close()

    def _call(self, message: Message, nodes: Sequence[str], idempotent: bool) -> Message:
        rid = message.rid  # type: ignore[attr-defined]
        data = frame(message)
        router = self._router
        last: BaseException | None = None
        for address in nodes:
            conn = self._socks.get(address)
            if conn is not None and not conn.idle_and_open():
                self._drop(address)
                conn = None
            if conn is None:
                try:
                    conn = self._connect(address)
                except (OSError, InvalidRequest) as exc:
                    last = exc
                    router.failed(address)
                    continue
                router.reached(address)
            try:
                conn.sock.sendall(data)
                while True:
                    reply = conn.read_frame()
                    if getattr(reply, "rid", None) == rid:
                        break
                    if isinstance(reply, ErrorReply) and reply.rid == 0:
                        raise from_code(reply.code, reply.message)
            except _NotANodePort as exc:
                self._drop(address)
                raise exc.error(address) from None
            except (OSError, EOFError) as exc:
                self._drop(address)
                timed_out = isinstance(exc, TimeoutError)
                if not timed_out:
                    router.failed(address)
                if idempotent and not timed_out:
                    last = exc
                    continue
                raise Unavailable(
                    f"connection to node {address} failed: {exc}", needed=1, got=0
                ) from exc
            self.last_node = address
            if isinstance(reply, ErrorReply) and reply.code == Unavailable.code:
                router.stale()
            return reply
        raise _nothing_reachable(nodes, last)


def _log_in(conn: _Socket, rid: int, user: str, secret: str) -> None:
    """Send a user's credentials on a new connection; the node's refusal as its error."""
    conn.sock.sendall(frame(ClientLogin(rid, user, secret)))
    while True:
        reply = conn.read_frame()
        if getattr(reply, "rid", None) in (rid, 0):
            break
    if isinstance(reply, ErrorReply):
        raise from_code(reply.code, reply.message)


def _nothing_reachable(nodes: Sequence[str], last: BaseException | None) -> Unavailable:
    """No node of `nodes` answered: name them, and how to start a local cluster."""
    tried = ", ".join(nodes) if len(nodes) <= 3 else f"{', '.join(nodes[:3])}, ..."
    return Unavailable(
        f"no node reachable at {tried}: {last}. Is a node running there? (`make run` "
        f"starts a local cluster on 127.0.0.1:7001 to 7003)",
        needed=1,
        got=0,
    )


# --- asyncio client ---------------------------------------------------------------------------


def _expire(waiter: asyncio.Future[Message]) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout("no answer from the node in time"))


log = logging.getLogger("dynakv")

# The asyncio client's framing (as runtime.transport's: a 4-byte big-endian length, then the
# msgpack message), with its own encoder and a decoder of replies only: a frame of any other
# type answers nothing, and fails to decode and is skipped as an unmatched one was.
assert LENGTH == 4
_NO_LENGTH = bytes(LENGTH)
_pack_length = struct.Struct(">I").pack_into
_unpack_length = struct.Struct(">I").unpack_from
_encode_into = msgspec.msgpack.Encoder().encode_into
_decode_reply = msgspec.msgpack.Decoder(
    GetResult | PutResult | ErrorReply | ClusterInfo | LoginResult
).decode

Callback = Callable[[Message | BaseException], None]
"""What `AsyncClient.start_get` / `start_put` call, once, with the outcome of a request: the
reply (GetResult, PutResult) or the exception that ended it (the DynakvError of the node's
ErrorReply, Timeout, Unavailable, or whatever else went wrong)."""


class _Node(asyncio.Protocol):
    """The client's side of one connection to a node: the protocol's framing (as the runtime's
    `FrameConnection`, whose generality a client does not need: it is trimmed to what a reply
    costs), replies matched to waiters by rid, frames of one loop turn written together.

    Two kinds of waiters: futures of the coroutine methods (`waiters`, each with its own
    timer), and callbacks of `start_get` / `start_put` (`pending`), which cost no future,
    task or timer per request -- what lets a load generator stay cheap. All `pending` entries
    share this client's timeout, so the dict's insertion order is deadline order and one timer,
    armed for the oldest entry, expires them all.
    """

    def __init__(self, address: str, client: AsyncClient) -> None:
        self.address = address
        self.client = client
        self.pool = client._conns  # which this connection leaves when it closes
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[int, asyncio.Future[Message]] = {}
        self.pending: dict[int, tuple[float, ClientGet | ClientPut, Callback]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._in = bytearray()
        self._out = bytearray()  # frames of this loop turn, written by _flush
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None
        self._not_a_node: _NotANodePort | None = None  # set when what answers is no node

    def send(self, message: Message) -> None:
        """Queue a frame; it is written at the end of this loop turn, with the others."""
        if self.closed:
            return
        out = self._out
        start = len(out)
        out += _NO_LENGTH  # encoded straight into the outgoing buffer, then its length
        _encode_into(message, out, -1)
        _pack_length(out, start, len(out) - start - LENGTH)
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        out = self._out
        if out and self.transport is not None and not self.closed:
            self._out = bytearray()  # the transport may keep `out` until it is sent
            self.transport.write(out)

    def expect(self, message: ClientGet | ClientPut, callback: Callback) -> None:
        """Send `message`; its reply, or its failure, goes to `callback`."""
        deadline = self.loop.time() + self.client._timeout
        self.pending[message.rid] = (deadline, message, callback)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._expire_pending)
        self.send(message)

    def _expire_pending(self) -> None:
        self._timer = None
        now = self.loop.time()
        pending = self.pending
        expired = []
        for rid, entry in pending.items():
            if entry[0] > now:
                self._timer = self.loop.call_at(entry[0], self._expire_pending)
                break
            expired.append(rid)
        for rid in expired:  # after re-arming: a callback may send (and arm) again
            pending.pop(rid)[2](Timeout("no answer from the node in time"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._in
        buffer += data
        end = len(buffer)
        offset = 0
        with memoryview(buffer) as view:  # frames are decoded in place, not copied out
            while end - offset >= LENGTH:
                length = _unpack_length(buffer, offset)[0]
                if length > MAX_FRAME_BYTES:
                    self._not_a_node = _NotANodePort(bytes(buffer[offset : offset + 16]))
                    self.abort()
                    return
                start = offset + LENGTH
                if end - start < length:
                    break
                offset = start + length
                try:
                    reply = _decode_reply(view[start:offset])
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                    continue
                try:
                    self._answered(reply)
                except Exception:
                    # A bug must cost one connection, never the client's loop.
                    log.exception("reply_failed node=%s", self.address)
                    self.abort()
                    return
        if offset:
            del buffer[:offset]

    def _answered(self, reply: Message) -> None:
        rid = getattr(reply, "rid", 0)
        entry = self.pending.pop(rid, None)
        if entry is not None:
            self.client._answered(self.address, reply, entry[2])
            return
        waiter = self.waiters.pop(rid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool.get(self.address) is self:
            del self.pool[self.address]
        error: Unavailable | InvalidRequest = _Lost(
            f"connection to node {self.address} closed", needed=1, got=0
        )
        if self._not_a_node is not None:  # no use trying again, nor other nodes
            error = self._not_a_node.error(self.address)
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self.waiters.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            lost = [(message, callback) for _, message, callback in self.pending.values()]
            self.pending.clear()
            if isinstance(error, _Lost):
                self.client._lost(self.address, lost, error)
            else:
                for _, callback in lost:
                    callback(error)


class AsyncClient:
    """asyncio client: many requests in flight per connection, matched by request id.

    Same routing as `Client` (`route=`, `last_node`, `tls=`), one connection per node
    address. `start_get` / `start_put` are callback versions of `get` / `put` for load
    generators.
    """

    def __init__(
        self,
        nodes: str | Sequence[str] = "127.0.0.1:7001",
        timeout: float = 10.0,
        *,
        route: bool = True,
        datacenter: str | None = None,
        tls: ssl.SSLContext | str | None = None,
        user: str | None = None,
        password: str | None = None,
    ):
        self._router = _Router(nodes, route, datacenter)
        self._timeout = timeout
        self._tls = tls_contexts.client_context(tls)
        self._login = None if user is None else (user, password or "")  # as Client's
        self._conns: dict[str, _Node] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # start_* requests on the slow path
        self._rids = itertools.count(1)
        self.last_node: str | None = None

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(
        self, bucket: str, key: str, *, r: int | str | None = None, resolve: Resolver | None = None
    ) -> ReadResult:
        message = ClientGet(next(self._rids), bucket, key, r)
        nodes = await self._for_key(bucket, key)
        return _read_result(await self._call(message, nodes, True), resolve)

    async def put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        *,
        context: str | None = None,
        w: int | str | None = None,
        content_type: str = "",
    ) -> str:
        message = _put_message(next(self._rids), bucket, key, value, context, w, content_type)
        nodes = await self._for_key(bucket, key)
        return _put_context(await self._call(message, nodes, False))

    async def delete(
        self, bucket: str, key: str, *, context: str | None = None, w: int | str | None = None
    ) -> str:
        message = _put_message(next(self._rids), bucket, key, b"", context, w, delete=True)
        nodes = await self._for_key(bucket, key)
        return _put_context(await self._call(message, nodes, False))

    async def restore(
        self, bucket: str, key: str, state: bytes, *, w: int | str | None = None
    ) -> str:
        """As `Client.restore`: merge an exported state into the key's replicas."""
        message = ClientPut(next(self._rids), bucket, key, b"", "", w, state=state)
        nodes = await self._for_key(bucket, key)
        return _put_context(await self._call(message, nodes, False))

    # --- callback style: no future, task or timer per request ------------------------------
    def start_get(
        self, bucket: str, key: str, callback: Callback, *, r: int | str | None = None
    ) -> None:
        """Send a get; `callback` gets the `GetResult` (values, content_types, context) or the
        exception, as `get` would have raised it. Same routing, retry and timeout as `get`."""
        self._start(ClientGet(next(self._rids), bucket, key, r), callback)

    def start_put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        callback: Callback,
        *,
        context: str | None = None,
        w: int | str | None = None,
        content_type: str = "",
    ) -> None:
        """Send a put; `callback` gets the `PutResult` (its `context`) or the exception."""
        message = _put_message(next(self._rids), bucket, key, value, context, w, content_type)
        self._start(message, callback)

    def _start(self, message: ClientGet | ClientPut, callback: Callback) -> None:
        router = self._router
        if router.refresh_at <= time.monotonic():
            if router.routes.epoch == 0:  # no view yet: wait for it, on the coroutine path
                self._spawn(message, None, callback)
                return
            self._refresh_in_background()
        conn = self._conns.get(router.for_key(message.bucket, message.key)[0])
        if conn is not None and not conn.closed:
            conn.expect(message, callback)
        else:  # not connected yet: the coroutine path connects
            self._spawn(message, None, callback)

    def _spawn(
        self, message: ClientGet | ClientPut, nodes: Sequence[str] | None, callback: Callback
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._call_back(message, nodes, callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_back(
        self, message: ClientGet | ClientPut, nodes: Sequence[str] | None, callback: Callback
    ) -> None:
        try:
            if nodes is None:
                nodes = await self._for_key(message.bucket, message.key)
            reply = _check(await self._call(message, nodes, isinstance(message, ClientGet)))
        except Exception as exc:  # the caller decides what is fatal, as with `await get()`
            callback(exc)
            return
        callback(reply)

    def _answered(self, address: str, reply: Message, callback: Callback) -> None:
        self.last_node = address
        if type(reply) is ErrorReply:
            if reply.code == Unavailable.code:
                self._router.stale()
            callback(_error(reply))
        else:
            callback(reply)

    def _lost(
        self, address: str, lost: list[tuple[ClientGet | ClientPut, Callback]], error: _Lost
    ) -> None:
        """A connection closed under callback requests: gets go on to the key's other nodes
        (as `_call` does), puts and deletes fail, since they may have been applied."""
        router = self._router
        router.failed(address)
        for message, callback in lost:
            if isinstance(message, ClientGet):
                route = router.for_key(message.bucket, message.key)
                self._spawn(message, [a for a in route if a != address], callback)
            else:
                callback(error)

    async def cluster(self) -> ClusterState:
        message = ClientClusterInfo(next(self._rids))
        reply = _check(await self._call(message, self._router.for_any(), True))
        assert isinstance(reply, ClusterInfo)
        if self._router.route:
            self._router.install(reply.state, time.monotonic())
        return reply.state

    async def bucket_types(self) -> tuple[BucketType, ...]:
        return (await self.cluster()).types

    async def bucket(self, name: str) -> ResolvedProps:
        return _bucket_props(await self.bucket_types(), name)

    async def set_bucket_type(
        self, name: str, mode: str = "put", **props: int | str | dict[str, int]
    ) -> BucketType:
        message = ClientBucketChange(next(self._rids), name, props, mode)
        return _changed_type(await self._call(message, self._router.for_any(), False), name)

    # --- routing -------------------------------------------------------------------------
    async def _for_key(self, bucket: str, key: str) -> Sequence[str]:
        router = self._router
        if router.refresh_at <= time.monotonic():
            await self._fresh()
        return router.for_key(bucket, key)

    async def _fresh(self) -> None:
        """Fetch the membership when due: waited for on first use, in the background later."""
        router = self._router
        if router.refresh_at > time.monotonic():
            return
        task = self._refresh_in_background()
        if router.routes.epoch == 0:
            await asyncio.shield(task)

    def _refresh_in_background(self) -> asyncio.Task[None]:
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return task

    async def _refresh(self) -> None:
        nodes = self._router.fetch_order(self._conns)
        try:
            reply: Message | DynakvError = await self._call(
                ClientClusterInfo(next(self._rids)), nodes, True
            )
        except DynakvError as exc:
            reply = exc
        self._router.fetched(reply)

    # --- wire ------------------------------------------------------------------------------
    async def _connect(self, address: str) -> _Node:
        lock = self._connecting.get(address)
        if lock is None:
            lock = self._connecting[address] = asyncio.Lock()
        async with lock:
            conn = self._conns.get(address)
            if conn is not None and not conn.closed:
                return conn
            host, port = _parse(address)
            loop = asyncio.get_running_loop()
            conn = _Node(address, self)
            connecting = loop.create_connection(
                lambda: conn, host, port, ssl=self._tls,
                server_hostname=host if self._tls is not None else None,
            )  # fmt: skip
            await asyncio.wait_for(connecting, self._timeout)
            if self._login is not None:
                await self._log_in(conn)
            self._conns[address] = conn
            return conn

    async def _log_in(self, conn: _Node) -> None:
        """Send the user's credentials on a new connection; the node's refusal as its error."""
        assert self._login is not None
        rid = next(self._rids)
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        conn.waiters[rid] = waiter
        conn.send(ClientLogin(rid, *self._login))
        try:
            reply = await asyncio.wait_for(waiter, self._timeout)
        finally:
            conn.waiters.pop(rid, None)
        if isinstance(reply, ErrorReply):
            conn.close()
            raise from_code(reply.code, reply.message)

    async def _call(self, message: Message, nodes: Sequence[str], idempotent: bool) -> Message:
        rid = message.rid  # type: ignore[attr-defined]
        router = self._router
        loop = asyncio.get_running_loop()
        last: BaseException | None = None
        for address in nodes:
            conn = self._conns.get(address)
            if conn is None or conn.closed:
                try:
                    conn = await self._connect(address)
                except (OSError, TimeoutError, InvalidRequest) as exc:
                    last = exc
                    router.failed(address)
                    continue
                router.reached(address)
            if conn.closed:  # lost while this request waited for the connection
                last = _Lost(f"connection to node {address} closed", needed=1, got=0)
                router.failed(address)
                continue
            waiter: asyncio.Future[Message] = loop.create_future()
            conn.waiters[rid] = waiter
            conn.send(message)
            timer = loop.call_later(self._timeout, _expire, waiter)
            try:
                reply = await waiter
            except _Lost as exc:
                router.failed(address)
                if idempotent:
                    last = exc
                    continue
                raise
            finally:
                timer.cancel()
                conn.waiters.pop(rid, None)
            self.last_node = address
            if isinstance(reply, ErrorReply) and reply.code == Unavailable.code:
                router.stale()
            return reply
        raise _nothing_reachable(nodes, last)
