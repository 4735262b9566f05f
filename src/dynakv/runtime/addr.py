"""Listen and peer addresses as the config writes them: "HOST:PORT"."""

from __future__ import annotations


def split_addr(addr: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT"; ValueError when it is not that."""
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {addr!r}")
    return host, int(port)
