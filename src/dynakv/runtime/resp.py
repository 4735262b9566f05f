"""The Redis-protocol (RESP2) front end of a node: `dynakv serve --resp HOST:PORT`.

Any Redis client can then read and write one bucket of dynakv (`resp_bucket`, "default"
unless configured): PING, ECHO, GET, SET, DEL, EXISTS, MGET, MSET, INFO, QUIT, the expiry
commands (EXPIRE, PEXPIRE, TTL, PTTL, PERSIST), plus the
handshake commands client libraries and redis-benchmark send on connecting (COMMAND, CLIENT
SETNAME/SETINFO/GETNAME/ID, SELECT 0, CONFIG GET), answered harmlessly.

Each command becomes the same ClientGet/ClientPut messages the binary protocol and the HTTP
API carry, run through the node with the server's `submit` (frontend.ServerApi), which calls
back with the reply when it is released: no task or future per request. Replies go out in the
order of the commands on each connection. Commands of one connection are started as they
arrive, so a pipeline runs concurrently, except that a command touching a key an earlier,
unfinished command of the connection writes (or, for a write, reads) waits for it: a
pipelined `SET k v` then `GET k` reads `v`, as on Redis.

Semantics against Redis, where they differ:
- A key maps to `(resp_bucket, key)`; keys must be valid UTF-8 of 1-1024 bytes.
- `lww` bucket (the default for `resp_bucket`): SET is a blind write; the latest write by
  hybrid logical clock wins. `siblings` bucket: SET reads first and writes with the read's
  context, replacing every value that read returned (last-writer-intent); a write it did not
  see (concurrent, elsewhere) still survives as a sibling, and GET then answers an error that
  names the HTTP call and the client method that show the siblings.
- DEL reads each key, then deletes (with the read's context) those that had a live value, and
  answers how many did; a key the read quorum saw no value for is left alone.
- MSET is not atomic: each key is its own put; an error reply means some may be written.
- SELECT accepts only database 0; SET's NX, XX and GET are refused. Expiry (SET EX, PX, EXAT,
  PXAT, KEEPTTL; EXPIRE, PEXPIRE, TTL, PTTL, PERSIST) is in resp_expiry.py: an expired key
  reads as missing at once and is deleted in the background.

This module holds the connections (reply order, key conflicts, back-pressure, deadlines) and
the listener; the wire format is in resp_protocol.py, the commands in resp_commands.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import quote

from dynakv import tls
from dynakv.errors import ValueTooLarge
from dynakv.messages import MAX_FRAME_BYTES, ClientGet, ClientPut, ErrorReply, GetResult, Message
from dynakv.runtime import resp_auth
from dynakv.runtime.addr import split_addr
from dynakv.runtime.frontend import ServerApi
from dynakv.runtime.limits import Activity, PortGuard
from dynakv.runtime.metrics import consistency_label
from dynakv.runtime.resp_commands import COMMANDS
from dynakv.runtime.resp_protocol import (
    CommandError,
    Oversized,
    ProtocolError,
    error,
    parse_command,
    reply_error,
    skip_oversized,
)

log = logging.getLogger("dynakv")

# A command whose bulk string is this much above the value limit is not skipped (read and
# dropped) but refused at once, and the connection closed: no 100 MB body is read to say no.
MAX_SKIP = 32 << 20
# The most bytes of one command held while it arrives (Redis's client-query-buffer-limit).
MAX_QUERY_BUFFER = MAX_FRAME_BYTES
SWEEP_INTERVAL = 1.0
STOP_POLL = 0.01  # seconds between looks at the replies still due, when stopping

# --- commands -------------------------------------------------------------------------------


class Slot:
    """One command of a connection: its place in the reply order and, once done, its reply."""

    __slots__ = ("args", "keys", "reply", "run", "started", "tokens", "write")

    def __init__(
        self,
        args: list[bytes],
        keys: tuple[str, ...] = (),
        write: bool = False,
        run: Callable[[RespConnection, Slot], None] | None = None,
        reply: bytes | None = None,
    ) -> None:
        self.args = args
        self.keys = keys
        self.write = write
        self.run = run
        self.reply = reply
        self.started = 0.0
        self.tokens: list[str] = []


class RespConnection(asyncio.Protocol):
    """One client connection speaking RESP2."""

    def __init__(self, frontend: RespFrontend) -> None:
        self.frontend = frontend
        self.server = frontend.server
        self.bucket = frontend.bucket
        self.id = frontend.next_id()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.client_name: bytes | None = None
        self.user: str | None = None  # who AUTH proved this is (authentication on)
        self.login: asyncio.Task[None] | None = None
        # While an AUTH is checked (on a thread), the commands after it wait here: they run
        # as whoever it proves, as on Redis, even when pipelined behind it.
        self.logging_in = False
        self._after_login: list[list[bytes]] = []
        self._buffer = bytearray()
        self._replies: deque[Slot] = deque()  # every command, in order, until answered
        self._queued: deque[Slot] = deque()  # parsed, waiting for an earlier conflicting one
        self._writing: dict[str, int] = {}  # keys written by started, unanswered commands
        self._reading: dict[str, int] = {}
        self._closing = False  # QUIT or a protocol error: close once the replies are out
        self._batch = False  # inside data_received: write once at the end
        self._read_paused = False
        self._write_paused = False
        self._oversized: Oversized | None = None  # a command being dropped as it arrives
        self.commands = 0  # commands received whole (limits.Activity.requests)

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.frontend.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.frontend.connections.discard(self)

    def eof_received(self) -> bool:
        """The client sent all it will (a half-close): answer it, then close."""
        self._closing = True
        self._flush()
        return True  # keep the transport open for the replies still due

    def pause_writing(self) -> None:
        self._write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing or self.closed:
            return
        buffer = self._buffer
        buffer += data
        offset = 0
        max_bulk = self.frontend.max_bulk()
        limit = self.frontend.max_pending
        held = False
        self._batch = True
        try:
            while not self._closing:
                if len(self._replies) >= limit or self._write_paused:
                    # At the in-flight limit (or a client not reading its replies) the rest
                    # waits in the buffer, unparsed, and the socket is not read.
                    held = True
                    break
                try:
                    if self._oversized is not None:
                        gone, offset = skip_oversized(buffer, offset, self._oversized)
                        if not gone:
                            break
                        self._oversized = None
                        self.commands += 1
                        continue
                    args, offset = parse_command(buffer, offset, max_bulk)
                except ProtocolError as exc:
                    self._answer(error(str(exc)))
                    self._closing = True
                    break
                if isinstance(args, Oversized):
                    # answered now, before its bytes arrive; a far larger one is not read
                    self._answer(error(self.frontend.too_large(args.length)))
                    if args.length > max_bulk + MAX_SKIP:
                        self._closing = True
                        break
                    self._oversized = args
                    continue
                if args is None:
                    if len(buffer) - offset > MAX_QUERY_BUFFER:
                        text = f"Protocol error: a command of more than {MAX_QUERY_BUFFER} bytes"
                        self._answer(error(text))
                        self._closing = True
                    break
                self.commands += 1
                if args:
                    self._submit(args)
        except Exception:
            log.exception("resp_failed connection=%s", self.id)  # a bug costs the connection
            self.abort()
            return
        finally:
            self._batch = False
        if self._closing:
            buffer.clear()
        elif offset:
            del buffer[:offset]
        self._flush()
        if held and not self._read_paused and not self.closed:
            # the replies that held it went out at once (PINGs): parse the rest next turn
            asyncio.get_running_loop().call_soon(self.data_received, b"")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    # --- ordering ---------------------------------------------------------------------------
    def _answer(self, reply: bytes) -> None:
        """A command answered at once (no request to the node)."""
        self._replies.append(Slot([], reply=reply))

    def _submit(self, args: list[bytes]) -> None:
        if self.logging_in:
            self._after_login.append(args)
            self.update_reading()
            return
        name = args[0].lower()
        refused = resp_auth.refusal(self, name)
        if refused is not None:
            self._answer(refused)
            return
        command = COMMANDS.get(name)
        if command is None:
            shown = args[0][:64].decode("utf-8", "replace")
            self._answer(error(f"unknown command '{shown}'"))
            return
        if not command.min_args <= len(args) <= command.max_args:
            self._answer(error(f"wrong number of arguments for '{name.decode()}' command"))
            return
        if command.run is None:  # answered from this node's state, no request
            try:
                reply = command.answer(self, args)
            except CommandError as exc:
                reply = exc.line
            self._answer(reply)
            return
        try:
            keys = command.keys(args)
        except CommandError as exc:
            self._answer(exc.line)
            return
        write = command.write or (command.read_then_write and not self.frontend.lww())
        slot = Slot(args, keys, write, command.run)
        self._replies.append(slot)
        if not self._queued and not self._conflicts(slot):
            self._start(slot)
        else:
            self._queued.append(slot)
        self.update_reading()

    def _conflicts(self, slot: Slot) -> bool:
        writing, reading = self._writing, self._reading
        if not writing and not reading:
            return False
        if slot.write:
            return any(key in writing or key in reading for key in slot.keys)
        return any(key in writing for key in slot.keys)

    def _start(self, slot: Slot) -> None:
        held = self._writing if slot.write else self._reading
        for key in slot.keys:
            held[key] = held.get(key, 0) + 1
        slot.started = time.monotonic()
        assert slot.run is not None
        try:
            slot.run(self, slot)
        except CommandError as exc:
            self.done(slot, exc.line)

    def done(self, slot: Slot, reply: bytes) -> None:
        """A started command has its reply: release its keys, start what waited, write."""
        if slot.reply is not None:
            return  # already answered (timed out)
        slot.reply = reply
        held = self._writing if slot.write else self._reading
        for key in slot.keys:
            count = held[key] - 1
            if count:
                held[key] = count
            else:
                del held[key]
        queued = self._queued
        while queued and not self._conflicts(queued[0]):
            self._start(queued.popleft())
        if not self._batch:
            self._flush()

    def _flush(self) -> None:
        replies = self._replies
        if self.closed or self.transport is None:
            return
        out: list[bytes] = []
        while replies and replies[0].reply is not None:
            out.append(cast(bytes, replies.popleft().reply))
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self._closing and not replies:
            self.transport.close()
            self.closed = True
            return
        self.update_reading()

    def update_reading(self) -> None:
        if self.transport is None or self.closed:
            return
        held = len(self._replies) + len(self._after_login)
        limit = self.frontend.max_pending
        pause = self._write_paused or held >= limit or self.frontend.stopping
        if pause and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        elif not pause and self._read_paused and len(self._replies) < max(1, limit // 2):
            self._read_paused = False
            self.transport.resume_reading()
            if self._buffer:  # commands that waited, unparsed: on the next turn
                asyncio.get_running_loop().call_soon(self.data_received, b"")

    def activity(self) -> Activity:
        """What the port's guard needs to time this connection out."""
        partial = (bool(self._buffer) or self._oversized is not None) and not self._read_paused
        return Activity(False, bool(self._replies), partial, self.commands)

    def logged_in(self) -> None:
        """The AUTH under way is answered: run the commands that came after it."""
        self.logging_in = False
        held, self._after_login = self._after_login, []
        for args in held:
            self._submit(args)
        self._flush()

    def answering(self) -> bool:
        """Some commands of this connection still have replies to write."""
        return bool(self._replies) and not self.closed

    def expire(self, now: float, limit: float) -> None:
        """Safety net: answer commands the node never answered (it always should)."""
        for slot in list(self._replies):
            if slot.reply is None and slot.started and now - slot.started > limit:
                for token in slot.tokens:
                    self.server.forget(token)
                self.done(slot, error("timeout: the node did not answer in time"))

    # --- requests to the node ---------------------------------------------------------------
    def request(
        self, slot: Slot, message: Message, op: str, then: Callable[[Message], None]
    ) -> None:
        """Run `message` through the node; `then(reply)` when it answers (not if timed out)."""
        server = self.server
        started = time.perf_counter()
        asked = message.r if type(message) is ClientGet else getattr(message, "w", None)
        level = consistency_label(asked)

        def on_reply(message: Message) -> None:
            if slot.reply is not None or self.closed:
                return
            code = message.code if type(message) is ErrorReply else None
            server.metrics.observe(op, time.perf_counter() - started, code, level)
            try:
                then(message)
            except CommandError as exc:
                self.done(slot, exc.line)
            except Exception:
                log.exception("resp_command_failed connection=%s", self.id)
                self.done(slot, error("internal error"))

        slot.tokens.append(server.submit(message, on_reply))

    def get(self, slot: Slot, key: str, then: Callable[[Message], None]) -> None:
        self.request(slot, ClientGet(0, self.bucket, key), "get", then)

    def put(
        self,
        slot: Slot,
        key: str,
        value: bytes,
        then: Callable[[Message], None],
        expires: int = 0,
    ) -> None:
        """SET's write: blind in a lww bucket; in a siblings bucket, with a read's context."""
        bucket = self.bucket
        if self.frontend.lww():
            self.request(slot, ClientPut(0, bucket, key, value, expires=expires), "put", then)
            return

        def write(read: Message) -> None:
            if type(read) is not GetResult:
                then(read)
                return
            context = read.context  # type: ignore[attr-defined]
            message = ClientPut(0, bucket, key, value, context, expires=expires)
            self.request(slot, message, "put", then)

        self.get(slot, key, write)

    def value_of(self, key: str, reply: Message) -> bytes | None:
        """The single live value a get found, None if none; CommandError otherwise."""
        if type(reply) is GetResult:
            values = reply.values  # type: ignore[attr-defined]
            if not values:
                return None
            if len(values) == 1:
                return values[0]
            path = f"{quote(self.bucket, safe='')}/{quote(key, safe='')}"
            raise CommandError(
                f"siblings: {len(values)} values; read them with GET /v1/kv/{path} or Client.get"
            )
        raise CommandError(reply_error(reply))


