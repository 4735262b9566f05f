"""The Redis-protocol (RESP2) front end of a node: `dynakv serve --resp HOST:PORT`.

Any Redis client can then read and write one bucket of dynakv (`resp_bucket`, "default"
unless configured): PING, ECHO, GET, SET, DEL, EXISTS, MGET, MSET, INFO, QUIT, plus the
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
- SELECT accepts only database 0; SET options (EX, PX, NX, XX, KEEPTTL, GET, ...) are refused.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import shlex
import time
from collections import deque
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import cast
from urllib.parse import quote

from dynakv.config import validate_location
from dynakv.errors import DynakvError
from dynakv.messages import ClientGet, ClientPut, ErrorReply, GetResult, Message, PutResult
from dynakv.runtime.addr import split_addr
from dynakv.runtime.frontend import ServerApi

log = logging.getLogger("dynakv")

MAX_INLINE = 64 * 1024  # an inline command line longer than this is a protocol error
MAX_HEADER = 64  # bytes of a "*N" / "$N" line before its CRLF
MAX_ARGS = 1024 * 1024  # elements of one command array
MAX_PENDING = 1024  # commands of one connection in flight before it stops reading
SWEEP_INTERVAL = 1.0
STOP_POLL = 0.01  # seconds between looks at the replies still due, when stopping

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"


class ProtocolError(Exception):
    """The byte stream cannot be parsed any further: answer an error, then close."""


class CommandError(Exception):
    """A command failed; `line` is the RESP error to answer."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.line = error(text)


# --- encoding -------------------------------------------------------------------------------


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def array(items: list[bytes | None]) -> bytes:
    parts = [b"*%d\r\n" % len(items)]
    parts.extend(NIL if item is None else bulk(item) for item in items)
    return b"".join(parts)


def error(text: str) -> bytes:
    """`-ERR text`, on one line."""
    text = text.replace("\r", " ").replace("\n", " ")
    return b"-ERR " + text.encode("utf-8", "replace") + b"\r\n"


# --- parsing --------------------------------------------------------------------------------


def _header(buf: bytearray, p: int, what: str, limit: int) -> tuple[int, int] | None:
    """The number N of a `*N` / `$N` line at `p` (at most `limit`) and the position after
    the line; None when the line has not fully arrived."""
    nl = buf.find(b"\r\n", p)
    if nl < 0:
        if len(buf) - p > MAX_HEADER:
            raise ProtocolError(f"Protocol error: invalid {what} length")
        return None
    try:
        value = int(bytes(buf[p + 1 : nl]))
    except ValueError:
        raise ProtocolError(f"Protocol error: invalid {what} length") from None
    if value > limit or (value < 0 and what == "bulk"):  # "*-1" is a null array: skipped
        raise ProtocolError(f"Protocol error: invalid {what} length")
    return value, nl + 2


def parse_command(buf: bytearray, pos: int, max_bulk: int) -> tuple[list[bytes] | None, int]:
    """One command from `buf` at `pos`: (its arguments, the position after it).

    (None, pos) when the command has not fully arrived yet; an empty list for a blank inline
    line or an empty array (ignored, as Redis does). Raises ProtocolError when the stream
    cannot be resynchronised.
    """
    end = len(buf)
    if pos >= end:
        return None, pos
    if buf[pos] != 0x2A:  # not '*': an inline command, one line of space-separated words
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if end - pos > MAX_INLINE:
                raise ProtocolError("Protocol error: too big inline request")
            return None, pos
        line = bytes(buf[pos:nl]).rstrip(b"\r")
        return split_inline(line), nl + 1
    header = _header(buf, pos, "multibulk", MAX_ARGS)
    if header is None:
        return None, pos
    count, p = header
    if count <= 0:
        return [], p  # *0 and *-1: nothing to run
    args: list[bytes] = []
    for _ in range(count):
        if p >= end:
            return None, pos
        if buf[p] != 0x24:  # '$'
            raise ProtocolError(f"Protocol error: expected '$', got {chr(buf[p])!r}")
        header = _header(buf, p, "bulk", max_bulk)
        if header is None:
            return None, pos
        length, start = header
        stop = start + length
        if stop + 2 > end:
            return None, pos
        if buf[stop : stop + 2] != b"\r\n":
            raise ProtocolError("Protocol error: bulk string not followed by CRLF")
        args.append(bytes(buf[start:stop]))
        p = stop + 2
    return args, p


