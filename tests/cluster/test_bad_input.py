"""Bad input to a real node gets a clear error, and the node keeps serving everyone else."""

from __future__ import annotations

import socket
import uuid

import msgspec
import pytest

from dynakv import Client, messages
from dynakv.messages import ClientGet, ErrorReply
from dynakv.runtime.transport import frame
from tests.cluster.harness import ProcessCluster, http


def assert_still_serving(cluster: ProcessCluster) -> None:
    key = uuid.uuid4().hex
    assert http("PUT", f"{cluster[0].url}/v1/kv/health/{key}", b"ok").status == 204
    assert http("GET", f"{cluster[1].url}/v1/kv/health/{key}").body == b"ok"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("PUT", "/v1/kv/b/" + "k" * 1025, b"v", {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/" + "b" * 256 + "/k", b"v", {}, 400, "invalid_request"),
        ("GET", "/v1/kv/%FF%FE/k", None, {}, 400, "invalid_request"),
        ("GET", "/v1/kv/b/%C3%28", None, {}, 400, "invalid_request"),
        ("GET", "/v1/kv/b/k?color=blue", None, {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k?r=2", b"v", {}, 400, "invalid_request"),
        ("GET", "/v1/kv/b/k?r=4", None, {}, 400, "invalid_request"),
        ("GET", "/v1/kv/b/k?r=0", None, {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k?w=0", b"v", {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k?w=many", b"v", {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k", b"v", {"X-Dynakv-Context": "%%%garbage"}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k", b"v", {"X-Dynakv-Context": "AAAA"}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/k", b"x" * ((1 << 20) + 1), {}, 413, "value_too_large"),
        ("GET", "/v1/kv/b", None, {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/onlybucket", b"v", {}, 400, "invalid_request"),
        ("PUT", "/v1/kv//key", b"v", {}, 400, "invalid_request"),
        ("PUT", "/v1/kv/b/", b"v", {}, 400, "invalid_request"),
        ("GET", "/v1/kv", None, {}, 400, "invalid_request"),
        ("POST", "/v1/kv/b/k", b"v", {}, 405, "method_not_allowed"),
        ("DELETE", "/v1/status", None, {}, 405, "method_not_allowed"),
        ("GET", "/v1/repair", None, {}, 405, "method_not_allowed"),
        ("GET", "/v1/nothing", None, {}, 404, "not_found"),
    ],
)
def test_bad_http_requests_get_a_json_error(cluster, method, path, body, headers, status, code):
    reply = http(method, cluster[0].url + path, body, headers)
    assert reply.status == status, reply.body
    payload = reply.json()
    assert payload["error"] == code
    assert payload["message"]
    assert_still_serving(cluster)


def _connect(cluster: ProcessCluster) -> socket.socket:
    host, port = cluster[0].node_addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_frame(sock: socket.socket) -> messages.Message | None:
    header = _recv_exactly(sock, 4)
    if header is None:
        return None
    payload = _recv_exactly(sock, int.from_bytes(header, "big"))
    assert payload is not None
    return messages.decode(payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def test_garbage_frame_gets_an_error_frame_then_the_connection_closes(cluster):
    with _connect(cluster) as sock:
        garbage = b"\xc1\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
        sock.sendall(len(garbage).to_bytes(4, "big") + garbage)
        reply = _read_frame(sock)
        assert isinstance(reply, ErrorReply)
        assert reply.code == "invalid_request"
        assert _read_frame(sock) is None
    assert_still_serving(cluster)


def test_unknown_message_type_gets_an_error_and_the_connection_stays_usable(cluster):
    with _connect(cluster) as sock:
        payload = msgspec.msgpack.encode(["launch_rockets", 41, "now"])
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        reply = _read_frame(sock)
        assert isinstance(reply, ErrorReply)
        assert reply.rid == 41
        assert "launch_rockets" in reply.message
        sock.sendall(frame(ClientGet(42, "b", "nothing-here")))
        answer = _read_frame(sock)
        assert answer is not None and answer.rid == 42  # type: ignore[attr-defined]
    assert_still_serving(cluster)


def test_message_with_wrong_field_types_gets_an_error(cluster):
    with _connect(cluster) as sock:
        payload = msgspec.msgpack.encode(["get", 7, 12345, None])
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        reply = _read_frame(sock)
        assert isinstance(reply, ErrorReply)
        assert reply.rid == 7
        assert reply.code == "invalid_request"


def test_truncated_frame_then_hang_up_leaves_the_node_serving(cluster):
    with _connect(cluster) as sock:
        sock.sendall((1000).to_bytes(4, "big") + b"only a few bytes")
    assert_still_serving(cluster)


def test_oversized_frame_length_is_refused_and_the_connection_closed(cluster):
    with _connect(cluster) as sock:
        sock.sendall((1 << 31).to_bytes(4, "big") + b"x" * 16)
        reply = _read_frame(sock)
        assert isinstance(reply, ErrorReply)
        assert "exceeds" in reply.message
        assert _read_frame(sock) is None
    assert_still_serving(cluster)


def test_invalid_utf8_in_a_binary_request_is_refused(cluster):
    with _connect(cluster) as sock:
        # A msgpack str holding invalid UTF-8 as the bucket.
        payload = b"\x95\xa3get\x09\xa2\xff\xfe\xa1k\xc0"
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        reply = _read_frame(sock)
        assert isinstance(reply, ErrorReply)
        assert reply.code == "invalid_request"
    assert_still_serving(cluster)


def test_client_sees_invalid_request_for_a_bad_bucket(cluster):
    from dynakv.errors import InvalidRequest

    with Client(cluster[0].node_addr) as client, pytest.raises(InvalidRequest):
        client.put("", "k", b"v")


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\n" + bytes(range(256)) * 80,  # binary headers
        b"GET /" + b"\xff\x00" * 10_000 + b" HTTP/1.1\r\n\r\n",  # binary path
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x16\x03\x01" * 7000,  # then binary
    ],
    ids=["binary-headers", "binary-path", "binary-after-a-request"],
)
def test_binary_traffic_on_the_http_port_logs_one_short_line(cluster, payload):
    log = cluster[0].log_path
    before = log.stat().st_size
    host, port = cluster[0].http_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(1 << 16):  # a 400 (after a 200), then the node closes it
            answer += chunk
        assert b" 400 " in answer
    assert_still_serving(cluster)
    with open(log, "rb") as handle:
        handle.seek(before)
        added = handle.read().decode(errors="replace")
    assert "Traceback" not in added
    assert "Error handling request" not in added
    # One short line at most (aiohttp drops a bad first request line at debug level).
    bad = [line for line in added.splitlines() if "http_bad_request" in line]
    assert len(bad) <= 1, added[-2000:]
    assert all(len(line) < 300 for line in bad)
