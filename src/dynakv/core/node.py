"""The sans-I/O Dynamo node: `Node.handle(now, event)` routes each event to the component
that owns it and returns their effects; it never does I/O.

The node owns what its components share — config, storage, the cluster view (membership,
ring, down set), request ids, the hybrid clock, the RNG — and its start-up state (the
incarnation). Time comes from `now`, randomness from the injected `random.Random`, storage
through a synchronous engine whose writes the runtime commits before releasing the effects.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from dynakv import versions
from dynakv.config import NodeConfig, validate_location
from dynakv.core import membership as ms
from dynakv.core.admission import BackgroundBudget
from dynakv.core.antientropy import AntiEntropy, Exchanges
from dynakv.core.bugs import NO_BUGS, InjectedBugs
from dynakv.core.component import Context
from dynakv.core.coordinator import Coordinator
from dynakv.core.events import (
    Effect,
    Event,
    LoadReport,
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
from dynakv.core.failure import Liveness
from dynakv.core.gossip import Gossiper, load_membership, member_record
from dynakv.core.handoff import Handoff, HintStore
from dynakv.core.membership import MemberRecord, Membership
from dynakv.core.minting import Minter
from dynakv.core.read_coordinator import ReadCoordinator
from dynakv.core.reaper import Reaper
from dynakv.core.replica import ReplicaStore
from dynakv.core.replica_service import ReplicaService
from dynakv.core.transfer import Transfers
from dynakv.core.user_admin import UserAdmin
from dynakv.core.view import ClusterView, Placement, RequestIds
from dynakv.errors import DynakvError, InvalidRequest
from dynakv.messages import (
    AaeFetch,
    AaeFetchReply,
    AaeHashes,
    AaeHashesReply,
    AaeKeys,
    AaeKeysReply,
    ClientBucketChange,
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientPut,
    ClientRepair,
    ClientUserChange,
    ErrorReply,
    GetResult,
    Gossip,
    Heartbeat,
    JoinReply,
    JoinRequest,
    Message,
    PutResult,
    ReapCheck,
    ReapCheckReply,
    ReapCommit,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
    TransferBatch,
    TransferDigestRequest,
    TransferDigests,
    TransferFetch,
    TransferRequest,
    error_reply,
)
from dynakv.ring import Ring
from dynakv.storage.engine import Engine
from dynakv.versions import Clock

Handler = Callable[[float, str, Message], list[Effect]]


class Node:
    """One dynakv node. Only the runtime and the simulator call `handle`."""

    def __init__(
        self,
        config: NodeConfig,
        engine: Engine,
        rng: random.Random,
        bugs: InjectedBugs = NO_BUGS,
    ) -> None:
        self.config = config
        self.bugs = bugs
        self.name = config.name
        self.engine = engine
        self.store = ReplicaStore(engine, drop_siblings=bugs.drop_sibling_on_merge)
        self.hints = HintStore(engine, config.hint_budget_bytes)
        self.budget = BackgroundBudget(config.background_p99_threshold)
        self.aae = AntiEntropy(
            self.store, config.ring_size, config.aae_segments, config.aae_branching
        )
        self.store.on_write = self._on_write
        self.rng = rng
        self.hlc = versions.HybridClock()
        self._now = 0.0
        # Effects components add beside their answers (operators' log lines); `handle`
        # hands them out after the answer's effects. One list, shared, never replaced.
        self._logs: list[Log] = []
        # Random start: a late reply to a request of this node's previous life must not
        # match a new request (rids restart with the process).
        self.ids = RequestIds(1 + rng.getrandbits(30))
        self.incarnation = self._load_incarnation()
        self.actor = (
            self.name if bugs.reuse_dots_after_restart else f"{self.name}@{self.incarnation}"
        )
        me = member_record(config, self.incarnation)
        self.view = ClusterView(config, engine, load_membership(engine, config, me))
        context = Context(config, self.view, self.ids, self._logs)
        store, hints, budget = self.store, self.hints, self.budget
        self.liveness = Liveness(context)
        self.gossip = Gossiper(context, self.liveness, me, rng)
        self.user_admin = UserAdmin(context)
        minter = Minter(engine, self.actor, bugs.reuse_dots_after_restart)
        self.reads = ReadCoordinator(context, store, bugs)
        self.coordinator = Coordinator(context, store, hints, engine, minter, self.hlc, bugs)
        self.replicas = ReplicaService(context, store, hints, self.hlc, bugs)
        self.handoff = Handoff(context, store, hints, budget)
        self.transfers = Transfers(context, store, engine, self.gossip, budget)
        self.exchanges = Exchanges(context, store, self.aae, budget)
        self.reaper = Reaper(
            context, store, engine, hints, budget, bugs, self.handoff.handing_back
        )
        coordinator, replicas, exchanges = self.coordinator, self.replicas, self.exchanges
        reaper, gossip, transfers = self.reaper, self.gossip, self.transfers
        self._handlers: dict[type, Handler] = {
            ClientGet: self.reads.on_get,
            ClientPut: coordinator.on_put,
            ReplicaGetReply: self.reads.on_replica_get_reply,
            GetResult: coordinator.on_forward_reply,
            PutResult: coordinator.on_forward_reply,
            ReplicaGet: replicas.on_get,
            ReplicaPut: replicas.on_put,
            ReplicaPutReply: self._replica_put_reply,  # a hint delivered, or a put's ack
            ErrorReply: self._error_reply,  # whichever component sent the request
            ClientClusterInfo: gossip.on_cluster_info,
            JoinRequest: gossip.on_join_request,
            JoinReply: gossip.on_join_reply,
            Gossip: gossip.on_gossip,
            ClientClusterChange: gossip.on_cluster_change,
            ClientBucketChange: gossip.on_bucket_change,
            ClientUserChange: self.user_admin.on_user_change,
            Heartbeat: self.liveness.on_heartbeat,
            TransferRequest: transfers.on_request,
            TransferBatch: transfers.on_batch,
            TransferDigestRequest: transfers.on_digest_request,
            TransferDigests: transfers.on_digests,
            TransferFetch: transfers.on_fetch,
            AaeHashes: exchanges.on_hashes,
            AaeHashesReply: exchanges.on_hashes_reply,
            AaeKeys: exchanges.on_keys,
            AaeKeysReply: exchanges.on_keys_reply,
            AaeFetch: exchanges.on_fetch,
            AaeFetchReply: exchanges.on_fetch_reply,
            ClientRepair: exchanges.on_repair,
            ReapCheck: reaper.on_check,
            ReapCheckReply: reaper.on_check_reply,
            ReapCommit: reaper.on_commit,
        }
        self._timers: dict[str, Callable[[float], list[Effect]]] = {
            "sweep": self._sweep,
            "handoff": self.handoff.on_tick,
            "heartbeat": self.liveness.on_tick,
            "gossip": gossip.on_tick,
            "transfer": transfers.on_tick,
            "aae": exchanges.on_tick,
            "reap": self._reap_tick,
            "stop": lambda now: [Stop("left the cluster")],
        }

    # --- start-up state --------------------------------------------------------------------
    def _load_incarnation(self) -> str:
        """A random id born with the data directory, so a wiped node never reuses a dot.

        Renewed after every unclean stop: a coordinator sends a write to its replicas while
        its own commit is still under way, so a crash can lose a local write whose dot the
        peers already hold; a new incarnation keeps that dot from being minted twice (KV679).
        """
        stored = self.engine.meta_get("incarnation")
        unclean = self.engine.meta_get("running") == b"1"
        if stored is None or unclean:
            fresh = f"{self.rng.getrandbits(32):08x}"
            if stored is not None:
                self._logs.append(
                    Log("warning", "new_incarnation", {"old": stored.decode(), "new": fresh})
                )
            self.engine.meta_put("incarnation", fresh.encode())
            stored = fresh.encode()
        self.engine.meta_put("running", b"1")
        return stored.decode()

    # --- the one entry point ---------------------------------------------------------------
    def handle(self, now: float, event: Event) -> list[Effect]:
        self._now = now
        if type(event) is Received:
            handler = self._handlers.get(type(event.message))
            if handler is None:
                effects = _unexpected(event.source, event.message)
            else:
                try:
                    effects = handler(now, event.source, event.message)
                except DynakvError as exc:
                    rid = getattr(event.message, "rid", 0)
                    # A relayed write's error goes to its coordinator, as its ack would.
                    to = getattr(event.message, "reply_to", "") or event.source
                    effects = [Send(to, error_reply(rid, exc))]
        elif type(event) is TimerFired:
            timer = self._timers.get(event.name)
            effects = [] if timer is None else timer(now)
        elif type(event) is PeerDown:
            effects = self._peer_down(event.name)
        elif type(event) is PeerUp:
            self.liveness.reachable(event.name)
            effects = []
        elif type(event) is Start:
            effects = self._start(now, event.join)
        elif type(event) is LoadReport:
            self.budget.report(event.p99)
            effects = []
        else:
            raise TypeError(f"unknown event {event!r}")
        if self.store.found_corrupt:
            effects.extend(self._repair_corrupt(now))
        if self._logs:
            effects.extend(self._logs)
            self._logs.clear()
        return effects

    def _start(self, now: float, join: str | None) -> list[Effect]:
        config = self.config
        effects: list[Effect] = [
            SetTimer("sweep", now + config.sweep_interval),
            SetTimer("gossip", now + config.gossip_interval),
            SetTimer("handoff", now + config.handoff_interval),
            SetTimer("heartbeat", now),
            SetTimer("transfer", now + config.transfer_interval),
        ]
        if config.anti_entropy:
            effects.append(SetTimer("aae", now + min(1.0, config.aae_interval)))
        effects.append(SetTimer("reap", now + config.reap_interval))
        effects.extend(self.gossip.start(now, join))
        return effects

    def _sweep(self, now: float) -> list[Effect]:
        """Deadlines of every component's requests, speculative reads, a join retry."""
        effects = self.reads.expire(now)
        effects.extend(self.coordinator.expire(now))
        self.handoff.expire(now)
        effects.extend(self.exchanges.expire(now))
        self.reaper.expire(now)
        effects.extend(self.reads.speculate(now))
        effects.extend(self.coordinator.store_deferred())
        effects.extend(self.gossip.retry_join(now))
        effects.append(SetTimer("sweep", now + self.config.sweep_interval))
        return effects

    def _reap_tick(self, now: float) -> list[Effect]:
        """A step of the tombstone sweep, then the deletion of the expired states it found."""
        effects = self.reaper.on_tick(now)
        found, self.reaper.expired = self.reaper.expired, []
        for bucket, key, state in found:
            effects.extend(self._delete_expired(now, bucket, key, state))
        return effects

    def _delete_expired(self, now: float, bucket: str, key: str, state: bytes) -> list[Effect]:
        """Delete an expired state as a client's delete after reading it would: with its
        context, so it replaces exactly the values that expired (a write this node has not
        seen survives it). Coordinated here (hops=1: never forwarded), answered to no one."""
        context = versions.encode_context(versions.join(versions.decode(state)))
        delete = ClientPut(self.ids.next(), bucket, key, b"", context, delete=True, hops=1)
        try:
            return self.coordinator.on_put(now, "", delete)
        except DynakvError as exc:  # e.g. its local copy is corrupt: read repair mends it
            fields = {"bucket": bucket, "key": key, "why": str(exc)}
            self._logs.append(Log("warning", "expired_delete_failed", fields))
            return []

    def _peer_down(self, name: str) -> list[Effect]:
        self.liveness.unreachable_peer(name)
        self.handoff.peer_down(name)
        return self.reads.peer_down(name) + self.coordinator.peer_down(name)

    def _replica_put_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaPutReply)
        delivered = self.handoff.on_ack(now, msg.rid)
        if delivered is not None:
            return delivered
        return self.coordinator.on_put_ack(now, source, msg)

    def _error_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ErrorReply)
        effects = self.reads.on_error(now, source, msg)
        if effects is None:
            effects = self.coordinator.on_error(now, source, msg)
        if effects is None:
            effects = self.transfers.on_error(now, source, msg)
        if effects is not None:
            return effects
        if not self.handoff.on_error(now, msg.rid):
            return self.gossip.on_error(msg)
        return []

    def _on_write(self, digest: bytes, old: Clock | None, new: Clock | None) -> None:
        self.aae.on_write(digest, old, new)
        self.reaper.changed(digest, self._now)

    def _repair_corrupt(self, now: float) -> list[Effect]:
        """Report each corrupt record found and read its key from every replica: the read
        repair that follows writes the merged state over the corrupt copy."""
        found, self.store.found_corrupt = self.store.found_corrupt, []
        effects: list[Effect] = []
        for bucket, key, why in found:
            self._logs.append(
                Log("error", "corrupt_record", {"bucket": bucket, "key": key, "why": why})
            )
            if bucket == "?" or self.view.epoch == 0:
                continue  # only the digest is known (a transfer scan); anti-entropy finds it
            props = self.view.bucket(bucket)
            effects.extend(self.reads.on_get(now, "", ClientGet(0, bucket, key, props.n)))
        return effects

    def shutdown(self) -> None:
        """Mark a clean stop (the runtime closes the engine after this)."""
        self.engine.meta_put("running", b"0")

    # --- queries for the runtime, the simulator and tests (read-only) ----------------------
    @property
    def state(self) -> Membership:
        return self.view.state

    @property
    def epoch(self) -> int:
        return self.view.epoch

    @property
    def ring(self) -> Ring:
        """The installed ring (during a transfer, partitions already moved follow ring.next)."""
        return self.view.ring

    @property
    def replication(self) -> int:
        return self.view.replication

    @property
    def down(self) -> set[str]:
        return self.view.down

    @property
    def hints_dropped(self) -> int:
        return self.hints.dropped

    def placement(self, bucket: str, key: str) -> Placement:
        return self.view.placement(bucket, key)

    def replica(self, bucket: str, key: str) -> Clock | None:
        validate_location(bucket, key)
        return self.store.get(bucket, key)

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "node_id": self.actor,
            "cluster": self.view.state.cluster,
            "epoch": self.view.epoch,
            "partitions_owned": len(self.view.ring.owned(self.name)),
            "hints_pending": self.hints.pending(),
            "hints_dropped": self.hints.dropped,
            "handoff": self.handoff.status(),
            "corrupt_records_found": self.store.corrupt_total,
            "anti_entropy": self.exchanges.status(),
            "tombstone_reaping": self.reaper.status(),
            "background": self.budget.status(),
            "transfers_pending": len(self.view.my_moves()),
            "transfers": self.transfers.status(),
            "transfer_keys_moved": self.transfers.keys_moved,
            "transfer_bytes_moved": self.transfers.bytes_moved,
            "transfer_keys_compared": self.transfers.keys_compared,
            "keys": self.engine.count(),
            "pending_requests": self.reads.pending() + self.coordinator.pending(),
            "down_peers": sorted(self.view.down),
        }

    def member_status(self, member: MemberRecord) -> str:
        if member.status in ("up", "joining") and member.name in self.view.down:
            return "down"
        return member.status

    def address_of(self, name: str) -> str | None:
        record = ms.member(self.view.state, name)
        return None if record is None else record.node_addr


def _unexpected(source: str, msg: Message) -> list[Effect]:
    rid = getattr(msg, "rid", 0)
    text = f"message type {type(msg).__name__} is not accepted here"
    return [Send(source, ErrorReply(rid, InvalidRequest.code, text))]
