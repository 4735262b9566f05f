"""Who may speak as a peer on the node port. With a cluster secret, a connection becomes a
peer only once its handshake (peer_auth.Handshake) has proven the secret; with TLS, only if
it presented a certificate signed by the cluster CA. Until then it may send client requests
and nothing else. A refusal is one log line, a counter, and the connection closed.

Its own state (the secrets, each connection's handshake, the nonces answered, the counts);
the peer links (peers.py) feed it the handshake frames, the server asks `admits`.
"""

from __future__ import annotations

import logging
import os
import secrets as random_bytes
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric

from dynakv import tls
from dynakv.config import NodeConfig
from dynakv.errors import ClusterError
from dynakv.messages import (
    ClientBackup,
    ClientBucketChange,
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientLogin,
    ClientPut,
    ClientRepair,
    ClientUserChange,
    ErrorReply,
    Hello,
    HelloProof,
    Message,
    TransferRequest,
)
from dynakv.peer_auth import (
    NONCE_BYTES,
    OUT_OF_ORDER,
    Handshake,
    NonceMemory,
    Step,
    parse_secrets,
)
from dynakv.runtime.logs import NodeLog
from dynakv.runtime.metrics import Metrics
from dynakv.runtime.transport import FrameConnection
from dynakv.tls import SecurityFilesError

# What a connection that proved nothing may still ask: an operator's or an application's
# requests (the users helper's credentials govern them), and a partition's records, which
# key listing and `dynakv export` read as any get would.
CLIENT_MESSAGES: frozenset[type] = frozenset(
    {
        ClientGet,
        ClientPut,
        ClientClusterInfo,
        ClientClusterChange,
        ClientBucketChange,
        ClientRepair,
        ClientBackup,
        ClientLogin,
        ClientUserChange,
        TransferRequest,
    }
)
NO_CERTIFICATE = "no_certificate"  # a would-be peer on a TLS node port without a certificate
NOT_A_PEER = "not_a_peer"  # a peer's message on a connection that proved nothing
HANDSHAKE_TIMEOUT = "handshake_timeout"  # a dialled peer did not finish the handshake


def load_secrets(path: str, log: NodeLog) -> tuple[bytes, ...]:
    """The secrets in the file at `path` (SecurityFilesError if unusable); a warning if users other
    than its owner may read it."""
    try:
        text = Path(path).read_text()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecurityFilesError(f"cluster secret file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.event(
            logging.WARNING, "cluster_secret_file_open", path=path, mode=oct(mode & 0o777),
            fix=f"chmod 600 {path}",
        )  # fmt: skip
    try:
        return parse_secrets(text, f"cluster secret file {path}")
    except ValueError as exc:
        raise SecurityFilesError(str(exc)) from exc


class PeerGate:
    """The node port's admission of peers: handshakes, certificate checks and refusals."""

    def __init__(self, config: NodeConfig, log: NodeLog, metrics: Metrics) -> None:
        self.config = config
        self.log = log
        path = config.security.cluster_secret_file
        self.secrets = load_secrets(path, log) if path else ()
        self.tls = tls.enabled(config.security)
        self.required = bool(self.secrets) or self.tls
        self.failures: Counter[str] = Counter()
        self._handshakes: dict[FrameConnection, Handshake] = {}
        self._memory = NonceMemory()
        self._refused: set[FrameConnection] = set()  # closing after a refusal
        metrics.registry.register(_FailureCollector(self.failures))

    def admits(self, conn: FrameConnection, message: Message) -> bool:
        """May this connection send `message`? False: it was refused and is closing (what
        follows a refusal in the same read is dropped unsaid)."""
        if conn in self._refused:
            return False
        if conn.peer is not None or not self.required:
            return True
        if type(message) in CLIENT_MESSAGES or type(message) in (Hello, HelloProof):
            return True
        if conn.outbound_to is not None and type(message) is ErrorReply and message.rid == 0:
            return True  # the node dialled says why it refused this one (a join: it stops)
        detail = f"{type(message).__name__} from a connection that is not a proven peer"
        self.refuse(conn, NOT_A_PEER, detail)
        return False

    def dial(self, conn: FrameConnection) -> Hello:
        """The first frame on a connection this node opened to a peer."""
        if not self.secrets:
            return Hello(self.config.name, self.config.cluster)
        handshake = self._handshake(conn)
        return handshake.start()

    def on_hello(self, conn: FrameConnection, hello: Hello) -> Step:
        if self.tls and conn.outbound_to is None and not _presented_certificate(conn):
            detail = "it presented no certificate signed by the cluster CA"
            return Step(refused=NO_CERTIFICATE, detail=detail)
        if conn.peer is not None and self.required:
            return Step(refused=OUT_OF_ORDER, detail="a Hello from a proven peer")
        if not self.secrets:
            return Step(peer=hello.name)
        return self._handshake(conn).on_hello(hello)

    def on_proof(self, conn: FrameConnection, proof: HelloProof) -> Step:
        if not self.secrets:
            return Step(refused=OUT_OF_ORDER, detail="a HelloProof, but this node has no secret")
        return self._handshake(conn).on_proof(proof)

    def refuse(self, conn: FrameConnection, reason: str, detail: str, name: str = "") -> None:
        """One log line, one count, an error frame, and the connection closed."""
        self.failures[reason] += 1
        handshake = self._handshakes.get(conn)
        name = name or (handshake.other if handshake else "")
        self._refused.add(conn)
        remote = conn.transport.get_extra_info("peername") if conn.transport else None
        self.log.event(
            logging.WARNING, "peer_refused", reason=reason, remote=_address(remote),
            claimed_name=name or None, detail=detail,
        )  # fmt: skip
        text = f"node {self.config.name} refused this connection as a peer: {detail}"
        conn.send(ErrorReply(0, ClusterError.code, text))
        conn.close_after_flush()
        self._handshakes.pop(conn, None)

    def forget(self, conn: FrameConnection) -> None:
        """The connection closed."""
        self._handshakes.pop(conn, None)
        self._refused.discard(conn)

    def _handshake(self, conn: FrameConnection) -> Handshake:
        handshake = self._handshakes.get(conn)
        if handshake is None:
            nonce = random_bytes.token_bytes(NONCE_BYTES)
            config = self.config
            handshake = Handshake(self.secrets, config.name, config.cluster, nonce, self._memory)
            self._handshakes[conn] = handshake
        return handshake


def _presented_certificate(conn: FrameConnection) -> bool:
    # The TLS layer already checked any certificate against the CA (CERT_OPTIONAL): one
    # that is here is valid, and its absence is what is left to refuse.
    return bool(conn.transport and conn.transport.get_extra_info("peercert"))


def _address(peername: object) -> str | None:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return None


class _FailureCollector:
    """dynakv_peer_auth_failures_total{reason}: refused handshakes and peer messages."""

    def __init__(self, failures: Counter[str]) -> None:
        self.failures = failures

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "dynakv_peer_auth_failures",
            "Connections refused as peers on the node port, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(self.failures.items()):
            family.add_metric([reason], count)
        yield family


def warn_if_open(config: NodeConfig, log: NodeLog) -> None:
    """Security off (the default, for `make run`): say so once, loudly, at start."""
    security = config.security
    if not security.cluster_secret_file and not tls.enabled(security):
        log.event(
            logging.WARNING, "security_off",
            warning="SECURITY IS OFF: anyone who can reach this node's ports can read, write "
            "and change cluster membership (README, Security)",
        )  # fmt: skip
