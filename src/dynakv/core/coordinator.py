"""Coordinating clients' gets and puts: quorums over the key's replicas (sloppy, with
fallbacks for those down), read repair, speculative reads, forwarding a put to a replica,
and the deadlines that answer a request whose replicas fell silent.

The quorum arithmetic is in core/quorum.py; this component keeps the requests in flight and
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
from dynakv.core.events import Effect, Log, Send
from dynakv.core.handoff import HintStore
from dynakv.core.minting import Minter, counter_of
from dynakv.core.quorum import GetQuorum, PutQuorum, Requirements, requirements
from dynakv.core.replica import CorruptRecord, ReplicaStore
from dynakv.errors import DynakvError, InvalidRequest, Unavailable, ValueTooLarge
from dynakv.levels import Need, resolve
from dynakv.messages import (
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
    error_reply,
)
from dynakv.storage.engine import Engine
from dynakv.versions import Clock, HybridClock, Sibling


@dataclass(slots=True)
class PendingGet:
    source: str
    client_rid: int
    bucket: str
    key: str
    deadline: float
    quorum: GetQuorum
    primaries: list[str]
    spare: list[str]  # healthy fallbacks not asked yet, to stand in for replicas found down
    reserve: list[str] = field(default_factory=list)  # replicas not asked yet (fan-out "r")
    speculate_at: float = 0.0  # when to ask the reserve if the answers are still missing
    replied: bool = False
    now: float = 0.0  # when the read came in: values expired by then are not shown


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
    """Client gets and puts this node coordinates, and puts it forwards to a replica."""

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
        self.gets: dict[int, PendingGet] = {}
        self.puts: dict[int, PendingPut] = {}
        self.forwards: dict[int, PendingForward] = {}
        # Forwarded puts coordinated lately, (forwarder, its rid) -> until when to remember:
        # a put delivered twice must not be written twice (a second dot for an old context).
        self._forwarded: dict[tuple[str, int], float] = {}
        self._deferred: list[tuple[str, str, Clock]] = []  # ack_before_store bug only

    def pending(self) -> int:
        return len(self.gets) + len(self.puts) + len(self.forwards)

    # --- gets ------------------------------------------------------------------------------
    def on_get(self, now: float, source: str, msg: Message) -> list[Effect]:
        """A client's get (`source` "" for the internal read that mends a corrupt copy)."""
        assert isinstance(msg, ClientGet)
        validate_location(msg.bucket, msg.key)
        props = self.view.bucket(msg.bucket)
        level = props.r if msg.r is None else msg.r
        # Read only: the shared cached placement, no copies (spare is copied if it is kept).
        primaries, replicas, hints, spare, lists = self.view.placed_for(msg.bucket, msg.key)[1]
        need, wanted = self.requirements("r", level, props.n, primaries, replicas, hints, lists, "")
        down = self.view.down
        if need.local is not None:  # a local level reads (and repairs) local replicas only
            replicas = [x for x in replicas if self.view.datacenter(x) == need.local]
        r = need.total if wanted else min(need.total, len(replicas))
        # This node's own copy first (no message), then the others in preference order.
        order = [node for node in replicas if node != self.name and node not in down]
        if self.view.spans_datacenters():  # nearest first: this data center's replicas
            here = self.view.datacenter(self.name)
            order.sort(key=lambda node: self.view.datacenter(node) != here)
        if self.name in replicas:
            order.insert(0, self.name)
        if self.config.read_fanout == "n" or (wanted and (lists or need.local is None)):
            # each_quorum, and a read during a transfer that meets its level in two lists,
            # ask every replica: a reserve chosen for one count may not help another.
            fanout = len(order)
        else:
            fanout = r
        asked, reserve = order[:fanout], order[fanout:]
        lww = props.policy == "lww"
        local: Clock | None = None
        local_state: bytes | None = None
        local_failed = False
        if asked and asked[0] == self.name:
            try:
                local, local_state = self.store.get_encoded(msg.bucket, msg.key)
            except DynakvError as exc:
                self._log_local_failure(msg.bucket, msg.key, exc)
                local_failed = True
            if len(asked) == 1 and r == 1 and not wanted and not local_failed and source:
                # Answered by this node's own copy alone: the read is over in this call,
                # with no other answer to merge or repair, so no quorum and no pending entry.
                # (Not the internal read that mends a corrupt copy: it has no client.)
                if local is not None and lww:
                    local = versions.lww(local)
                return [Send(source, get_result(msg.rid, local, now))]
        quorum = GetQuorum(asked, r, lww=lww, requirements=wanted)
        rid = self.ids.next()
        pending = PendingGet(
            source,
            msg.rid,
            msg.bucket,
            msg.key,
            now + self.config.request_timeout,
            quorum,
            primaries,
            list(spare),
            reserve,
            now + self.config.read_speculation,
            now=now,
        )
        self.gets[rid] = pending
        effects: list[Effect] = []
        request = ReplicaGet(rid, msg.bucket, msg.key)
        for node in asked:
            if node != self.name:
                effects.append(Send(node, request))
            elif local_failed:
                quorum.fail(node)
                effects.extend(self._ask_reserve(rid, pending, 1))
            else:
                quorum.add(node, local, local_state)
        if len(asked) < r:
            quorum.replicas.extend(node for node in replicas if node in down)
            for node in replicas:
                if node in down:
                    quorum.fail(node)  # too few replicas up: R never can answer
        effects.extend(self._progress_get(rid, pending))
        return effects

    def on_replica_get_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaGetReply)
        get = self.gets.get(msg.rid)
        if get is None or not get.quorum.waiting_on(source):
            return []
        if msg.state is None:
            get.quorum.add(source, None)
        else:
            state = get.quorum.known(msg.state)
            if state is None:
                try:
                    state = versions.decode(msg.state)
                except InvalidRequest:
                    get.quorum.fail(source)
                    return self._ask_reserve(msg.rid, get, 1) + self._progress_get(msg.rid, get)
            get.quorum.add(source, state, msg.state)
        return self._progress_get(msg.rid, get)

    def speculate(self, now: float) -> list[Effect]:
        """Reads still short of R after read_speculation ask the replicas they left out: one
        of those asked may be dead without the failure detector knowing yet."""
        effects: list[Effect] = []
        for rid, get in self.gets.items():
            if get.reserve and not get.replied and get.speculate_at <= now:
                effects.extend(self._ask_reserve(rid, get, len(get.reserve)))
        return effects

    def _ask_reserve(self, rid: int, get: PendingGet, count: int) -> list[Effect]:
        """Ask `count` more replicas not asked so far (fan-out "r": one failed or is slow)."""
        effects: list[Effect] = []
        request = ReplicaGet(rid, get.bucket, get.key)
        while count > 0 and get.reserve:
            node = get.reserve.pop(0)
            if node in self.view.down:
                continue
            get.quorum.replicas.append(node)
            effects.append(Send(node, request))
            count -= 1
        return effects

    def _progress_get(self, rid: int, get: PendingGet) -> list[Effect]:
        effects: list[Effect] = []
        quorum = get.quorum
        if not get.replied and quorum.enough():
            get.replied = True
            if get.source:  # empty for an internal read (repair of a corrupt copy)
                try:
                    merged = quorum.outcome()
                except Unavailable as exc:
                    effects.append(Send(get.source, error_reply(get.client_rid, exc)))
                else:
                    result = get_result(get.client_rid, merged, get.now)
                    effects.append(Send(get.source, result))
        if quorum.complete():
            effects.extend(self._read_repair(get))
            del self.gets[rid]
        return effects

    def _read_repair(self, get: PendingGet) -> list[Effect]:
        if not self.config.read_repair:
            return []
        # Only primaries are repaired: a fallback's copy is a hint's, delivered by handoff.
        stale = [node for node in get.quorum.stale() if node in get.primaries]
        if not stale:
            return []
        merged = get.quorum.merged()
        assert merged is not None
        state = versions.encode(merged)
        effects: list[Effect] = []
        for node in stale:
            if node == self.name:
                self.store.merge(get.bucket, get.key, merged, get.quorum.lww)
            else:
                overwrite = self.bugs.read_repair_overwrites
                effects.append(Send(node, ReplicaPut(0, get.bucket, get.key, state, overwrite)))
        return effects

    # --- puts ------------------------------------------------------------------------------
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
        need, wanted = self.requirements(
            "w", level, props.n, placement.primaries, replicas, placement.hints,
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

    def requirements(
        self,
        name: str,
        level: int | str,
        n: int,
        primaries: list[str],
        targets: list[str],
        hints: dict[str, str],
        lists: tuple[list[str], ...],
        local: str,
    ) -> tuple[Need, Requirements]:
        """What a request's level needs (`need.total`, `need.local`) and the requirements
        its quorum must meet: none in the common case (need.total answers from anywhere),
        one per data center for a level naming them, and during a transfer that changes the
        key's primaries, the level in the old list and in the new one (placement `lists`)."""
        if not lists:
            need = self.need(name, level, n, primaries, local)
            if not need.by_dc:
                return need, ()
            return need, requirements([(need, primaries)], targets, hints, self.view.datacenter)
        needs: list[tuple[Need, list[str]]] = []
        refused: Unavailable | None = None
        for members in lists:
            try:
                needs.append((self.need(name, level, n, members, local), members))
            except Unavailable as exc:
                # A local level in a data center where this list has no replica: no node
                # counting over this list alone serves it there either, so only the other
                # list's count can be missed, and that one is met.
                refused = exc
        if not needs:
            assert refused is not None
            raise refused
        wanted = requirements(needs, targets, hints, self.view.datacenter)
        # Every list's need has the same local data center (the coordinator's); the total
        # only sizes an error when no requirement names what is missing.
        return Need(max(need.total for need, _ in needs), (), needs[0][0].local), wanted

    def need(self, name: str, level: int | str, n: int, primaries: list[str], local: str) -> Need:
        """What a request's level needs of the key's replicas (`local`: the data center a
        forwarding node named, else this node's own)."""
        if type(level) is int and 1 <= level <= n:
            return Need(level)  # the common case: no data centers to look up
        here = local or self.view.datacenter(self.name)
        return resolve(name, level, n, primaries, self.view.datacenter, here)

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
        get = self.gets.get(msg.rid)
        if get is not None:
            if not get.quorum.waiting_on(source):
                return []
            get.quorum.fail(source)
            return self._ask_reserve(msg.rid, get, 1) + self._progress_get(msg.rid, get)
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
        """Sloppy quorum: a replica found down mid-request is replaced by the next healthy
        node of the walk; a write sent there carries a hint naming the primary."""
        effects: list[Effect] = []
        down = self.view.down
        for rid, get in list(self.gets.items()):
            if get.quorum.waiting_on(name):
                if any(node not in down for node in get.reserve):
                    get.quorum.fail(name)  # a replica not asked yet answers instead
                    effects.extend(self._ask_reserve(rid, get, 1))
                    effects.extend(self._progress_get(rid, get))
                    continue
                fallback = self.view.take_spare(get.spare, name)
                if fallback is None:
                    get.quorum.fail(name)
                    effects.extend(self._progress_get(rid, get))
                else:
                    get.quorum.replace(name, fallback)
                    effects.append(Send(fallback, ReplicaGet(rid, get.bucket, get.key)))
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
        for rid, get in list(self.gets.items()):
            if get.deadline > now:
                break
            if not get.replied and get.source:
                effects.append(Send(get.source, error_reply(get.client_rid, get.quorum.error())))
            effects.extend(self._read_repair(get))
            del self.gets[rid]
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

    def _log_local_failure(self, bucket: str, key: str, exc: DynakvError) -> None:
        fields = {"bucket": bucket, "key": key, "error": str(exc)}
        self.logs.append(Log("error", "local_read_failed", fields))


def _restored_clock(msg: ClientPut) -> Clock:
    """The DVVSet a restoring put carries (an import); InvalidRequest if it is no stored
    clock (anonymous values are a client's, never a stored state's)."""
    clock = versions.decode(msg.state)
    if clock.anonymous or not clock.entries:
        raise InvalidRequest("a restored state must be a stored clock with dotted values")
    return clock


def get_result(rid: int, merged: Clock | None, now: float) -> GetResult:
    """What a read at `now` answers: the live values not expired by then, and the context
    of the whole state (so a write after it replaces the expired values too)."""
    if merged is None:
        return GetResult(rid, [], [], "")
    live = expiry.visible(merged, now)
    expires = [s.expires for s in live] if any(s.expires for s in live) else []
    return GetResult(
        rid,
        [s.value for s in live],
        [s.content_type for s in live],
        versions.encode_context(versions.join(merged)),
        expires,
    )