def split_inline(line: bytes) -> list[bytes]:
    """Words of an inline command; quotes group words as in a shell (and as Redis allows)."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    try:
        words = shlex.split(line.decode("latin-1"))
    except ValueError:
        raise ProtocolError("Protocol error: unbalanced quotes in request") from None
    return [word.encode("latin-1") for word in words]


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
        self.lww = frontend.lww
        self.id = frontend.next_id()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.client_name: bytes | None = None
        self._buffer = bytearray()
        self._replies: deque[Slot] = deque()  # every command, in order, until answered
        self._queued: deque[Slot] = deque()  # parsed, waiting for an earlier conflicting one
        self._writing: dict[str, int] = {}  # keys written by started, unanswered commands
        self._reading: dict[str, int] = {}
        self._closing = False  # QUIT or a protocol error: close once the replies are out
        self._batch = False  # inside data_received: write once at the end
        self._read_paused = False
        self._write_paused = False

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
        max_bulk = self.frontend.max_bulk
        self._batch = True
        try:
            while not self._closing:
                try:
                    args, offset = parse_command(buffer, offset, max_bulk)
                except ProtocolError as exc:
                    self._answer(error(str(exc)))
                    self._closing = True
                    break
                if args is None:
                    break
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

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    # --- ordering ---------------------------------------------------------------------------
    def _answer(self, reply: bytes) -> None:
        """A command answered at once (no request to the node)."""
        self._replies.append(Slot([], reply=reply))

    def _submit(self, args: list[bytes]) -> None:
        name = args[0].lower()
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
        write = command.write or (command.read_then_write and not self.lww)
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
        pause = self._write_paused or len(self._replies) >= MAX_PENDING or self.frontend.stopping
        if pause and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        elif not pause and self._read_paused and len(self._replies) < MAX_PENDING // 2:
            self._read_paused = False
            self.transport.resume_reading()

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

        def on_reply(message: Message) -> None:
            if slot.reply is not None or self.closed:
                return
            code = message.code if type(message) is ErrorReply else None
            server.metrics.observe(op, time.perf_counter() - started, code)
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

    def put(self, slot: Slot, key: str, value: bytes, then: Callable[[Message], None]) -> None:
        """SET's write: blind in a lww bucket; in a siblings bucket, with a read's context."""
        bucket = self.bucket
        if self.lww:
            self.request(slot, ClientPut(0, bucket, key, value), "put", then)
            return

        def write(read: Message) -> None:
            if type(read) is not GetResult:
                then(read)
                return
            message = ClientPut(0, bucket, key, value, read.context)  # type: ignore[attr-defined]
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


def reply_error(reply: Message) -> str:
    if type(reply) is ErrorReply:
        return f"{reply.code}: {reply.message}"  # type: ignore[attr-defined]
    return f"internal: unexpected reply {type(reply).__name__}"


def gather(
    conn: RespConnection,
    slot: Slot,
    keys: list[str],
    start: Callable[[str, Callable[[Message], None]], None],
    finish: Callable[[dict[str, Message]], bytes],
) -> None:
    """Start `start(key, then)` for every key at once; answer `finish(replies)` when all are in."""
    replies: dict[str, Message] = {}
    remaining = len(keys)

    def collect(key: str) -> Callable[[Message], None]:
        def then(reply: Message) -> None:
            nonlocal remaining
            replies[key] = reply
            remaining -= 1
            if remaining == 0:
                try:
                    conn.done(slot, finish(replies))
                except CommandError as exc:
                    conn.done(slot, exc.line)

        return then

    for key in keys:
        start(key, collect(key))


def _unique(keys: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(keys))


def run_get(conn: RespConnection, slot: Slot) -> None:
    key = slot.keys[0]

    def then(reply: Message) -> None:
        value = conn.value_of(key, reply)
        conn.done(slot, NIL if value is None else bulk(value))

    conn.get(slot, key, then)


def run_set(conn: RespConnection, slot: Slot) -> None:
    args = slot.args
    if len(args) > 3:
        option = args[3].decode("utf-8", "replace").upper()
        raise CommandError(
            f"SET option {option} is not supported by dynakv (plain SET key value only)"
        )

    def then(reply: Message) -> None:
        if type(reply) is not PutResult:
            raise CommandError(reply_error(reply))
        conn.done(slot, OK)

    conn.put(slot, slot.keys[0], args[2], then)


def run_mget(conn: RespConnection, slot: Slot) -> None:
    def finish(replies: dict[str, Message]) -> bytes:
        found = {key: conn.value_of(key, reply) for key, reply in replies.items()}
        return array([found[key] for key in slot.keys])

    gather(conn, slot, _unique(slot.keys), lambda key, then: conn.get(slot, key, then), finish)


def run_exists(conn: RespConnection, slot: Slot) -> None:
    def finish(replies: dict[str, Message]) -> bytes:
        for reply in replies.values():
            if type(reply) is not GetResult:
                raise CommandError(reply_error(reply))
        live = {key for key, reply in replies.items() if reply.values}  # type: ignore[attr-defined]
        return integer(sum(1 for key in slot.keys if key in live))  # repeats count, as in Redis

    gather(conn, slot, _unique(slot.keys), lambda key, then: conn.get(slot, key, then), finish)


def run_mset(conn: RespConnection, slot: Slot) -> None:
    values = dict(zip(slot.keys, slot.args[2::2], strict=True))  # a repeated key: last wins

    def finish(replies: dict[str, Message]) -> bytes:
        failed = [reply for reply in replies.values() if type(reply) is not PutResult]
        if failed:
            written = len(replies) - len(failed)
            raise CommandError(
                f"{reply_error(failed[0])} ({written} of {len(replies)} keys written)"
            )
        return OK

    def write(key: str, then: Callable[[Message], None]) -> None:
        conn.put(slot, key, values[key], then)

    gather(conn, slot, list(values), write, finish)


def run_del(conn: RespConnection, slot: Slot) -> None:
    """Read each key; delete, with the read's context, those that had a live value."""
    bucket = conn.bucket

    def delete(key: str, then: Callable[[Message], None]) -> None:
        def after_read(read: Message) -> None:
            if type(read) is not GetResult or not read.values:  # type: ignore[attr-defined]
                then(read)  # an error, or nothing to delete
                return
            message = ClientPut(0, bucket, key, b"", read.context, delete=True)  # type: ignore[attr-defined]
            conn.request(slot, message, "delete", then)

        conn.get(slot, key, after_read)

    def finish(replies: dict[str, Message]) -> bytes:
        failed = [r for r in replies.values() if type(r) not in (PutResult, GetResult)]
        if failed:
            raise CommandError(reply_error(failed[0]))
        return integer(sum(1 for reply in replies.values() if type(reply) is PutResult))

    gather(conn, slot, _unique(slot.keys), delete, finish)


