"""The "speed of light" of dynakv's design in Python: the least code doing the same I/O.

What it is for: evidence for an issue note. It runs nodes that do, per operation, the same
network and disk work a dynakv node does on the YCSB hot path, and nothing else, so the
throughput the real load generator measures against them bounds what *any* Python
implementation of this design (uvloop, one event loop per node, msgpack frames, LMDB with
an fsynced group commit on a writer thread) could reach on the same machine. It is not
product code and nothing in dynakv depends on it.

Per operation, a floor node does:

- frames: the 4-byte big-endian length + msgpack framing of `dynakv.runtime.transport`,
  the messages of `dynakv.messages` (so the unchanged `dynakv bench` client drives it), one
  socket write per connection per loop turn;
- membership: `ClientClusterInfo` is answered with a `ClusterInfo` whose `Membership` is
  built with dynakv's own membership and ring code (founder, then joins, each followed by
  the claimant's planned ring), so the client routes each key to the first replica of its
  partition exactly as it does with dynakv;
- put (coordinator): the raw value goes into the turn's write batch (LMDB key: the key's
  16-byte digest, as dynakv), a `ReplicaPut` (the value as `state`) goes to the other N-1
  replicas at the end of the turn, without waiting for the commit; `PutResult` is sent once
  the local batch is committed (fsync) and W-1 replicas acknowledged. A replica stores the
  value and sends `ReplicaPutReply` after its own commit. Coordinator and replicas read the
  key's current copy before writing (result unused): a Dynamo node must, to merge versions;
- get (coordinator): the local copy (write batch, then batches being committed, then one
  long-lived LMDB read transaction renewed after each commit) plus `ReplicaGet` to R-1 other
  replicas (the next ones in the preference list); `GetResult` when all have answered.
  Reads are not held back by commits;
- storage: LMDB opened by `dynakv.storage.lmdb.open_environment`, as LmdbEngine opens it, in
  `fsync` mode (sync and metasync on), group commit as in `dynakv.storage.pipelined`: the
  writes of one loop turn are one batch, the writer thread takes every batch queued by the
  time it is free into one transaction, commits it and reports back to the loop.

Not done (so the floor does less than dynakv): version vectors, contexts (replies carry an
empty one), sibling resolution, checksums, Merkle trees, hints, read repair, speculative
reads, request timeouts, metrics, admission control, gossip, failure detection, HTTP and
RESP listeners, background scans (anti-entropy, tombstone sweep). It stores and sends the
raw 1 KiB value where dynakv stores and sends a sealed record (bucket, key, encoded clock,
minted actor, CRC-32): roughly 5-15% more bytes per write there. It has no commit interval
(dynakv's `commit_interval`, 5 ms since 6fbfbc4): it commits as soon as the writer is free,
so it makes more, smaller commits than dynakv does now.

How to run it (from the repository root, with the project's venv):

    # a floor cluster driven by dynakv's own benchmark, which also prints the CPU per node
    # (any `dynakv bench` option; --local K starts K floor nodes instead of dynakv nodes):
    .venv/bin/python benchmarks/floor.py bench --local 3 --n 3 --r 2 --w 2 --records 20000 \
        --workload a --value-size 1024 --concurrency 64 --distribution zipfian --duration 20
    .venv/bin/python benchmarks/floor.py bench --local 1 --n 1 --r 1 --w 1 --records 20000 \
        --workload c --value-size 1024 --concurrency 64 --distribution zipfian --duration 20

    # or a standing floor cluster (prints its --nodes list; Ctrl-C stops it), then the
    # unchanged generator against it:
    .venv/bin/python benchmarks/floor.py cluster --nodes 3 --n 3 --r 2 --w 2 --dir /tmp/floor
    .venv/bin/python -m dynakv bench --nodes <the printed list> --r 2 --w 2 --records 20000 \
        --workload a --value-size 1024 --concurrency 64 --distribution zipfian --duration 20

    # one node by hand (what `cluster` starts):
    .venv/bin/python benchmarks/floor.py serve --name node1 --listen 127.0.0.1:7001 \
        --members node1=127.0.0.1:7001,node2=127.0.0.1:7002,node3=127.0.0.1:7003 \
        --data-dir /tmp/floor/node1 --n 3 --r 2 --w 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, cast

import lmdb

from dynakv import messages
from dynakv.core import membership as ms
from dynakv.local_cluster import LocalCluster, LocalNode, free_port
from dynakv.messages import (
    ClientClusterInfo,
    ClientGet,
    ClientPut,
    ClusterInfo,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
)
from dynakv.ring import key_digest
from dynakv.storage.lmdb import open_environment

LENGTH = 4
MAX_FRAME = messages.MAX_FRAME_BYTES
CLUSTER = "floor"
RING_SIZE = 64  # NodeConfig.ring_size's default

_encode = messages.encode
_decode = messages.decode


# --- storage: LMDB, group commit on a writer thread --------------------------------------------


class Batch:
    """The writes of one loop turn, and what to do once they are committed."""

    __slots__ = ("done", "error", "waiters", "writes")

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes] = {}
        self.waiters: list[Any] = []  # objects with .committed()
        self.done = False
        self.error: BaseException | None = None


class Store:
    """LMDB opened as LmdbEngine opens it; commits (and their fsync) on a writer thread."""

    def __init__(self, path: str, durability: str, loop: asyncio.AbstractEventLoop) -> None:
        os.makedirs(path, exist_ok=True)
        self.env = open_environment(path, durability == "fsync")
        self.db = self.env.open_db(b"objects")
        self.loop = loop
        self.batch = Batch()  # the current turn's
        self.inflight: deque[Batch] = deque()  # handed to the writer, not yet reported
        self.reader: lmdb.Transaction | None = None
        self.queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self.writer = threading.Thread(target=self._write_loop, name="floor-commit", daemon=True)
        self.writer.start()

    def get(self, digest: bytes) -> bytes | None:
        value = self.batch.writes.get(digest)
        if value is not None:
            return value
        for batch in reversed(self.inflight):
            value = batch.writes.get(digest)
            if value is not None:
                return value
        reader = self.reader
        if reader is None:
            reader = self.reader = self.env.begin(db=self.db)
        return reader.get(digest)

    def put(self, digest: bytes, value: bytes, waiter: Any) -> None:
        batch = self.batch
        batch.writes[digest] = value
        batch.waiters.append(waiter)

    def hand_over(self) -> None:
        """End of a loop turn: the turn's writes go to the writer as one batch."""
        batch = self.batch
        if batch.writes:
            self.batch = Batch()
            self.inflight.append(batch)
            self.queue.put(batch)

    def _write_loop(self) -> None:
        get, get_nowait, db = self.queue.get, self.queue.get_nowait, self.db
        while True:
            first = get()
            if first is None:
                return
            batches = [first]
            stop = False
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batches.append(more)
            error: BaseException | None = None
            try:
                with self.env.begin(write=True, db=db) as txn:
                    put = txn.put
                    for batch in batches:
                        for key, value in batch.writes.items():
                            put(key, value)
            except BaseException as exc:  # reported to the loop: replies become errors
                error = exc
            for batch in batches:
                batch.error = error
                batch.done = True
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self.loop.call_soon_threadsafe(self._report)
            if stop:
                return

    def _report(self) -> None:
        """On the loop: run the waiters of every committed batch, in commit order."""
        inflight = self.inflight
        if not inflight or not inflight[0].done:
            return
        reader, self.reader = self.reader, None  # reads must now see the commit
        if reader is not None:
            reader.abort()
        while inflight and inflight[0].done:
            batch = inflight.popleft()
            if batch.error is not None:
                print(f"floor: commit failed: {batch.error}", file=sys.stderr)
                continue  # nothing acknowledged; the clients time out
            for waiter in batch.waiters:
                waiter.committed()

    def close(self) -> None:
        self.hand_over()
        self.queue.put(None)
        self.writer.join(timeout=30)
        if self.reader is not None:
            self.reader.abort()
            self.reader = None
        self.env.close()


