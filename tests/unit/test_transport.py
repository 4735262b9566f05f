"""The framing of runtime.transport: frames cut from any split of the byte stream."""

from __future__ import annotations

import random

from dynakv.messages import MAX_FRAME_BYTES, ClientGet, ClientPut, Message, decode
from dynakv.runtime.transport import LENGTH, VIEW_FROM, FrameConnection, frame


class Recorder:
    """A FrameHandler that keeps what the connection hands it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.bad_lengths: list[int] = []

    def on_frame(self, conn: FrameConnection, payload: bytes | memoryview) -> None:
        # A large payload comes as a view of the read (a slice would copy it).
        assert type(payload) is (memoryview if len(payload) >= VIEW_FROM else bytes)
        self.frames.append(bytes(payload))

    def on_bad_length(self, conn: FrameConnection, length: int) -> None:
        self.bad_lengths.append(length)

    def on_open(self, conn: FrameConnection) -> None: ...
    def on_close(self, conn: FrameConnection) -> None: ...
    def mark_dirty(self, conn: FrameConnection) -> None: ...


def _messages() -> list[Message]:
    return [
        ClientGet(1, "b", "k"),
        ClientPut(2, "b", "k", b"v" * 1000, ""),
        ClientPut(3, "b", "big", bytes(range(256)) * 2000, ""),  # 512 KB: many reads
        ClientGet(4, "b", "x" * 100),
    ]


def _feed(chunks: list[bytes]) -> list[Message]:
    recorder = Recorder()
    conn = FrameConnection(recorder)
    for chunk in chunks:
        conn.data_received(chunk)
    assert not recorder.bad_lengths
    return [decode(payload) for payload in recorder.frames]


def test_frames_survive_every_split_of_the_stream() -> None:
    sent = _messages()
    stream = b"".join(frame(m) for m in sent)
    assert _feed([stream]) == sent  # all in one read
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert _feed(chunks) == sent
    small = b"".join(frame(m) for m in sent[:2])
    assert _feed([small[i : i + 1] for i in range(len(small))]) == sent[:2]  # byte by byte


def test_a_large_frame_in_small_reads_waits_until_whole() -> None:
    big = frame(_messages()[2])
    recorder = Recorder()
    conn = FrameConnection(recorder)
    chunks = [big[i : i + 4096] for i in range(0, len(big), 4096)]
    fed = 0
    for chunk in chunks[:-1]:
        conn.data_received(chunk)
        fed += len(chunk)
        # Until the length says the frame is whole, reads are only collected.
        assert conn._pending == fed and recorder.frames == []
    conn.data_received(chunks[-1])
    assert [decode(p) for p in recorder.frames] == [_messages()[2]]
    assert not conn._chunks


def test_a_length_over_the_limit_is_reported_not_buffered() -> None:
    for split in (LENGTH + 10, 2):  # the header in one read, or split across two
        recorder = Recorder()
        conn = FrameConnection(recorder)
        stream = (MAX_FRAME_BYTES + 1).to_bytes(LENGTH, "big") + b"x" * 10
        conn.data_received(stream[:split])
        conn.data_received(stream[split:])
        assert recorder.bad_lengths == [MAX_FRAME_BYTES + 1]
        assert recorder.frames == []


class Wire:
    """A transport that keeps what it is given, write by write."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []

    def write(self, data: bytes) -> None:
        self.writes.append([data])

    def writelines(self, data: list[bytes]) -> None:
        self.writes.append(list(data))

    def close(self) -> None: ...


def test_a_large_payload_is_sent_beside_its_length_not_copied_behind_it() -> None:
    conn = FrameConnection(Recorder())
    wire = Wire()
    conn.transport = wire  # type: ignore[assignment]
    small, big = _messages()[1], _messages()[2]
    conn.send(small)
    conn.send(small)
    conn.flush()
    assert wire.writes == [[frame(small) + frame(small)]]  # small frames: one joined write
    conn.send(small)
    conn.send(big)
    conn.flush()
    pieces = wire.writes[1]
    assert len(pieces) == 3 and pieces[0] == frame(small)
    assert b"".join(pieces[1:]) == frame(big) and len(pieces[2]) >= VIEW_FROM
    conn.send(small)
    conn.flush()
    assert wire.writes[2] == [frame(small)]
    # and the receiving side cuts the same messages out of it
    assert _feed([b"".join(b"".join(w) for w in wire.writes)]) == [small] * 3 + [big, small]
