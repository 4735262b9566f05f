"""RESP2, the Redis wire protocol, as bytes: parsing commands (arrays of bulk strings, and
inline commands) out of a buffer, and encoding replies. Pure: no I/O, no state."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from dynakv.messages import ErrorReply, Message

MAX_INLINE = 64 * 1024  # an inline command line longer than this is a protocol error
MAX_HEADER = 64  # bytes of a "*N" / "$N" line before its CRLF
MAX_ARGS = 1024 * 1024  # elements of one command array
# Redis's proto-max-bulk-len: a longer bulk string is a protocol error. Shorter ones above
# the value limit are skipped (Oversized), so that every too-large value gets the same error.
PROTO_MAX_BULK = 512 * 1024 * 1024

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"


class ProtocolError(Exception):
    """The byte stream cannot be parsed any further: answer an error, then close."""


@dataclass
class Oversized:
    """A command with a bulk string above the value limit. Its bytes are dropped as they
    arrive, never buffered (skip_oversized); then it is answered value_too_large and the
    connection stays usable, as for a value just above the limit."""

    length: int  # the largest bulk string of the command
    skip: int  # bytes of the current bulk string (and its CRLF) still to drop
    elements: int  # bulk strings after the current one, still to drop


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


def reply_error(reply: Message) -> str:
    """The text of the error a node's reply (not the one expected) stands for."""
    if type(reply) is ErrorReply:
        return f"{reply.code}: {reply.message}"  # type: ignore[attr-defined]
    return f"internal: unexpected reply {type(reply).__name__}"


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


def _bulk_header(buf: bytearray, p: int) -> tuple[int, int] | None:
    """The length of the `$N` line at `p` and the position after it; None until it arrives."""
    if p >= len(buf):
        return None
    if buf[p] != 0x24:  # '$'
        raise ProtocolError(f"Protocol error: expected '$', got {chr(buf[p])!r}")
    return _header(buf, p, "bulk", PROTO_MAX_BULK)


def parse_command(
    buf: bytearray, pos: int, max_bulk: int
) -> tuple[list[bytes] | Oversized | None, int]:
    """One command from `buf` at `pos`: (its arguments, the position after it).

    (None, pos) when the command has not fully arrived yet; an empty list for a blank inline
    line or an empty array (ignored, as Redis does); Oversized, and the position after the
    header of its bulk string longer than `max_bulk` (skip_oversized drops the rest). Raises
    ProtocolError when the stream cannot be resynchronised.
    """
    end = len(buf)
    if pos >= end:
        return None, pos
    if buf[pos] == 0:  # a dynakv frame's length (no Redis command starts with NUL)
        raise ProtocolError(
            "Protocol error: this is a dynakv node's Redis (RESP) port; dynakv clients and "
            "the CLI use its node port"
        )
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
        header = _bulk_header(buf, p)
        if header is None:
            return None, pos
        length, start = header
        if length > max_bulk:
            return Oversized(length, length + 2, count - len(args) - 1), start
        stop = start + length
        if stop + 2 > end:
            return None, pos
        if buf[stop : stop + 2] != b"\r\n":
            raise ProtocolError("Protocol error: bulk string not followed by CRLF")
        args.append(bytes(buf[start:stop]))
        p = stop + 2
    return args, p


def skip_oversized(buf: bytearray, pos: int, command: Oversized) -> tuple[bool, int]:
    """Drop what of an Oversized command `buf` holds from `pos`: (whether all of it is gone,
    the position after what was dropped). Updates `command`."""
    end = len(buf)
    while True:
        if command.skip:
            dropped = min(command.skip, end - pos)
            command.skip -= dropped
            pos += dropped
            if command.skip:
                return False, pos
        if not command.elements:
            return True, pos
        header = _bulk_header(buf, pos)
        if header is None:
            return False, pos
        length, pos = header
        command.length = max(command.length, length)
        command.skip = length + 2
        command.elements -= 1


def split_inline(line: bytes) -> list[bytes]:
    """Words of an inline command; quotes group words as in a shell (and as Redis allows)."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    try:
        words = shlex.split(line.decode("latin-1"))
    except ValueError:
        raise ProtocolError("Protocol error: unbalanced quotes in request") from None
    return [word.encode("latin-1") for word in words]
