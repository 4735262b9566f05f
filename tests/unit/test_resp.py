"""The RESP2 parser and encoders of runtime/resp.py, and the RESP bucket's configuration."""

from __future__ import annotations

import pytest

from dynakv import config as config_mod
from dynakv.runtime.resp_protocol import (
    PROTO_MAX_BULK,
    Oversized,
    ProtocolError,
    array,
    bulk,
    error,
    integer,
    parse_command,
    skip_oversized,
)

MAX = 1 << 20


def parse_all(data: bytes) -> list[list[bytes]]:
    buf = bytearray(data)
    out: list[list[bytes]] = []
    pos = 0
    while True:
        args, pos = parse_command(buf, pos, MAX)
        if args is None:
            return out
        out.append(args)


def test_arrays_and_inline_commands_parse_in_order() -> None:
    data = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + b"PING\r\n" + b"*0\r\n" + b"\r\n"
    data += b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"
    data += b"set \"a b\" 'c d'\n"
    assert parse_all(data) == [
        [b"GET", b"k"],
        [b"PING"],
        [],
        [],
        [b"SET", b"k", b"a\r\nb"],
        [b"set", b"a b", b"c d"],
    ]


def test_a_command_split_anywhere_waits_for_the_rest() -> None:
    data = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
    for cut in range(len(data)):
        buf = bytearray(data[:cut])
        assert parse_command(buf, 0, MAX) == (None, 0)
        buf += data[cut:]
        assert parse_command(buf, 0, MAX) == ([b"SET", b"key", b"value"], len(data))


@pytest.mark.parametrize(
    "data",
    [
        b"*x\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$nope\r\n",
        b"*1\r\n$2\r\nabcd\r\n",
        b"*1\r\n$%d\r\n" % (PROTO_MAX_BULK + 1),
        b"*" + b"9" * 100,
        b"PING 'open\r\n",
        b"x" * (64 * 1024 + 1),
    ],
)
def test_unsyncable_input_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="Protocol error"):
        parse_all(data)


@pytest.mark.parametrize("size", [MAX + 1, MAX + 70_000, 2 * MAX, 64 * MAX])
def test_a_bulk_above_the_limit_is_skipped_as_it_arrives_then_parsing_goes_on(size: int) -> None:
    head = b"*4\r\n$4\r\nMSET\r\n$1\r\nk\r\n$%d\r\n" % size
    rest = b"\r\n$2\r\nv2\r\n" + b"PING\r\n"
    buf = bytearray(head)
    command, pos = parse_command(buf, 0, MAX)
    assert command == Oversized(size, size + 2, 1)
    del buf[:pos]
    chunk = 1 << 20
    sent = 0
    while sent < size:  # the value arrives in chunks; the buffer never holds more than one
        part = min(chunk, size - sent)
        buf += b"x" * part
        sent += part
        gone, pos = skip_oversized(buf, 0, command)
        assert not gone and pos == len(buf)
        del buf[:pos]
    buf += rest
    gone, pos = skip_oversized(buf, 0, command)
    assert gone and command.length == size
    assert parse_command(buf, pos, MAX)[0] == [b"PING"]


def test_encoders() -> None:
    assert bulk(b"ab") == b"$2\r\nab\r\n"
    assert integer(-3) == b":-3\r\n"
    assert array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert error("bad\r\nthing") == b"-ERR bad  thing\r\n"


def test_the_resp_bucket_is_lww_unless_configured(tmp_path) -> None:
    cfg = config_mod.load(None)
    assert cfg.bucket("default").policy == "lww"
    assert cfg.bucket("other").policy == "siblings"
    path = tmp_path / "node.toml"
    path.write_text('resp_bucket = "cache"\n[defaults]\nn = 1\nr = 1\nw = 1\n')
    cfg = config_mod.load(path)
    assert cfg.bucket("cache") == config_mod.BucketProps(1, 1, 1, "lww")
    assert cfg.bucket("default").policy == "siblings"
    path.write_text('[buckets.default]\npolicy = "siblings"\n')
    assert config_mod.load(path).bucket("default").policy == "siblings"
    with pytest.raises(ValueError, match="resp_bucket"):
        config_mod.load(None, resp_bucket="")