# --- frames ------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One TCP connection (client, peer in or peer out): frames in, frames out once a turn."""

    def __init__(self, node: FloorNode) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.outbox: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop sets TCP_NODELAY

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.node.lost(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset, end = 0, len(buffer)
        on_message = self.node.on_message
        while end - offset >= LENGTH:
            length = int.from_bytes(buffer[offset : offset + LENGTH], "big")
            if length > MAX_FRAME:
                assert self.transport is not None
                self.transport.abort()
                return
            start = offset + LENGTH
            if end - start < length:
                break
            offset = start + length
            on_message(self, _decode(bytes(buffer[start:offset])))
        if offset:
            del buffer[:offset]

    def send(self, message: Message) -> None:
        payload = _encode(message)
        self.outbox.append(len(payload).to_bytes(LENGTH, "big") + payload)
        self.node.dirty(self)

    def flush(self) -> None:
        outbox = self.outbox
        if not outbox:
            return
        if self.transport is not None and not self.closed:
            self.transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))
            outbox.clear()
        elif self.closed:
            outbox.clear()
        # not yet connected (an outbound peer link): kept until connection_made


# --- the node ----------------------------------------------------------------------------------


class PendingPut:
    """A coordinated put: reply once the local commit is done and `need` replicas acked."""

    __slots__ = ("acks", "conn", "local", "need", "node", "rid", "tag")

    def __init__(self, node: FloorNode, conn: Conn, rid: int, tag: int, need: int) -> None:
        self.node, self.conn, self.rid, self.tag = node, conn, rid, tag
        self.need, self.acks, self.local = need, 0, False

    def committed(self) -> None:
        self.local = True
        if self.acks >= self.need:
            self.finish()

    def acked(self) -> None:
        self.acks += 1
        if self.local and self.acks == self.need:
            self.finish()

    def finish(self) -> None:
        self.node.puts.pop(self.tag, None)
        self.conn.send(PutResult(self.rid, ""))


