"""Many real core.Nodes in one process on a virtual clock, wired by a seeded simulated network.

Deterministic: one seed fixes every choice (each concern draws from its own `random.Random`
seeded from it), and nothing iterates a set or a str-keyed hash order where order matters.
Events are delivered in order of their time, ties by the order they were scheduled. A
node's clock is virtual time plus its skew.

Durability follows the runtime's group commit. With `commit_delay` 0 the engine commits
after each handled event, before any of its effects leave, so a crash
(`MemoryEngine.crash()`; with `storage="wal"` a `WalEngine` on disk, killed and
reopened from its log) loses only in-memory state. With `commit_delay` > 0 it models the
pipelined commit (runtime.server since d365f8d): requests to peers and read answers
(`messages.UNGATED`) leave at once, every other send (acknowledgements, write replies) waits
for a commit that lands `commit_delay` later and covers every write made until then; a
crash before it loses those writes and the held sends. A send with a mark (`Send.mark`: a
put's result) leaves at once if the writes up to its mark are committed already.

Failure detection: when a node stops, every up node gets `PeerDown` for it (its connections
broke), and a message sent to a stopped node answers its sender with `PeerDown`; a restarted
node is announced with `PeerUp`. Partitions drop messages silently: requests then time out.
"""

from __future__ import annotations

import atexit
import hashlib
import heapq
import itertools
import os
import random
import shutil
import tempfile
import weakref
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from dynakv.config import NodeConfig
from dynakv.core.bugs import NO_BUGS, InjectedBugs
from dynakv.core.events import (
    Event,
    Log,
    PeerDown,
    PeerUp,
    Received,
    Send,
    SetTimer,
    Start,
    Stop,
    TimerFired,
)
from dynakv.core.node import Node
from dynakv.messages import UNGATED, ErrorReply, Message
from dynakv.sim.network import Link, Network
from dynakv.sim.options import SimOptions
from dynakv.storage.memory import MemoryEngine
from dynakv.storage.wal import WalEngine

REFUSED = "refused"  # error code the simulator answers a client with when its node is down


Storage = Literal["memory", "wal"]


_wal_root: str | None = None


def _remove(root: str, pid: int) -> None:
    """Delete `root`, in the process `pid` only (forked workers inherit every object and
    registration of their parent, and must not delete what the parent still uses)."""
    if os.getpid() == pid:
        shutil.rmtree(root, ignore_errors=True)


def sim_wal_root() -> str:
    """The directory the simulator's WalEngines live in: made by the first process that asks,
    removed when it exits. `run_seeds` asks before forking workers, so what they leave behind
    (a pool's workers are terminated, without clean-up) goes too."""
    global _wal_root
    if _wal_root is None:
        _wal_root = tempfile.mkdtemp(prefix="dynakv-sim-wal-")
        atexit.register(_remove, _wal_root, os.getpid())
    return _wal_root


