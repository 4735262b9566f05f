"""Membership on the wire: joining, gossip rounds, operators' leave and remove, bucket type
changes, and the claimant's duty of planning rings (and raising the replication) and
installing them once their data has moved.

The membership itself is a CRDT (core/membership.py); this component decides when to merge,
adopt and spread it. Pure: time is the `now` passed in, randomness the node's Random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from dynakv import bucket_types as bt
from dynakv.claim import claim
from dynakv.config import NodeConfig
from dynakv.core import membership as ms
from dynakv.core import moves as mv
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer, Stop
from dynakv.core.failure import Liveness
from dynakv.core.membership import MemberRecord, Membership
from dynakv.errors import ClusterError, InvalidRequest
from dynakv.messages import (
    ClientBucketChange,
    ClientClusterChange,
    ClientClusterInfo,
    ClusterInfo,
    ErrorReply,
    Gossip,
    JoinReply,
    JoinRequest,
    Message,
)
from dynakv.ring import Ring
from dynakv.storage.engine import Engine

JOIN_RETRY = 2.0  # seconds between two join requests while no answer came


@dataclass(frozen=True, slots=True)
class TypeWait:
    """An operator's bucket type change, answered once every member that is up holds it."""

    source: str
    rid: int
    changed: bt.BucketType
    deadline: float


def load_membership(engine: Engine, config: NodeConfig, me: MemberRecord) -> Membership:
    """The membership persisted in the engine (with this node's record refreshed), or, for a
    node that never joined, a cluster of its own at epoch 0."""
    raw = engine.meta_get("membership")
    if raw is not None:
        state = ms.refresh_self(ms.decode(raw), me)
        engine.meta_put("membership", ms.encode(state))
        return state
    # Not a member of anything yet: epoch 0 until a cluster is founded or joined.
    return Membership(
        config.cluster, (me,), ms.RingRecord(0, claim([config.name], config.ring_size), config.name)
    )


def member_record(config: NodeConfig, incarnation: str) -> MemberRecord:
    """This node as a joining member."""
    return MemberRecord(
        config.name,
        config.node_addr,
        config.http_addr,
        incarnation,
        "joining",
        0,
        config.datacenter,
        config.rack,
    )


