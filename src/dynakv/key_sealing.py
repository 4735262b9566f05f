"""Access-key secrets sealed under the cluster secret: AES-256-GCM with a key derived from the
cluster secret by HKDF-SHA256, the access key id as associated data (a sealed secret cannot be
moved to another key id). SigV4 needs the secret itself, so this is encryption, not a hash.

Pure apart from the caller's fresh nonce: no I/O, no clock.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"  # the first byte of a sealed secret: the scheme, so it can change later
NONCE_BYTES = 12
_INFO = b"dynakv access key secrets v1"


def _aead(cluster_secret: bytes) -> AESGCM:
    derived = HKDF(hashes.SHA256(), length=32, salt=None, info=_INFO).derive(cluster_secret)
    return AESGCM(derived)


class Sealer:
    """Seals with the first cluster secret, opens with any (the rotation order of the secret
    file: peer_auth's first signs, any verifies)."""

    def __init__(self, cluster_secrets: tuple[bytes, ...]) -> None:
        self._aeads = [_aead(secret) for secret in cluster_secrets]

    @property
    def usable(self) -> bool:
        return bool(self._aeads)

    def seal(self, key_id: str, secret: str, nonce: bytes) -> bytes:
        """secret sealed for key_id; nonce: NONCE_BYTES fresh random bytes from the caller."""
        if not self._aeads:
            raise ValueError("no cluster secret to seal access keys with")
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
        box = self._aeads[0].encrypt(nonce, secret.encode(), key_id.encode())
        return VERSION + nonce + box

    def open(self, key_id: str, sealed: bytes) -> str | None:
        """The secret sealed for key_id, or None: sealed under a secret this node does not hold
        (any more), for another key id, or damaged."""
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != VERSION:
            return None
        nonce, box = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, box, key_id.encode()).decode()
            except (InvalidTag, UnicodeDecodeError):
                continue
        return None
