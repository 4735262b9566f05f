"""Fuzzing context decoding (tests/fuzz/targets.py): every string is a version vector or an
InvalidRequest, never another exception (an HTTP 500). Fixed inputs: the regression corpus."""

from __future__ import annotations

import base64

import msgspec
import pytest

from dynakv import versions
from dynakv.errors import InvalidRequest
from tests.fuzz.targets import context_decode, short_run

test_context_decode = short_run("context_decode")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "text",
    [
        "kZKi__4B",  # found by the fuzzer: an actor id of bad UTF-8 raised UnicodeDecodeError
        _b64(msgspec.msgpack.encode([["a", 2**64 - 1]])),
        _b64(msgspec.msgpack.encode([["a", -1]])),
        _b64(msgspec.msgpack.encode([["b", 1], ["a", 1]])),
        _b64(b"\x91" * 10_000),
        "=" * 3,
        "A" * (versions.MAX_CONTEXT_CHARS + 1),
        "é",
    ],
)
def test_context_regressions(text: str) -> None:
    context_decode(text)


def test_an_actor_of_bad_utf8_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        versions.decode_context("kZKi__4B")