class Gossiper(Component):
    """Join, gossip, cluster changes and the claimant: everything that changes membership."""

    def __init__(
        self, context: Context, liveness: Liveness, me: MemberRecord, rng: random.Random
    ) -> None:
        super().__init__(context)
        self.liveness = liveness
        self.me = me
        self.rng = rng
        self.join_target: str | None = None
        self._join_sent_at = float("-inf")
        self._file_compared = False  # this node's [defaults]/[buckets] against the cluster's
        self._last_plan: tuple[object, Ring | None] | None = None  # see _plan
        self._type_waits: list[TypeWait] = []

    # --- joining ---------------------------------------------------------------------------
    def start(self, now: float, join: str | None) -> list[Effect]:
        """Found a cluster (no `join` and none joined yet), or join through `join`; then tell
        every member this node is (back) up, so they stop treating it as down."""
        view = self.view
        effects: list[Effect] = []
        config = self.config
        me = ms.member(view.state, view.name)
        if view.epoch != 0 and me is not None and me.status == "removed":
            return self._left_earlier()
        if view.epoch == 0 and join is None:
            types = config.bucket_types()
            view.adopt(ms.new_cluster(config.cluster, self.me, config.ring_size, types))
            self.logs.append(Log("info", "cluster_created", {"cluster": view.state.cluster}))
        if join is not None and view.epoch == 0:
            self.join_target = "@" + join
            effects.extend(self._send_join(now))
        self._compare_file()
        self._acknowledge()
        effects.extend(Send(peer, Gossip(view.state)) for peer in view.peers())
        return effects

    def _left_earlier(self) -> list[Effect]:
        """This node left the cluster (or was removed) before this start. Its data is out of
        date (tombstones reaped since may be missing), so it does not rejoin with it."""
        self.view.stopping = True
        fields = {"cluster": self.view.state.cluster, "data_dir": self.config.data_dir}
        self.logs.append(Log("error", "left_cluster_earlier", fields))
        reason = (
            f"{self.view.name} left cluster {self.view.state.cluster} (or was removed) before "
            f"this start; to add it again, delete {self.config.data_dir} and join"
        )
        return [Stop(reason, status=1)]

    def retry_join(self, now: float) -> list[Effect]:
        if (
            self.join_target is not None
            and self.view.epoch == 0
            and now - self._join_sent_at >= JOIN_RETRY
        ):
            return self._send_join(now)
        return []

    def _send_join(self, now: float) -> list[Effect]:
        assert self.join_target is not None
        self._join_sent_at = now
        message = JoinRequest(rid=self.ids.next(), member=self.me, cluster=self.config.cluster)
        return [Send(self.join_target, message)]

    def on_join_request(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, JoinRequest)
        view = self.view
        joiner = msg.member
        if msg.cluster != view.state.cluster:
            raise ClusterError(
                f"node {joiner.name} belongs to cluster {msg.cluster!r}; "
                f"this is cluster {view.state.cluster!r}"
            )
        existing = ms.member(view.state, joiner.name)
        if (
            existing is not None
            and existing.status in ("up", "joining")
            and existing.node_addr != joiner.node_addr
            and (existing.name == view.name or existing.name not in view.down)
        ):
            raise ClusterError(
                f"name {joiner.name!r} is in use by a member up at {existing.node_addr}"
            )
        state = view.state
        if existing is not None and existing.node_addr != joiner.node_addr:
            # The old holder of the name is down: the name moves to the new address.
            state = ms.mark_removed(state, joiner.name)
        view.adopt(ms.request_join(state, joiner))
        self.logs.append(
            Log("info", "member_joining", {"name": joiner.name, "addr": joiner.node_addr})
        )
        self.liveness.reachable(joiner.name)
        effects = self.claim()
        effects.extend(Send(peer, Gossip(view.state)) for peer in view.peers())
        effects.append(Send(source, JoinReply(msg.rid, view.state)))
        return effects

    def on_join_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, JoinReply)
        view = self.view
        if msg.state.cluster == view.state.cluster:
            merged = ms.merge(view.state, msg.state)
            if merged is not view.state:
                view.adopt(merged)
                self.logs.append(Log("info", "joined", {"cluster": msg.state.cluster}))
                self._compare_file()
                if self._acknowledge():
                    return [Send(source, Gossip(view.state))]
        return []

    def on_error(self, msg: ErrorReply) -> list[Effect]:
        """An error no pending request claimed. A refused join (the name is in use, the
        target is of another cluster) stops the process: asking again changes nothing."""
        if self.join_target is not None and self.view.epoch == 0 and msg.code == ClusterError.code:
            self.logs.append(Log("error", "join_refused", {"reason": msg.message}))
            return [Stop(f"join refused: {msg.message}", status=1)]
        return []

    # --- gossip ----------------------------------------------------------------------------
    def on_tick(self, now: float) -> list[Effect]:
        """Each gossip interval: the claimant's duty, a finished leave, one push-pull."""
        effects: list[Effect] = [SetTimer("gossip", now + self.config.gossip_interval)]
        self._acknowledge()  # a member removed may leave a type held by every other one
        effects.extend(self._answer_type_waits(now))
        effects.extend(self.claim())
        effects.extend(self._leave_when_done(now))
        peers = self.view.peers()
        if peers:
            effects.append(Send(self.rng.choice(peers), Gossip(self.view.state)))
        return effects

    def on_gossip(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, Gossip)
        view = self.view
        if msg.state.cluster != view.state.cluster:
            self.logs.append(
                Log("warning", "foreign_gossip", {"from": source, "cluster": msg.state.cluster})
            )
            return []
        self.liveness.reachable(source)
        merged = ms.merge(view.state, msg.state)
        effects: list[Effect] = []
        if merged is not view.state:
            view.adopt(merged)
            self._compare_file()
            self._acknowledge()
            effects.extend(self.claim())
        if view.state != msg.state:
            effects.append(Send(source, Gossip(view.state)))
        effects.extend(self._answer_type_waits(now))
        return effects

    def on_cluster_info(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientClusterInfo)
        return [Send(source, ClusterInfo(msg.rid, self.view.state))]

    def on_cluster_change(self, now: float, source: str, msg: Message) -> list[Effect]:
        """An operator's leave or remove, through any member."""
        assert isinstance(msg, ClientClusterChange)
        view = self.view
        if msg.op == "leave":
            state = ms.request_leave(view.state, msg.name)
        elif msg.op == "remove":
            target = ms.member(view.state, msg.name)
            if (
                target is not None
                and target.status != "removed"
                and (msg.name == view.name or msg.name not in view.down)
            ):
                raise ClusterError(
                    f"{msg.name} is up: remove takes out a dead node; use leave to hand off "
                    f"a live node's partitions"
                )
            state = ms.mark_removed(view.state, msg.name)
        else:
            raise InvalidRequest(f"unknown cluster change {msg.op!r}; use leave or remove")
        view.adopt(state)
        self.logs.append(Log("info", f"member_{msg.op}", {"name": msg.name}))
        effects = self.claim()
        effects.extend(Send(peer, Gossip(view.state)) for peer in view.peers())
        effects.append(Send(source, ClusterInfo(msg.rid, view.state)))
        return effects

    def on_bucket_change(self, now: float, source: str, msg: Message) -> list[Effect]:
        """An operator creates or updates a bucket type, through any member."""
        assert isinstance(msg, ClientBucketChange)
        view = self.view
        if view.epoch == 0:
            raise InvalidRequest("this node has not joined a cluster yet")
        changed = bt.change(view.state.types, msg.name, msg.props, msg.mode)
        if changed.datacenters:
            sizes: dict[str, int] = {}
            for member in view.state.members:
                if member.status != "removed":
                    sizes[member.datacenter] = sizes.get(member.datacenter, 0) + 1
            bt.check_datacenters(changed, sizes)
        existing = next((t for t in view.state.types if t.name == msg.name), None)
        effects: list[Effect] = []
        if existing is not None and not bt.differences(existing, changed):
            changed = existing  # nothing to change: answered once every member holds it
        else:
            view.adopt(ms.set_type(view.state, changed))
            self._acknowledge()
            fields = {"name": changed.name, "version": changed.version}
            fields.update({p: getattr(changed, p) for p in bt.PROPS})
            self.logs.append(Log("info", "bucket_type_set", fields))
            effects.extend(self.claim())
            effects.extend(Send(peer, Gossip(view.state)) for peer in view.peers())
        deadline = now + self.config.request_timeout
        self._type_waits.append(TypeWait(source, msg.rid, changed, deadline))
        effects.extend(self._answer_type_waits(now))
        return effects

    def _acknowledge(self) -> bool:
        """Record that this node holds every bucket type it knows (bucket_types.held) and
        has adopted the ring being moved to (membership.saw_next); whether that changed the
        membership."""
        view = self.view
        state = mv.saw_next(view.state, view.name)
        if state.types:
            members = [m.name for m in state.members if m.status != "removed"]
            types = tuple(bt.held(t, view.name, members) for t in state.types)
            if not all(a is b for a, b in zip(types, state.types, strict=True)):
                state = msgspec.structs.replace(state, types=types)
        if state is view.state:
            return False
        view.adopt(state)
        return True

    def _answer_type_waits(self, now: float) -> list[Effect]:
        """Answer the bucket type changes that every member up now holds, that a newer
        change replaced, or that lost to a concurrent change; and, at their deadline, those
        still waiting for a member (their answer names it)."""
        if not self._type_waits:
            return []
        view = self.view
        members = [
            m.name
            for m in view.state.members
            if m.status != "removed" and (m.name == view.name or m.name not in view.down)
        ]
        effects: list[Effect] = []
        waiting: list[TypeWait] = []
        for wait in self._type_waits:
            mine = wait.changed
            now_type = next((t for t in view.state.types if t.name == mine.name), None)
            assert now_type is not None  # types are never dropped
            if now_type.version == mine.version and bt.differences(now_type, mine):
                text = (
                    f"a concurrent change of bucket type {mine.name!r} won: it is now "
                    + ", ".join(f"{p}={getattr(now_type, p)}" for p in bt.PROPS)
                )
                effects.append(Send(wait.source, ErrorReply(wait.rid, ClusterError.code, text)))
            elif (
                now_type.version > mine.version
                or not bt.holders_missing(now_type, members)
                or now >= wait.deadline
            ):
                effects.append(Send(wait.source, ClusterInfo(wait.rid, view.state)))
            else:
                waiting.append(wait)
        self._type_waits = waiting
        return effects

    def _compare_file(self) -> None:
        """Once a node knows the cluster's bucket types: a line for each bucket whose
        properties in this node's file differ from the cluster's (the cluster's rule)."""
        state = self.view.state
        if self._file_compared or not state.types:
            return
        self._file_compared = True
        for mine in self.config.bucket_types():
            theirs = next((t for t in state.types if t.name == mine.name), None)
            differences = bt.differences(theirs, mine)
            if differences:
                fields: dict[str, object] = {"bucket": mine.name}
                fields.update(differences)
                self.logs.append(Log("warning", "bucket_config_differs", fields))

    # --- the claimant ----------------------------------------------------------------------
    def claim(self) -> list[Effect]:
        """The claimant's duty: plan rings, start transfers, install the ring when data moved,
        raise or lower the replication to what the bucket types ask for (membership
        .storage_rule), through a transfer to the same owners."""
        view = self.view
        state = view.state
        if state.ring.epoch == 0 or ms.claimant(state) != view.name:
            return []
        seeded = not state.types
        if seeded:  # a cluster made before bucket types: this node's file seeds them
            view.adopt(_seeded(state, self.config.bucket_types()))
            self._acknowledge()
            state = view.state
        placed = view.placed_replication
        placed_dcs = view.placed_datacenters
        # A ring whose owners change keeps at least the replicas it has: the replication
        # falls only in a transfer of its own (below), in which the remaining replicas
        # pull from the surplus ones first.
        wanted = max(placed, view.wanted_replication)
        wanted_dcs = bt.widest(placed_dcs, view.wanted_datacenters)
        rule = (view.wanted_replication, view.wanted_datacenters)
        plan = self._plan(state)
        if plan is not None:
            same_owners = plan.owners == state.ring.ring.owners
            ring = state.ring.ring
            if same_owners and not mv.replica_moves(
                ring, plan, placed, wanted, placed_dcs, wanted_dcs
            ):
                new = ms.install_ring(state, plan, view.name, wanted, wanted_dcs)
            else:
                new = ms.start_transfer(state, plan, view.name, wanted, wanted_dcs)
                moves = len(mv.pending_moves(new, view.legacy_replication))
                self.logs.append(Log("info", "transfer_planned", {"moves": moves}))
        elif state.ring.next is None and rule != (placed, placed_dcs):
            # A transfer to the same owners at the types' rule: new replicas pull what they
            # lack; where it falls, the remaining replicas pull from the surplus ones, and
            # the lower rule serves a partition only once they have (mv.replica_moves).
            n, dcs = rule
            new = ms.start_transfer(state, state.ring.ring, view.name, n, dcs)
            moves = len(mv.pending_moves(new, view.legacy_replication))
            if not moves:  # nothing to fill (fewer members than n): just record it
                new = ms.install_ring(state, state.ring.ring, view.name, n, dcs)
            fields: dict[str, object] = {"from": placed, "to": n, "moves": moves}
            if dcs != placed_dcs:
                fields["datacenters"] = ",".join(f"{dc}={c}" for dc, c in dcs)
            falls = mv.lowered(placed, n, placed_dcs, dcs)
            self.logs.append(
                Log("info", "replication_lowered" if falls else "replication_raised", fields)
            )
        elif (
            state.ring.next is not None
            and not view.pending_moves
            and all(x in view.down for x in mv.next_unseen(state))
        ):
            # Every member up has adopted ring.next, so none counts over the installed ring
            # alone any more: installing it cannot leave two members with disjoint lists.
            new = ms.finish_transfer(state, view.name)
            self.logs.append(Log("info", "ring_installed", {"epoch": new.ring.epoch}))
        elif seeded:  # tell every member at once, as for an operator's change
            return [Send(peer, Gossip(view.state)) for peer in view.peers()]
        else:
            return []
        view.adopt(mv.saw_next(new, view.name))
        return [Send(peer, Gossip(view.state)) for peer in view.peers()]

    def _plan(self, state: Membership) -> Ring | None:
        """plan_ring(state), remembered for the last ring and members it was asked about:
        the claimant asks every gossip round, and with hundreds of nodes a claim that finds
        nothing to change still costs tens of milliseconds of the event loop (Q=1024, 500
        nodes: 44 ms; Q=4096: 140 ms)."""
        key = (state.ring, state.members)
        if self._last_plan is None or self._last_plan[0] != key:
            self._last_plan = (key, ms.plan_ring(state))
        return self._last_plan[1]

    def transferred(self, partition: int) -> list[Effect]:
        """This node finished pulling `partition`: record it, and let the claimant know."""
        view = self.view
        view.adopt(mv.mark_transferred(view.state, partition, view.name))
        return self.claim()

    def tell_claimant(self) -> list[Effect]:
        claimant = ms.claimant(self.view.state)
        if claimant != self.view.name:
            return [Send(claimant, Gossip(self.view.state))]
        return []

    def _leave_when_done(self, now: float) -> list[Effect]:
        """A leaving member whose partitions have all moved marks itself removed and stops."""
        view = self.view
        me = ms.member(view.state, view.name)
        if me is None or view.stopping:
            return []
        if me.status == "leaving" and view.state.ring.next is None:
            if view.name in view.state.ring.ring.owners:
                return []
            view.adopt(ms.mark_removed(view.state, view.name))
        elif me.status != "removed":
            return []
        view.stopping = True
        self.logs.append(Log("info", "left_cluster", {"name": view.name}))
        # Gossip the removal to everyone, then stop once it has had time to leave.
        effects: list[Effect] = [Send(peer, Gossip(view.state)) for peer in view.peers()]
        effects.append(SetTimer("stop", now + 2 * self.config.gossip_interval))
        return effects


def _seeded(state: Membership, types: tuple[bt.BucketType, ...]) -> Membership:
    """state with types added: bucket types for a cluster persisted before they existed."""
    for bucket_type in types:
        state = ms.set_type(state, bucket_type)
    return state
