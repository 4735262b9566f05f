"""Tools for the security tests on real processes: secret files and configs, a raw socket
speaking the node protocol as a would-be peer, a recording TCP proxy, metric and log reads.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import ssl
import threading
from pathlib import Path

from dynakv import versions
from dynakv.config import NodeConfig
from dynakv.core.gossip import member_record
from dynakv.messages import JoinRequest, Message, ReplicaPut, decode
from dynakv.runtime.transport import LENGTH, frame
from tests.cluster.harness import NodeProcess, free_port, http


def new_secret() -> str:
    return secrets.token_hex(32)


def write_secret_config(directory: Path, name: str, lines: list[str], extra: str = "") -> Path:
    """A secret file (mode 0600) holding `lines` and a config naming it; the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / f"{name}.secret"
    secret_file.write_text("".join(f"{line}\n" for line in lines))
    secret_file.chmod(0o600)
    config = directory / f"{name}.toml"
    config.write_text(f'[security]\ncluster_secret_file = "{secret_file}"\n{extra}')
    return config


def refusals(node: NodeProcess, reason: str) -> float:
    """dynakv_peer_auth_failures_total{reason} on `node`."""
    text = http("GET", f"{node.url}/metrics", context=node.tls).body.decode()
    pattern = rf'^dynakv_peer_auth_failures_total\{{reason="{reason}"\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def refusal_lines(node: NodeProcess) -> int:
    return node.log_path.read_text(errors="replace").count(" peer_refused ")


def member_names(node: NodeProcess) -> list[str]:
    view = http("GET", f"{node.url}/v1/cluster", context=node.tls).json()
    return sorted(m["name"] for m in view["members"])


def replica_absent(nodes: list[NodeProcess], bucket: str, key: str) -> bool:
    return all(
        http("GET", f"{n.url}/v1/replica/{bucket}/{key}", context=n.tls).status == 404
        for n in nodes
    )


def replica_put(bucket: str, key: str, value: bytes, rid: int = 7) -> ReplicaPut:
    """A well-formed replica write, as a coordinator sends it: taken when the sender is a
    proven peer (the tests show that too), so only the proof stands between it and disk."""
    clock = versions.update(versions.new((), versions.Sibling(value)), None, "intruder@1")
    return ReplicaPut(rid, bucket, key, versions.encode(clock))


def join_request(cluster: str = "dynakv") -> JoinRequest:
    port = free_port()
    config = NodeConfig(
        name="intruder", node_addr=f"127.0.0.1:{port}", http_addr=f"127.0.0.1:{port + 1}"
    )
    return JoinRequest(1, member_record(config, "0badf00d"), cluster)


class RawPeer:
    """A socket on a node port (over TLS with `context`), speaking frames by hand."""

    def __init__(self, addr: str, context: ssl.SSLContext | None = None) -> None:
        host, port = addr.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=15)
        self.sock = context.wrap_socket(sock, server_hostname=host) if context else sock
        self.buffer = b""

    def send(self, *messages: Message) -> None:
        self.send_raw(b"".join(frame(m) for m in messages))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Message | None:
        """The next frame, or None once the node closed the connection."""
        while True:
            if len(self.buffer) >= LENGTH:
                length = int.from_bytes(self.buffer[:LENGTH], "big")
                if len(self.buffer) >= LENGTH + length:
                    payload = self.buffer[LENGTH : LENGTH + length]
                    self.buffer = self.buffer[LENGTH + length :]
                    return decode(payload)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return None  # TLS: the node's alert on a certificate it refused
            if not chunk:
                return None
            self.buffer += chunk

    def read_until_closed(self) -> list[Message]:
        seen = []
        while (message := self.read()) is not None:
            seen.append(message)
        return seen

    def close(self) -> None:
        self.sock.close()


def split_frames(data: bytes) -> list[bytes]:
    """Whole frames (length prefix included) at the start of `data`."""
    frames = []
    while len(data) >= LENGTH:
        end = LENGTH + int.from_bytes(data[:LENGTH], "big")
        if len(data) < end:
            break
        frames.append(data[:end])
        data = data[end:]
    return frames


class RecordingProxy:
    """Forwards one TCP connection at a time to `upstream` and records what the dialling
    side sent on the first: a wire tap on a node's handshake."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.recorded = b""
        self._first = True
        self._sockets: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            outbound = socket.create_connection((host, int(port)))
            self._sockets += [inbound, outbound]
            record, self._first = self._first, False
            for pipe in ((inbound, outbound, record), (outbound, inbound, False)):
                threading.Thread(target=self._pump, args=pipe, daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if record:
                    self.recorded += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        for sock in self._sockets:
            sock.close()
