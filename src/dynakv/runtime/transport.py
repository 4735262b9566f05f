"""TCP framing for the binary protocol: 4-byte big-endian length, then one msgpack message.

One `FrameConnection` per socket, used both for clients and peers. It splits the byte stream
into frames and hands each to its owner; outgoing frames are buffered and written once per
event-loop turn. It knows nothing about what the messages mean.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Protocol, cast

from dynakv.messages import MAX_FRAME_BYTES, Message, encode

_connection_ids = itertools.count(1)
log = logging.getLogger("dynakv")
LENGTH = 4


class FrameHandler(Protocol):
    def on_frame(self, conn: FrameConnection, payload: bytes) -> None: ...
    def on_bad_length(self, conn: FrameConnection, length: int) -> None: ...
    def on_open(self, conn: FrameConnection) -> None: ...
    def on_close(self, conn: FrameConnection) -> None: ...
    def mark_dirty(self, conn: FrameConnection) -> None: ...


def frame(message: Message) -> bytes:
    payload = encode(message)
    return len(payload).to_bytes(LENGTH, "big") + payload


class FrameConnection(asyncio.Protocol):
    """One TCP connection carrying frames; `peer` is set once a Hello names the other node."""

    def __init__(self, handler: FrameHandler, outbound_to: str | None = None) -> None:
        self.handler = handler
        self.id = next(_connection_ids)
        self.token = f"#c{self.id}"
        self.outbound_to = outbound_to  # the destination we dialled, for outbound connections
        self.peer: str | None = None
        self.hello_sent = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()  # the start of a frame not yet whole
        self._outbox: list[bytes] = []
        self._close_after_flush = False

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.handler.on_open(self)

    def data_received(self, data: bytes) -> None:
        # Frames are cut straight out of `data` (one copy each); only a frame split across
        # reads waits in `_buffer`, joined with the rest once its length says it is whole,
        # so a large frame arriving in many reads is not copied again for each of them.
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < LENGTH:
                return
            length = int.from_bytes(buffer[:LENGTH], "big")
            if length <= MAX_FRAME_BYTES and len(buffer) < LENGTH + length:
                return  # not whole yet
            data = bytes(buffer)
            buffer.clear()
        offset = 0
        end = len(data)
        while end - offset >= LENGTH and not self.closed:
            length = int.from_bytes(data[offset : offset + LENGTH], "big")
            if length > MAX_FRAME_BYTES:
                self.handler.on_bad_length(self, length)
                return
            start = offset + LENGTH
            if end - start < length:
                break
            offset = start + length
            try:
                self.handler.on_frame(self, data[start:offset])
            except Exception:
                # A bug must cost one connection, never the node.
                log.exception("frame_failed connection=%s", self.token)
                self.abort()
                return
        if offset < end and not self.closed:
            buffer += data[offset:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.handler.on_close(self)

    # --- sending ---------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Queue a frame; it is written at the end of this loop turn (after the commit)."""
        if self.closed:
            return
        self._outbox.append(frame(message))
        self.handler.mark_dirty(self)

    def close_after_flush(self) -> None:
        self._close_after_flush = True
        self.handler.mark_dirty(self)

    def flush(self) -> None:
        if self.transport is None or self.closed:
            self._outbox.clear()
            return
        if self._outbox:
            if len(self._outbox) == 1:
                self.transport.write(self._outbox[0])
            else:
                self.transport.write(b"".join(self._outbox))
            self._outbox.clear()
        if self._close_after_flush:
            self.transport.close()
            self.closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
