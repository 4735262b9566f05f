"""The Redis commands of expiry on the RESP front end: SET with EX/PX/EXAT/PXAT/KEEPTTL,
EXPIRE, PEXPIRE, TTL, PTTL and PERSIST, with Redis's replies and errors. A lifetime is an
absolute expiry stored with the value (expiry.py); these commands read the key and write
it back with the read's context, so they are not atomic against a concurrent writer (a
write that lands between the two keeps its own lifetime, or becomes a sibling)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dynakv import expiry
from dynakv.messages import ClientPut, GetResult, Message, PutResult
from dynakv.runtime.resp_protocol import OK, CommandError, integer, reply_error

if TYPE_CHECKING:
    from dynakv.runtime.resp import RespConnection, Slot

SYNTAX = "syntax error"
NOT_INTEGER = "value is not an integer or out of range"
UNSUPPORTED = (b"NX", b"XX", b"GET")
# SET's options that take a time, and the milliseconds in one of their units; the AT ones
# are absolute (epoch), the others relative to now.
TIMED = {b"EX": (1000, False), b"PX": (1, False), b"EXAT": (1000, True), b"PXAT": (1, True)}

# What a SET's lifetime option asks: an absolute expiry (ms, 0: none), or keep the old one.
KEEP = -1


def _integer(raw: bytes) -> int:
    """A Redis integer argument; CommandError as Redis words it for anything else."""
    try:
        text = raw.decode("ascii")
        if text.strip() != text or not text:
            raise ValueError(text)
        value = int(text)
    except (UnicodeDecodeError, ValueError):
        raise CommandError(NOT_INTEGER) from None
    if not -(2**63) <= value < 2**63:
        raise CommandError(NOT_INTEGER)
    return value


def _expiry_at(amount: int, unit_ms: int, absolute: bool, command: str, now: float) -> int:
    """The absolute expiry (ms) of a time argument; Redis's error for an out-of-range one.
    The most is expiry.MAX_TTL_MS from now (Redis's own bound is overflow only)."""
    at = amount * unit_ms if absolute else expiry.now_ms(now) + amount * unit_ms
    if at > expiry.now_ms(now) + expiry.MAX_TTL_MS:
        raise CommandError(f"invalid expire time in '{command}' command")
    return max(at, 1)


def set_lifetime(args: list[bytes], now: float) -> int:
    """What SET's options (args[3:]) ask of the value's lifetime: an absolute expiry in ms,
    0 for none, or KEEP; CommandError as Redis answers a bad or unsupported one."""
    lifetime: int | None = None
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option in UNSUPPORTED:
            shown = option.decode("ascii", "replace")
            raise CommandError(f"SET option {shown} is not supported by dynakv")
        if option == b"KEEPTTL":
            if lifetime is not None:
                raise CommandError(SYNTAX)
            lifetime = KEEP
            i += 1
            continue
        timed = TIMED.get(option)
        if timed is None or lifetime is not None or i + 1 >= len(args):
            raise CommandError(SYNTAX)
        amount = _integer(args[i + 1])
        if amount <= 0:
            raise CommandError("invalid expire time in 'set' command")
        lifetime = _expiry_at(amount, timed[0], timed[1], "set", now)
        i += 2
    return 0 if lifetime is None else lifetime


def _read(reply: Message) -> GetResult:
    if type(reply) is not GetResult:
        raise CommandError(reply_error(reply))
    return reply  # type: ignore[return-value]


def _single(conn: RespConnection, key: str, reply: Message) -> tuple[GetResult, int] | None:
    """The read and the index of its one live value, None when there is none; CommandError
    for an error or siblings (as GET answers)."""
    read = _read(reply)
    if conn.value_of(key, read) is None:
        return None
    return read, 0


def _expires_of(read: GetResult) -> int:
    return read.expires[0] if read.expires else 0


def _rewrite(
    conn: RespConnection, slot: Slot, key: str, read: GetResult, expires: int, answer: bytes
) -> None:
    """Write the read's one value back with a new expiry, answering `answer` once written."""
    message = ClientPut(
        0, conn.bucket, key, read.values[0], read.context,
        content_type=read.content_types[0], expires=expires,
    )  # fmt: skip

    def then(reply: Message) -> None:
        if type(reply) is not PutResult:
            raise CommandError(reply_error(reply))
        conn.done(slot, answer)

    conn.request(slot, message, "put", then)


def run_set(conn: RespConnection, slot: Slot) -> None:
    """SET key value [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]."""
    key = slot.keys[0]
    lifetime = set_lifetime(slot.args, time.time())

    def then(reply: Message) -> None:
        if type(reply) is not PutResult:
            raise CommandError(reply_error(reply))
        conn.done(slot, OK)

    if lifetime != KEEP:
        conn.put(slot, key, slot.args[2], then, lifetime)
        return

    def keep(reply: Message) -> None:
        read = _read(reply)
        # A read of siblings keeps none of their lifetimes: the write replaces them all.
        kept = _expires_of(read) if len(read.values) == 1 else 0
        message = ClientPut(0, conn.bucket, key, slot.args[2], read.context, expires=kept)
        conn.request(slot, message, "put", then)

    conn.get(slot, key, keep)


def _run_expire(conn: RespConnection, slot: Slot, unit_ms: int, command: str) -> None:
    if len(slot.args) > 3:
        shown = slot.args[3].decode("utf-8", "replace").upper()
        raise CommandError(f"{command.upper()} option {shown} is not supported by dynakv")
    key = slot.keys[0]
    amount = _integer(slot.args[2])
    now = time.time()
    expires = 0 if amount <= 0 else _expiry_at(amount, unit_ms, False, command, now)

    def after_read(reply: Message) -> None:
        found = _single(conn, key, reply)
        if found is None:
            conn.done(slot, integer(0))
            return
        read = found[0]
        if expires == 0:  # a lifetime already over: Redis deletes the key
            message = ClientPut(0, conn.bucket, key, b"", read.context, delete=True)

            def deleted(reply: Message) -> None:
                if type(reply) is not PutResult:
                    raise CommandError(reply_error(reply))
                conn.done(slot, integer(1))

            conn.request(slot, message, "delete", deleted)
            return
        _rewrite(conn, slot, key, read, expires, integer(1))

    conn.get(slot, key, after_read)


def run_expire(conn: RespConnection, slot: Slot) -> None:
    """EXPIRE key seconds: 1 when the key exists (now expiring), 0 when it does not."""
    _run_expire(conn, slot, 1000, "expire")


def run_pexpire(conn: RespConnection, slot: Slot) -> None:
    """PEXPIRE key milliseconds."""
    _run_expire(conn, slot, 1, "pexpire")


def _run_ttl(conn: RespConnection, slot: Slot, unit_ms: int) -> None:
    key = slot.keys[0]

    def then(reply: Message) -> None:
        found = _single(conn, key, reply)
        if found is None:
            conn.done(slot, integer(-2))
            return
        expires = _expires_of(found[0])
        if expires == 0:
            conn.done(slot, integer(-1))
            return
        left = expiry.remaining_ms(expires, time.time())
        # Redis rounds TTL to the nearest second ((ms + 500) / 1000).
        conn.done(slot, integer((left + unit_ms // 2) // unit_ms))

    conn.get(slot, key, then)


def run_ttl(conn: RespConnection, slot: Slot) -> None:
    """TTL key: seconds left, -1 without an expiry, -2 when the key does not exist."""
    _run_ttl(conn, slot, 1000)


def run_pttl(conn: RespConnection, slot: Slot) -> None:
    """PTTL key: as TTL, in milliseconds."""
    _run_ttl(conn, slot, 1)


def run_persist(conn: RespConnection, slot: Slot) -> None:
    """PERSIST key: 1 when an expiry was removed, 0 when the key is missing or had none."""
    key = slot.keys[0]

    def after_read(reply: Message) -> None:
        found = _single(conn, key, reply)
        if found is None or _expires_of(found[0]) == 0:
            conn.done(slot, integer(0))
            return
        _rewrite(conn, slot, key, found[0], 0, integer(1))

    conn.get(slot, key, after_read)
