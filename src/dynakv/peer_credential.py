"""The credential one member shows another's HTTP port, with users on, to read its /v1/status
(the DynamoDB forwarder learns a peer's endpoint there): `Authorization: Dynakv-Peer NAME
TIME HMAC`, the HMAC-SHA256 under the cluster secret of the name and the time, good for
MAX_AGE seconds either way. It proves the cluster secret, as the node port's handshake does.

Pure: the time comes from the caller.
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "Dynakv-Peer"
MAX_AGE = 60.0  # s: a recorded credential is worth this long, for /v1/status only
_LABEL = b"dynakv peer status\0"


def _mac(secret: bytes, name: str, when: int) -> str:
    return hmac.digest(secret, _LABEL + f"{name}\0{when}".encode(), hashlib.sha256).hex()


def make(secret: bytes, name: str, now: float) -> str:
    """The Authorization header value for member `name` at `now`."""
    when = int(now)
    return f"{SCHEME} {name} {when} {_mac(secret, name, when)}"


def check(value: str, secrets: tuple[bytes, ...], now: float) -> str | None:
    """The member name a credential (the header value after the scheme) proves, or None:
    malformed, too old or too new, or under no secret this node holds."""
    parts = value.split()
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 64:
        return None
    name, when = parts[0], int(parts[1])
    if abs(now - when) > MAX_AGE:
        return None
    ok = [hmac.compare_digest(_mac(s, name, when), parts[2]) for s in secrets]
    return name if any(ok) else None
