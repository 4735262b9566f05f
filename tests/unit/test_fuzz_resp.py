"""Fuzzing the RESP parser (tests/fuzz/targets.py): every buffer parses into commands, waits
for more, or is a protocol error, and parsing always moves on. Fixed inputs: the regression
corpus."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import resp_parse, short_run

test_resp_parse = short_run("resp_parse")


@pytest.mark.parametrize(
    "data",
    [
        b"*1\r\n$-1\r\n",  # a null bulk string inside a command
        b"*-1\r\n*0\r\n",
        b"*9999999999999\r\n",
        b"*1\r\n$9999999999999999999999\r\n",
        b"*2\r\n$100\r\n" + b"x" * 102 + b"$3\r\nabc\r\n",  # oversized, then the next
        b"$3\r\nGET\r\n",  # a bulk string outside an array: inline
        b"\x00\x00\x00\x10",  # a dynakv frame sent to the Redis port
        b"PING 'open\r\n",
        b'SET "a\\"b" c\r\n',
        b"*1\r\n$1\r\nab",  # no CRLF after the bulk string
        b" " * 70_000,  # an inline command past MAX_INLINE without a newline
    ],
)
def test_resp_regressions(data: bytes) -> None:
    resp_parse(data)
