"""The connection limits (limits.py) on the HTTP port, around aiohttp's own protocol.

aiohttp keeps no count of connections and no deadline for a request head that trickles in, so
the port listens with aiohttp's handler factory wrapped in a PortGuard. What the guard needs
to know of a connection (a request in progress? bytes of a head not yet whole?) is read from
aiohttp's RequestHandler, whose version is pinned: see `_busy`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web

from dynakv.config import NodeConfig
from dynakv.runtime.addr import split_addr
from dynakv.runtime.limits import SWEEP_INTERVAL, Activity, GuardedConnection, PortGuard
from dynakv.runtime.metrics import Metrics

NEVER = 10.0 * 365 * 24 * 3600  # aiohttp's keep-alive timeout for idle_timeout = 0


def _busy(handler: Any) -> bool:
    """A request of this connection is parsed and queued or being answered (aiohttp 3.14's
    RequestHandler; a missing attribute reads as idle, so a changed aiohttp errs towards
    timing out, never towards keeping a slowloris)."""
    in_progress = getattr(handler, "_request_in_progress", False)
    return bool(in_progress or getattr(handler, "_messages", ()))


class _HttpConnection(GuardedConnection):
    """Notes after each read whether its bytes left a request head unfinished."""

    head_partial = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.head_partial = not _busy(self.inner)


def _activity(conn: GuardedConnection) -> Activity:
    busy = _busy(conn.inner)
    partial = not busy and getattr(conn, "head_partial", False)
    return Activity(False, busy, partial, getattr(conn.inner, "_request_count", 0))


# A body refused before it was read (above the value limit) is still read and dropped, up to
# this size, so that a client that sends the whole body before reading its answer gets it
# (aiohttp's "lingering"); a larger one, or one of unknown length, is not read: answered, then
# the connection closed. The same bound as a RESP bulk string's (resp.MAX_SKIP).
LINGER_BYTES = 32 << 20


def unread_body_too_large(request: web.BaseRequest) -> bool:
    """The request's body was not read, and is too large to read just to drop it."""
    if not request.body_exists or request.content.at_eof():
        return False
    length = request.content_length
    return length is None or length > LINGER_BYTES


def runner_options(config: NodeConfig) -> dict[str, Any]:
    """AppRunner arguments: aiohttp closes a connection with no request in progress after its
    keep-alive timeout; that is only a backstop, set past the moment the guard's sweep closes
    it (and counts it) for idle_timeout."""
    if not config.idle_timeout:
        return {"keepalive_timeout": NEVER}
    return {"keepalive_timeout": config.idle_timeout + 3 * SWEEP_INTERVAL}


async def listen(
    runner: web.AppRunner,
    config: NodeConfig,
    metrics: Metrics,
    context: ssl.SSLContext | None = None,
) -> tuple[asyncio.AbstractServer, PortGuard]:
    """Listen on config.http_addr with the runner's handlers, guarded (TLS with `context`)."""
    guard = PortGuard("http", config, metrics, _activity, wraps_connection=True)
    host, port = split_addr(config.http_addr)
    loop = asyncio.get_running_loop()
    server = runner.server
    assert server is not None, "runner.setup() first"
    tcp = await loop.create_server(
        guard.factory(server, _HttpConnection), host, port, reuse_address=True, ssl=context
    )
    guard.start()
    return tcp, guard
