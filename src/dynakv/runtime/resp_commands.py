"""The Redis commands the RESP front end answers, and what each one runs through the node:
the table (argument counts, which arguments are keys, whether it writes) and the
implementations, which act on one connection's command slot. No state of their own."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, cast

from dynakv.config import validate_location
from dynakv.errors import DynakvError
from dynakv.messages import ClientPut, GetResult, Message, PutResult
from dynakv.runtime import resp_expiry
from dynakv.runtime.resp_auth import run_auth, run_hello
from dynakv.runtime.resp_protocol import (
    EMPTY_ARRAY,
    MAX_ARGS,
    NIL,
    OK,
    PONG,
    CommandError,
    array,
    bulk,
    integer,
    reply_error,
)

if TYPE_CHECKING:
    from dynakv.runtime.resp import RespConnection, Slot


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
    props = server.bucket(config.resp_bucket)
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
        self.answer = cast("Callable[[RespConnection, list[bytes]], bytes]", answer)
        self.keys = cast("Callable[[list[bytes]], tuple[str, ...]]", keys)
        self.write = write
        self.read_then_write = read_then_write  # reads first in a siblings bucket


def _mset_keys(args: list[bytes]) -> tuple[str, ...]:
    if len(args) % 2 == 0:
        raise CommandError("wrong number of arguments for 'mset' command")
    return _keys(1, None, 2)(args)


COMMANDS: dict[bytes, Command] = {
    b"get": Command(2, 2, run=run_get, keys=_keys(1)),
    b"set": Command(
        3, run=resp_expiry.run_set, keys=_keys(1, 2), write=True, read_then_write=True
    ),
    b"mget": Command(2, run=run_mget, keys=_keys(1)),
    b"mset": Command(3, run=run_mset, keys=_mset_keys, write=True, read_then_write=True),
    b"del": Command(2, run=run_del, keys=_keys(1), write=True),
    b"exists": Command(2, run=run_exists, keys=_keys(1)),
    b"expire": Command(3, run=resp_expiry.run_expire, keys=_keys(1, 2), write=True),
    b"pexpire": Command(3, run=resp_expiry.run_pexpire, keys=_keys(1, 2), write=True),
    b"persist": Command(2, 2, run=resp_expiry.run_persist, keys=_keys(1), write=True),
    b"ttl": Command(2, 2, run=resp_expiry.run_ttl, keys=_keys(1)),
    b"pttl": Command(2, 2, run=resp_expiry.run_pttl, keys=_keys(1)),
    b"ping": Command(1, 2, answer=answer_ping),
    b"echo": Command(2, 2, answer=answer_echo),
    b"info": Command(1, answer=answer_info),
    b"quit": Command(1, answer=answer_quit),
    b"select": Command(2, 2, answer=answer_select),
    b"command": Command(1, answer=answer_command),
    b"client": Command(2, answer=answer_client),
    b"config": Command(2, answer=answer_config),
    b"auth": Command(2, 3, run=run_auth, keys=lambda args: ()),
    b"hello": Command(1, 8, run=run_hello, keys=lambda args: ()),
}