# --- commands answered without a request ----------------------------------------------------


def answer_ping(conn: RespConnection, args: list[bytes]) -> bytes:
    return PONG if len(args) == 1 else bulk(args[1])


def answer_echo(conn: RespConnection, args: list[bytes]) -> bytes:
    return bulk(args[1])


def answer_quit(conn: RespConnection, args: list[bytes]) -> bytes:
    conn._closing = True  # the reply goes out after every earlier one, then the socket closes
    return OK


def answer_select(conn: RespConnection, args: list[bytes]) -> bytes:
    try:
        index = int(args[1])
    except ValueError:
        raise CommandError("value is not an integer or out of range") from None
    if index != 0:
        raise CommandError("DB index is out of range (dynakv has only database 0)")
    return OK


def answer_command(conn: RespConnection, args: list[bytes]) -> bytes:
    sub = args[1].lower() if len(args) > 1 else b""
    if sub == b"count":
        return integer(len(COMMANDS))
    if sub == b"info":
        return array([None] * (len(args) - 2))
    return EMPTY_ARRAY  # COMMAND, COMMAND DOCS: no command table; clients cope


def answer_client(conn: RespConnection, args: list[bytes]) -> bytes:
    sub = args[1].lower()
    if sub == b"setname" and len(args) == 3:
        if any(c <= 0x20 or c > 0x7E for c in args[2]):
            raise CommandError("client names cannot contain spaces, newlines or special characters")
        conn.client_name = args[2] or None
        return OK
    if sub == b"getname" and len(args) == 2:
        return NIL if conn.client_name is None else bulk(conn.client_name)
    if sub == b"setinfo" and len(args) == 4:
        return OK
    if sub == b"id" and len(args) == 2:
        return integer(conn.id)
    shown = args[1].decode("utf-8", "replace")
    raise CommandError(f"CLIENT {shown} is not supported by dynakv (SETNAME, GETNAME, SETINFO, ID)")


def answer_config(conn: RespConnection, args: list[bytes]) -> bytes:
    if args[1].lower() != b"get" or len(args) < 3:
        raise CommandError("only CONFIG GET is supported by dynakv")
    durability = conn.server.config.durability
    settings = {
        "save": "",  # no RDB snapshots: every write is in LMDB
        "appendonly": "yes" if durability == "fsync" else "no",
        "appendfsync": {"fsync": "always", "os": "no", "none": "no"}[durability],
        "databases": "1",
    }
    found: dict[str, str] = {}
    for pattern in args[2:]:
        text = pattern.decode("utf-8", "replace").lower()
        for name, value in settings.items():
            if fnmatch.fnmatchcase(name, text):
                found[name] = value
    return array([item.encode() for pair in found.items() for item in pair])


