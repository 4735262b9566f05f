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
from dynakv.runtime.limits import Activity

_connection_ids = itertools.count(1)
log = logging.getLogger("dynakv")
LENGTH = 4
# From this many bytes on a frame's payload is passed on as a view, not a slice, and sent
# beside its length rather than copied behind it (a copy costs more than the extra object).
VIEW_FROM = 16 * 1024


class FrameHandler(Protocol):
    def on_frame(self, conn: FrameConnection, payload: bytes | memoryview) -> None: ...
    def on_bad_length(self, conn: FrameConnection, length: int) -> None: ...
    def on_open(self, conn: FrameConnection) -> None: ...
    def on_close(self, conn: FrameConnection) -> None: ...
    def mark_dirty(self, conn: FrameConnection) -> None: ...


def frame(message: Message) -> bytes:
    payload = encode(message)
    return len(payload).to_bytes(LENGTH, "big") + payload


class FrameConnection(asyncio.Protocol):
    """One TCP connection carrying frames; `peer` is set once a Hello names the other node."""

    def __init__(
        self, handler: FrameHandler, outbound_to: str | None = None, max_inflight: int = 0
    ) -> None:
        self.handler = handler
        self.id = next(_connection_ids)
        self.token = f"#c{self.id}"
        self.outbound_to = outbound_to  # the destination we dialled, for outbound connections
        self.peer: str | None = None
        self.hello_sent = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._chunks: list[bytes] = []  # the reads of a frame not yet whole
        self._pending = 0  # bytes in _chunks
        self._wanted = 0  # bytes _chunks must hold before the next frame can be cut
        self._outbox: list[bytes] = []
        self._outbox_large = False  # a frame in the outbox is written without joining
        self._close_after_flush = False
        # A client's requests unanswered, by rid (a count: a client may repeat a rid); at
        # max_inflight the connection is not read until replies go out (back-pressure).
        self.max_inflight = max_inflight
        self._inflight: dict[int, int] = {}
        self._inflight_count = 0
        self._held = False  # at max_inflight
        self._read_paused = False  # held or write-paused: frames wait in _chunks, unread
        self._write_paused = False
        self.frames = 0  # frames received whole (limits.Activity.requests)

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.handler.on_open(self)

    def data_received(self, data: bytes) -> None:
        # A frame that arrives whole in one read is handed on as a slice of it; a large one
        # as a view (slicing copies). A frame split across reads waits as the list of its
        # reads until its length says it is whole, then is joined once: a 1 MiB frame in
        # sixteen reads is copied once here, not grown into a buffer read by read and then
        # copied out twice more.
        chunks = self._chunks
        if chunks:
            chunks.append(data)
            self._pending += len(data)
            if self._pending < self._wanted:
                return
            data = b"".join(chunks)
            chunks.clear()
        view = memoryview(data)
        offset = 0
        end = len(data)
        while end - offset >= LENGTH and not self.closed and not self._read_paused:
            length = int.from_bytes(data[offset : offset + LENGTH], "big")
            if length > MAX_FRAME_BYTES:
                self.handler.on_bad_length(self, length)
                return
            start = offset + LENGTH
            if end - start < length:
                break
            offset = start + length
            self.frames += 1
            try:
                self.handler.on_frame(
                    self, data[start:offset] if length < VIEW_FROM else view[start:offset]
                )
            except Exception:
                # A bug must cost one connection, never the node.
                log.exception("frame_failed connection=%s", self.token)
                self.abort()
                return
        if offset < end and not self.closed:
            rest = data[offset:]
            chunks.append(rest)
            self._pending = len(rest)
            # Until the length is in, wait for the length; then for the whole frame.
            self._wanted = LENGTH
            if len(rest) >= LENGTH:
                self._wanted += int.from_bytes(rest[:LENGTH], "big")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.handler.on_close(self)

    def pause_writing(self) -> None:
        # A client that does not read its replies is not read from either, so they cannot
        # pile up here. Never a peer's link: two nodes each waiting for the other to read
        # would stop both.
        if self.peer is None and self.outbound_to is None:
            self._write_paused = True
            self._update_reading()

    def resume_writing(self) -> None:
        if self._write_paused:
            self._write_paused = False
            self._update_reading()

    # --- back-pressure and limits ---------------------------------------------------------
    def request_started(self, rid: int) -> None:
        """A client's request (its rid) is in flight until a reply with that rid is sent."""
        if not self.max_inflight:
            return
        self._inflight[rid] = self._inflight.get(rid, 0) + 1
        self._inflight_count += 1
        if self._inflight_count >= self.max_inflight:
            self._held = True
            self._update_reading()

    def _answered(self, rid: int) -> None:
        count = self._inflight.get(rid)
        if count is None:
            return
        if count > 1:
            self._inflight[rid] = count - 1
        else:
            del self._inflight[rid]
        self._inflight_count -= 1
        if self._held and self._inflight_count < self.max_inflight:
            self._held = False
            self._update_reading()

    def _update_reading(self) -> None:
        if self.transport is None or self.closed:
            return
        pause = self._held or self._write_paused
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()
                if self._chunks:  # frames that arrived meanwhile: parse them next turn
                    asyncio.get_running_loop().call_soon(self.data_received, b"")

    def activity(self) -> Activity:
        """What the port's guard needs to time this connection out (a peer's link: never)."""
        exempt = self.peer is not None or self.outbound_to is not None
        partial = bool(self._chunks) and not self._read_paused
        return Activity(exempt, self._inflight_count > 0, partial, self.frames)

    # --- sending ---------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Queue a frame; it is written at the end of this loop turn (after the commit)."""
        if self.closed:
            return
        if self._inflight_count:
            rid = getattr(message, "rid", None)
            if rid is not None:
                self._answered(rid)
        payload = encode(message)
        if len(payload) < VIEW_FROM:
            self._outbox.append(len(payload).to_bytes(LENGTH, "big") + payload)
        else:  # not copied behind its length: written as it is, by writelines
            self._outbox += (len(payload).to_bytes(LENGTH, "big"), payload)
            self._outbox_large = True
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
            elif self._outbox_large:
                self.transport.writelines(self._outbox)  # one writev, no join of megabytes
                self._outbox = []  # the transport may keep the list's items, not the list
                self._outbox_large = False
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