class SimWalEngine(WalEngine):
    """A WalEngine in a temporary directory of its own, as the simulator needs it: `crash()`
    drops what a kill drops and reopens at once, replaying the log (the same object, as a
    crashed MemoryEngine stays usable); a deep copy (each run starts from a copy of the
    formed cluster) checkpoints and opens a copy of the directory."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or tempfile.mkdtemp(prefix="engine-", dir=sim_wal_root())
        weakref.finalize(self, _remove, self.root, os.getpid())
        self._open()

    def _open(self) -> None:
        WalEngine.__init__(self, self.root, map_size=1 << 30, segment_bytes=1 << 20)

    def crash(self) -> None:
        super().crash()
        self._open()

    def __deepcopy__(self, memo: dict[int, Any]) -> SimWalEngine:
        self.checkpoint()
        root = tempfile.mkdtemp(prefix="engine-", dir=sim_wal_root())
        for name in os.listdir(self.root):
            if name != "lock.mdb":  # readers' slots of this process: LMDB makes a new one
                shutil.copy2(os.path.join(self.root, name), root)
        return SimWalEngine(root)


def new_engine(storage: Storage) -> MemoryEngine | SimWalEngine:
    return SimWalEngine() if storage == "wal" else MemoryEngine()


def default_config(name: str) -> NodeConfig:
    # Small anti-entropy trees: a simulated node holds little data, and many runs build them.
    return NodeConfig(
        name=name,
        engine="memory",
        node_addr=f"{name}:7000",
        http_addr=f"{name}:8000",
        aae_segments=256,
        aae_branching=16,
    )


# A queue entry: (at, seq, target, event). seq is unique, so tuples never compare further;
# target "" marks harness code (a callable) rather than an event for a node.
_Scheduled = tuple[float, int, str, "Event | Callable[[], None]"]


class SimCluster:
    """A cluster of nodes plus client endpoints; `run_until` / `run_for` advance virtual time.

    Client endpoints are names starting with '#'. Replies to one are passed to the handler
    given to `attach_client`, or else collected in `inbox[name]`.
    """

    def __init__(
        self,
        names: list[str],
        seed: int = 0,
        config: Callable[[str], NodeConfig] | None = None,
        options: SimOptions | None = None,
        bugs: InjectedBugs = NO_BUGS,
        trace: Callable[[str], None] | None = None,
        storage: Storage = "memory",
    ) -> None:
        self.options = options or SimOptions()
        self.storage: Storage = storage
        self.seed = seed
        self.bugs = bugs
        self.trace = trace
        self._node_rng = random.Random(f"nodes-{seed}")
        self._clock_rng = random.Random(f"clocks-{seed}")
        self._make_config = config or default_config
        # Each node's data center, from its config: the network's delays depend on it.
        self.datacenters = {name: self._make_config(name).datacenter for name in names}
        self.network = Network(self.options, random.Random(f"network-{seed}"), self.datacenters)
        self.now = 0.0
        self._queue: list[_Scheduled] = []
        self._seq = itertools.count()
        self.names = list(names)
        self.engines: dict[str, MemoryEngine | SimWalEngine] = {}
        self.nodes: dict[str, Node] = {}
        self.skew: dict[str, float] = {}
        self.up: set[str] = set()
        self.inbox: dict[str, list[Message]] = {}  # client endpoints without a handler
        self.clients: dict[str, Callable[[float, Message], None]] = {}
        # A node's front end that takes some messages before its core does, as the runtime's
        # server takes the TransferBatch answers of its DynamoDB range reads: True = taken.
        self.intercepts: dict[str, Callable[[str, Message], bool]] = {}
        self.logs: list[tuple[float, str, Log]] = []
        self.timers: dict[tuple[str, str], float] = {}
        self.node_rngs: dict[str, random.Random] = {}  # the Random each node was given
        self._held: dict[str, list[Send]] = {}  # sends waiting for the node's next commit
        self._commit_token: dict[str, int] = {}  # a scheduled commit counts if it matches
        self._committing: set[str] = set()  # nodes with a commit scheduled
        self.wipes = 0
        self.delivered = 0
        self.crossings: dict[str, int] = {}  # messages sent between data centers, by type
        for name in names:
            self.engines[name] = new_engine(storage)
            self.start(name, join=None if name == names[0] else names[0])

    def reseed(
        self, seed: int, options: SimOptions, trace: Callable[[str], None] | None = None
    ) -> None:
        """Go on as run `seed` of a copy of this cluster: fresh random streams (the network's,
        the clocks', each node's own Random), these fault options, new clock skews."""
        self.seed = seed
        self.options = options
        self.trace = trace
        self._node_rng = random.Random(f"nodes-{seed}")
        self._clock_rng = random.Random(f"clocks-{seed}")
        self.network = Network(options, random.Random(f"network-{seed}"), self.datacenters)
        for name in sorted(self.node_rngs):
            self.node_rngs[name].seed(f"node-{name}-{seed}")
        for name in sorted(self.skew):
            self.skew[name] = self._clock_rng.uniform(0.0, options.clock_skew_max)
        self.logs.clear()
        self.wipes = self.delivered = 0
        for name in sorted(self.nodes):
            node = self.nodes[name]
            self.note(f"run {name} actor={node.actor} skew={self.skew[name]:.3f}")

    # --- node lifecycle --------------------------------------------------------------------
    def start(self, name: str, join: str | None = None) -> None:
        """Start (or restart) a node on its engine; `join` names a member to join through."""
        if self.options.clock_skew_max:
            self.skew[name] = self._clock_rng.uniform(0.0, self.options.clock_skew_max)
        else:
            self.skew[name] = 0.0
        rng = random.Random(self._node_rng.random())
        self.node_rngs[name] = rng
        node = Node(self._make_config(name), self.engines[name], rng, bugs=self.bugs)
        self.engines[name].commit()
        self.nodes[name] = node
        self.up.add(name)
        self.note(f"start {name} actor={node.actor} skew={self.skew[name]:.3f}")
        for other in sorted(self.up - {name}):
            self.deliver(other, PeerUp(name))
        join_addr = self.nodes[join].config.node_addr if join else None
        self._handle(name, Start(join=join_addr))

    def crash(self, name: str) -> None:
        """Stop the node abruptly: uncommitted writes and in-flight state are gone."""
        self.up.discard(name)
        self.engines[name].crash()
        self._held.pop(name, None)
        self._committing.discard(name)
        self._commit_token[name] = self._commit_token.get(name, 0) + 1
        self.timers = {k: v for k, v in self.timers.items() if k[0] != name}
        self.note(f"crash {name}")
        for other in sorted(self.up):
            self.deliver(other, PeerDown(name))

    def restart(self, name: str, wipe: bool = False) -> None:
        """Start a stopped node again; with `wipe`, on a new empty disk (a new incarnation).

        Like a service's command line, a restart always names a member to join through (an
        up one if any): a node that has not joined yet (its disk is new, or it stopped
        before the join completed) joins, instead of founding a cluster of its own.
        """
        if wipe:
            self.engines[name].close()
            self.engines[name] = new_engine(self.storage)
            self.wipes += 1
            self.note(f"wipe {name}")
        others = sorted(self.up - {name}) or sorted(set(self.names) - {name})
        self.start(name, join=others[0] if others else None)

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        """Drop every message from a to b (and b to a) without telling anyone."""
        links = {(a, b), (b, a)} if both_ways else {(a, b)}
        self.partition(self.network.cut | links, f"cut {a}{'-' if both_ways else '->'}{b}")

    def partition(self, cut: set[Link], description: str = "partition") -> None:
        self.network.partition(cut)
        self.note(description)

    def heal(self) -> None:
        self.network.heal()
        self.note("heal")

    def node_now(self, name: str) -> float:
        """The node's own clock: virtual time plus its skew."""
        return self.now + self.skew[name]

    def members_agree(self) -> bool:
        """Every up node has installed the same ring, owned by every node, and moves nothing."""
        names = sorted(self.names)
        rings = [self.nodes[name].ring for name in sorted(self.up)]
        return (
            bool(rings)
            and all(ring == rings[0] and ring.members() == names for ring in rings)
            and all(not self.nodes[name].status().get("transfers_pending") for name in self.up)
        )

    # --- time and delivery -----------------------------------------------------------------
    def deliver(self, target: str, event: Event, delay: float = 0.0) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), target, event))

    def call_at(self, at: float, action: Callable[[], None]) -> None:
        """Run `action` (harness code: a client, the nemesis) at virtual time `at`."""
        heapq.heappush(self._queue, (max(at, self.now), next(self._seq), "", action))

    def attach_client(self, client: str, handler: Callable[[float, Message], None]) -> None:
        self.clients[client] = handler

    def request(self, node: str, client: str, message: Message) -> None:
        """A client endpoint (name starting with '#') sends a message to a node."""
        if client not in self.clients:
            self.inbox.setdefault(client, [])
        self._transmit(client, node, message)

    def send_from(self, node: str, to: str, message: Message) -> None:
        """A node's front end sends `message` to node `to` over the peer link, as the node's
        own sends go (partitions, loss and stopped peers apply)."""
        self._send(node, Send(to, message))

    def in_flight(self, *types: type) -> int:
        """Messages of the given types sent and not yet delivered: on the network, or held by
        an up node until its next commit (the core sent them; the pipelined commit has not
        released them yet)."""
        on_network = sum(
            1
            for _, _, target, event in self._queue
            if target and type(event) is Received and isinstance(event.message, types)
        )
        held = sum(
            1
            for name in sorted(self._held)
            for send in self._held[name]
            if name in self.up and isinstance(send.message, types)
        )
        return on_network + held

    def run_until(self, predicate: Callable[[], bool], limit: float = 60.0) -> bool:
        deadline = self.now + limit
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                return False
            self.step()
        return True

    def run_for(self, seconds: float) -> None:
        deadline = self.now + seconds
        while self._queue and self._queue[0][0] <= deadline:
            self.step()
        self.now = deadline

    def step(self) -> None:
        at, _, target, event = heapq.heappop(self._queue)
        self.now = max(self.now, at)
        if not target:
            assert callable(event)
            event()
            return
        assert not callable(event)
        if target.startswith("#"):
            assert isinstance(event, Received)
            self._trace_delivery(event.source, target, event.message)
            handler = self.clients.get(target)
            if handler is None:
                self.inbox.setdefault(target, []).append(event.message)
            else:
                handler(self.now, event.message)
            return
        if target not in self.up:
            if isinstance(event, Received) and event.source.startswith("#"):
                rid = getattr(event.message, "rid", 0)
                refused = ErrorReply(rid, REFUSED, f"connection to {target} refused")
                self._transmit(target, event.source, refused)
            return
        if isinstance(event, TimerFired):
            key = (target, event.name)
            if self.timers.get(key) != at:
                return  # replaced or cancelled
            del self.timers[key]
        elif isinstance(event, Received):
            self._trace_delivery(event.source, target, event.message)
            intercept = self.intercepts.get(target)
            if intercept is not None and intercept(event.source, event.message):
                return
        self._handle(target, event)

    def _handle(self, name: str, event: Event) -> None:
        skew = self.skew[name]
        effects = self.nodes[name].handle(self.now + skew, event)
        pipelined = self.options.commit_delay > 0
        if not pipelined:
            self.engines[name].commit()
        for effect in effects:
            if isinstance(effect, Send):
                if not pipelined or type(effect.message) in UNGATED:
                    self._send(name, effect)
                elif effect.mark >= 0 and self.engines[name].durable(effect.mark):
                    self._send(name, effect)  # its writes are durable already
                else:
                    self._hold(name, effect)
            elif isinstance(effect, SetTimer):
                at = effect.at - skew
                self.timers[(name, effect.name)] = at
                heapq.heappush(self._queue, (at, next(self._seq), name, TimerFired(effect.name)))
            elif isinstance(effect, Log):
                self.logs.append((self.now, name, effect))
                if self.trace is not None:
                    fields = " ".join(f"{k}={v}" for k, v in sorted(effect.fields.items()))
                    self.note(f"log {name} {effect.level} {effect.event} {fields}")
            elif isinstance(effect, Stop):
                self.up.discard(name)  # the node left the cluster and shut itself down
        if pipelined and name in self.up:
            self._schedule_commit(name)

    def _hold(self, name: str, send: Send) -> None:
        """Keep a send until the node's next commit."""
        self._held.setdefault(name, []).append(send)

    def _schedule_commit(self, name: str) -> None:
        """As the runtime hands each turn's writes to its writer: if the node has writes or
        held sends and no commit under way, one lands `commit_delay` from now."""
        if name in self._committing or not (self._held.get(name) or self.engines[name].pending()):
            return
        self._committing.add(name)
        token = self._commit_token.setdefault(name, 0)
        self.call_at(self.now + self.options.commit_delay, lambda: self._commit(name, token))

    def _commit(self, name: str, token: int) -> None:
        if name not in self.up or self._commit_token.get(name) != token:
            return  # the node crashed first: its writes and held sends are gone
        self._committing.discard(name)
        self.engines[name].commit()
        for send in self._held.pop(name, []):
            self._send(name, send)

    def _send(self, sender: str, send: Send) -> None:
        to = send.to
        if to.startswith("@"):
            to = next(n for n, node in self.nodes.items() if node.config.node_addr == to[1:])
        if (sender, to) in self.network.cut:
            self._trace_loss(sender, to, send.message, "cut")
            return
        if not to.startswith("#") and to not in self.up:
            self.deliver(sender, PeerDown(to), self.network.delay())
            return
        self._transmit(sender, to, send.message)

    def _transmit(self, sender: str, to: str, message: Message) -> None:
        site = self.datacenters.get(sender)
        if site is not None and self.datacenters.get(to, site) != site:
            kind = type(message).__name__
            self.crossings[kind] = self.crossings.get(kind, 0) + 1
        fates = self.network.fates(sender, to)
        if not fates:
            self._trace_loss(sender, to, message, "lost")
        for delay in fates:
            self.deliver(to, Received(sender, message), delay)

    # --- trace -------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now:11.6f} * {text}")

    def _trace_delivery(self, source: str, target: str, message: Message) -> None:
        self.delivered += 1
        if self.trace is not None:
            self.trace(f"{self.now:11.6f} {source} -> {target} {describe(message)}")

    def _trace_loss(self, source: str, target: str, message: Message, why: str) -> None:
        if self.trace is not None:
            self.trace(f"{self.now:11.6f} {source} -x {target} {why} {describe(message)}")


def describe(message: Message) -> str:
    """A message on one line for the trace: its type and fields, long bytes as a digest."""
    parts = [type(message).__name__]
    for name in message.__struct_fields__:
        value = getattr(message, name)
        if isinstance(value, bytes):
            shown = _short_bytes(value)
        elif isinstance(value, list) and all(isinstance(v, bytes) for v in value):
            shown = "[" + ",".join(_short_bytes(v) for v in value) + "]"
        elif isinstance(value, msgspec.Struct):  # e.g. membership state: its type and digest
            digest = hashlib.md5(msgspec.msgpack.encode(value)).hexdigest()[:8]
            shown = f"{type(value).__name__}:{digest}"
        else:
            shown = repr(value)
            if len(shown) > 40:
                shown = shown[:24] + "~" + hashlib.md5(shown.encode()).hexdigest()[:8]
        parts.append(f"{name}={shown}")
    return " ".join(parts)


def _short_bytes(value: bytes) -> str:
    if len(value) <= 48:
        return repr(value)
    return f"<{len(value)}B:{hashlib.md5(value).hexdigest()[:8]}>"