class ReplicaAck:
    """A replica's write: ack it to the coordinator once committed."""

    __slots__ = ("conn", "rid")

    def __init__(self, conn: Conn, rid: int) -> None:
        self.conn, self.rid = conn, rid

    def committed(self) -> None:
        self.conn.send(ReplicaPutReply(self.rid))


class PendingGet:
    __slots__ = ("conn", "need", "rid", "value")

    def __init__(self, conn: Conn, rid: int, value: bytes | None, need: int) -> None:
        self.conn, self.rid, self.value, self.need = conn, rid, value, need


def build_membership(members: list[tuple[str, str]], ring_size: int = RING_SIZE) -> ms.Membership:
    """What a dynakv cluster started like `dynakv bench --local` ends up with: the first
    node founds it, the others join in order, the claimant installs its planned ring after
    each join."""
    records = [ms.MemberRecord(name, addr, addr, "floor", "joining", 1) for name, addr in members]
    state = ms.new_cluster(CLUSTER, records[0], ring_size)
    for record in records[1:]:
        state = ms.request_join(state, record)
        ring = ms.plan_ring(state)
        if ring is not None:
            state = ms.install_ring(state, ring, ms.claimant(state))
    return state


class FloorNode:
    def __init__(
        self,
        name: str,
        members: list[tuple[str, str]],
        store: Store,
        loop: asyncio.AbstractEventLoop,
        n: int,
        r: int,
        w: int,
    ) -> None:
        self.name = name
        self.addrs = dict(members)
        self.state = build_membership(members)
        ring = self.state.ring.ring
        self.shift = 128 - (ring.size.bit_length() - 1)
        self.prefs = [tuple(ring.preference_list(p, n)) for p in range(ring.size)]
        self.others = [tuple(x for x in pref if x != name) for pref in self.prefs]
        self.store, self.loop = store, loop
        self.r, self.w = r, w
        self.links: dict[str, Conn] = {}
        self.puts: dict[int, PendingPut] = {}
        self.gets: dict[int, PendingGet] = {}
        self.tag = 0
        self._dirty: set[Conn] = set()
        self._scheduled = False

    # the end of a loop turn: sends go out, the turn's writes go to the writer
    def dirty(self, conn: Conn) -> None:
        self._dirty.add(conn)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.end_turn)

    def end_turn(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()
        self.store.hand_over()

    def lost(self, conn: Conn) -> None:
        for name, link in list(self.links.items()):
            if link is conn:
                del self.links[name]

    def link(self, name: str) -> Conn:
        conn = self.links.get(name)
        if conn is None:
            conn = self.links[name] = Conn(self)
            self.loop.create_task(self._connect(name, conn))
        return conn

    async def _connect(self, name: str, conn: Conn) -> None:
        host, _, port = self.addrs[name].rpartition(":")
        for _ in range(100):
            try:
                await self.loop.create_connection(lambda: conn, host, int(port))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            conn.flush()  # what was queued while connecting
            return
        print(f"floor: {self.name} cannot reach {name}", file=sys.stderr)

    # messages
    def on_message(self, conn: Conn, msg: Message) -> None:
        kind = type(msg)
        if kind is ClientGet:
            self.client_get(conn, cast(ClientGet, msg))
        elif kind is ClientPut:
            self.client_put(conn, cast(ClientPut, msg))
        elif kind is ReplicaPut:
            put = cast(ReplicaPut, msg)
            digest = key_digest(put.bucket, put.key)
            self.store.get(digest)  # read before write, as any merge of versions must
            self.store.put(digest, put.state, ReplicaAck(conn, put.rid))
            self.dirty(conn)  # so that the turn ends with a hand-over
        elif kind is ReplicaPutReply:
            pending = self.puts.get(cast(ReplicaPutReply, msg).rid)
            if pending is not None:
                pending.acked()
        elif kind is ReplicaGet:
            get = cast(ReplicaGet, msg)
            conn.send(ReplicaGetReply(get.rid, self.store.get(key_digest(get.bucket, get.key))))
        elif kind is ReplicaGetReply:
            self.replica_got(cast(ReplicaGetReply, msg))
        elif kind is ClientClusterInfo:
            conn.send(ClusterInfo(cast(ClientClusterInfo, msg).rid, self.state))
        else:
            rid = getattr(msg, "rid", 0)
            conn.send(ErrorReply(rid, "invalid_request", f"floor: no {kind.__name__}"))

    def client_put(self, conn: Conn, msg: ClientPut) -> None:
        if msg.delete:
            conn.send(ErrorReply(msg.rid, "invalid_request", "floor: no deletes"))
            return
        digest = key_digest(msg.bucket, msg.key)
        others = self.others[int.from_bytes(digest, "big") >> self.shift]
        w = msg.w or self.w
        self.tag += 1
        tag = self.tag
        pending = self.puts[tag] = PendingPut(self, conn, msg.rid, tag, w - 1)
        self.store.get(digest)  # read before write, as any merge of versions must
        self.store.put(digest, msg.value, pending)
        request = ReplicaPut(tag, msg.bucket, msg.key, msg.value)
        for name in others:
            self.link(name).send(request)
        if not others:
            self.dirty(conn)  # N=1: still end the turn with a hand-over

    def client_get(self, conn: Conn, msg: ClientGet) -> None:
        digest = key_digest(msg.bucket, msg.key)
        value = self.store.get(digest)
        need = (msg.r or self.r) - 1
        if need <= 0:
            conn.send(GetResult(msg.rid, [value] if value is not None else [],
                                [""] if value is not None else [], ""))  # fmt: skip
            return
        others = self.others[int.from_bytes(digest, "big") >> self.shift]
        self.tag += 1
        self.gets[self.tag] = PendingGet(conn, msg.rid, value, need)
        request = ReplicaGet(self.tag, msg.bucket, msg.key)
        for name in others[:need]:
            self.link(name).send(request)

    def replica_got(self, reply: ReplicaGetReply) -> None:
        pending = self.gets.get(reply.rid)
        if pending is None:
            return
        if pending.value is None:
            pending.value = reply.state
        pending.need -= 1
        if pending.need == 0:
            del self.gets[reply.rid]
            value = pending.value
            found = value is not None
            pending.conn.send(
                GetResult(pending.rid, [value] if found else [], [""] if found else [], "")  # type: ignore[list-item]
            )


# --- serve -------------------------------------------------------------------------------------


def parse_members(text: str) -> list[tuple[str, str]]:
    members = []
    for item in text.split(","):
        name, sep, addr = item.strip().partition("=")
        if not sep or not name or ":" not in addr:
            raise SystemExit(f"--members: expected NAME=HOST:PORT,..., got {item!r}")
        members.append((name, addr))
    return members


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    members = parse_members(args.members)
    store = Store(args.data_dir, args.durability, loop)
    node = FloorNode(args.name, members, store, loop, args.n, args.r, args.w)
    host, _, port = args.listen.rpartition(":")
    server = await loop.create_server(lambda: Conn(node), host, int(port), reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor: {args.name} listening on {args.listen}", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()
    store.close()


def cmd_serve(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(serve(args))


# --- a local floor cluster ---------------------------------------------------------------------


class FloorCluster(LocalCluster):
    """`dynakv bench`'s local cluster with floor nodes in place of dynakv nodes: started
    here; stopped by PID, measured and cleaned up by LocalCluster."""

    def start(self) -> None:
        if self.settings:
            raise RuntimeError("--node-setting does not apply to floor nodes")
        if self.durability not in ("fsync", "os"):
            raise RuntimeError("floor nodes support --durability fsync or os")
        self.root.mkdir(parents=True, exist_ok=True)
        members = [(f"node{i}", f"127.0.0.1:{free_port()}") for i in range(1, self.count + 1)]
        spec = ",".join(f"{name}={addr}" for name, addr in members)
        for name, addr in members:
            log = self.root / f"{name}.log"
            args = [
                sys.executable, os.path.abspath(__file__), "serve",
                "--name", name, "--listen", addr, "--members", spec,
                "--data-dir", str(self.root / name), "--durability", self.durability,
                "--n", str(self.n), "--r", str(self.r), "--w", str(self.w),
            ]  # fmt: skip
            with open(log, "ab") as out:
                # a session of its own: Ctrl-C reaches only us, and we stop it by PID
                proc = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            # kept at once, so that stop() reaches it whatever happens next
            self.nodes.append(LocalNode(name, addr, "(none)", log, proc))
        for node in self.nodes:
            _wait_listening(node)


def _wait_listening(node: LocalNode, timeout: float = 20.0) -> None:
    assert node.proc is not None
    host, _, port = node.node_addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise RuntimeError(
                f"{node.name} exited: {node.log.read_text(errors='replace')[-2000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{node.name} did not start listening on {node.node_addr}")


def cmd_cluster(args: argparse.Namespace) -> None:
    cluster = FloorCluster(args.nodes, args.dir, args.durability, args.n, args.r, args.w)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell that starts us in the background ignores it
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupted)
    try:
        cluster.start()
        for node in cluster.nodes:
            print(f"  {node.name}: {node.node_addr} pid {node.proc.pid}", flush=True)  # type: ignore[union-attr]
        print(
            f"N={cluster.n} R={cluster.r} W={cluster.w} {args.durability}, data in {cluster.root}"
        )
        print("--nodes " + ",".join(cluster.node_addrs), flush=True)
        print("Ctrl-C (or SIGTERM) stops the nodes.", flush=True)
        while all(node.proc is not None and node.proc.poll() is None for node in cluster.nodes):
            time.sleep(0.5)
        print("a node exited", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for node in cluster.nodes:
            print(f"  {node.name}: CPU {node.cpu_seconds():.1f} s in all", flush=True)
        cluster.stop()


def cmd_bench(argv: list[str]) -> None:
    """`dynakv bench` itself, its --local K starting floor nodes instead of dynakv nodes."""
    from dynakv import bench as bench_mod
    from dynakv import cli

    bench_mod.LocalCluster = FloorCluster  # type: ignore[misc]
    cli.bench.main(args=argv, prog_name="floor.py bench")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        cmd_bench(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="dynakv bench with --local K floor nodes (dynakv bench --help)")
    serve_p = sub.add_parser("serve", help="run one floor node")
    serve_p.add_argument("--name", required=True)
    serve_p.add_argument("--listen", required=True, help="HOST:PORT")
    serve_p.add_argument("--members", required=True, help="NAME=HOST:PORT,... (all, in order)")
    serve_p.add_argument("--data-dir", required=True)
    cluster_p = sub.add_parser("cluster", help="start K floor nodes until Ctrl-C")
    cluster_p.add_argument("--nodes", type=int, default=3)
    cluster_p.add_argument("--dir", help="data directory (default: a temporary one, removed)")
    for p in (serve_p, cluster_p):
        p.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    serve_p.add_argument("--n", type=int, default=3)
    serve_p.add_argument("--r", type=int, default=2)
    serve_p.add_argument("--w", type=int, default=2)
    cluster_p.add_argument("--n", type=int, help="default min(3, nodes)")
    cluster_p.add_argument("--r", type=int, help="default n // 2 + 1")
    cluster_p.add_argument("--w", type=int, help="default n // 2 + 1")
    args = parser.parse_args()
    if args.command == "serve":
        cmd_serve(args)
    elif args.command == "cluster":
        cmd_cluster(args)


if __name__ == "__main__":
    main()
