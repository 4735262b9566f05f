"""Storage engines: shared behaviour of MemoryEngine, LmdbEngine and WalEngine, crash and kill
durability."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import dynakv
from dynakv.errors import InternalError
from dynakv.storage import Engine, LmdbEngine, MemoryEngine, WalEngine, open_engine
from dynakv.storage.lmdb import NONE_COMMIT_EVERY
from dynakv.storage.pipelined import PipelinedEngine

SMALL_MAP = 64 << 20


def digest(i: int) -> bytes:
    return hashlib.md5(b"b\0k%d" % i).digest()


def make_engine(kind: str, path: Path) -> Engine:
    if kind == "memory":
        return MemoryEngine()
    if kind == "pipelined":
        return PipelinedEngine(LmdbEngine(path / "db", "fsync", map_size=SMALL_MAP))
    if kind == "wal":  # a small log: commits go through every path (append, checkpoint)
        return WalEngine(path / "db", SMALL_MAP, segment_bytes=4096, checkpoint_writes=40)
    if kind == "wal-os":  # the same, appended and checkpointed without fsync
        return WalEngine(
            path / "db", SMALL_MAP, segment_bytes=4096, checkpoint_writes=40, durability="os"
        )
    if kind == "pipelined-wal":  # the same, committed on the writer thread
        wal = WalEngine(path / "db", SMALL_MAP, segment_bytes=4096, checkpoint_writes=40)
        return PipelinedEngine(wal)
    return LmdbEngine(path / "db", kind.removeprefix("lmdb-"), map_size=SMALL_MAP)


@pytest.fixture(
    params=["memory", "lmdb-fsync", "lmdb-os", "pipelined", "wal", "wal-os", "pipelined-wal"]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(request.param, tmp_path)
    yield eng
    eng.close()


def in_range(items: dict[bytes, bytes], start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
    return sorted((k, v) for k, v in items.items() if start <= k and (not end or k < end))


# --- shared behaviour ---------------------------------------------------------------------------


def test_put_get_delete(engine: Engine) -> None:
    k = digest(1)
    assert engine.get(k) is None
    engine.put(k, b"one")
    engine.commit()
    assert engine.get(k) == b"one"
    engine.put(k, b"uno")
    engine.commit()
    assert engine.get(k) == b"uno"
    engine.delete(k)
    engine.commit()
    assert engine.get(k) is None
    engine.delete(k)  # deleting an absent key is not an error
    engine.put(k, b"")  # empty values are values
    engine.commit()
    assert engine.get(k) == b""
    assert engine.count() == 1


def test_read_your_writes_before_commit(engine: Engine) -> None:
    a, b = digest(1), digest(2)
    engine.put(a, b"A")
    engine.commit()
    assert engine.pending() == 0
    engine.put(b, b"B")
    engine.delete(a)
    engine.meta_put("ring", b"R")
    assert engine.pending() == 3
    assert engine.get(b) == b"B"
    assert engine.get(a) is None
    assert engine.meta_get("ring") == b"R"
    assert engine.count() == 1
    assert list(engine.scan(b"", b"")) == [(b, b"B")]
    engine.commit()
    assert engine.pending() == 0
    assert engine.get(b) == b"B"
    assert engine.get(a) is None


def test_bytes_like_values_are_copied(engine: Engine) -> None:
    buf = bytearray(b"abc")
    engine.put(digest(1), buf)
    buf[0] = ord("z")
    assert engine.get(digest(1)) == b"abc"
    engine.commit()
    assert engine.get(digest(1)) == b"abc"


def test_scan_partitions(engine: Engine) -> None:
    keys = {digest(i): b"v%d" % i for i in range(300)}
    for k, v in keys.items():
        engine.put(k, v)
    engine.commit()
    assert list(engine.scan(b"", b"")) == sorted(keys.items())
    # Q = 8 partitions over the top 3 bits; the last one is unbounded, the first starts at zero
    bounds = [bytes([i << 5]) + bytes(15) for i in range(8)] + [b""]
    seen: list[tuple[bytes, bytes]] = []
    for start, end in itertools.pairwise(bounds):
        part = list(engine.scan(start, end))
        assert part == in_range(keys, start, end)
        assert part, "300 uniform digests leave no partition of 8 empty"
        seen += part
    assert seen == sorted(keys.items())


def test_scan_bounds_split_keys(engine: Engine) -> None:
    ks = [b"\x10" * 16, b"\x20" * 16, b"\x20" * 15 + b"\x21", b"\x30" * 16, b"\xff" * 16]
    for k in ks:
        engine.put(k, k[:1])
    engine.commit()
    model = {k: k[:1] for k in ks}
    cases = [
        (ks[1], ks[3]),  # start inclusive, end exclusive
        (b"\x20", b"\x30"),  # short bounds: prefixes of the keys
        (b"\x20" * 16 + b"\x00", b"\x30" * 15),  # bounds strictly between keys
        (b"\x31", b""),  # to the end
        (b"", b"\x10" * 16),  # before the first key: nothing
        (ks[3], ks[3]),  # empty range
        (ks[3], ks[1]),  # inverted range
        (b"\xff" * 16, b""),  # the last key alone
    ]
    for start, end in cases:
        assert list(engine.scan(start, end)) == in_range(model, start, end), (start, end)


def test_scan_sees_pending_writes_and_deletes(engine: Engine) -> None:
    model = {digest(i): b"c%d" % i for i in range(50)}
    for k, v in model.items():
        engine.put(k, v)
    engine.commit()
    for i in range(0, 50, 3):
        engine.delete(digest(i))
        del model[digest(i)]
    for i in range(50, 70):
        engine.put(digest(i), b"p%d" % i)
        model[digest(i)] = b"p%d" % i
    engine.put(digest(1), b"overwritten")
    model[digest(1)] = b"overwritten"
    mid = bytes([0x80]) + bytes(15)
    assert list(engine.scan(b"", b"")) == in_range(model, b"", b"")
    assert list(engine.scan(mid, b"")) == in_range(model, mid, b"")
    assert list(engine.scan(b"", mid)) == in_range(model, b"", mid)
    assert engine.count() == len(model)


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_scan_survives_writes_and_commits_while_iterating(engine: Engine, batch: int) -> None:
    engine.scan_batch = batch  # type: ignore[attr-defined]
    stable = {digest(i): b"s%d" % i for i in range(40)}
    churn = [digest(i) for i in range(40, 60)]
    for k, v in stable.items():
        engine.put(k, v)
    for k in churn:
        engine.put(k, b"churn")
    engine.commit()
    out = []
    for n, (k, v) in enumerate(engine.scan(b"", b"")):
        out.append((k, v))
        # writes ahead of and behind the cursor, deletes, and commits in the middle of the scan
        engine.put(churn[n % len(churn)], b"again%d" % n)
        engine.delete(churn[(n * 7) % len(churn)])
        if n % 3 == 0:
            engine.commit()
    keys = [k for k, _ in out]
    assert keys == sorted(set(keys)), "increasing order, each key at most once"
    got = dict(out)
    for k, v in stable.items():
        assert got[k] == v, "a key unchanged during the scan is yielded exactly once"


def test_count(engine: Engine) -> None:
    assert engine.count() == 0
    for i in range(10):
        engine.put(digest(i), b"x")
    engine.put(digest(0), b"y")  # overwrite: still 10
    assert engine.count() == 10
    engine.commit()
    engine.delete(digest(3))
    engine.delete(digest(3))
    engine.delete(digest(99))  # absent
    engine.meta_put("m", b"not an object")
    assert engine.count() == 9
    engine.commit()
    assert engine.count() == 9


def test_meta_namespace_is_separate(engine: Engine) -> None:
    name = "incarnation"
    engine.meta_put(name, b"meta")
    engine.put(name.encode(), b"object")
    assert engine.meta_get(name) == b"meta"
    assert engine.get(name.encode()) == b"object"
    engine.commit()
    assert engine.meta_get(name) == b"meta"
    assert engine.meta_get("other") is None
    assert list(engine.scan(b"", b"")) == [(name.encode(), b"object")]
    assert engine.count() == 1
    engine.delete(name.encode())
    engine.commit()
    assert engine.meta_get(name) == b"meta"
    engine.meta_put("ring-é", b"r2")
    engine.meta_put(name, b"meta2")
    engine.commit()
    assert engine.meta_get(name) == b"meta2"
    assert engine.meta_get("ring-é") == b"r2"
    assert engine.count() == 0


def test_key_validation(engine: Engine) -> None:
    for bad in (b"", b"x" * 512):
        with pytest.raises(ValueError):
            engine.put(bad, b"v")
        with pytest.raises(ValueError):
            engine.get(bad)
        with pytest.raises(ValueError):
            engine.delete(bad)
    with pytest.raises(ValueError):
        engine.scan(b"", b"x" * 512)
    with pytest.raises(ValueError):
        engine.meta_put("", b"v")
    with pytest.raises(ValueError):
        engine.meta_get("x" * 512)
    with pytest.raises(TypeError):
        engine.put("text", b"v")  # type: ignore[arg-type]
    assert engine.pending() == 0
    engine.put(b"x" * 511, b"longest")
    engine.put(b"\x00", b"shortest")
    engine.commit()
    assert engine.get(b"x" * 511) == b"longest"
    assert engine.get(b"\x00") == b"shortest"


def test_closed_engine_refuses_use(engine: Engine) -> None:
    engine.put(digest(1), b"v")
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(InternalError):
        engine.get(digest(1))
    with pytest.raises(InternalError):
        engine.put(digest(1), b"v")
    with pytest.raises(InternalError):
        list(engine.scan(b"", b""))


def test_open_engine(tmp_path: Path) -> None:
    mem = open_engine("memory", None)
    assert isinstance(mem, MemoryEngine)
    mem.close()
    eng = open_engine("lmdb", str(tmp_path / "d"), "os")
    assert isinstance(eng, LmdbEngine) and eng.durability == "os"
    eng.close()
    wal = open_engine("wal", str(tmp_path / "w"))
    assert isinstance(wal, WalEngine) and wal.durability == "fsync"
    wal.close()
    wal = open_engine("wal", str(tmp_path / "wo"), "os")
    assert isinstance(wal, WalEngine) and wal.durability == "os"
    wal.close()
    with pytest.raises(ValueError):
        open_engine("wal", None)
    with pytest.raises(ValueError):
        open_engine("rocksdb", str(tmp_path))
    with pytest.raises(ValueError):
        open_engine("lmdb", None)
    with pytest.raises(ValueError):
        open_engine("lmdb", str(tmp_path / "e"), "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LmdbEngine(tmp_path / "f", "sometimes")  # type: ignore[arg-type]


# --- MemoryEngine.crash ------------------------------------------------------------------------


def test_memory_crash_keeps_exactly_committed_writes() -> None:
    eng = MemoryEngine()
    for i in range(10):
        eng.put(digest(i), b"c%d" % i)
    eng.meta_put("incarnation", b"one")
    eng.commit()
    committed = dict(eng.scan(b"", b""))
    # pending: new keys, overwrites, deletes (some twice, some of new keys), metadata
    for i in range(10, 15):
        eng.put(digest(i), b"p")
    eng.put(digest(0), b"over")
    eng.put(digest(0), b"over again")
    eng.delete(digest(1))
    eng.delete(digest(11))
    eng.put(digest(1), b"back")
    eng.delete(digest(2))
    eng.meta_put("incarnation", b"two")
    eng.meta_put("ring", b"new")
    eng.crash()
    assert eng.pending() == 0
    assert dict(eng.scan(b"", b"")) == committed
    assert list(eng.scan(b"", b"")) == sorted(committed.items())
    assert eng.count() == 10
    assert eng.meta_get("incarnation") == b"one"
    assert eng.meta_get("ring") is None
    # still usable after the crash, and a second crash loses nothing committed
    eng.put(digest(20), b"after")
    eng.commit()
    eng.delete(digest(20))
    eng.crash()
    assert eng.get(digest(20)) == b"after"
    eng.crash()
    assert eng.count() == 11


# --- LmdbEngine ------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["fsync", "os", "none"])
def test_lmdb_reopen_keeps_data(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "db"
    eng = LmdbEngine(path, durability, map_size=SMALL_MAP)  # type: ignore[arg-type]
    model = {digest(i): bytes([i % 256]) * (i % 50) for i in range(500)}
    for k, v in model.items():
        eng.put(k, v)
    eng.commit()
    eng.delete(digest(7))
    del model[digest(7)]
    eng.meta_put("incarnation", b"abc")
    eng.close()  # commits whatever is pending
    eng = LmdbEngine(path, durability, map_size=SMALL_MAP)  # type: ignore[arg-type]
    try:
        assert list(eng.scan(b"", b"")) == sorted(model.items())
        assert eng.count() == len(model)
        assert eng.meta_get("incarnation") == b"abc"
    finally:
        eng.close()


def test_lmdb_none_commits_every_1000_writes_and_loses_nothing_on_close(tmp_path: Path) -> None:
    path = tmp_path / "db"
    eng = LmdbEngine(path, "none", map_size=SMALL_MAP)
    for i in range(NONE_COMMIT_EVERY - 1):
        eng.put(digest(i), b"v")
        if i % 10 == 0:
            eng.commit()
    eng.commit()
    assert eng.pending() == NONE_COMMIT_EVERY - 1  # not yet committed
    eng.meta_put("m", b"1")
    eng.commit()
    assert eng.pending() == 0  # the 1000th write triggered a real commit
    n = 2500
    for i in range(NONE_COMMIT_EVERY - 1, n):
        eng.put(digest(i), b"w")
        if i % 10 == 0:
            eng.commit()
    assert 0 < eng.pending() < NONE_COMMIT_EVERY
    eng.close()
    eng = LmdbEngine(path, "none", map_size=SMALL_MAP)
    try:
        assert eng.count() == n
        assert eng.meta_get("m") == b"1"
        assert all(eng.get(digest(i)) is not None for i in range(n))
    finally:
        eng.close()


def test_lmdb_os_and_fsync_commit_every_time(tmp_path: Path) -> None:
    for durability in ("os", "fsync"):
        eng = LmdbEngine(tmp_path / durability, durability, map_size=SMALL_MAP)
        eng.put(digest(1), b"v")
        eng.commit()
        assert eng.pending() == 0
        eng.commit()  # nothing pending: a no-op
        eng.close()


def test_lmdb_map_full_is_a_clear_internal_error(tmp_path: Path) -> None:
    eng = LmdbEngine(tmp_path / "db", "os", map_size=1 << 20)
    eng.put(digest(0), b"committed")
    eng.commit()
    value = b"x" * 1024
    with pytest.raises(InternalError, match="map_size"):
        for i in range(1, 5000):
            eng.put(digest(i), value)
            if i % 100 == 0:
                eng.commit()
    # the failed transaction was discarded; the engine still works
    assert eng.pending() == 0
    assert eng.get(digest(0)) == b"committed"
    eng.put(digest(0), b"still writable")
    eng.commit()
    assert eng.get(digest(0)) == b"still writable"
    eng.close()


KILL_CHILD = textwrap.dedent(
    """
    import sys
    from dynakv.storage.lmdb import LmdbEngine
    from dynakv.storage.wal import WalEngine

    path, durability, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if durability.endswith("wal"):  # a checkpoint every 10-odd commits, so some land mid-stream
        mode = "os" if durability == "os-wal" else "fsync"
        eng = WalEngine(path, 256 << 20, segment_bytes=16384, durability=mode)
    else:
        eng = LmdbEngine(path, durability, map_size=256 << 20)
    if durability == "pipelined-wal":
        # As the server runs it: the writer thread logs and checkpoints while this thread
        # goes on writing; a batch is printed when its report runs here, as a reply would be.
        import queue
        from dynakv.storage.pipelined import PipelinedEngine

        posted = queue.SimpleQueue()
        eng = PipelinedEngine(eng)
        eng.bind(posted.put)
        for i in range(1_000_000):
            for j in range(batch):
                eng.put(b"%08d%08d" % (i, j), b"value-%d-%d" % (i, j))
            eng.commit_async(lambda error, i=i: print(f"committed {i}", flush=True))
            while len(eng._inflight) > 3:  # a few batches in flight at the kill
                posted.get()()
            while not posted.empty():
                posted.get()()
    for i in range(1_000_000):
        for j in range(batch):
            eng.put(b"%08d%08d" % (i, j), b"value-%d-%d" % (i, j))
        eng.commit()
        print(f"committed {i}", flush=True)
    """
)


@pytest.mark.parametrize("durability", ["fsync", "os", "wal", "os-wal", "pipelined-wal"])
def test_lmdb_committed_batches_survive_sigkill(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "db"
    batch, wanted = 50, 20
    env = dict(os.environ)
    src = str(Path(dynakv.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(path), durability, str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=env,
    )
    out = b""
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + 30
        while out.count(b"\n") < wanted:
            left = deadline - time.monotonic()
            assert left > 0, f"child too slow; stdout so far: {out!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(f"child exited early: {proc.wait()} {proc.stderr.read()!r}")  # type: ignore[union-attr]
                out += chunk
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out += proc.stdout.read()  # lines printed before the kill landed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    reported = [int(line.split()[1]) for line in out.decode().splitlines() if line]
    assert reported == list(range(len(reported)))
    last = reported[-1]

    eng: Engine
    if durability.endswith("wal"):
        eng = WalEngine(path, 256 << 20, segment_bytes=16384)  # replays the log's tail
    else:
        eng = LmdbEngine(path, "fsync", map_size=256 << 20)
    try:
        present = {}
        for k, _ in eng.scan(b"", b""):
            i = int(k[:8])
            present[i] = present.get(i, 0) + 1
        # every batch reported committed is there, and each batch is all-or-nothing
        assert all(present.get(i) == batch for i in range(last + 1)), present
        assert set(present.values()) == {batch}
        assert sorted(present) == list(range(len(present)))
        for i in (0, last):
            assert eng.get(b"%08d%08d" % (i, batch - 1)) == b"value-%d-%d" % (i, batch - 1)
    finally:
        eng.close()


# --- model-based: both engines against a dict -------------------------------------------------

keys = st.lists(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]), min_size=1, max_size=3).map(bytes)
bounds = st.one_of(st.just(b""), keys)
values = st.binary(max_size=8)
names = st.sampled_from(["incarnation", "ring", "x"])


def set_scan_batch(engine: Engine, size: int) -> None:
    """Small scan batches, so scans resume mid-range (a PipelinedEngine scans its LMDB's)."""
    target = engine.lmdb if isinstance(engine, PipelinedEngine) else engine
    target.scan_batch = size  # type: ignore[attr-defined]


class Model:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.visible: dict[bytes, bytes] = {}
        self.committed: dict[bytes, bytes] = {}
        self.meta: dict[str, bytes] = {}
        self.meta_committed: dict[str, bytes] = {}
        self.pending = 0


class EnginesVersusDict(RuleBasedStateMachine):
    """MemoryEngine, LmdbEngine("os"), LmdbEngine("none"), WalEngine (a tiny log, so
    that commits append, checkpoint and go direct) and a PipelinedEngine over one (reads
    through the batches logged but not yet checkpointed) replay the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dynakv-storage-")
        self.models = [
            Model(MemoryEngine()),
            Model(LmdbEngine(os.path.join(self.dir, "os"), "os", map_size=SMALL_MAP)),
            Model(LmdbEngine(os.path.join(self.dir, "none"), "none", map_size=SMALL_MAP)),
            Model(self.open_wal()),
            Model(PipelinedEngine(self.open_wal("pipelined-wal"))),
        ]
        for m in self.models:
            set_scan_batch(m.engine, 3)

    def open_wal(self, name: str = "wal") -> WalEngine:
        return WalEngine(
            os.path.join(self.dir, name),
            SMALL_MAP,
            segment_bytes=200,
            checkpoint_writes=9,
            direct_bytes=60,
        )

    def teardown(self) -> None:
        for m in self.models:
            m.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        for m in self.models:
            m.engine.put(key, value)
            m.visible[key] = value
            m.pending += 1

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        for m in self.models:
            m.engine.delete(key)
            m.visible.pop(key, None)
            m.pending += 1

    @rule(name=names, value=values)
    def meta_put(self, name: str, value: bytes) -> None:
        for m in self.models:
            m.engine.meta_put(name, value)
            m.meta[name] = value
            m.pending += 1

    @rule()
    def commit(self) -> None:
        for m in self.models:
            m.engine.commit()
            threshold = NONE_COMMIT_EVERY if getattr(m.engine, "durability", "") == "none" else 0
            if m.pending >= threshold:
                m.committed, m.meta_committed, m.pending = dict(m.visible), dict(m.meta), 0

    @rule()
    def crash_memory(self) -> None:
        m = self.models[0]
        assert isinstance(m.engine, MemoryEngine)
        m.engine.crash()
        m.visible, m.meta, m.pending = dict(m.committed), dict(m.meta_committed), 0

    @rule()
    def reopen_lmdb(self) -> None:
        for m in self.models[1:]:
            eng = m.engine
            eng.close()
            if isinstance(eng, PipelinedEngine):
                m.engine = PipelinedEngine(self.open_wal("pipelined-wal"))
            elif isinstance(eng, WalEngine):
                m.engine = self.open_wal()
            else:
                assert isinstance(eng, LmdbEngine)
                m.engine = LmdbEngine(eng.path, eng.durability, map_size=SMALL_MAP)
            set_scan_batch(m.engine, 2)
            m.committed, m.meta_committed, m.pending = dict(m.visible), dict(m.meta), 0

    @rule()
    def crash_wal(self) -> None:
        """A kill: every commit is durable (replayed from the log), nothing pending is."""
        m = self.models[3]
        assert isinstance(m.engine, WalEngine)
        m.engine.crash()
        m.engine = self.open_wal()
        m.engine.scan_batch = 2
        m.visible, m.meta, m.pending = dict(m.committed), dict(m.meta_committed), 0

    @rule(start=bounds, end=bounds)
    def scan(self, start: bytes, end: bytes) -> None:
        for m in self.models:
            assert list(m.engine.scan(start, end)) == in_range(m.visible, start, end)

    @rule(key=keys, name=names)
    def get(self, key: bytes, name: str) -> None:
        for m in self.models:
            assert m.engine.get(key) == m.visible.get(key)
            assert m.engine.meta_get(name) == m.meta.get(name)

    @invariant()
    def counts(self) -> None:
        for m in self.models:
            assert m.engine.count() == len(m.visible)
            if isinstance(m.engine, PipelinedEngine):  # counts keys, not writes, pending
                assert (m.engine.pending() == 0) == (m.pending == 0)
            else:
                assert m.engine.pending() == m.pending


EnginesVersusDict.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_engines_versus_dict = EnginesVersusDict.TestCase


def test_hints_table_is_separate_from_objects(engine: Engine) -> None:
    engine.put(digest(1), b"object")
    engine.put(digest(1), b"hint", table="hints")
    engine.put(digest(2), b"hint2", table="hints")
    assert engine.get(digest(1)) == b"object"
    assert engine.get(digest(1), table="hints") == b"hint"
    assert engine.count() == 1
    assert engine.count("hints") == 2
    assert [k for k, _ in engine.scan(b"", b"")] == [digest(1)]
    assert [k for k, _ in engine.scan(b"", b"", table="hints")] == sorted([digest(1), digest(2)])
    engine.delete(digest(1), table="hints")
    engine.commit()
    assert engine.get(digest(1), table="hints") is None
    assert engine.get(digest(1)) == b"object"
    with pytest.raises(ValueError, match="unknown table"):
        engine.get(digest(1), table="nope")  # type: ignore[arg-type]


def test_memory_crash_rolls_back_hints_too() -> None:
    engine = MemoryEngine()
    engine.put(digest(1), b"kept", table="hints")
    engine.commit()
    engine.put(digest(2), b"lost", table="hints")
    engine.delete(digest(1), table="hints")
    engine.crash()
    assert [v for _, v in engine.scan(b"", b"", table="hints")] == [b"kept"]


def test_pipelined_commits_report_in_order_and_reads_see_every_stage(tmp_path: Path) -> None:
    import queue as queue_module

    engine = PipelinedEngine(LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP))
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)  # stands in for loop.call_soon_threadsafe
    done: list[int] = []
    try:
        engine.put(digest(1), b"one")
        engine.commit_async(lambda error: done.append(1))
        engine.put(digest(2), b"two")
        engine.commit_async(lambda error: done.append(2))
        engine.commit_async(lambda error: done.append(3))  # nothing new: waits for the others
        assert engine.get(digest(1)) == b"one" and engine.get(digest(2)) == b"two"
        assert done == []
        while len(done) < 3:
            posted.get(timeout=10)()
        assert done == [1, 2, 3]
        engine.commit_async(lambda error: done.append(4))  # nothing in flight: at once
        assert done == [1, 2, 3, 4]
        assert engine.inner.get_committed(digest(2)) == b"two"
    finally:
        engine.close()


def test_pipelined_commit_interval_puts_the_batches_of_the_interval_in_one_commit(
    tmp_path: Path,
) -> None:
    """NodeConfig.commit_interval: a batch handed over soon after a commit started waits
    for the interval to end, and every batch queued by then shares its commit."""
    import queue as queue_module

    inner = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)
    engine = PipelinedEngine(inner, min_interval=0.5)
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)
    commits: list[float] = []
    real_commit = inner.commit

    def counted_commit() -> None:
        commits.append(time.monotonic())
        real_commit()

    inner.commit = counted_commit  # type: ignore[method-assign]
    done: list[str] = []
    try:
        engine.put(digest(1), b"a")
        engine.commit_async(lambda error: done.append("a"))
        while not done:
            posted.get(timeout=10)()
        engine.put(digest(2), b"b")
        engine.commit_async(lambda error: done.append("b"))
        time.sleep(0.02)  # without the interval, "b" would be committed alone by now
        engine.put(digest(3), b"c")
        engine.commit_async(lambda error: done.append("c"))
        while len(done) < 3:
            posted.get(timeout=10)()
        assert done == ["a", "b", "c"]
        assert len(commits) == 2, commits  # "b" and "c" shared one commit
        assert commits[1] - commits[0] >= 0.45  # the writer waited out the interval
        assert engine.inner.get_committed(digest(3)) == b"c"
    finally:
        engine.close()


def test_pipelined_marks_wait_for_their_own_batch_only(tmp_path: Path) -> None:
    """A put's result waits for the batch holding its write (Engine.mark), not for batches
    handed over after it: with a later commit held by a busy disk, an earlier mark is
    durable at once, the later one only when its commit lands, and a mark still in the open
    batch hands that batch over."""
    import queue as queue_module
    import threading

    inner = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)
    engine = PipelinedEngine(inner)
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)
    done: list[str] = []
    release = threading.Event()
    real_commit = inner.commit
    try:
        assert engine.mark() == 0  # nothing written yet
        engine.put(digest(1), b"one")
        first = engine.mark()
        assert not engine.durable(first)
        engine.commit_async(lambda error: done.append("turn 1"))
        while not done:
            posted.get(timeout=10)()
        assert engine.durable(first)

        def slow_commit() -> None:
            release.wait(10)  # the disk is busy
            real_commit()

        inner.commit = slow_commit  # type: ignore[method-assign]
        engine.put(digest(2), b"two")
        second = engine.mark()
        assert second > first
        engine.commit_async(lambda error: done.append("turn 2"))  # held by the disk
        engine.when_durable(first, lambda error: done.append("first"))
        engine.when_durable(second, lambda error: done.append("second"))
        assert done == ["turn 1", "first"]  # the earlier mark did not wait for turn 2
        engine.put(digest(3), b"three")
        third = engine.mark()
        engine.when_durable(third, lambda error: done.append("third"))  # hands it over
        assert engine.pending() == 2 and not engine._writes
        release.set()
        while len(done) < 5:
            posted.get(timeout=10)()
        assert done == ["turn 1", "first", "turn 2", "second", "third"]
        assert all(engine.durable(m) for m in (first, second, third))
        assert inner.get_committed(digest(3)) == b"three"
    finally:
        release.set()
        engine.close()


def test_pipelined_marks_of_a_failed_commit_never_count_as_durable(tmp_path: Path) -> None:
    """A commit that fails stops the node; until it has stopped, a put whose write was in
    that batch (or a later one) must not be answered as durable, even once a later commit
    succeeds."""
    import queue as queue_module

    inner = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)
    engine = PipelinedEngine(inner)
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)
    real_commit = inner.commit
    errors: list[BaseException | None] = []
    try:
        engine.put(digest(1), b"one")
        first = engine.mark()
        engine.commit_async(errors.append)
        while not errors:
            posted.get(timeout=10)()

        def failing_commit() -> None:
            inner.commit = real_commit  # type: ignore[method-assign]  # only this one fails
            raise OSError("disk gone")

        inner.commit = failing_commit  # type: ignore[method-assign]
        engine.put(digest(2), b"two")
        lost = engine.mark()
        engine.commit_async(errors.append)
        while len(errors) < 2:
            posted.get(timeout=10)()
        assert isinstance(errors[1], OSError)
        engine.put(digest(3), b"three")
        later = engine.mark()
        engine.commit_async(errors.append)  # this commit succeeds
        while len(errors) < 3:
            posted.get(timeout=10)()
        assert errors[2] is None
        assert engine.durable(first)
        assert not engine.durable(lost) and not engine.durable(later)
        answers: list[BaseException | None] = []
        engine.when_durable(first, answers.append)
        engine.when_durable(lost, answers.append)
        assert answers[0] is None and isinstance(answers[1], OSError)
    finally:
        inner.commit = real_commit  # type: ignore[method-assign]
        engine.close()


@contextlib.contextmanager
def _disk_held(
    tmp_path: Path, committed: list[int]
) -> Iterator[tuple[PipelinedEngine, LmdbEngine]]:
    """A bound PipelinedEngine holding `committed` digests (value b"old"), whose next
    commits wait until the block ends (a busy disk); then everything is committed."""
    import queue as queue_module
    import threading

    inner = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)
    engine = PipelinedEngine(inner)
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)
    for i in committed:
        engine.put(digest(i), b"old")
    engine.commit()
    release = threading.Event()
    real_commit = inner.commit

    def slow_commit() -> None:
        release.wait(10)  # the disk is busy
        real_commit()

    inner.commit = slow_commit  # type: ignore[method-assign]
    try:
        yield engine, inner
    finally:
        release.set()
        engine.commit()


def test_pipelined_scan_does_not_wait_for_a_commit_in_flight(tmp_path: Path) -> None:
    """Anti-entropy and the tombstone sweep scan every second: a scan must see the writes
    still being committed without blocking the event loop until they are durable."""
    with _disk_held(tmp_path, [1, 3]) as (engine, _):
        engine.put(digest(1), b"new")
        engine.delete(digest(3))
        engine.commit_async(lambda error: None)  # in flight, held by the slow disk
        engine.put(digest(2), b"pending")  # not even handed over yet
        started = time.monotonic()
        seen = list(engine.scan(b"", b""))
        assert time.monotonic() - started < 5  # did not wait for the held commit
        assert seen == sorted([(digest(1), b"new"), (digest(2), b"pending")])
    engine.close()
    reopened = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)
    try:
        expected = sorted([(digest(1), b"new"), (digest(2), b"pending")])
        assert list(reopened.scan(b"", b"")) == expected
    finally:
        reopened.close()


def test_pipelined_count_does_not_wait_for_a_commit_in_flight(tmp_path: Path) -> None:
    """/v1/status and RESP INFO count keys on the event loop: the count must take the
    writes being committed and those not handed over yet into account without waiting."""
    with _disk_held(tmp_path, [1, 3, 4]) as (engine, inner):
        engine.put(digest(1), b"new")  # present before and after
        engine.delete(digest(3))  # present, then gone
        engine.put(digest(5), b"new")  # absent, then present
        engine.commit_async(lambda error: None)  # in flight, held by the slow disk
        engine.put(digest(2), b"pending")  # not even handed over yet
        engine.delete(digest(4))
        engine.delete(digest(6))  # never there
        engine.put(digest(7), b"pending")
        engine.delete(digest(7))  # the newest write of a key counts
        engine.put(digest(7), b"again")
        started = time.monotonic()
        assert engine.count() == 4  # 1, 2, 5, 7
        assert time.monotonic() - started < 5  # did not wait for the held commit
        assert len(engine._writes) == 4  # the turn's writes were not handed over either
    try:
        assert engine.count() == 4 == inner.count()
    finally:
        engine.close()


def test_pipelined_wal_logs_off_the_loop_and_reads_see_batches_logged_not_checkpointed(
    tmp_path: Path,
) -> None:
    """Behind a PipelinedEngine a WalEngine's appends and fdatasyncs run on the writer thread,
    its checkpoints on its checkpointer thread. A batch reported durable but not checkpointed
    is only in the log (and maybe the checkpointer's open transaction): reads must still see
    it, and once a report says a checkpoint holds it they must find it in LMDB, through a
    read snapshot renewed at that moment."""
    import queue as queue_module
    import threading

    wal = WalEngine(tmp_path / "db", SMALL_MAP, segment_bytes=1 << 20, checkpoint_writes=6)
    engine = PipelinedEngine(wal)
    posted: queue_module.SimpleQueue = queue_module.SimpleQueue()
    engine.bind(posted.put)
    threads: list[int] = []
    real_commit = wal.commit

    def recorded_commit() -> None:
        threads.append(threading.get_ident())
        real_commit()

    wal.commit = recorded_commit  # type: ignore[method-assign]
    done: list[BaseException | None] = []

    def turn() -> None:
        engine.commit_async(done.append)
        wanted = len(done) + 1
        while len(done) < wanted:
            posted.get(timeout=10)()
        assert done[-1] is None

    checkpoints = wal.checkpoints
    try:
        engine.put(digest(1), b"one")
        engine.put(digest(2), b"two")
        engine.meta_put("x", b"meta")
        turn()  # 3 writes: logged
        engine.delete(digest(1))
        engine.put(digest(3), b"three")
        turn()  # 5 writes: logged
        assert wal.checkpoints == checkpoints and engine.pending() == 0
        assert engine.lmdb.get_committed(digest(2)) is None  # not in LMDB's snapshot yet
        assert engine.get(digest(1)) is None and engine.get(digest(2)) == b"two"
        assert engine.meta_get("x") == b"meta"
        expected = sorted([(digest(2), b"two"), (digest(3), b"three")])
        assert list(engine.scan(b"", b"")) == expected
        assert list(engine.scan(min(expected)[0], b"")) == expected
        assert list(engine.scan(b"", max(expected)[0])) == expected[:1]
        assert engine.count() == 2
        assert engine.get(digest(9)) is None  # opens a read snapshot before the checkpoint
        for i in (4, 5, 6):
            engine.put(digest(i), b"%d" % i)
        turn()  # 8 writes: a checkpoint starts, in the background
        assert wal.checkpoints == checkpoints + 1
        checkpointed = wal._epoch  # LMDB holds every epoch below this once it is done
        wal._checkpointer.wait_for(checkpointed)
        assert engine._logged.epochs() == [checkpointed - 1]  # no report has said so yet
        engine.put(digest(7), b"7")
        turn()  # its report says so: the epoch checkpointed is dropped, the snapshot renewed
        assert engine._logged.epochs() == [checkpointed]  # only the new batch
        assert engine.lmdb.get_committed(digest(2)) == b"two"
        assert engine.get(digest(2)) == b"two"
        assert engine.meta_get("x") == b"meta" and engine.get(digest(1)) is None
        assert engine.count() == 6 and len(list(engine.scan(b"", b""))) == 6
        assert threads and threading.get_ident() not in threads  # never on this thread
    finally:
        engine.close()
    reopened = LmdbEngine(tmp_path / "db", "fsync", map_size=SMALL_MAP)  # closed cleanly
    try:
        assert reopened.count() == 6 and reopened.meta_get("x") == b"meta"
    finally:
        reopened.close()
