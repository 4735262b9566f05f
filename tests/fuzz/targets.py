"""Fuzz targets: each parser of untrusted input, its contract and the inputs to try.

A target takes one generated input and checks the parser's contract: it parses, or it raises
the project's clear error (InvalidRequest, ValueError, ProtocolError, or a frame the node
answers with an error), never another exception, and never takes more than HANG_SECONDS.
Strategies mix arbitrary bytes with inputs built to look almost right (valid messages and
contexts cut, flipped and spliced; TOML built from the config's own keys), which is where
parsers break. tests/unit/test_fuzz_*.py run them briefly in `make test` and keep every input
that ever broke one; tests/fuzz/run.py (`make fuzz`) runs them for a set time.
"""

from __future__ import annotations

import atexit
import base64
import json
import math
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv import config, messages, versions
from dynakv.errors import InvalidRequest
from dynakv.runtime.resp_protocol import Oversized, ProtocolError, parse_command, skip_oversized
from dynakv.runtime.transport import FrameConnection

HANG_SECONDS = 5.0  # one input taking longer than this is a hang (a generous bound)


class Hang(Exception):
    """An input the parser did not finish with in HANG_SECONDS."""


@contextmanager
def hang_guard() -> Iterator[None]:
    """Raise Hang in the code under it after HANG_SECONDS. Whatever alarm was set before
    (pytest-timeout's) is set again after, less the time spent."""

    def expired(signum: int, frame: Any) -> None:
        raise Hang(f"no result in {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expired)
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:
            left = earlier - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


# --- shared strategies ------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A valid input, then cut, bytes flipped, inserted or spliced with another."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["cut", "flip", "insert", "splice", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if how == "cut":
            del data[at:]
        elif how == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "splice":
            data[at:] = draw(seeds)
        elif how == "repeat":
            data += data[at:]
    return bytes(data)


# --- the binary protocol: one frame's payload, and the framing of a byte stream ----------------

TAGS = [cls.__struct_config__.tag for cls in messages.Message.__subclasses__()]


def _sample_messages() -> list[messages.Message]:
    return [
        messages.ClientGet(1, "b", "k", 2),
        messages.ClientPut(2, "b", "k", b"value", "", "quorum", "text/plain"),
        messages.Hello("node1", "dynakv"),
        messages.ErrorReply(3, "invalid_request", "no"),
        messages.ClientRepair(4, -1),
    ]


valid_frames = st.sampled_from([messages.encode(m) for m in _sample_messages()])
tagged = st.builds(
    lambda tag, rest: msgspec.msgpack.encode([tag, *rest]),
    st.sampled_from(TAGS) | st.text(max_size=8),
    st.lists(values, max_size=8),
)


def _encoded(message: messages.Message) -> bytes | None:
    try:
        return messages.encode(message)
    except (OverflowError, ValueError):  # a value the wire cannot carry (an int past 64 bits)
        return None


# Every message type of flat fields, built from its type hints: what decodes, and what nearly
# does. Those holding rings, members or bucket types validate their parts as they are built
# (and take long to generate); `tagged` and the mutations reach their decoding.
NESTED = {"ClusterInfo", "JoinRequest", "JoinReply", "Gossip", "TransferBatch"}
NESTED |= {"AaeHashesReply", "AaeKeysReply", "AaeFetchReply"}
built = st.one_of(
    [st.builds(cls) for cls in messages.Message.__subclasses__() if cls.__name__ not in NESTED]
)
built_frames = built.map(_encoded).filter(lambda payload: payload is not None)
frame_payloads = (
    st.binary(max_size=200) | tagged | built_frames | mutated(valid_frames | built_frames | tagged)
)


def frame_decode(payload: bytes) -> str:
    """messages.decode, and on failure the description the node answers it with."""
    with hang_guard():
        try:
            message = messages.decode(payload)
        except (msgspec.MsgspecError, ValueError):
            rid, text, usable = messages.describe_bad_frame(payload)
            assert isinstance(rid, int) and isinstance(text, str) and isinstance(usable, bool)
            return "answered an error" if usable else "answered an error and closed"
        assert isinstance(message, messages.Message)
        return f"decoded {type(message).__name__}"


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.bad: list[int] = []

    def on_frame(self, conn: FrameConnection, payload: bytes) -> None:
        self.frames.append(payload)

    def on_bad_length(self, conn: FrameConnection, length: int) -> None:
        self.bad.append(length)
        conn.closed = True

    def on_open(self, conn: FrameConnection) -> None: ...
    def on_close(self, conn: FrameConnection) -> None: ...
    def mark_dirty(self, conn: FrameConnection) -> None: ...


def _expected_frames(stream: bytes) -> tuple[list[bytes], bool]:
    frames, at = [], 0
    while len(stream) - at >= 4:
        length = int.from_bytes(stream[at : at + 4], "big")
        if length > messages.MAX_FRAME_BYTES:
            return frames, True
        if len(stream) - at - 4 < length:
            break
        frames.append(stream[at + 4 : at + 4 + length])
        at += 4 + length
    return frames, False


@st.composite
def frame_streams(draw: st.DrawFn) -> list[bytes]:
    """A byte stream of frames (some with absurd lengths), cut into reads at random."""
    framed = st.builds(lambda p: len(p).to_bytes(4, "big") + p, frame_payloads)
    parts = draw(st.lists(framed, max_size=5))
    stream = b"".join(parts) + draw(st.just(b"") | st.binary(min_size=1, max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def frame_stream(chunks: list[bytes]) -> str:
    """FrameConnection cuts the same frames out of any split of the stream."""
    with hang_guard():
        recorder = _Recorder()
        conn = FrameConnection(recorder)
        for chunk in chunks:
            if conn.closed:
                break
            conn.data_received(chunk)
        frames, bad = _expected_frames(b"".join(chunks))
        assert recorder.frames == frames
        assert bool(recorder.bad) == bad
        return "a length past the limit" if bad else f"{min(len(frames), 3)}+ frames"


# --- RESP ---------------------------------------------------------------------------------------

resp_tokens = st.sampled_from(
    [b"*", b"$", b"\r\n", b"\n", b"0", b"1", b"2", b"3", b"-1", b"9999999999", b"SET", b"GET",
     b"k", b"v", b" ", b'"', b"'", b"\x00", b":", b"+OK"]
)  # fmt: skip
resp_commands = st.builds(
    lambda args: b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args),
    st.lists(st.binary(max_size=12), min_size=1, max_size=4),
)
resp_inputs = (
    st.binary(max_size=200)
    | st.lists(resp_tokens, max_size=40).map(b"".join)
    | mutated(st.lists(resp_commands, min_size=1, max_size=3).map(b"".join))
)


def resp_parse(data: bytes, max_bulk: int = 8) -> str:
    """parse_command (and skip_oversized) over a buffer: each step parses a command, waits for
    more, or raises ProtocolError, and every parsed command moves the position on."""
    with hang_guard():
        buf = bytearray(data)
        pos = 0
        try:
            for _ in range(len(buf) + 1):
                args, after = parse_command(buf, pos, max_bulk)
                if args is None:
                    assert after == pos
                    return "parsed, then waits for more" if pos else "waits for more"
                assert after > pos, f"no progress at {pos}"
                if isinstance(args, Oversized):
                    gone, after = skip_oversized(buf, after, args)
                    if not gone:
                        return "skipping an oversized command"
                else:
                    assert all(type(a) is bytes for a in args)
                pos = after
            raise AssertionError("more commands than bytes")
        except ProtocolError as exc:
            assert str(exc).startswith("Protocol error")
            return "protocol error"


# --- contexts -------------------------------------------------------------------------------------

_actors = st.text(min_size=1, max_size=12)
version_vectors = st.dictionaries(_actors, st.integers(1, 2**63 - 1), max_size=5).map(
    lambda d: tuple(sorted(d.items()))
)
context_texts = (
    st.text(max_size=100)
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    | st.builds(
        lambda raw: base64.urlsafe_b64encode(raw).decode(),
        st.builds(msgspec.msgpack.encode, values)
        | mutated(version_vectors.map(msgspec.msgpack.encode)),
    )
    | version_vectors.map(versions.encode_context)
)


def context_decode(text: str) -> str:
    """decode_context: a version vector, or InvalidRequest; a good one round-trips."""
    with hang_guard():
        try:
            vv = versions.decode_context(text)
        except InvalidRequest as exc:
            assert exc.message.startswith("invalid context")
            return "invalid: " + exc.message.split(":")[1].split("(")[0].strip()[:30]
        assert versions.decode_context(versions.encode_context(vv)) == vv
        return f"{min(len(vv), 3)}+ actors"


# --- config files --------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's, but with characters beyond U+FFFF as they are (JSON's
    surrogate-pair escapes are not TOML) and DEL escaped (TOML wants it so)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """`value` written as TOML (strings as JSON strings, which TOML reads alike)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{_toml_string(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(type(value))


def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["lww", "siblings", "quorum", "one", "all", "fsync", "r", "n", "dc1"])
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_top_keys = st.sampled_from(_field_names(config.NodeConfig)) | st.text(max_size=8)
_table_keys = st.sampled_from(
    _field_names(config.BucketProps) + _field_names(config.SecurityConfig)
)


@st.composite
def config_files(draw: st.DrawFn) -> str:
    """TOML from the config's own keys and tables, with values of any type."""
    lines = [
        f"{_toml_string(k)} = {toml_value(v)}"
        for k, v in draw(st.dictionaries(_top_keys, toml_values, max_size=6)).items()
    ]
    for table in draw(
        st.lists(
            st.sampled_from(["defaults", "security", "buckets.b", "buckets.default", 'buckets.""']),
            max_size=3,
            unique=True,
        )
    ):
        lines.append(f"[{table}]")
        entries = draw(st.dictionaries(_table_keys, toml_values, max_size=4))
        lines += [f"{_toml_string(k)} = {toml_value(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


deep_toml = st.builds(
    lambda depth, opener: "a = " + opener * depth + "\n",
    st.integers(1, 3000),
    st.sampled_from(["[", "{b = ", "[{c = "]),
)
config_texts = (
    deep_toml
    | mutated(config_files().map(str.encode))
    | (config_files() | st.text(max_size=200) | st.sampled_from(["[[a]]\n", "a = [[[[1]]]]\n"]))
)


_config_dirs: list[Path] = []


def _config_path() -> Path:
    """The file the config target writes (one directory per process, removed at exit)."""
    if not _config_dirs:
        _config_dirs.append(Path(tempfile.mkdtemp(prefix="dynakv-fuzz-config-")))
        atexit.register(shutil.rmtree, _config_dirs[0], True)
    return _config_dirs[0] / "node.toml"


def config_load(text: str | bytes) -> str:
    """config.load: a NodeConfig, or a ValueError naming the file."""
    path = _config_path()
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with hang_guard():
        try:
            loaded = config.load(path)
        except ValueError as exc:
            assert str(exc).startswith(str(path)), exc
            reason = str(exc)[len(str(path)) + 2 :]
            return "refused: " + (reason.split(" must ")[0] if " must " in reason else reason[:24])
        assert isinstance(loaded, config.NodeConfig)
        return "loaded"


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[Any], str]  # checks one input; what became of it (for the report)
    inputs: st.SearchStrategy[Any]


TARGETS = [
    Target("frame_decode", frame_decode, frame_payloads),
    Target("frame_stream", frame_stream, frame_streams()),
    Target("resp_parse", resp_parse, resp_inputs),
    Target("context_decode", context_decode, context_texts),
    Target("config_load", config_load, config_texts),
]

BY_NAME = {target.name: target for target in TARGETS}
SHORT_EXAMPLES = 200  # per target in `make test`


def short_run(name: str, examples: int = SHORT_EXAMPLES) -> Callable[[], None]:
    """A pytest test: `examples` inputs of the target, derandomized (the same every run), no
    example database (nothing written to the work tree)."""
    target = BY_NAME[name]

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.inputs)
    def test(value: Any) -> None:
        target.run(value)

    test.__name__ = f"test_{name}_keeps_its_contract_on_generated_inputs"
    return test
