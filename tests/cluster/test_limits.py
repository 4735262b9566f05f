"""Limits against careless and hostile clients (runtime/limits.py) on a real node's three
ports: idle connections by the thousand, connections past max_connections, slowloris clients,
requests too large to read, clients that never read their replies. After each, the node
still serves a normal client on every port."""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynakv import messages
from dynakv.client import Client
from dynakv.runtime.transport import frame
from tests.cluster.harness import ProcessCluster, free_port, http
from tests.cluster.test_resp import Resp, encode

PORTS = ("node", "http", "resp")
BIG = 100 * 1024 * 1024  # a request body no node should read to refuse it
DEADLINE = 60.0  # generous: the machine is shared


@contextmanager
def node(root: Path, **config: int | float) -> Iterator[tuple[ProcessCluster, dict[str, str]]]:
    """One node with its RESP port and the given limits; stopped by PID at the end."""
    path = root / "limits.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    procs = ProcessCluster(root, 1, ["--config", str(path)])
    resp = f"127.0.0.1:{free_port()}"
    procs[0].extra_args += ["--resp", resp]
    try:
        procs.start()
        yield procs, {"node": procs[0].node_addr, "http": procs[0].http_addr, "resp": resp}
    finally:
        procs.stop()


def connect(addr: str, timeout: float = 15.0) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def closed_by_node(sock: socket.socket, timeout: float = DEADLINE) -> bool:
    """Whether the node closes `sock` within `timeout` (whatever it sent first is skipped)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(65536) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:  # a connection refused while the port is full: look again
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def metric(procs: ProcessCluster, name: str, **labels: str) -> float:
    text = http("GET", f"{procs[0].url}/metrics").body.decode()
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}{{{re.escape(shown)}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{shown}}} not in /metrics"
    return float(match.group(1))


def serves_everywhere(procs: ProcessCluster, ports: dict[str, str]) -> None:
    """A normal client writes and reads on each of the three ports."""
    key = f"k-{uuid.uuid4().hex}"
    with Client(ports["node"], timeout=30) as client:
        client.put("b", key, b"by the node port")
        assert client.get("b", key).values == [b"by the node port"]
    assert http("PUT", f"{procs[0].url}/v1/kv/b/{key}h", b"by http").status == 204
    assert http("GET", f"{procs[0].url}/v1/kv/b/{key}h").body == b"by http"
    resp = Resp(ports["resp"])
    try:
        assert resp.call("SET", key, "by resp") == "OK"
        assert resp.call("GET", key) == b"by resp"
    finally:
        resp.close()


# The issue asks for 2,000 idle connections: `make test` holds 700 on each port (2,100 in
# all), `make test-long` 2,000 on each (6,000).
@pytest.mark.parametrize("wanted", [700, pytest.param(2000, marks=pytest.mark.long)])
def test_thousands_of_idle_connections_do_not_stop_a_normal_client(
    tmp_path: Path, wanted: int
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_port = min(wanted, (hard - 200) // 3)
    if soft < 3 * per_port + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (3 * per_port + 200, hard))
    idle: list[socket.socket] = []
    try:
        with node(tmp_path) as (procs, ports):
            for port in PORTS:
                for _ in range(per_port):
                    idle.append(connect(ports[port]))
            for port in PORTS:
                wait_for(
                    lambda port=port: metric(procs, "dynakv_connections_open", port=port)
                    >= per_port,
                    f"{per_port} connections open on the {port} port",
                )
            serves_everywhere(procs, ports)
            for port in PORTS:
                assert metric(procs, "dynakv_connections_refused_total", port=port) == 0
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_past_max_connections_are_closed_at_once(tmp_path: Path) -> None:
    with node(tmp_path, max_connections=20) as (procs, ports):
        for port in ("node", "resp", "http"):
            held = [connect(ports[port]) for _ in range(20)]
            try:
                extra = connect(ports[port])
                assert closed_by_node(extra, timeout=10), f"{port}: 21st connection kept open"
                extra.close()
            finally:
                for sock in held:
                    sock.close()
            # the closed ones leave room: a new connection is served again
            wait_for(  # (the scrape's own HTTP connection is open too)
                lambda port=port: metric(procs, "dynakv_connections_open", port=port) <= 1,
                f"the {port} port's connections closed",
            )
            assert metric(procs, "dynakv_connections_refused_total", port=port) >= 1
        serves_everywhere(procs, ports)
        log = procs[0].log_path.read_text()
        assert "connections_limited port=node refused=" in log


# One request for each port, sent a byte at a time: never whole before the node cuts it off.
SLOW_REQUESTS = {
    "node": struct.pack(">I", 200) + b"\x00" * 200,
    "http": b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n",
    "resp": encode("SET", "slow", "x" * 200),
}


@pytest.mark.parametrize("port", PORTS)
def test_a_slowloris_client_is_cut_off_while_others_are_served(tmp_path: Path, port) -> None:
    with node(tmp_path, request_read_timeout=2.0, idle_timeout=0) as (procs, ports):
        slow = connect(ports[port], timeout=5)
        request = SLOW_REQUESTS[port]
        sent = 0
        started = time.monotonic()
        try:
            while sent < len(request) and time.monotonic() - started < DEADLINE:
                try:
                    slow.sendall(request[sent : sent + 1])
                except OSError:
                    break  # cut off
                sent += 1
                if sent % 10 == 0:
                    serves_everywhere(procs, ports)  # others go on being served meanwhile
                time.sleep(0.2)
            assert sent < len(request), "the whole slow request was accepted"
            assert closed_by_node(slow, timeout=10)
        finally:
            slow.close()
        assert metric(procs, "dynakv_connections_timed_out_total", port=port, reason="slow") >= 1
        serves_everywhere(procs, ports)


def test_idle_connections_are_closed_after_idle_timeout(tmp_path: Path) -> None:
    with node(tmp_path, idle_timeout=2.0) as (procs, ports):
        socks = {port: connect(ports[port]) for port in PORTS}
        try:
            for port, sock in socks.items():
                assert closed_by_node(sock), f"idle {port} connection left open"
        finally:
            for sock in socks.values():
                sock.close()
        for port in PORTS:
            closed = metric(procs, "dynakv_connections_timed_out_total", port=port, reason="idle")
            assert closed >= 1, port
        serves_everywhere(procs, ports)


def send_body(sock: socket.socket, total: int) -> int:
    """Send up to `total` bytes after a refused head; how many the node took before closing."""
    chunk = b"x" * (1 << 20)
    sent = 0
    sock.settimeout(10)
    try:
        while sent < total:
            sent += sock.send(chunk)
    except OSError:  # reset, broken pipe, or a node that stopped reading (timeout)
        pass
    return sent


def read_frame(sock: socket.socket) -> messages.Message:
    file = sock.makefile("rb")
    (length,) = struct.unpack(">I", file.read(4))
    return messages.decode(file.read(length))


def test_a_too_large_request_is_refused_before_its_body_is_sent(tmp_path: Path) -> None:
    with node(tmp_path) as (procs, ports):
        # HTTP: Content-Length above the value limit -> 413 and a close, body unread
        sock = connect(ports["http"])
        head = f"PUT /v1/kv/b/big HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n"
        sock.sendall(head.encode())
        answer = sock.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 413"), answer
        assert '"error": "value_too_large"' in answer and f"value is {BIG} bytes" in answer
        assert "Connection: close" in answer
        assert send_body(sock, BIG) < BIG // 4
        sock.close()
        # RESP: a bulk string far above the limit -> an error and a close, body unread
        sock = connect(ports["resp"])
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % BIG)
        line = sock.recv(65536).decode()
        assert line.startswith(f"-ERR value_too_large: value is {BIG} bytes"), line
        assert closed_by_node(sock, timeout=10)
        assert send_body(sock, BIG) < BIG // 4
        sock.close()
        # binary: a frame length above MAX_FRAME_BYTES -> an error frame and a close
        sock = connect(ports["node"])
        sock.sendall(struct.pack(">I", BIG))
        reply = read_frame(sock)
        assert isinstance(reply, messages.ErrorReply), reply
        assert reply.code == "invalid_request" and f"frame of {BIG} bytes" in reply.message
        assert send_body(sock, BIG) < BIG // 4
        sock.close()
        serves_everywhere(procs, ports)


def rss_mb(procs: ProcessCluster) -> float:
    assert procs[0].proc is not None
    status = Path(f"/proc/{procs[0].proc.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match
    return int(match.group(1)) / 1024


def get_frame(rid: int, key: str) -> bytes:
    return frame(messages.ClientGet(rid, "b", key))


@pytest.mark.parametrize("port", ["node", "resp"])
def test_a_client_that_never_reads_its_replies_does_not_fill_the_node(tmp_path, port) -> None:
    """2,000 pipelined reads of a 1 MiB value, none of the replies read: the node stops
    reading the client (max_inflight_per_connection, and a full socket) instead of holding
    2 GB of replies."""
    with node(tmp_path, max_inflight_per_connection=16) as (procs, ports):
        value = b"v" * (1 << 20)
        with Client(ports["node"], timeout=30) as client:
            client.put("b", "big", value)
        resp = Resp(ports["resp"])
        assert resp.call("SET", "big", value) == "OK"
        resp.close()
        before = rss_mb(procs)
        sock = connect(ports[port])
        if port == "node":
            requests = b"".join(get_frame(rid, "big") for rid in range(1, 2001))
        else:
            requests = encode("GET", "big") * 2000
        sock.settimeout(10)
        with contextlib.suppress(TimeoutError):  # the node stopped reading: back-pressure
            sock.sendall(requests)
        time.sleep(3)  # let the node do what it would do with them
        grown = rss_mb(procs) - before
        assert grown < 400, f"the node grew {grown:.0f} MB for one client's unread replies"
        serves_everywhere(procs, ports)
        sock.close()


def test_requests_past_the_in_flight_limit_are_all_answered(tmp_path: Path) -> None:
    """A pipeline far longer than max_inflight_per_connection is read as replies go out, on
    the node port and the RESP port (commands answered at once, and through the node)."""
    with node(tmp_path, max_inflight_per_connection=4) as (procs, ports):
        resp = Resp(ports["resp"])
        resp.send(encode("PING") * 2000 + encode("GET", "nothing") * 200)
        assert [resp.read() for _ in range(2000)] == ["PONG"] * 2000
        assert [resp.read() for _ in range(200)] == [None] * 200
        resp.close()
        sock = connect(ports["node"])
        sock.sendall(b"".join(get_frame(rid, f"k{rid}") for rid in range(1, 201)))
        file = sock.makefile("rb")
        rids = set()
        for _ in range(200):
            (length,) = struct.unpack(">I", file.read(4))
            reply = messages.decode(file.read(length))
            assert isinstance(reply, messages.GetResult), reply
            rids.add(reply.rid)
        assert rids == set(range(1, 201))
        sock.close()
        serves_everywhere(procs, ports)


def test_an_http_body_that_trickles_in_is_answered_408_and_closed(tmp_path: Path) -> None:
    with node(tmp_path, request_read_timeout=2.0, idle_timeout=0) as (procs, ports):
        sock = connect(ports["http"], timeout=5)
        head = b"PUT /v1/kv/b/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head)
        answer = b""
        started = time.monotonic()
        try:
            while b"\r\n\r\n" not in answer and time.monotonic() - started < DEADLINE:
                sock.sendall(b"x")
                sock.settimeout(0.3)
                with contextlib.suppress(TimeoutError):
                    answer += sock.recv(65536)
        except OSError:
            pass  # closed under the sending
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):  # the rest of the answer, then the close
                answer += chunk
        text = answer.decode(errors="replace")
        assert text.startswith("HTTP/1.1 408"), text
        assert '"error": "request_timeout"' in text, text
        sock.close()
        assert http("GET", f"{procs[0].url}/v1/kv/b/slow").status == 404  # nothing written
        serves_everywhere(procs, ports)
