"""Coordinating clients' puts: minting the write's dot, a quorum of W over the key's
replicas (sloppy, with fallbacks and hints for those down), relays, forwarding a put to a
replica, and the deadlines that answer a put whose replicas fell silent. Gets are
core/read_coordinator.py's.

The quorum arithmetic is in core/quorum.py; this component keeps the puts in flight and
turns their progress into effects. Pure: time is the `now` passed in; storage through the
synchronous ReplicaStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from dynakv import expiry, versions
from dynakv.config import validate_location
from dynakv.core.bugs import InjectedBugs
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Send
from dynakv.core.handoff import HintStore
from dynakv.core.minting import Minter, counter_of
from dynakv.core.quorum import PutQuorum
from dynakv.core.replica import CorruptRecord, ReplicaStore
from dynakv.core.request_levels import level_requirements
from dynakv.errors import InvalidRequest, Unavailable, ValueTooLarge
from dynakv.messages import (
    ClientPut,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
    ReplicaPut,
    ReplicaPutReply,
    error_reply,
)
from dynakv.storage.engine import Engine
from dynakv.versions import Clock, HybridClock, Sibling


@dataclass(slots=True)
class PendingPut:
    source: str
    client_rid: int
    deadline: float
    quorum: PutQuorum
    context: str
    bucket: str
    key: str
    state: bytes
    hints: dict[str, str]  # fallback -> primary it stands in for
    spare: list[str]
    mark: int  # Engine.mark() after the local write: the result waits for nothing later
    replied: bool = False
    relayed: dict[str, list[str]] = field(default_factory=dict)  # relay -> replicas it feeds


@dataclass(slots=True)
class PendingForward:
    source: str
    client_rid: int
    deadline: float
    target: str


class Coordinator(Component):
    """Client puts this node coordinates, and those it forwards to a replica."""

    def __init__(
        self,
        context: Context,
        store: ReplicaStore,
        hints: HintStore,
        engine: Engine,
        minter: Minter,
        hlc: HybridClock,
        bugs: InjectedBugs,
    ) -> None:
        super().__init__(context)
        self.name = context.config.name
        self.store = store
        self.hints = hints
        self.engine = engine  # for Engine.mark(): when a put's own write is durable
        self.minter = minter
        self.hlc = hlc
        self.bugs = bugs
        self.puts: dict[int, PendingPut] = {}
        self.forwards: dict[int, PendingForward] = {}
        # Forwarded puts coordinated lately, (forwarder, its rid) -> until when to remember:
        # a put delivered twice must not be written twice (a second dot for an old context).
        self._forwarded: dict[tuple[str, int], float] = {}
        self._deferred: list[tuple[str, str, Clock]] = []  # ack_before_store bug only

    def pending(self) -> int:
        return len(self.puts) + len(self.forwards)

    def on_put(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientPut)
        if msg.hops:
            if (source, msg.rid) in self._forwarded:
                return []  # a duplicate of a forwarded put already coordinated
            self._forwarded[(source, msg.rid)] = now + 2 * self.config.request_timeout
        validate_location(msg.bucket, msg.key)
        if msg.expires:
            expiry.check_expires(msg.expires)
        props = self.view.bucket(msg.bucket)
        restored = _restored_clock(msg) if msg.state else None
        values = versions.values(restored) if restored is not None else []
        sizes = [len(s.value) for s in values] if restored is not None else [len(msg.value)]
        if max(sizes, default=0) > props.max_value_bytes:
            raise ValueTooLarge(
                f"value is {max(sizes)} bytes; the limit of bucket {msg.bucket} is "
                f"{props.max_value_bytes}"
            )
        level = props.w if msg.w is None else msg.w
        context = versions.decode_context(msg.context)
        placement = self.view.placement(msg.bucket, msg.key)
        replicas = placement.targets
        need, wanted = level_requirements(
            self.view, "w", level, props.n, placement.primaries, replicas, placement.hints,
            placement.lists, msg.datacenter,
        )  # fmt: skip
        if self.name not in replicas and msg.hops == 0:
            return self._forward(now, source, msg, replicas)
        lww = props.policy == "lww"
        try:
            # Only the versions: a value stored apart is read (fill, below) only if it
            # survives the write as a sibling.
            local, minted = self.store.read_meta(msg.bucket, msg.key, strict=True)
        except CorruptRecord:
            # Minting a dot without this node's history could reuse one: let another
            # replica coordinate while read repair mends this copy.
            others = [node for node in replicas if node != self.name]
            if msg.hops == 0 and others:
                return self._forward(now, source, msg, others)
            raise
        if local is not None and (lww or (msg.delete and not msg.context)):
            # lww: a write replaces what this coordinator holds, and its timestamp must exceed
            # theirs, so merge order never changes the winner. A delete without a context
            # removes what this coordinator has seen.
            context = versions.join(local)
            for seen in versions.values(local):
                self.hlc.observe(seen.timestamp)
        if restored is not None:
            # An import: merge the exported state as a replica merges a peer's, minting no
            # dot, so its siblings stay siblings and its context stays valid.
            for seen in versions.values(restored):
                self.hlc.observe(seen.timestamp)
            clock = restored if local is None else versions.sync(restored, local)
            minted_now = minted
        else:
            sibling = Sibling(
                value=b"" if msg.delete else msg.value,
                deleted=msg.delete,
                content_type=msg.content_type,
                timestamp=self.hlc.now(now),
                expires=0 if msg.delete else msg.expires,
            )
            actor = self.minter.actor_for(local, minted)
            clock = versions.update(versions.new(context, sibling), local, actor)
            minted_now = (actor, counter_of(clock, actor))
        if lww:
            clock = versions.lww(clock)
        try:
            full = self.store.fill(msg.bucket, msg.key, clock, local)
        except CorruptRecord:
            others = [node for node in replicas if node != self.name]
            if msg.hops == 0 and others:
                return self._forward(now, source, msg, others)
            raise
        rid = self.ids.next()
        if self.bugs.ack_before_store and restored is None:
            self._deferred.append((msg.bucket, msg.key, full))
            return [Send(source, PutResult(msg.rid, versions.encode_context(versions.join(clock))))]
        state = versions.encode(full)
        if wanted:
            quorum = PutQuorum(replicas, need.total, requirements=wanted)
        else:
            quorum = PutQuorum(replicas, min(need.total, len(replicas)))
        stands_in_for = placement.hints.get(self.name)
        if stands_in_for is None or self.hints.record(
            stands_in_for, placement.digest, msg.bucket, msg.key, now, len(state)
        ):
            self.store.put(msg.bucket, msg.key, clock, local, minted_now, state)
            quorum.ack(self.name)
        else:
            quorum.fail(self.name)
            self.logs.append(self.hints.drop_log(stands_in_for, msg.bucket, msg.key, "budget"))
        effects: list[Effect] = []
        down = self.view.down
        # With several data centers, a write crosses to each other one once: to one replica
        # there that relays it to the rest (copies standing in for a down one go direct).
        here = self.view.datacenter(self.name) if self.view.spans_datacenters() else None
        remote: dict[str, list[str]] = {}
        for node in replicas:
            if node == self.name:
                continue
            if node in down:
                quorum.fail(node)
                continue
            hint = placement.hints.get(node, "")
            if here is not None and not hint:
                site = self.view.datacenter(node)
                if site != here:
                    remote.setdefault(site, []).append(node)
                    continue
            effects.append(Send(node, ReplicaPut(rid, msg.bucket, msg.key, state, hint=hint)))
        relayed: dict[str, list[str]] = {}
        for nodes in remote.values():
            # Not a node this one knows was removed: the others would refuse what it relays.
            relay = next((x for x in nodes if x not in self.view.removed), nodes[0])
            rest = [x for x in nodes if x != relay]
            effects.append(Send(relay, ReplicaPut(rid, msg.bucket, msg.key, state, relay=rest)))
            if rest:
                relayed[relay] = rest
        # The new state's context would also cover siblings the client never saw (a blind
        # write beside them); handing it out would let the next put drop them silently.
        # Then the client keeps its own context, and its next read shows the siblings.
        # Tombstones beside a new value are no such siblings: replacing them loses nothing,
        # so a put after a delete gets the new state's context, as a first put does.
        kept = versions.values(clock)
        # An import gets the context of the state it sent: what it knows, not what it met.
        alone = len(kept) == 1 or (not msg.delete and sum(not s.deleted for s in kept) == 1)
        if restored is not None:
            context_out = versions.encode_context(versions.join(restored))
        elif alone:
            context_out = versions.encode_context(versions.join(clock))
        else:
            context_out = msg.context
        pending = PendingPut(
            source,
            msg.rid,
            now + self.config.request_timeout,
            quorum,
            context_out,
            msg.bucket,
            msg.key,
            state,
            dict(placement.hints),
            placement.spare,
            self.engine.mark(),
            relayed=relayed,
        )
        self.puts[rid] = pending
        effects.extend(self._progress_put(rid, pending))
        return effects

    def on_put_ack(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaPutReply)
        put = self.puts.get(msg.rid)
        if put is None:
            return []
        put.quorum.ack(source)
        return self._progress_put(msg.rid, put)

    def _forward(
        self, now: float, source: str, msg: ClientPut, replicas: list[str]
    ) -> list[Effect]:
        """Puts are coordinated by a replica of the key (it mints the dot); pass it on, to
        one in this node's data center when there is one, telling it which is local."""
        up = [node for node in replicas if node not in self.view.down]
        if not up:
            raise Unavailable("no replica of this key is reachable", needed=1, got=0)
        here = msg.datacenter or self.view.datacenter(self.name)
        target = next((node for node in up if self.view.datacenter(node) == here), up[0])
        rid = self.ids.next()
        deadline = now + self.config.request_timeout
        self.forwards[rid] = PendingForward(source, msg.rid, deadline, target)
        forwarded = msgspec.structs.replace(msg, rid=rid, hops=1, datacenter=here)
        return [Send(target, forwarded)]

    def on_forward_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, GetResult | PutResult)
        forward = self.forwards.pop(msg.rid, None)
        if forward is None or not forward.source:
            return []
        return [Send(forward.source, msgspec.structs.replace(msg, rid=forward.client_rid))]

    def _progress_put(self, rid: int, put: PendingPut) -> list[Effect]:
        effects: list[Effect] = []
        quorum = put.quorum
        if not put.replied and quorum.enough():
            put.replied = True
            if not put.source:
                pass  # an internal write (an expired value's deletion): no one to answer
            elif quorum.succeeded():
                result = PutResult(put.client_rid, put.context)
                effects.append(Send(put.source, result, put.mark))
            else:
                effects.append(Send(put.source, error_reply(put.client_rid, quorum.error())))
        if quorum.complete():
            del self.puts[rid]
        return effects

    # --- failures and deadlines ------------------------------------------------------------
    def on_error(self, now: float, source: str, msg: ErrorReply) -> list[Effect] | None:
        """A peer's error for a request of ours; None if `msg.rid` is none of ours."""
        forward = self.forwards.pop(msg.rid, None)
        if forward is not None:
            return [Send(forward.source, msgspec.structs.replace(msg, rid=forward.client_rid))]
        put = self.puts.get(msg.rid)
        if put is not None:
            put.quorum.fail(source)
            return self._bypass(msg.rid, put, source) + self._progress_put(msg.rid, put)
        return None

    def _bypass(self, rid: int, put: PendingPut, relay: str) -> list[Effect]:
        """A relay that failed or went down may not have passed the write on: send it direct
        to the replicas it was to feed that have not answered."""
        down = self.view.down
        return [
            Send(node, ReplicaPut(rid, put.bucket, put.key, put.state))
            for node in put.relayed.pop(relay, [])
            if put.quorum.waiting_on(node) and node not in down
        ]

    def peer_down(self, name: str) -> list[Effect]:
        """Sloppy quorum: a replica found down mid-put is replaced by the next healthy
        node of the walk; a write sent there carries a hint naming the primary."""
        effects: list[Effect] = []
        for rid, put in list(self.puts.items()):
            effects.extend(self._bypass(rid, put, name))
            if put.quorum.waiting_on(name):
                fallback = self.view.take_spare(put.spare, put.hints.get(name, name))
                if fallback is None:
                    put.quorum.fail(name)
                    effects.extend(self._progress_put(rid, put))
                else:
                    put.quorum.replace(name, fallback)
                    primary = put.hints.pop(name, name)
                    put.hints[fallback] = primary
                    request = ReplicaPut(rid, put.bucket, put.key, put.state, hint=primary)
                    effects.append(Send(fallback, request))
        for rid, forward in list(self.forwards.items()):
            if forward.target == name:
                error = Unavailable(f"coordinator {name} is unreachable", needed=1, got=0)
                effects.append(Send(forward.source, error_reply(forward.client_rid, error)))
                del self.forwards[rid]
        return effects

    def expire(self, now: float) -> list[Effect]:
        """Answer requests whose deadline passed. Deadlines grow with rid, so stop early."""
        effects: list[Effect] = []
        for rid, put in list(self.puts.items()):
            if put.deadline > now:
                break
            if not put.replied and put.source:
                effects.append(Send(put.source, error_reply(put.client_rid, put.quorum.error())))
            del self.puts[rid]
        for rid, forward in list(self.forwards.items()):
            if forward.deadline > now:
                break
            error = Unavailable(f"coordinator {forward.target} did not answer", needed=1, got=0)
            effects.append(Send(forward.source, error_reply(forward.client_rid, error)))
            del self.forwards[rid]
        for seen, until in list(self._forwarded.items()):
            if until > now:
                break
            del self._forwarded[seen]
        return effects

    def store_deferred(self) -> list[Effect]:
        """ack_before_store bug: the store and replication that should have come first."""
        effects: list[Effect] = []
        for bucket, key, clock in self._deferred:
            local = self.store.get(bucket, key)
            merged = clock if local is None else versions.sync(clock, local)
            state = versions.encode(merged)
            self.store.put(bucket, key, merged, state=state)
            for node in self.view.placement(bucket, key).primaries:
                if node != self.name:
                    effects.append(Send(node, ReplicaPut(0, bucket, key, state)))
        self._deferred.clear()
        return effects



def _restored_clock(msg: ClientPut) -> Clock:
    """The DVVSet a restoring put carries (an import); InvalidRequest if it is no stored
    clock (anonymous values are a client's, never a stored state's)."""
    clock = versions.decode(msg.state)
    if clock.anonymous or not clock.entries:
        raise InvalidRequest("a restored state must be a stored clock with dotted values")
    return clock
