"""Coordinating clients' gets: a quorum of R over the key's replicas (sloppy, with fallbacks
for those found down), speculative reads of the replicas left out, read repair, and the
deadline that answers a read whose replicas fell silent.

The quorum arithmetic is in core/quorum.py; this component keeps the reads in flight and
turns their progress into effects. Pure: time is the `now` passed in; storage through the
synchronous ReplicaStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynakv import expiry, versions
from dynakv.config import validate_location
from dynakv.core.bugs import InjectedBugs
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send
from dynakv.core.quorum import GetQuorum
from dynakv.core.replica import ReplicaStore
from dynakv.core.request_levels import level_requirements
from dynakv.errors import DynakvError, InvalidRequest, Unavailable
from dynakv.messages import (
    ClientGet,
    ErrorReply,
    GetResult,
    Message,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    error_reply,
)
from dynakv.versions import Clock


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


class ReadCoordinator(Component):
    """Client gets this node coordinates."""

    def __init__(self, context: Context, store: ReplicaStore, bugs: InjectedBugs) -> None:
        super().__init__(context)
        self.name = context.config.name
        self.store = store
        self.bugs = bugs
        self.gets: dict[int, PendingGet] = {}

    def pending(self) -> int:
        return len(self.gets)

    def on_get(self, now: float, source: str, msg: Message) -> list[Effect]:
        """A client's get (`source` "" for the internal read that mends a corrupt copy)."""
        assert isinstance(msg, ClientGet)
        validate_location(msg.bucket, msg.key)
        props = self.view.bucket(msg.bucket)
        level = props.r if msg.r is None else msg.r
        # Read only: the shared cached placement, no copies (spare is copied if it is kept).
        primaries, replicas, hints, spare, lists = self.view.placed_for(msg.bucket, msg.key)[1]
        need, wanted = level_requirements(
            self.view, "r", level, props.n, primaries, replicas, hints, lists, ""
        )
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

    def on_error(self, now: float, source: str, msg: ErrorReply) -> list[Effect] | None:
        """A replica's error for a read of ours; None if `msg.rid` is none of ours."""
        get = self.gets.get(msg.rid)
        if get is None:
            return None
        if not get.quorum.waiting_on(source):
            return []
        get.quorum.fail(source)
        return self._ask_reserve(msg.rid, get, 1) + self._progress_get(msg.rid, get)

    def peer_down(self, name: str) -> list[Effect]:
        """Sloppy quorum: a replica found down mid-read is replaced by a replica not asked
        yet, else by the next healthy node of the walk."""
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
        return effects

    def expire(self, now: float) -> list[Effect]:
        """Answer reads whose deadline passed. Deadlines grow with rid, so stop early."""
        effects: list[Effect] = []
        for rid, get in list(self.gets.items()):
            if get.deadline > now:
                break
            if not get.replied and get.source:
                effects.append(Send(get.source, error_reply(get.client_rid, get.quorum.error())))
            effects.extend(self._read_repair(get))
            del self.gets[rid]
        return effects

    def _log_local_failure(self, bucket: str, key: str, exc: DynakvError) -> None:
        fields = {"bucket": bucket, "key": key, "error": str(exc)}
        self.logs.append(Log("error", "local_read_failed", fields))


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
