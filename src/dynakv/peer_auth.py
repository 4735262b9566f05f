"""The peers' handshake under a cluster secret: each side sends a fresh nonce and proves it
holds the secret with HMAC-SHA256 over both nonces, both names, the cluster and the proof's
direction; the other side checks with a constant-time compare.

Pure: no I/O, no clock, no randomness (nonces are handed in). The runtime
(runtime/peer_gate.py) feeds it the handshake frames of one connection and acts on its steps.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from dataclasses import dataclass

from dynakv.messages import Hello, HelloProof, Message

NONCE_BYTES = 32
MIN_SECRET_BYTES = 16
# Who proves: the responder's proof can never stand for the dialler's, nor the reverse.
DIALLER, RESPONDER = b"dialler", b"responder"
_DOMAIN = b"dynakv peer handshake v1"

# Why a handshake was refused: the `reason` label of dynakv_peer_auth_failures_total.
NO_PROOF = "no_proof"  # the other side sent no nonce or no proof: it has no secret
BAD_PROOF = "bad_proof"  # a wrong secret, or a proof recorded from another handshake
REPLAYED = "replayed"  # a dialler's nonce seen before: a recorded handshake played again
OUT_OF_ORDER = "out_of_order"  # a handshake frame where none was due


def parse_secrets(text: str, source: str) -> tuple[bytes, ...]:
    """The secrets of a cluster secret file: one a line, blank lines and '#' comments
    skipped. The first signs, any verifies (rotation: README, Security). ValueError if there
    is none or one is too short to resist guessing."""
    secrets: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        secret = line.encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{source}: the secret on line {number} is shorter than {MIN_SECRET_BYTES} "
                f"bytes (make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        secrets.append(secret)
    if not secrets:
        raise ValueError(f"{source}: holds no cluster secret (one a line)")
    return tuple(secrets)


def _transcript(
    direction: bytes, cluster: str, dialler: str, responder: str, dialler_nonce: bytes,
    responder_nonce: bytes,
) -> bytes:  # fmt: skip
    # Every field length-prefixed, so no two different handshakes share a transcript.
    parts = (_DOMAIN, direction, cluster.encode(), dialler.encode(), responder.encode())
    parts += (dialler_nonce, responder_nonce)
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def prove(secret: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def verify(secrets: tuple[bytes, ...], transcript: bytes, proof: bytes) -> bool:
    """Does `proof` come from any of `secrets`? Every secret is tried, so the time taken does
    not tell which one matched."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(prove(secret, transcript), proof)
    return matched


class NonceMemory:
    """The last `size` dialler nonces a node answered: a handshake played again is refused
    by name, before any proof is checked."""

    def __init__(self, size: int = 65536) -> None:
        self._order: deque[bytes] = deque()
        self._seen: set[bytes] = set()
        self._size = size

    def first_time(self, nonce: bytes) -> bool:
        """Remember `nonce`; False if it was already remembered."""
        if nonce in self._seen:
            return False
        self._seen.add(nonce)
        self._order.append(nonce)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True


@dataclass(frozen=True)
class Step:
    """What one handshake frame leads to: frames to send, then either the other side proven
    (`peer`, its name), refused (`refused`, a reason above, and `detail` for the log), or
    neither yet."""

    send: tuple[Message, ...] = ()
    peer: str | None = None
    refused: str | None = None
    detail: str = ""


class Handshake:
    """One connection's side of the handshake, in four frames.

    Dialler: Hello with its nonce. Responder: Hello with its own (if the dialler's is new).
    Dialler: HelloProof over both. Responder: checks it, answers its HelloProof. Dialler:
    checks that. The dialler proves first, so the node dialled (the cluster, for a node
    trying to join) sees and refuses a wrong secret; each side is proven only by a proof
    over a nonce it chose itself, so a recorded handshake proves nothing.
    """

    def __init__(
        self, secrets: tuple[bytes, ...], name: str, cluster: str, nonce: bytes,
        memory: NonceMemory,
    ) -> None:  # fmt: skip
        if not secrets:
            raise ValueError("a handshake needs at least one secret")
        self.secrets = secrets
        self.name = name
        self.cluster = cluster
        self.nonce = nonce
        self.memory = memory
        # dialler: new -> hello_sent -> proof_sent -> done; responder: new -> proof_due -> done
        self.state = "new"
        self.dialling = False
        self.other = ""  # the other side's name, once it said it
        self.other_nonce = b""

    def start(self) -> Hello:
        """The dialler's first frame."""
        self.state = "hello_sent"
        self.dialling = True
        return Hello(self.name, self.cluster, self.nonce)

    def on_hello(self, hello: Hello) -> Step:
        if self.state not in ("new", "hello_sent"):
            return self._refuse(OUT_OF_ORDER, "a second Hello")
        self.other = hello.name
        if len(hello.nonce) != NONCE_BYTES:
            return self._refuse(NO_PROOF, "its Hello carries no nonce: it has no cluster secret")
        self.other_nonce = hello.nonce
        if self.dialling:
            self.state = "proof_sent"
            return Step(send=(HelloProof(self._prove(DIALLER)),))
        if not self.memory.first_time(hello.nonce):
            return self._refuse(REPLAYED, "its Hello repeats a nonce already answered")
        self.state = "proof_due"
        return Step(send=(Hello(self.name, self.cluster, self.nonce),))

    def on_proof(self, message: HelloProof) -> Step:
        if self.state not in ("proof_due", "proof_sent"):
            return self._refuse(OUT_OF_ORDER, "a HelloProof where none was due")
        theirs = RESPONDER if self.dialling else DIALLER
        if not verify(self.secrets, self._transcript(theirs), message.proof):
            return self._refuse(BAD_PROOF, "its proof matches no cluster secret of this node")
        self.state = "done"
        answer = () if self.dialling else (HelloProof(self._prove(RESPONDER)),)
        return Step(send=answer, peer=self.other)

    def _prove(self, direction: bytes) -> bytes:
        return prove(self.secrets[0], self._transcript(direction))

    def _transcript(self, direction: bytes) -> bytes:
        ours, theirs = (self.name, self.nonce), (self.other, self.other_nonce)
        (dialler, dialler_nonce), (responder, responder_nonce) = (
            (ours, theirs) if self.dialling else (theirs, ours)
        )
        return _transcript(
            direction, self.cluster, dialler, responder, dialler_nonce, responder_nonce
        )

    def _refuse(self, reason: str, detail: str) -> Step:
        self.state = "refused"
        return Step(refused=reason, detail=detail)