def answer_info(conn: RespConnection, args: list[bytes]) -> bytes:
    server = conn.server
    config = server.config
    props = config.bucket(config.resp_bucket)
    status = server.status()
    sections = {
        "server": [
            "redis_version:7.0.0",  # the dialect spoken; only the commands above exist
            f"dynakv_version:{_version()}",
            "redis_mode:standalone",
            f"process_id:{os.getpid()}",
            f"tcp_port:{conn.frontend.port}",
            f"uptime_in_seconds:{int(server.uptime())}",
        ],
        "dynakv": [
            f"node:{config.name}",
            f"cluster:{config.cluster}",
            f"members:{len(server.cluster()['members'])}",
            f"bucket:{config.resp_bucket}",
            f"policy:{props.policy}",
            f"n:{props.n}",
            f"r:{props.r}",
            f"w:{props.w}",
            f"durability:{config.durability}",
            f"keys:{status['keys']}",  # records stored on this node, all buckets
        ],
        "replication": ["role:master", "connected_slaves:0"],  # every node takes writes
    }
    wanted = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(sections)
    lines: list[str] = []
    for name, body in sections.items():
        if name in wanted:
            lines += [f"# {name.capitalize()}", *body, ""]
    return bulk("\r\n".join(lines).encode())


def _version() -> str:
    try:
        return version("dynakv")
    except PackageNotFoundError:
        return "unknown"


# --- the table ------------------------------------------------------------------------------


def _keys(
    start: int, stop: int | None = None, step: int = 1
) -> Callable[[list[bytes]], tuple[str, ...]]:
    """The keys of a command: its arguments args[start:stop:step], as validated strings."""

    def keys(args: list[bytes]) -> tuple[str, ...]:
        out: list[str] = []
        for raw in args[start:stop:step]:
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CommandError("keys must be valid UTF-8") from None
            try:
                validate_location("b", key)
            except DynakvError as exc:
                raise CommandError(exc.message) from None
            out.append(key)
        return tuple(out)

    return keys


class Command:
    __slots__ = ("answer", "keys", "max_args", "min_args", "read_then_write", "run", "write")

    def __init__(
        self,
        min_args: int,
        max_args: int = MAX_ARGS,
        *,
        run: Callable[[RespConnection, Slot], None] | None = None,
        answer: Callable[[RespConnection, list[bytes]], bytes] | None = None,
        keys: Callable[[list[bytes]], tuple[str, ...]] | None = None,
        write: bool = False,
        read_then_write: bool = False,
    ) -> None:
        self.min_args = min_args
        self.max_args = max_args
        self.run = run
        self.answer = cast(Callable[[RespConnection, list[bytes]], bytes], answer)
        self.keys = cast(Callable[[list[bytes]], tuple[str, ...]], keys)
        self.write = write
        self.read_then_write = read_then_write  # reads first in a siblings bucket


def _mset_keys(args: list[bytes]) -> tuple[str, ...]:
    if len(args) % 2 == 0:
        raise CommandError("wrong number of arguments for 'mset' command")
    return _keys(1, None, 2)(args)


COMMANDS: dict[bytes, Command] = {
    b"get": Command(2, 2, run=run_get, keys=_keys(1)),
    b"set": Command(3, run=run_set, keys=_keys(1, 2), write=True, read_then_write=True),
    b"mget": Command(2, run=run_mget, keys=_keys(1)),
    b"mset": Command(3, run=run_mset, keys=_mset_keys, write=True, read_then_write=True),
    b"del": Command(2, run=run_del, keys=_keys(1), write=True),
    b"exists": Command(2, run=run_exists, keys=_keys(1)),
    b"ping": Command(1, 2, answer=answer_ping),
    b"echo": Command(2, 2, answer=answer_echo),
    b"info": Command(1, answer=answer_info),
    b"quit": Command(1, answer=answer_quit),
    b"select": Command(2, 2, answer=answer_select),
    b"command": Command(1, answer=answer_command),
    b"client": Command(2, answer=answer_client),
    b"config": Command(2, answer=answer_config),
}


class RespFrontend:
    """The RESP listener on `config.resp_addr` and its connections (a Frontend)."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        config = server.config
        self.bucket = config.resp_bucket
        self.lww = config.bucket(self.bucket).policy == "lww"
        # Bulk strings a little above the value limit still parse, so an oversized SET gets
        # the node's value_too_large error and the connection stays usable.
        self.max_bulk = config.max_value_bytes + 64 * 1024
        self.connections: set[RespConnection] = set()
        self.port = 0
        self.stopping = False  # no more reading: the commands in flight are being answered
        self._ids = 0
        self._tcp: asyncio.AbstractServer | None = None
        self._sweep: asyncio.TimerHandle | None = None

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
            lambda: RespConnection(self), host, port, reuse_address=True
        )
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
