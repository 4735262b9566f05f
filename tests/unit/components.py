"""Building one core component alone, for tests that feed it events and check its effects:
a MemoryEngine, a ClusterView of a formed cluster, and the shared ids and log list."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dynakv import versions
from dynakv.bucket_types import BucketType
from dynakv.config import NodeConfig
from dynakv.core import membership as ms
from dynakv.core.admission import BackgroundBudget
from dynakv.core.component import Context
from dynakv.core.events import Effect, Log, Send
from dynakv.core.handoff import HintStore
from dynakv.core.membership import MemberRecord, Membership
from dynakv.core.replica import ReplicaStore
from dynakv.core.view import ClusterView, RequestIds
from dynakv.messages import Message
from dynakv.storage.memory import MemoryEngine

NAMES = ["n1", "n2", "n3", "n4", "n5"]


def record(name: str, datacenter: str = "dc1", rack: str = "rack1") -> MemberRecord:
    return MemberRecord(
        name, f"{name}:7000", f"{name}:8000", "inc0", "joining", 0, datacenter, rack
    )


def formed(
    names: list[str],
    ring_size: int = 16,
    cluster: str = "dynakv",
    places: dict[str, tuple[str, str]] | None = None,
    types: tuple[BucketType, ...] = (),
) -> Membership:
    """A cluster of `names`, every one up and owning partitions (the installed ring), each
    in its place (data center, rack) if given, with the bucket types its founder seeded."""
    where = places or {}
    founder = record(names[0], *where.get(names[0], ("dc1", "rack1")))
    state = ms.new_cluster(cluster, founder, ring_size, types)
    for name in names[1:]:
        state = ms.request_join(state, record(name, *where.get(name, ("dc1", "rack1"))))
    plan = ms.plan_ring(state)
    return state if plan is None else ms.install_ring(state, plan, names[0])


@dataclass
class Parts:
    """What a component is built from: one node's config, storage and shared view."""

    config: NodeConfig
    engine: MemoryEngine
    view: ClusterView
    store: ReplicaStore
    hints: HintStore
    budget: BackgroundBudget
    ids: RequestIds = field(default_factory=lambda: RequestIds(100))
    logs: list[Log] = field(default_factory=list)

    @property
    def context(self) -> Context:
        return Context(self.config, self.view, self.ids, self.logs)


def parts(
    name: str = "n1",
    names: list[str] | None = None,
    places: dict[str, tuple[str, str]] | None = None,
    **config: object,
) -> Parts:
    names = names or NAMES[:3]
    base = NodeConfig(name=name, engine="memory", node_addr=f"{name}:7000", ring_size=16)
    node_config = dataclasses.replace(base, **config)  # type: ignore[arg-type]
    engine = MemoryEngine()
    state = formed(names, node_config.ring_size, places=places, types=node_config.bucket_types())
    view = ClusterView(node_config, engine, state)
    store = ReplicaStore(engine)
    hints = HintStore(engine, node_config.hint_budget_bytes)
    budget = BackgroundBudget(node_config.background_p99_threshold)
    return Parts(node_config, engine, view, store, hints, budget)


def sends(effects: list[Effect], kind: type | None = None) -> list[tuple[str, Message]]:
    """(destination, message) of each Send, of type `kind` if given."""
    return [
        (e.to, e.message)
        for e in effects
        if isinstance(e, Send) and (kind is None or isinstance(e.message, kind))
    ]


def key_placed(view: ClusterView, first: str, bucket: str = "b") -> str:
    """A key whose first primary is `first`."""
    return next(
        k for k in (f"k{i}" for i in range(1000)) if view.placement(bucket, k).primaries[0] == first
    )


def key_not_replicated_by(view: ClusterView, name: str, bucket: str = "b") -> str:
    return next(
        k for k in (f"k{i}" for i in range(1000)) if name not in view.placement(bucket, k).primaries
    )


def first_write(value: bytes, actor: str = "n9@x.0") -> versions.Clock:
    """The state of a key after one write of `value`, dotted by `actor`, on no history."""
    return versions.update(versions.new(None, versions.Sibling(value)), None, actor)


def state_of(value: bytes, actor: str = "n9@x.0") -> bytes:
    """`first_write`, encoded as replicas send it."""
    return versions.encode(first_write(value, actor))