class RespFrontend:
    """The RESP listener on `config.resp_addr` and its connections (a Frontend)."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        config = server.config
        self.bucket = config.resp_bucket
        self.connections: set[RespConnection] = set()
        self.port = 0
        self.stopping = False  # no more reading: the commands in flight are being answered
        self._ids = 0
        # commands of one connection in flight before it stops reading
        self.max_pending = config.max_inflight_per_connection
        self.guard = PortGuard("resp", config, server.metrics, RespConnection.activity)
        self._tcp: asyncio.AbstractServer | None = None
        self._sweep: asyncio.TimerHandle | None = None

    def lww(self) -> bool:
        """Whether the bucket's type (the cluster's, as this node knows it) says lww."""
        return self.server.bucket(self.bucket).policy == "lww"

    def max_bulk(self) -> int:
        """The longest bulk string a command may hold: the bucket's value limit. A longer one
        is skipped as it arrives and its command answered value_too_large (too_large), the
        same at every size; nothing of that command is run (an MSET writes none of its keys),
        and the connection stays usable."""
        return self.server.bucket(self.bucket).max_value_bytes

    def too_large(self, length: int) -> str:
        """The error of a command with a bulk string above max_bulk: the coordinator's words
        for a value above the limit."""
        limit = self.server.bucket(self.bucket).max_value_bytes
        return (
            f"{ValueTooLarge.code}: value is {length} bytes; the limit of bucket "
            f"{self.bucket} is {limit}"
        )

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def start(self) -> None:
        addr = self.server.config.resp_addr
        if not addr:
            raise ValueError("the RESP front end needs resp_addr")
        host, port = split_addr(addr)
        loop = asyncio.get_running_loop()
        self._tcp = await loop.create_server(
            self.guard.factory(lambda: RespConnection(self)), host, port, reuse_address=True,
            ssl=tls.server_context(self.server.config.security),
        )  # fmt: skip
        self.guard.start()
        self.port = port
        self._sweep = loop.call_later(SWEEP_INTERVAL, self._expire)
        log.info("resp_started addr=%s bucket=%s", addr, self.bucket)

    def _expire(self) -> None:
        now, limit = time.monotonic(), self._limit()
        for conn in list(self.connections):
            conn.expire(now, limit)
        self._sweep = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._expire)

    def _limit(self) -> float:
        """How long a command may wait for the node before it is answered a timeout."""
        return self.server.config.request_timeout + 2.0

    async def stop(self) -> None:
        """Stop accepting and reading; write the replies of the commands in flight (for as
        long as the sweep lets a command wait), then close every connection."""
        self.stopping = True
        self.guard.stop()
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self.connections):
            conn.update_reading()
        deadline = time.monotonic() + self._limit()
        stopped = self.server.stopped
        while (
            time.monotonic() < deadline
            and not stopped.is_set()
            and any(c.answering() for c in self.connections)
        ):
            await asyncio.sleep(STOP_POLL)
        if self._sweep is not None:
            self._sweep.cancel()
        for conn in list(self.connections):
            conn.abort()
