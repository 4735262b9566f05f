"""The Redis-protocol front door (`serve --resp`) of real nodes, spoken over raw sockets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cluster import secure_mode
from tests.cluster.harness import RUN_BOTH_WAYS, ProcessCluster, free_port, http

# Each test runs open and secure: secret, TLS and users (issue 19).
pytestmark = RUN_BOTH_WAYS

Reply = bytes | int | str | list | None | Exception


class RespError(Exception):
    pass


class Resp:
    """A minimal RESP2 client over one socket: send raw bytes, read typed replies. In the
    secure mode (harness) over TLS, logged in as the admin first."""

    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        mode = secure_mode.current()
        if mode is not None:
            self.sock = mode.ssl_context().wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("rb")
        if mode is not None:
            assert self.call("AUTH", mode.user, mode.password) == "OK"

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read(self) -> Reply:
        line = self.file.readline()
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self.file.read(length + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.read() for _ in range(count)]
        raise AssertionError(f"bad reply line {line!r}")

    def call(self, *args: bytes | str) -> Reply:
        self.send(encode(*args))
        return self.read()

    def closed_by_peer(self) -> bool:
        return self.file.read(1) == b""


def encode(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def error_text(reply: Reply) -> str:
    assert isinstance(reply, RespError), reply
    return str(reply)


@contextmanager
def resp_cluster(
    root: Path, size: int, extra_args: list[str] | None = None
) -> Iterator[ProcessCluster]:
    """A running cluster whose nodes also listen for RESP; stopped by PID at the end."""
    procs = ProcessCluster(root, size, extra_args)
    for node in procs.nodes:
        node.extra_args += ["--resp", f"127.0.0.1:{free_port()}"]
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


def resp_addr(procs: ProcessCluster, index: int) -> str:
    args = procs[index].extra_args
    return args[args.index("--resp") + 1]


@pytest.fixture(scope="module")
def rcluster(tmp_path_factory: pytest.TempPathFactory, security: str) -> Iterator[ProcessCluster]:
    """Asks for `security`: a cluster of each mode (one started open would serve the
    secure tests too, as pytest keeps a module fixture that does not depend on the mode)."""
    with resp_cluster(tmp_path_factory.mktemp("resp"), 3) as procs:
        yield procs


@pytest.fixture
def conn(rcluster: ProcessCluster) -> Iterator[Resp]:
    client = Resp(resp_addr(rcluster, 0))
    try:
        yield client
    finally:
        client.close()


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def test_ping_echo_and_handshake_commands(conn: Resp) -> None:
    assert conn.call("PING") == "PONG"
    assert conn.call("ping", "hello") == b"hello"
    assert conn.call("ECHO", "x y") == b"x y"
    assert conn.call("CLIENT", "SETNAME", "tester") == "OK"
    assert conn.call("CLIENT", "GETNAME") == b"tester"
    assert conn.call("SELECT", "0") == "OK"
    assert "out of range" in error_text(conn.call("SELECT", "3"))
    assert isinstance(conn.call("COMMAND"), list)
    assert conn.call("CONFIG", "GET", "save") == [b"save", b""]
    assert conn.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"yes"]
    assert conn.call("CONFIG", "GET", "no-such-setting") == []
    info = conn.call("INFO")
    assert isinstance(info, bytes)
    text = info.decode()
    for line in ("node:node1", "cluster:dynakv", "role:master", "bucket:default", "policy:lww"):
        assert line in text.splitlines(), text
    assert "keys:" in text
    conn.send(b"PING\r\n")  # an inline command
    assert conn.read() == "PONG"


def test_set_get_round_trip_and_missing_key(conn: Resp) -> None:
    k = key()
    value = b"line one\r\nline two\x00\xff"
    assert conn.call("SET", k, value) == "OK"
    assert conn.call("GET", k) == value
    assert conn.call("SET", k, "second") == "OK"
    assert conn.call("GET", k) == b"second"
    assert conn.call("GET", key()) is None


def test_mset_mget(conn: Resp) -> None:
    a, b, missing = key(), key(), key()
    assert conn.call("MSET", a, "1", b, "2", a, "3") == "OK"  # a repeated key: the last wins
    assert conn.call("MGET", a, b, missing, a) == [b"3", b"2", None, b"3"]
    assert "wrong number of arguments" in error_text(conn.call("MSET", a, "1", b))


def test_del_and_exists_count_keys(conn: Resp) -> None:
    x, y, z = key(), key(), key()
    assert conn.call("MSET", x, "1", y, "2") == "OK"
    assert conn.call("EXISTS", x, y, z, x) == 3  # a repeated key counts each time
    assert conn.call("DEL", x, z, x) == 1
    assert conn.call("EXISTS", x, y) == 1
    assert conn.call("GET", x) is None
    assert conn.call("DEL", x) == 0


def test_pipelined_commands_in_one_write(conn: Resp) -> None:
    k = key()
    keys = [key() for _ in range(50)]
    raw = encode("SET", k, "v1") + encode("GET", k) + encode("SET", k, "v2") + encode("GET", k)
    raw += b"".join(encode("SET", name, name) for name in keys)
    raw += encode("NOSUCH") + b"PING\r\n" + encode("MGET", *keys) + encode("EXISTS", *keys)
    raw += encode("DEL", k) + encode("GET", k)
    conn.send(raw)
    assert [conn.read() for _ in range(4)] == ["OK", b"v1", "OK", b"v2"]
    assert [conn.read() for _ in keys] == ["OK"] * len(keys)
    assert error_text(conn.read()).startswith("ERR unknown command")
    assert conn.read() == "PONG"
    assert conn.read() == [name.encode() for name in keys]
    assert conn.read() == len(keys)
    assert conn.read() == 1
    assert conn.read() is None


def test_errors_keep_the_connection_usable(conn: Resp) -> None:
    assert error_text(conn.call("FLUSHALL")).startswith("ERR unknown command 'FLUSHALL'")
    assert conn.call("PING") == "PONG"
    assert "wrong number of arguments for 'get'" in error_text(conn.call("GET"))
    assert "wrong number of arguments for 'get'" in error_text(conn.call("GET", "a", "b"))
    message = error_text(conn.call("SET", key(), "v", "NX"))
    assert "NX is not supported" in message
    assert "UTF-8" in error_text(conn.call("GET", b"\xff\xfe"))
    assert "1-1024 bytes" in error_text(conn.call("GET", "k" * 1025))
    big = b"x" * ((1 << 20) + 1)
    assert "value_too_large" in error_text(conn.call("SET", key(), big))
    k = key()
    assert conn.call("SET", k, "still here") == "OK"
    assert conn.call("GET", k) == b"still here"


@pytest.mark.parametrize("size", [(1 << 20) + 1, (1 << 20) + 70_000, 2 << 20, 16 << 20])
def test_a_value_above_the_limit_gets_value_too_large_at_every_size(conn: Resp, size) -> None:
    limit = "the limit of bucket default is 1048576"
    k = key()
    conn.send(encode("SET", k, b"x" * size) + encode("MSET", k, b"y" * size, key(), "v"))
    for _ in range(2):
        assert error_text(conn.read()) == f"ERR value_too_large: value is {size} bytes; {limit}"
    assert conn.call("PING") == "PONG"  # the connection stays usable
    assert conn.call("GET", k) is None


@pytest.mark.parametrize(
    "garbage",
    [b"*x\r\n", b"*2\r\n:1\r\n", b"*1\r\n$abc\r\n", b"*1\r\n$3\r\nGETxx", b"PING 'open\r\n"],
)
def test_malformed_resp_gets_an_error_then_close(rcluster: ProcessCluster, garbage) -> None:
    client = Resp(resp_addr(rcluster, 0))
    try:
        client.send(encode("PING") + garbage + encode("PING"))
        assert client.read() == "PONG"  # what came before is answered
        assert error_text(client.read()).startswith("ERR Protocol error")
        assert client.closed_by_peer()
    finally:
        client.close()
    other = Resp(resp_addr(rcluster, 0))  # the node keeps serving
    try:
        assert other.call("PING") == "PONG"
    finally:
        other.close()


def test_the_cli_pointed_at_a_resp_port_says_so_at_once(rcluster: ProcessCluster) -> None:
    addr = resp_addr(rcluster, 0)
    # "At once": well before the client's timeout, which a reader waiting for a frame would
    # reach; a long timeout keeps a busy machine's slow start from passing for one.
    args = [sys.executable, "-m", "dynakv", "get", "b", "k", "--node", addr, "--timeout", "60"]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"{addr} answers the Redis protocol" in done.stderr
    assert time.monotonic() - started < 30


def test_quit_answers_earlier_commands_then_closes(rcluster: ProcessCluster) -> None:
    client = Resp(resp_addr(rcluster, 0))
    k = key()
    try:
        client.send(encode("SET", k, "before quit") + encode("QUIT") + encode("SET", k, "after"))
        assert client.read() == "OK"
        assert client.read() == "OK"
        assert client.closed_by_peer()
    finally:
        client.close()
    other = Resp(resp_addr(rcluster, 1))
    try:
        assert other.call("GET", k) == b"before quit"
    finally:
        other.close()


def test_set_on_one_node_get_on_another(rcluster: ProcessCluster) -> None:
    one, two = Resp(resp_addr(rcluster, 0)), Resp(resp_addr(rcluster, 1))
    try:
        k = key()
        assert one.call("SET", k, "across") == "OK"
        assert two.call("GET", k) == b"across"
        reply = http("GET", f"{rcluster[2].url}/v1/kv/default/{k}")
        assert (reply.status, reply.body) == (200, b"across")
        assert two.call("DEL", k) == 1
        assert one.call("EXISTS", k) == 0
    finally:
        one.close()
        two.close()


def test_siblings_bucket_get_names_the_calls_that_show_them(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('resp_bucket = "carts"\n[buckets.carts]\npolicy = "siblings"\n')
    with resp_cluster(tmp_path, 1, ["--config", str(config)]) as procs:
        client = Resp(resp_addr(procs, 0))
        url = f"{procs[0].url}/v1/kv/carts/alice"
        assert http("PUT", url, b"apple").status == 204
        assert http("PUT", url, b"pear").status == 204  # a blind write: two siblings
        message = error_text(client.call("GET", "alice"))
        assert message == (
            "ERR siblings: 2 values; read them with GET /v1/kv/carts/alice or Client.get"
        )
        assert "siblings" in error_text(client.call("MGET", "alice"))
        assert client.call("EXISTS", "alice") == 1
        # SET reads first and writes with that read's context: it replaces both siblings.
        assert client.call("SET", "alice", "apple,pear") == "OK"
        assert client.call("GET", "alice") == b"apple,pear"
        assert http("GET", url).body == b"apple,pear"
        client.close()


def test_redis_benchmark_smoke(rcluster: ProcessCluster) -> None:
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark not installed (apt-get install -y redis-tools)")
    port = resp_addr(rcluster, 0).rsplit(":", 1)[1]
    command = ["redis-benchmark", "-p", port, "-t", "set,get", "-n", "2000", "-c", "10"]
    command += secure_mode.redis_tool_args()
    result = subprocess.run(
        [*command, "-d", "100", "-q"], capture_output=True, text=True, timeout=240
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "rror" not in output, output
    finals = [line.split("\r")[-1] for line in result.stdout.splitlines()]
    assert any(line.startswith("SET:") and "requests per second" in line for line in finals)
    assert any(line.startswith("GET:") and "requests per second" in line for line in finals)
