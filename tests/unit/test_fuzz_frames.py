"""Fuzzing the binary protocol (tests/fuzz/targets.py): a frame's payload decodes or gets the
error the node answers, and the framing cuts the same frames from any split of the stream.
The fixed inputs are the regression corpus: each once broke a parser, or nearly did."""

from __future__ import annotations

import pytest

from dynakv.messages import MAX_FRAME_BYTES
from tests.fuzz.targets import frame_decode, frame_stream, short_run

test_frame_decode = short_run("frame_decode")
test_frame_stream = short_run("frame_stream")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x91" * 100_000,  # arrays nested 100,000 deep
        b"\x92\xa3get" + b"\x91" * 100_000,
        b"\x92\xa5hello\xdd\xff\xff\xff\xff",  # an array claiming 4 G elements
        b"\x95\xa3get\x01\xa1b\xa1k\xc4\x00",  # bytes where a level is expected
        b"\x94\xa3get\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xa1b\xa1k",  # rid 2**64 - 1
        b"\x93\xa3get\x01\xa2\xff\xfe",  # a bucket of bad UTF-8
    ],
)
def test_frame_regressions(payload: bytes) -> None:
    frame_decode(payload)


@pytest.mark.parametrize(
    "chunks",
    [
        [(MAX_FRAME_BYTES + 1).to_bytes(4, "big")],
        [b"\x00\x00", b"\x00\x01", b"x", b"\xff\xff\xff\xff"],
        [b"\x00\x00\x00\x00" * 1000],  # a thousand empty frames
    ],
)
def test_frame_stream_regressions(chunks: list[bytes]) -> None:
    frame_stream(chunks)
