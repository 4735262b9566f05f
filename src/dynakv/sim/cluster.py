"""Many real core.Nodes in one process on a virtual clock, wired by an in-memory network.

Deterministic: one seed fixes every choice. Messages are delivered in order of their delivery
time (ties by send order); a node that is down loses its uncommitted writes and every
message sent to it. The storage engine commits after each handled event, before the effects
of that event leave the node, as the runtime's group commit does.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dynakv.config import NodeConfig
from dynakv.core.events import Event, Log, PeerDown, Received, Send, SetTimer, Start, TimerFired
from dynakv.core.node import Node
from dynakv.messages import Message
from dynakv.storage.memory import MemoryEngine


def default_config(name: str) -> NodeConfig:
    return NodeConfig(
        name=name, engine="memory", node_addr=f"{name}:7000", http_addr=f"{name}:8000"
    )


@dataclass(order=True)
class _Scheduled:
    at: float
    seq: int
    target: str = field(compare=False)
    event: Event = field(compare=False)


class SimCluster:
    """A cluster of nodes plus client endpoints; `run_until` advances virtual time."""

    def __init__(
        self,
        names: list[str],
        seed: int = 0,
        config: Callable[[str], NodeConfig] | None = None,
        latency: Callable[[random.Random], float] = lambda rng: rng.uniform(0.0005, 0.002),
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self._queue: list[_Scheduled] = []
        self._seq = itertools.count()
        self._make_config = config or default_config
        self.engines: dict[str, MemoryEngine] = {}
        self.nodes: dict[str, Node] = {}
        self.up: set[str] = set()
        self.inbox: dict[str, list[Message]] = {}  # client endpoints ("#...") -> replies
        self.logs: list[tuple[float, str, Log]] = []
        self.timers: dict[tuple[str, str], float] = {}
        self.cut_links: set[tuple[str, str]] = set()  # (from, to): messages silently dropped
        for name in names:
            self.engines[name] = MemoryEngine()
            self.start(name, join=None if name == names[0] else names[0])

    # --- node lifecycle --------------------------------------------------------------------
    def start(self, name: str, join: str | None = None) -> None:
        node = Node(self._make_config(name), self.engines[name], random.Random(self.rng.random()))
        self.engines[name].commit()
        self.nodes[name] = node
        self.up.add(name)
        join_addr = self.nodes[join].config.node_addr if join else None
        self._handle(name, Start(join=join_addr))

    def crash(self, name: str) -> None:
        """Stop the node abruptly: uncommitted writes and in-flight state are gone."""
        self.up.discard(name)
        self.engines[name].crash()
        self.timers = {k: v for k, v in self.timers.items() if k[0] != name}
        for other in self.up:
            self.deliver(other, PeerDown(name))

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        """Drop every message from a to b (and b to a) without telling anyone."""
        self.cut_links.add((a, b))
        if both_ways:
            self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()

    # --- time and delivery -----------------------------------------------------------------
    def deliver(self, target: str, event: Event, delay: float = 0.0) -> None:
        heapq.heappush(self._queue, _Scheduled(self.now + delay, next(self._seq), target, event))

    def request(self, node: str, client: str, message: Message) -> None:
        """A client endpoint (name starting with '#') sends a message to a node."""
        self.inbox.setdefault(client, [])
        self.deliver(node, Received(client, message), self.latency(self.rng))

    def run_until(self, predicate: Callable[[], bool], limit: float = 60.0) -> bool:
        deadline = self.now + limit
        while not predicate():
            if not self._queue or self._queue[0].at > deadline:
                return False
            self.step()
        return True

    def run_for(self, seconds: float) -> None:
        deadline = self.now + seconds
        while self._queue and self._queue[0].at <= deadline:
            self.step()
        self.now = deadline

    def step(self) -> None:
        item = heapq.heappop(self._queue)
        self.now = max(self.now, item.at)
        if item.target.startswith("#"):
            assert isinstance(item.event, Received)
            self.inbox.setdefault(item.target, []).append(item.event.message)
            return
        if item.target not in self.up:
            return
        if isinstance(item.event, TimerFired):
            key = (item.target, item.event.name)
            if self.timers.get(key) != item.at:
                return  # replaced or cancelled
            del self.timers[key]
        self._handle(item.target, item.event)

    def _handle(self, name: str, event: Event) -> None:
        effects = self.nodes[name].handle(self.now, event)
        self.engines[name].commit()
        for effect in effects:
            if isinstance(effect, Send):
                self._send(name, effect)
            elif isinstance(effect, SetTimer):
                self.timers[(name, effect.name)] = effect.at
                heapq.heappush(
                    self._queue,
                    _Scheduled(effect.at, next(self._seq), name, TimerFired(effect.name)),
                )
            elif isinstance(effect, Log):
                self.logs.append((self.now, name, effect))

    def _send(self, sender: str, send: Send) -> None:
        to = send.to
        if to.startswith("@"):
            to = next(n for n, node in self.nodes.items() if node.config.node_addr == to[1:])
        if (sender, to) in self.cut_links:
            return
        if not to.startswith("#") and to not in self.up:
            self.deliver(sender, PeerDown(to), self.latency(self.rng))
            return
        self.deliver(to, Received(sender, send.message), self.latency(self.rng))
