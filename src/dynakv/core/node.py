"""The sans-I/O Dynamo node: `Node.handle(now, event)` returns effects; it never does I/O.

It coordinates gets and puts (quorums, read repair, forwarding to a replica), serves replica
reads and writes for its peers, and keeps membership and the ring (join, gossip). Time comes
from `now`, randomness from the injected `random.Random`, storage through a synchronous
engine whose writes the runtime commits before releasing this turn's effects.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from dynakv import versions
from dynakv.config import NodeConfig, validate_location
from dynakv.core import membership as ms
from dynakv.core.admission import BackgroundBudget
from dynakv.core.antientropy import KEYS_PER_REQUEST, AntiEntropy, ExchangeRound
from dynakv.core.bugs import NO_BUGS, InjectedBugs
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
    is_client,
)
from dynakv.core.failure import DetectorSettings, FailureDetector
from dynakv.core.handoff import Hint, HintStore
from dynakv.core.membership import MemberRecord, Membership, RingRecord
from dynakv.core.merkle import Exchange, HashRequest, SegmentDiff
from dynakv.core.quorum import GetQuorum, PutQuorum
from dynakv.core.reaper import (
    ROUND_ITEMS,
    Reaper,
    ReapRound,
    covers,
    may_hold_tombstone,
    tombstone_age,
)
from dynakv.core.replica import CorruptRecord, ReplicaStore, unseal
from dynakv.core.transfer import Pull
from dynakv.errors import ClusterError, DynakvError, InvalidRequest, Unavailable, ValueTooLarge
from dynakv.messages import (
    AaeFetch,
    AaeFetchReply,
    AaeHashes,
    AaeHashesReply,
    AaeKeys,
    AaeKeysReply,
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientPut,
    ClientRepair,
    ClusterInfo,
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
    RepairResult,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutReply,
    TransferBatch,
    TransferRequest,
)
from dynakv.ring import Ring, claim, key_digest, partition_of_digest, partition_range
from dynakv.storage.engine import Engine
from dynakv.versions import Clock, Sibling

JOIN_RETRY = 2.0
AAE_BUILD_PACE = 0.25  # seconds between two tree builds while trees are missing
MINT_LEASE = 4096  # minting actor ids reserved per metadata write


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


@dataclass(slots=True)
class PendingForward:
    source: str
    client_rid: int
    deadline: float
    target: str


@dataclass(slots=True)  # not frozen (made per request; see events.Received); never changed
class Placement:
    """Where one key's replicas go now: the N primaries, or fallbacks for those down."""

    digest: bytes
    primaries: list[str]
    targets: list[str]  # the N nodes asked: healthy primaries, fallbacks for down ones
    hints: dict[str, str]  # fallback -> the primary it stands in for (sloppy quorum)
    spare: list[str]  # the healthy rest of the walk, for replicas that turn out to be down
    incoming: list[str]  # replicas-to-be of a partition in transfer: copied on every write


# A key's placement as _place computes it: primaries, targets, hints, spare, incoming.
_Place = tuple[list[str], list[str], dict[str, str], list[str], list[str]]


@dataclass
class Delivery:
    hint: Hint
    deadline: float


class Node:
    """One dynakv node's whole logic. Only the runtime and the simulator call `handle`."""

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
        self._deferred: list[tuple[str, str, Clock]] = []  # ack_before_store bug only
        self.hints = HintStore(engine, config.hint_budget_bytes)
        self.budget = BackgroundBudget(config.background_p99_threshold)
        self.aae = AntiEntropy(
            self.store, config.ring_size, config.aae_segments, config.aae_branching
        )
        self.store.on_write = self._on_write
        # When each key last changed here, for the last `_settle` seconds (oldest first).
        # An OrderedDict: popping the oldest of a plain dict again and again is quadratic.
        self._changed: OrderedDict[bytes, float] = OrderedDict()
        self._settle = 2 * config.request_timeout
        self.rounds: dict[int, ExchangeRound] = {}
        self._aae_cursor = 0
        self._next_exchange = 0.0
        # operator repairs: (source, rid) -> [rounds left, pushed, pulled, rounds]
        self._repairs: dict[tuple[str, int], list[int]] = {}
        self.hints_dropped = 0
        self.reaper = Reaper()
        self.reap_rounds: dict[int, ReapRound] = {}
        self._reap_driven: tuple[object, list[int]] = (None, [])  # (ring, partitions I drive)
        self._deliveries: dict[int, Delivery] = {}
        self._handoff_backoff: dict[str, tuple[float, int]] = {}  # primary -> (until, failures)
        self._next_hint_expiry = 0.0
        self.rng = rng
        self.hlc = versions.HybridClock()
        # Peers treated as down: the runtime could not reach them, or phi-accrual suspects
        # them. It only steers sloppy quorum and waits; it never changes ownership.
        self.unreachable: set[str] = set()
        self.suspected: set[str] = set()
        self.down: set[str] = set()
        self.detector = FailureDetector(
            DetectorSettings(
                threshold=config.phi_threshold,
                window=config.phi_window,
                min_std_deviation=config.phi_min_std_deviation,
                acceptable_pause=config.phi_acceptable_pause,
                first_heartbeat_estimate=config.heartbeat_interval,
            )
        )
        self.gets: dict[int, PendingGet] = {}
        self.puts: dict[int, PendingPut] = {}
        self.forwards: dict[int, PendingForward] = {}
        # Forwarded puts coordinated lately, (forwarder, its rid) -> until when to remember:
        # a put delivered twice must not be written twice (a second dot for an old context).
        self._forwarded: dict[tuple[str, int], float] = {}
        self.join_target: str | None = None
        self._join_sent_at = float("-inf")
        # Random start: a late reply to a request of this node's previous life must not
        # match a new request (rids restart with the process).
        self._next_rid = 1 + rng.getrandbits(30)
        self._logs: list[Log] = []
        self.incarnation = self._load_incarnation()
        self.actor = (
            self.name if bugs.reuse_dots_after_restart else f"{self.name}@{self.incarnation}"
        )
        # Minting actors are `actor.N`, N from a counter leased in metadata (_mint_actor).
        self._mint_next = int(self.engine.meta_get("mint_lease") or b"0")
        self._mint_ceiling = self._mint_next
        self.replication = max([config.defaults.n, *(b.n for b in config.buckets.values())])
        self._pending_moves: dict[int, set[str]] = {}
        self._placed: dict[tuple[int, int], _Place] = {}  # (partition, n) -> _place(...)
        self._placed_ring: object = None
        self._placed_down: object = None
        self._placed_moves: object = None
        self.pulls: dict[int, Pull] = {}
        self.stopping = False
        self._now = 0.0
        self.state = self._load_state()
        self._removed = _removed_names(self.state)
        self._refresh_moves()
        self._handlers: dict[type, Callable[[float, str, Message], list[Effect]]] = {
            ClientGet: self._client_get,
            ClientPut: self._client_put,
            ClientClusterInfo: self._cluster_info,
            ReplicaGet: self._replica_get,
            ReplicaGetReply: self._replica_get_reply,
            ReplicaPut: self._replica_put,
            ReplicaPutReply: self._replica_put_reply,
            GetResult: self._forward_reply,
            PutResult: self._forward_reply,
            ErrorReply: self._error_reply,
            JoinRequest: self._join_request,
            JoinReply: self._join_reply,
            Gossip: self._gossip,
            Heartbeat: self._heartbeat,
            ClientClusterChange: self._cluster_change,
            TransferRequest: self._transfer_request,
            TransferBatch: self._transfer_batch,
            AaeHashes: self._aae_hashes,
            AaeHashesReply: self._aae_hashes_reply,
            AaeKeys: self._aae_keys,
            AaeKeysReply: self._aae_keys_reply,
            AaeFetch: self._aae_fetch,
            AaeFetchReply: self._aae_fetch_reply,
            ClientRepair: self._client_repair,
            ReapCheck: self._reap_check,
            ReapCheckReply: self._reap_check_reply,
            ReapCommit: self._reap_commit,
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

    def _me(self) -> MemberRecord:
        return MemberRecord(
            self.name, self.config.node_addr, self.config.http_addr, self.incarnation, "joining", 0
        )

    def _load_state(self) -> Membership:
        raw = self.engine.meta_get("membership")
        if raw is not None:
            state = ms.refresh_self(ms.decode(raw), self._me())
            self._persist_state(state)
            return state
        # Not a member of anything yet: epoch 0 until a cluster is founded or joined.
        me = self._me()
        return Membership(
            self.config.cluster,
            (me,),
            ms.RingRecord(0, claim([self.name], self.config.ring_size), self.name),
        )

    def _persist_state(self, state: Membership) -> None:
        self.engine.meta_put("membership", ms.encode(state))

    @property
    def epoch(self) -> int:
        return self.state.ring.epoch

    # --- the one entry point ---------------------------------------------------------------
    def handle(self, now: float, event: Event) -> list[Effect]:
        self._now = now
        if type(event) is Received:
            handler = self._handlers.get(type(event.message))
            if handler is None:
                effects = self._unexpected(event.source, event.message)
            else:
                try:
                    effects = handler(now, event.source, event.message)
                except DynakvError as exc:
                    effects = [Send(event.source, _error(getattr(event.message, "rid", 0), exc))]
        elif type(event) is TimerFired:
            effects = self._timer(now, event.name)
        elif type(event) is PeerDown:
            effects = self._peer_down(event.name)
        elif type(event) is PeerUp:
            self._reachable(event.name)
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
            self._logs = []
        return effects

    def _repair_corrupt(self, now: float) -> list[Effect]:
        """Report each corrupt record found and read its key from every replica: the read
        repair that follows writes the merged state over the corrupt copy."""
        found, self.store.found_corrupt = self.store.found_corrupt, []
        effects: list[Effect] = []
        for bucket, key, why in found:
            self._logs.append(
                Log("error", "corrupt_record", {"bucket": bucket, "key": key, "why": why})
            )
            if bucket == "?" or self.epoch == 0:
                continue  # only the digest is known (a transfer scan); anti-entropy finds it
            props = self.config.bucket(bucket)
            effects.extend(self._client_get(now, "", ClientGet(0, bucket, key, props.n)))
        return effects

    def shutdown(self) -> None:
        """Mark a clean stop (the runtime closes the engine after this)."""
        self.engine.meta_put("running", b"0")

    # --- queries for the runtime (read-only) -----------------------------------------------
    def replica(self, bucket: str, key: str) -> Clock | None:
        validate_location(bucket, key)
        return self.store.get(bucket, key)

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "node_id": self.actor,
            "cluster": self.state.cluster,
            "epoch": self.epoch,
            "partitions_owned": len(self.ring.owned(self.name)),
            "hints_pending": self.hints.pending(),
            "hints_dropped": self.hints_dropped,
            "corrupt_records_found": self.store.corrupt_total,
            "anti_entropy": self.aae.status(len(self._aae_partitions())),
            "tombstone_reaping": self.reaper.status(),
            "background": self.budget.status(),
            "transfers_pending": len(self._my_moves()),
            "transfers": [pull.progress() for pull in self.pulls.values()],
            "keys": self.engine.count(),
            "pending_requests": len(self.gets) + len(self.puts) + len(self.forwards),
            "down_peers": sorted(self.down),
        }

    def member_status(self, member: MemberRecord) -> str:
        if member.status in ("up", "joining") and member.name in self.down:
            return "down"
        return member.status

    def address_of(self, name: str) -> str | None:
        record = ms.member(self.state, name)
        return None if record is None else record.node_addr

    def _peers(self) -> list[str]:
        """Members other than this node that are still part of the cluster."""
        return [m.name for m in self.state.members if m.name != self.name and m.status != "removed"]

    # --- lifecycle and timers --------------------------------------------------------------
    def _start(self, now: float, join: str | None) -> list[Effect]:
        effects: list[Effect] = [
            SetTimer("sweep", now + self.config.sweep_interval),
            SetTimer("gossip", now + self.config.gossip_interval),
            SetTimer("handoff", now + self.config.handoff_interval),
            SetTimer("heartbeat", now),
        ]
        effects.append(SetTimer("transfer", now + self.config.transfer_interval))
        if self.config.anti_entropy:
            effects.append(SetTimer("aae", now + min(1.0, self.config.aae_interval)))
        effects.append(SetTimer("reap", now + self.config.reap_interval))
        if self.epoch == 0 and join is None:
            self._adopt(ms.new_cluster(self.config.cluster, self._me(), self.config.ring_size))
            self._logs.append(Log("info", "cluster_created", {"cluster": self.state.cluster}))
        if join is not None and self.epoch == 0:
            self.join_target = "@" + join
            effects.extend(self._send_join(now))
        # Tell every member we are (back) up, so they stop treating us as down.
        effects.extend(Send(peer, Gossip(self.state)) for peer in self._peers())
        return effects

    def _send_join(self, now: float) -> list[Effect]:
        assert self.join_target is not None
        self._join_sent_at = now
        message = JoinRequest(rid=self._rid(), member=self._me(), cluster=self.config.cluster)
        return [Send(self.join_target, message)]

    def _timer(self, now: float, name: str) -> list[Effect]:
        if name == "sweep":
            effects = self._expire(now)
            effects.extend(self._speculate(now))
            effects.extend(self._store_deferred())
            if (
                self.join_target is not None
                and self.epoch == 0
                and now - self._join_sent_at >= JOIN_RETRY
            ):
                effects.extend(self._send_join(now))
            effects.append(SetTimer("sweep", now + self.config.sweep_interval))
            return effects
        if name == "handoff":
            return self._handoff(now)
        if name == "heartbeat":
            return self._heartbeats(now)
        if name == "gossip":
            effects: list[Effect] = [SetTimer("gossip", now + self.config.gossip_interval)]
            effects.extend(self._claim())
            effects.extend(self._leave_when_done())
            peers = self._peers()
            if peers:
                effects.append(Send(self.rng.choice(peers), Gossip(self.state)))
            return effects
        if name == "transfer":
            return self._transfer_tick(now)
        if name == "aae":
            return self._aae_tick(now)
        if name == "reap":
            return self._reap_tick(now)
        if name == "stop":
            return [Stop("left the cluster")]
        return []

    def _expire(self, now: float) -> list[Effect]:
        """Answer requests whose deadline passed. Deadlines grow with rid, so stop early."""
        effects: list[Effect] = []
        for rid, get in list(self.gets.items()):
            if get.deadline > now:
                break
            if not get.replied and get.source:
                got = len(get.quorum.replies)
                effects.append(
                    Send(
                        get.source,
                        _error(get.client_rid, Unavailable(needed=get.quorum.r, got=got)),
                    )
                )
            effects.extend(self._read_repair(get))
            del self.gets[rid]
        for rid, put in list(self.puts.items()):
            if put.deadline > now:
                break
            if not put.replied:
                effects.append(Send(put.source, _error(put.client_rid, put.quorum.error())))
            del self.puts[rid]
        for rid, forward in list(self.forwards.items()):
            if forward.deadline > now:
                break
            error = Unavailable(f"coordinator {forward.target} did not answer", needed=1, got=0)
            effects.append(Send(forward.source, _error(forward.client_rid, error)))
            del self.forwards[rid]
        for rid, delivery in list(self._deliveries.items()):
            if delivery.deadline > now:
                break
            del self._deliveries[rid]
            self._back_off(delivery.hint.primary, now)
        for seen, until in list(self._forwarded.items()):
            if until > now:
                break
            del self._forwarded[seen]
        for rid, round_ in list(self.rounds.items()):
            if round_.deadline <= now:
                effects.extend(self._end_round(rid, round_, "timed out"))
        for rid, reap in list(self.reap_rounds.items()):
            if reap.deadline <= now:
                del self.reap_rounds[rid]
                self.reaper.timed_out += 1
        return effects

    def _speculate(self, now: float) -> list[Effect]:
        """Reads still short of R after read_speculation ask the replicas they left out: one
        of those asked may be dead without the failure detector knowing yet."""
        effects: list[Effect] = []
        for rid, get in self.gets.items():
            if get.reserve and not get.replied and get.speculate_at <= now:
                effects.extend(self._ask_reserve(rid, get, len(get.reserve)))
        return effects

    def _store_deferred(self) -> list[Effect]:
        """ack_before_store bug: the store and replication that should have come first."""
        effects: list[Effect] = []
        for bucket, key, clock in self._deferred:
            local = self.store.get(bucket, key)
            merged = clock if local is None else versions.sync(clock, local)
            state = self.store.put(bucket, key, merged)
            for node in self._placement(bucket, key).primaries:
                if node != self.name:
                    effects.append(Send(node, ReplicaPut(0, bucket, key, state)))
        self._deferred.clear()
        return effects

    # --- active anti-entropy ---------------------------------------------------------------
    def _aae_partitions(self) -> list[int]:
        """Partitions this node is a primary replica of, not moving right now."""
        record = self.state.ring
        if record.ring.size != self.aae.ring_size or self.epoch == 0:
            return []
        mine = []
        for partition in range(record.ring.size):
            if record.next is not None and partition in self._pending_moves:
                continue
            if self.name in self._replicas(partition):
                mine.append(partition)
        return mine

    def _replicas(self, partition: int) -> list[str]:
        record = self.state.ring
        ring = record.ring if record.next is None else record.next
        return ring.preference_list(partition, self.replication)

    def _aae_tick(self, now: float) -> list[Effect]:
        """Build one missing tree per tick (a few per second, so the loop never stalls
        long), and every aae_interval start an exchange of one (partition, peer) pair."""
        wanted = self._aae_partitions()
        self.aae.forget(set(wanted))
        built = self.aae.build_next(wanted)
        if built is not None:
            self._logs.append(Log("info", "aae_tree_built", {"partition": built}))
        interval = self.budget.stretch(self.config.aae_interval)
        pace = self.budget.stretch(AAE_BUILD_PACE) if built is not None else interval
        effects: list[Effect] = [SetTimer("aae", now + min(pace, interval))]
        concurrency = self.budget.scale(self.config.aae_concurrency)
        if len(self.rounds) >= concurrency or now < self._next_exchange:
            return effects
        self._next_exchange = now + interval
        pairs = [
            (partition, peer)
            for partition in wanted
            if partition in self.aae.trees
            for peer in self._replicas(partition)
            if peer != self.name and peer not in self.down
        ]
        busy = {(r.partition, r.peer) for r in self.rounds.values()}
        for _ in range(min(len(pairs), concurrency - len(self.rounds))):
            partition, peer = pairs[self._aae_cursor % len(pairs)]
            self._aae_cursor += 1
            if (partition, peer) not in busy:
                effects.extend(self._start_round(now, partition, peer, None))
        return effects

    def _start_round(
        self, now: float, partition: int, peer: str, requester: tuple[str, int] | None
    ) -> list[Effect]:
        tree = self.aae.trees.get(partition) or self.aae.build(partition)
        exchange = Exchange(tree)
        round_ = ExchangeRound(partition, peer, exchange, now + 4 * self.config.request_timeout)
        round_.requester = requester
        rid = self._rid()
        self.rounds[rid] = round_
        return [self._ask_hashes(rid, round_, exchange.start())]

    def _ask_hashes(self, rid: int, round_: ExchangeRound, request: HashRequest) -> Send:
        tree = round_.exchange.tree
        shape = (tree.shape.segments, tree.shape.branching)
        message = AaeHashes(rid, round_.partition, shape, request.level, list(request.indices))
        return Send(round_.peer, message)

    def _aae_hashes(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeHashes)
        if (
            self.config.anti_entropy
            and msg.partition not in self.aae.trees
            and msg.partition in self._aae_partitions()
        ):
            self.aae.build(msg.partition)  # a peer asks first: build now rather than stall it
        hashes = self.aae.hashes(msg.partition, tuple(msg.shape), msg.level, msg.indices)
        return [Send(source, AaeHashesReply(msg.rid, hashes))]

    def _aae_hashes_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeHashesReply)
        round_ = self.rounds.get(msg.rid)
        if round_ is None or source != round_.peer or round_.waiting != "hashes":
            return []
        if msg.hashes is None:
            return self._end_round(msg.rid, round_, "peer has no tree yet")
        pending = round_.exchange.pending
        if pending is None:
            return []
        try:
            step = round_.exchange.on_hashes(pending.level, pending.indices, msg.hashes)
        except ValueError:
            return self._end_round(msg.rid, round_, "malformed hashes")
        if step is None:
            return []
        if isinstance(step, HashRequest):
            return [self._ask_hashes(msg.rid, round_, step)]
        assert isinstance(step, SegmentDiff)
        if not step.segments:
            self.aae.exchanges_in_sync += 1
            return self._end_round(msg.rid, round_, None)
        round_.segments = list(step.segments)
        return self._ask_keys(msg.rid, round_)

    def _ask_keys(self, rid: int, round_: ExchangeRound) -> list[Effect]:
        round_.waiting = "keys"
        segments = round_.segments[:KEYS_PER_REQUEST]
        return [Send(round_.peer, AaeKeys(rid, round_.partition, segments))]

    def _aae_keys(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeKeys)
        if len(msg.segments) > KEYS_PER_REQUEST:
            raise InvalidRequest(f"at most {KEYS_PER_REQUEST} segments per request")
        return [Send(source, AaeKeysReply(msg.rid, self.aae.key_map(msg.partition, msg.segments)))]

    def _aae_keys_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeKeysReply)
        round_ = self.rounds.get(msg.rid)
        if round_ is None or source != round_.peer or round_.waiting != "keys":
            return []
        if msg.keys is None:
            return self._end_round(msg.rid, round_, "peer has no tree yet")
        push, pull = self.aae.compare_segments(round_, msg.keys)
        del round_.segments[:KEYS_PER_REQUEST]
        effects: list[Effect] = []
        for raw in self.aae.records(push):
            bucket, key, state = unseal(raw)
            effects.append(Send(round_.peer, ReplicaPut(0, bucket, key, state)))
            round_.pushed += 1
        round_.fetching.extend(pull)
        effects.extend(self._next_fetch(msg.rid, round_))
        return effects

    def _next_fetch(self, rid: int, round_: ExchangeRound) -> list[Effect]:
        if round_.fetching:
            round_.waiting = "fetch"
            batch = round_.fetching[:KEYS_PER_REQUEST]
            del round_.fetching[:KEYS_PER_REQUEST]
            return [Send(round_.peer, AaeFetch(rid, batch))]
        if round_.segments:
            return self._ask_keys(rid, round_)
        return self._end_round(rid, round_, None)

    def _aae_fetch(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeFetch)
        if len(msg.digests) > KEYS_PER_REQUEST:
            raise InvalidRequest(f"at most {KEYS_PER_REQUEST} digests per request")
        return [Send(source, AaeFetchReply(msg.rid, self.aae.records(msg.digests)))]

    def _aae_fetch_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeFetchReply)
        round_ = self.rounds.get(msg.rid)
        if round_ is None or source != round_.peer or round_.waiting != "fetch":
            return []
        for raw in msg.records:
            try:
                self.store.merge_record(raw, self._is_lww)
            except (CorruptRecord, InvalidRequest):
                continue
            round_.pulled += 1
        return self._next_fetch(msg.rid, round_)

    def _end_round(self, rid: int, round_: ExchangeRound, problem: str | None) -> list[Effect]:
        del self.rounds[rid]
        self.aae.exchanges += 1
        self.aae.keys_repaired += round_.pushed + round_.pulled
        if round_.pushed or round_.pulled or problem:
            fields: dict[str, object] = {
                "partition": round_.partition,
                "peer": round_.peer,
                "pushed": round_.pushed,
                "pulled": round_.pulled,
            }
            if problem:
                fields["problem"] = problem
            self._logs.append(Log("info", "aae_exchange", fields))
        if round_.requester is None:
            return []
        source, client_rid = round_.requester
        tally = self._repairs[round_.requester]
        tally[0] -= 1
        tally[1] += round_.pushed
        tally[2] += round_.pulled
        if tally[0] > 0:
            return []
        del self._repairs[round_.requester]
        result = RepairResult(client_rid, tally[3], tally[1], tally[2])
        return [Send(source, result)]

    def _client_repair(self, now: float, source: str, msg: Message) -> list[Effect]:
        """`dynakv cluster repair`: exchange now with every other replica of the partitions."""
        assert isinstance(msg, ClientRepair)
        if not self.config.anti_entropy:
            raise InvalidRequest("anti-entropy is switched off on this node (anti_entropy)")
        mine = self._aae_partitions()
        if msg.partition >= 0:
            if msg.partition not in mine:
                raise InvalidRequest(
                    f"this node is not a replica of partition {msg.partition}; "
                    f"it holds {len(mine)} partitions"
                )
            mine = [msg.partition]
        pairs = [
            (p, peer) for p in mine for peer in self._replicas(p)
            if peer != self.name and peer not in self.down
        ]  # fmt: skip
        if not pairs:
            return [Send(source, RepairResult(msg.rid, 0, 0, 0))]
        self._repairs[(source, msg.rid)] = [len(pairs), 0, 0, len(pairs)]
        effects: list[Effect] = []
        for partition, peer in pairs:
            effects.extend(self._start_round(now, partition, peer, (source, msg.rid)))
        return effects

    def _on_write(self, digest: bytes, old: Clock | None, new: Clock | None) -> None:
        self.aae.on_write(digest, old, new)
        changed = self._changed
        changed[digest] = self._now
        changed.move_to_end(digest)  # ordered by time of the last change

    def _forget_settled(self, now: float) -> None:
        changed = self._changed
        horizon = now - self._settle
        while changed:
            when = next(iter(changed.values()))
            if when > horizon:
                break
            changed.popitem(last=False)

    # --- tombstone reaping (core/reaper.py) ------------------------------------------------
    def _reap_tick(self, now: float) -> list[Effect]:
        """Scan a bounded batch of this node's driven partitions for tombstones past their
        grace period, and ask every other member whether they may go."""
        effects: list[Effect] = [
            SetTimer("reap", now + self.budget.stretch(self.config.reap_interval))
        ]
        self._forget_settled(now)
        blocked = self._reap_blocked()
        self.reaper.blocked = blocked
        if blocked or self.reap_rounds:
            return effects
        items = self._reap_candidates(now)
        if not items:
            return effects
        peers = self._peers()
        if self.bugs.reap_unchecked or not peers:
            return effects + self._reap_everywhere(items)
        rid = self._rid()
        self.reap_rounds[rid] = ReapRound(
            self.epoch, items, set(peers), now + self.config.request_timeout
        )
        self.reaper.rounds += 1
        check = ReapCheck(rid, self.epoch, items)
        effects.extend(Send(peer, check) for peer in peers)
        return effects

    def _reap_blocked(self) -> str:
        """Why no tombstone may be reaped now ("" when the sweep may run)."""
        if self.epoch == 0:
            return "not joined"
        if self.stopping:
            return "stopping"
        if self.state.ring.next is not None:
            return "ownership transfer under way"
        if self.bugs.reap_unchecked:
            return ""
        down = [peer for peer in self._peers() if peer in self.down]
        if down:
            return f"members down: {', '.join(down)}"
        return ""

    def _reap_candidates(self, now: float) -> list[tuple[str, str, bytes]]:
        """Tombstone-only states older than the grace period, from the next stretch of the
        partitions this node drives (those it is the first replica of)."""
        ring = self.state.ring.ring
        if self._reap_driven[0] is not ring:  # computed again only when the ring changes
            driven = [p for p in range(ring.size) if self._replicas(p)[0] == self.name]
            self._reap_driven = (ring, driven)
        driven = self._reap_driven[1]
        if not driven:
            return []
        sweep = self.reaper
        grace = self.config.tombstone_grace
        budget = self.config.reap_scan
        items: list[tuple[str, str, bytes]] = []
        for _ in range(len(driven) + 1):
            if sweep.partition_index >= len(driven):
                sweep.partition_index = 0
                sweep.after = b""
            start, end = partition_range(driven[sweep.partition_index], ring.size)
            finished = True
            for digest, raw in self.engine.scan(sweep.after or start, end):
                if digest == sweep.after:
                    continue
                sweep.after = digest
                sweep.scanned += 1
                budget -= 1
                if may_hold_tombstone(raw):
                    try:
                        bucket, key, state = unseal(raw)
                        age = tombstone_age(versions.decode(state), now)
                    except (CorruptRecord, InvalidRequest):
                        age = None  # anti-entropy and read repair mend it
                    if age is not None and age >= grace:
                        items.append((bucket, key, state))
                if budget <= 0 or len(items) >= ROUND_ITEMS:
                    finished = False
                    break
            if not finished:
                break
            sweep.partition_index += 1
            sweep.after = b""
        return items

    def _reap_check(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCheck)
        agreed = msg.epoch == self.epoch and self.state.ring.next is None
        ok = [
            agreed and self._may_reap(now, bucket, key, state, clean=True)
            for bucket, key, state in msg.items
        ]
        return [Send(source, ReapCheckReply(msg.rid, ok))]

    def _may_reap(self, now: float, bucket: str, key: str, state: bytes, clean: bool) -> bool:
        """This node's part of the check: no hint held for the key; a primary holds exactly
        the tombstone state, unchanged for a while; any other node holds nothing the
        tombstone does not cover. With `clean`, such a node deletes its covered copy at once
        (the asking primary holds the tombstone), so that a lost ReapCommit can never leave
        an old fallback copy behind to serve once the primaries have reaped."""
        try:
            validate_location(bucket, key)
            tombstone = versions.decode(state)
            local = self.store.get(bucket, key, strict=True)
        except (InvalidRequest, CorruptRecord):
            return False
        if tombstone_age(tombstone, now) is None:
            return False
        digest = key_digest(bucket, key)
        if self.hints.holding(digest):
            return False
        ring = self.state.ring.ring
        primaries = ring.preference_list(ring.partition(bucket, key), self.config.bucket(bucket).n)
        if self.name in primaries:
            # Settled: a copy that changed lately may have been pushed on from a replica
            # that still held the old value a moment ago; let such messages land first.
            changed = self._changed.get(digest)
            settled = changed is None or now - changed >= self._settle
            return settled and local == tombstone
        if local is None:
            return True
        if not covers(tombstone, local):
            return False
        if clean:
            self.store.delete(bucket, key, local)
        return True

    def _reap_check_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCheckReply)
        round_ = self.reap_rounds.get(msg.rid)
        if round_ is None or not round_.answer(source, msg.ok):
            return []
        del self.reap_rounds[msg.rid]
        agreed = [item for item, ok in zip(round_.items, round_.ok, strict=True) if ok]
        if round_.epoch != self.epoch or self._reap_blocked():
            agreed = []
        agreed = [item for item in agreed if self._may_reap(now, *item, clean=False)]
        self.reaper.refused += len(round_.items) - len(agreed)
        return self._reap_everywhere(agreed) if agreed else []

    def _reap_everywhere(self, items: list[tuple[str, str, bytes]]) -> list[Effect]:
        self._reap_locally(items)
        self._logs.append(Log("info", "tombstones_reaped", {"keys": len(items)}))
        commit = ReapCommit(self.epoch, items)
        return [Send(peer, commit) for peer in self._peers()]

    def _reap_commit(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReapCommit)
        self._reap_locally(msg.items)  # compare-and-delete: safe whatever the epoch by now
        return []

    def _reap_locally(self, items: list[tuple[str, str, bytes]]) -> None:
        """Delete each key's copy if the tombstone state covers it (compare-and-delete)."""
        for bucket, key, state in items:
            try:
                validate_location(bucket, key)
                tombstone = versions.decode(state)
                local = self.store.get(bucket, key, strict=True)
            except (InvalidRequest, CorruptRecord):
                continue
            if local is None or not covers(tombstone, local):
                continue
            self.store.delete(bucket, key, local)
            for hint in self.hints.holding(key_digest(bucket, key)):
                self.hints.remove(hint)
            self.reaper.reaped += 1

    def _mint_actor(self, local: Clock | None, minted: tuple[str, int]) -> str:
        """The actor id that dots this node's next write of a key whose state is `local`.

        It continues the actor this node last minted with for the key (`minted`, kept in
        the local record) while the state's counter for it is still the one minted last;
        otherwise it takes a fresh id. A node whose copy of the key was reaped, lost or
        rebuilt cannot know which counters it used for the key before, and old contexts
        that clients still hold, or states they brought back, may name them: a fresh id
        cannot reuse a dot (Riak's KV679).
        """
        if self.bugs.reuse_dots_after_restart:
            return self.actor
        actor, counter = minted
        if local is not None and actor.startswith(self.actor + "."):
            for entry in local.entries:
                if entry.actor == actor:
                    if entry.counter == counter:
                        return actor
                    break
        if self._mint_next >= self._mint_ceiling:
            self._mint_ceiling = self._mint_next + MINT_LEASE
            self.engine.meta_put("mint_lease", str(self._mint_ceiling).encode())
        self._mint_next += 1
        return f"{self.actor}.{self._mint_next - 1:x}"

    # --- hinted handoff -------------------------------------------------------------------
    def _handoff(self, now: float) -> list[Effect]:
        """Offer held hints to their primaries that are reachable, a bounded batch each."""
        effects: list[Effect] = [SetTimer("handoff", now + self.config.handoff_interval)]
        if self.name in self._removed:
            return effects  # a removed node's hints are old news: its data was rebuilt
        if now >= self._next_hint_expiry:
            self._next_hint_expiry = now + 60.0
            self._expire_hints(now)
        members = set(self._peers())
        for primary in sorted(self.hints.per_primary):
            if primary in members:
                effects.extend(self._offer_hints(primary, now))
        return effects

    def _offer_hints(self, primary: str, now: float) -> list[Effect]:
        """Top up the hints in flight to `primary` to the (budgeted) batch size.

        Called every handoff tick and whenever an acknowledgement has halved the batch in
        flight, so delivery runs at the pace of the acknowledgements, not of the tick."""
        if primary in self.down or now < self._handoff_backoff.get(primary, (0.0, 0))[0]:
            return []
        busy = {d.hint.record_key for d in self._deliveries.values() if d.hint.primary == primary}
        room = self.budget.scale(self.config.handoff_batch) - len(busy)
        if room <= 0:
            return []
        effects: list[Effect] = []
        for hint in self.hints.batch(primary, room, busy):
            if now - hint.created > self.config.hint_window:
                self.hints.remove(hint)
                self._drop_hint_log(primary, hint.bucket, hint.key, "age")
                continue
            state = self.store.get_state(hint.bucket, hint.key)
            if state is None:
                self.hints.remove(hint)
                continue
            rid = self._rid()
            self._deliveries[rid] = Delivery(hint, now + self.config.request_timeout)
            effects.append(Send(primary, ReplicaPut(rid, hint.bucket, hint.key, state)))
        return effects

    def _expire_hints(self, now: float) -> None:
        for primary in sorted(self.hints.per_primary):
            for hint in self.hints.batch(primary, 1 << 30, set()):
                if now - hint.created > self.config.hint_window:
                    self.hints.remove(hint)
                    self._drop_hint_log(primary, hint.bucket, hint.key, "age")

    def _back_off(self, primary: str, now: float) -> None:
        failures = self._handoff_backoff.get(primary, (0.0, 0))[1] + 1
        delay = min(30.0, self.config.handoff_interval * 2 ** min(failures, 5))
        self._handoff_backoff[primary] = (now + delay, failures)

    def _drop_hint_log(self, primary: str, bucket: str, key: str, reason: str) -> None:
        self.hints_dropped += 1
        self._logs.append(
            Log(
                "warning",
                "hint_dropped",
                {"primary": primary, "bucket": bucket, "key": key, "reason": reason},
            )
        )

    def _peer_down(self, name: str) -> list[Effect]:
        if name not in self.unreachable and name != self.name:
            self.unreachable.add(name)
            self._logs.append(Log("warning", "peer_unreachable", {"peer": name}))
            self._refresh_down()
        effects: list[Effect] = []
        # Sloppy quorum: a replica found down mid-request is replaced by the next healthy
        # node of the walk; a write sent there carries a hint naming the primary.
        for rid, get in list(self.gets.items()):
            if get.quorum.waiting_on(name):
                if any(node not in self.down for node in get.reserve):
                    get.quorum.fail(name)  # a replica not asked yet answers instead
                    effects.extend(self._ask_reserve(rid, get, 1))
                    effects.extend(self._progress_get(rid, get))
                    continue
                fallback = self._take_spare(get.spare)
                if fallback is None:
                    get.quorum.fail(name)
                    effects.extend(self._progress_get(rid, get))
                else:
                    get.quorum.replace(name, fallback)
                    effects.append(Send(fallback, ReplicaGet(rid, get.bucket, get.key)))
        for rid, put in list(self.puts.items()):
            if put.quorum.waiting_on(name):
                fallback = self._take_spare(put.spare)
                if fallback is None:
                    put.quorum.fail(name)
                    effects.extend(self._progress_put(rid, put))
                else:
                    put.quorum.replace(name, fallback)
                    primary = put.hints.pop(name, name)
                    put.hints[fallback] = primary
                    request = ReplicaPut(rid, put.bucket, put.key, put.state, hint=primary)
                    effects.append(Send(fallback, request))
        for rid, delivery in list(self._deliveries.items()):
            if delivery.hint.primary == name:
                del self._deliveries[rid]
        for rid, forward in list(self.forwards.items()):
            if forward.target == name:
                error = Unavailable(f"coordinator {name} is unreachable", needed=1, got=0)
                effects.append(Send(forward.source, _error(forward.client_rid, error)))
                del self.forwards[rid]
        return effects

    # --- failure detection ----------------------------------------------------------------
    def _heartbeats(self, now: float) -> list[Effect]:
        effects: list[Effect] = [SetTimer("heartbeat", now + self.config.heartbeat_interval)]
        beat = Heartbeat()
        for peer in self._peers():
            self.detector.watch(peer, now)
            effects.append(Send(peer, beat))
        suspected = {
            peer for peer in self.detector.peers() if not self.detector.is_available(peer, now)
        }
        for peer in sorted(suspected - self.suspected):
            self._logs.append(
                Log(
                    "warning", "peer_suspected", {"peer": peer, "phi": self.detector.phi(peer, now)}
                )
            )
        for peer in sorted(self.suspected - suspected):
            self._logs.append(Log("info", "peer_recovered", {"peer": peer}))
        if suspected != self.suspected:
            self.suspected = suspected
            self._refresh_down()
        return effects

    def _heartbeat(self, now: float, source: str, msg: Message) -> list[Effect]:
        if is_client(source):
            return []
        self.detector.heartbeat(source, now)
        self._reachable(source)
        if source in self.suspected and self.detector.is_available(source, now):
            self.suspected.discard(source)
            self._logs.append(Log("info", "peer_recovered", {"peer": source}))
            self._refresh_down()
        return []

    def _reachable(self, name: str) -> None:
        if name in self.unreachable:
            self.unreachable.discard(name)
            self._refresh_down()

    def _refresh_down(self) -> None:
        self.down = (self.unreachable | self.suspected) - {self.name}

    def _take_spare(self, spare: list[str]) -> str | None:
        while spare:
            node = spare.pop(0)
            if node not in self.down:
                return node
        return None

    # --- client requests -------------------------------------------------------------------
    def _placement(self, bucket: str, key: str) -> Placement:
        """The key's N primaries and, for each one down, the next healthy node of the walk."""
        digest, place = self._placed_for(bucket, key)
        primaries, targets, hints, spare, incoming = place
        # The quorums replace down targets in place and spare fallbacks are used up: copies.
        return Placement(digest, primaries, list(targets), hints, list(spare), incoming)

    def _placed_for(self, bucket: str, key: str) -> tuple[bytes, _Place]:
        """The key's digest and its cached placement (shared: callers copy what they change)."""
        if self.epoch == 0:
            raise Unavailable("this node has not joined a cluster yet", needed=1, got=0)
        record = self.state.ring
        digest = key_digest(bucket, key)
        partition = partition_of_digest(digest, record.ring.size)
        n = self.config.bucket(bucket).n
        # Every request computes this; it changes only with the ring, the down set or the
        # transfers under way (each replaced whole, never changed in place), so it is cached
        # per partition until one of them is replaced.
        if (
            self._placed_ring is not record
            or self._placed_down is not self.down
            or self._placed_moves is not self._pending_moves
        ):
            self._placed.clear()
            self._placed_ring, self._placed_down = record, self.down
            self._placed_moves = self._pending_moves
        place = self._placed.get((partition, n))
        if place is None:
            place = self._placed[(partition, n)] = self._place(record, partition, n)
        return digest, place

    def _place(self, record: RingRecord, partition: int, n: int) -> _Place:
        ring = record.ring
        incoming: list[str] = []
        if record.next is not None:
            if partition in self._pending_moves:
                # Data still moving: the installed ring serves, and the new replicas get
                # every write too, so nothing written during the transfer is missed.
                before = ring.preference_list(partition, n)
                incoming = [x for x in record.next.preference_list(partition, n) if x not in before]
            else:
                ring = record.next
        walk = ring.walk(partition)
        primaries = walk[:n]
        down = self.down
        spare = [node for node in walk[n:] if node not in down]
        if not down or not any(node in down for node in primaries):
            return primaries, primaries, {}, spare, incoming
        targets: list[str] = []
        hints: dict[str, str] = {}
        for node in primaries:
            if node not in down or not spare:
                targets.append(node)  # a down primary with no fallback left counts as failed
            else:
                fallback = spare.pop(0)
                targets.append(fallback)
                hints[fallback] = node
        return primaries, targets, hints, spare, incoming

    def _client_get(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientGet)
        validate_location(msg.bucket, msg.key)
        props = self.config.bucket(msg.bucket)
        r = _quorum_param("r", msg.r, props.r, props.n)
        # Read only: the shared cached placement, no copies (spare is copied if it is kept).
        primaries, replicas, _, spare, _ = self._placed_for(msg.bucket, msg.key)[1]
        r = min(r, len(replicas))
        # This node's own copy first (no message), then the others in preference order.
        order = [node for node in replicas if node != self.name and node not in self.down]
        if self.name in replicas:
            order.insert(0, self.name)
        fanout = len(order) if self.config.read_fanout == "n" else r
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
            if len(asked) == 1 and r == 1 and not local_failed and source:
                # Answered by this node's own copy alone: the read is over in this call,
                # with no other answer to merge or repair, so no quorum and no pending entry.
                # (Not the internal read that mends a corrupt copy: it has no client.)
                if local is not None and lww:
                    local = versions.lww(local)
                return [Send(source, _get_result(msg.rid, local))]
        quorum = GetQuorum(asked, r, lww=lww)
        rid = self._rid()
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
            quorum.replicas.extend(node for node in replicas if node in self.down)
            for node in replicas:
                if node in self.down:
                    quorum.fail(node)  # too few replicas up: R never can answer
        effects.extend(self._progress_get(rid, pending))
        return effects

    def _ask_reserve(self, rid: int, get: PendingGet, count: int) -> list[Effect]:
        """Ask `count` more replicas not asked so far (fan-out "r": one failed or is slow)."""
        effects: list[Effect] = []
        request = ReplicaGet(rid, get.bucket, get.key)
        while count > 0 and get.reserve:
            node = get.reserve.pop(0)
            if node in self.down:
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
                    effects.append(Send(get.source, _error(get.client_rid, exc)))
                else:
                    effects.append(Send(get.source, _get_result(get.client_rid, merged)))
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

    def _client_put(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientPut)
        if msg.hops:
            if (source, msg.rid) in self._forwarded:
                return []  # a duplicate of a forwarded put already coordinated
            self._forwarded[(source, msg.rid)] = now + 2 * self.config.request_timeout
        validate_location(msg.bucket, msg.key)
        if len(msg.value) > self.config.max_value_bytes:
            raise ValueTooLarge(
                f"value is {len(msg.value)} bytes; the limit is {self.config.max_value_bytes}"
            )
        props = self.config.bucket(msg.bucket)
        w = _quorum_param("w", msg.w, props.w, props.n)
        context = versions.decode_context(msg.context)
        placement = self._placement(msg.bucket, msg.key)
        replicas = placement.targets
        if self.name not in replicas and msg.hops == 0:
            return self._forward(now, source, msg, replicas)
        lww = props.policy == "lww"
        try:
            local, minted = self.store.read(msg.bucket, msg.key, strict=True)
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
        sibling = Sibling(
            value=b"" if msg.delete else msg.value,
            deleted=msg.delete,
            content_type=msg.content_type,
            timestamp=self.hlc.now(now),
        )
        actor = self._mint_actor(local, minted)
        clock = versions.update(versions.new(context, sibling), local, actor)
        if lww:
            clock = versions.lww(clock)
        rid = self._rid()
        if self.bugs.ack_before_store:
            self._deferred.append((msg.bucket, msg.key, clock))
            return [Send(source, PutResult(msg.rid, versions.encode_context(versions.join(clock))))]
        state = versions.encode(clock)
        quorum = PutQuorum(replicas, min(w, len(replicas)))
        stands_in_for = placement.hints.get(self.name)
        if stands_in_for is None or self.hints.record(
            stands_in_for, placement.digest, msg.bucket, msg.key, now, len(state)
        ):
            self.store.put(
                msg.bucket, msg.key, clock, local, (actor, _counter(clock, actor)), state
            )
            quorum.ack(self.name)
        else:
            quorum.fail(self.name)
            self._drop_hint_log(stands_in_for, msg.bucket, msg.key, "budget")
        effects: list[Effect] = []
        for node in replicas:
            if node == self.name:
                continue
            if node in self.down:
                quorum.fail(node)
            else:
                hint = placement.hints.get(node, "")
                effects.append(Send(node, ReplicaPut(rid, msg.bucket, msg.key, state, hint=hint)))
        for node in placement.incoming:
            if node not in self.down and node not in replicas:
                effects.append(Send(node, ReplicaPut(0, msg.bucket, msg.key, state)))
        # The new state's context would also cover siblings the client never saw (a blind
        # write beside them); handing it out would let the next put drop them silently.
        # Then the client keeps its own context, and its next read shows the siblings.
        if len(versions.values(clock)) == 1:
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
        )
        self.puts[rid] = pending
        effects.extend(self._progress_put(rid, pending))
        return effects

    def _forward(
        self, now: float, source: str, msg: ClientPut, replicas: list[str]
    ) -> list[Effect]:
        """Puts are coordinated by a replica of the key (it mints the dot); pass it on."""
        target = next((node for node in replicas if node not in self.down), None)
        if target is None:
            raise Unavailable("no replica of this key is reachable", needed=1, got=0)
        rid = self._rid()
        deadline = now + self.config.request_timeout
        self.forwards[rid] = PendingForward(source, msg.rid, deadline, target)
        return [Send(target, msgspec.structs.replace(msg, rid=rid, hops=1))]

    def _progress_put(self, rid: int, put: PendingPut) -> list[Effect]:
        effects: list[Effect] = []
        quorum = put.quorum
        if not put.replied and quorum.enough():
            put.replied = True
            if quorum.succeeded():
                result = PutResult(put.client_rid, put.context)
                effects.append(Send(put.source, result, put.mark))
            else:
                effects.append(Send(put.source, _error(put.client_rid, quorum.error())))
        if quorum.complete():
            del self.puts[rid]
        return effects

    def _cluster_info(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ClientClusterInfo)
        return [Send(source, ClusterInfo(msg.rid, self.state))]

    # --- replica side ----------------------------------------------------------------------
    def _replica_get(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaGet)
        validate_location(msg.bucket, msg.key)
        return [Send(source, ReplicaGetReply(msg.rid, self.store.get_state(msg.bucket, msg.key)))]

    def _replica_get_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
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

    def _replica_put(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaPut)
        if source in self._removed:
            # A removed node that comes back with its old disk must not hand old copies
            # around (they could bring back keys reaped since); it stops once it learns.
            raise ClusterError(f"{source} was removed from the cluster")
        validate_location(msg.bucket, msg.key)
        incoming = versions.decode(msg.state)
        for sibling in versions.values(incoming):
            self.hlc.observe(sibling.timestamp)
        lww = self.config.bucket(msg.bucket).policy == "lww"
        if msg.hint and msg.hint != self.name:
            digest = key_digest(msg.bucket, msg.key)
            if not self.hints.record(msg.hint, digest, msg.bucket, msg.key, now, len(msg.state)):
                self._drop_hint_log(msg.hint, msg.bucket, msg.key, "budget")
                error = Unavailable("this fallback's hint budget is spent", needed=1, got=0)
                return [Send(source, _error(msg.rid, error))] if msg.rid else []
        if msg.overwrite and self.bugs.read_repair_overwrites:
            self.store.put(msg.bucket, msg.key, incoming)
        else:
            self.store.merge(msg.bucket, msg.key, incoming, lww, msg.state)
        return [Send(source, ReplicaPutReply(msg.rid))] if msg.rid else []

    def _replica_put_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ReplicaPutReply)
        delivery = self._deliveries.pop(msg.rid, None)
        if delivery is not None:
            primary = delivery.hint.primary
            self.hints.remove(delivery.hint)
            self._handoff_backoff.pop(primary, None)
            left = sum(1 for d in self._deliveries.values() if d.hint.primary == primary)
            if left <= self.budget.scale(self.config.handoff_batch) // 2:
                return self._offer_hints(primary, now)
            return []
        put = self.puts.get(msg.rid)
        if put is None:
            return []
        put.quorum.ack(source)
        return self._progress_put(msg.rid, put)

    def _forward_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, GetResult | PutResult)
        forward = self.forwards.pop(msg.rid, None)
        if forward is None:
            return []
        return [Send(forward.source, msgspec.structs.replace(msg, rid=forward.client_rid))]

    def _error_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, ErrorReply)
        if msg.rid in self.forwards:
            return self._forward_reply_error(msg)
        delivery = self._deliveries.pop(msg.rid, None)
        if delivery is not None:
            self._back_off(delivery.hint.primary, now)
            return []
        get = self.gets.get(msg.rid)
        if get is not None:
            if not get.quorum.waiting_on(source):
                return []
            get.quorum.fail(source)
            return self._ask_reserve(msg.rid, get, 1) + self._progress_get(msg.rid, get)
        put = self.puts.get(msg.rid)
        if put is not None:
            put.quorum.fail(source)
            return self._progress_put(msg.rid, put)
        if self.join_target is not None and msg.code == ClusterError.code:
            self._logs.append(Log("error", "join_refused", {"reason": msg.message}))
        return []

    def _forward_reply_error(self, msg: ErrorReply) -> list[Effect]:
        forward = self.forwards.pop(msg.rid)
        return [Send(forward.source, msgspec.structs.replace(msg, rid=forward.client_rid))]

    def _unexpected(self, source: str, msg: Message) -> list[Effect]:
        rid = getattr(msg, "rid", 0)
        text = f"message type {type(msg).__name__} is not accepted here"
        return [Send(source, ErrorReply(rid, InvalidRequest.code, text))]

    # --- membership ------------------------------------------------------------------------
    def _join_request(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, JoinRequest)
        joiner = msg.member
        if msg.cluster != self.state.cluster:
            raise ClusterError(
                f"node {joiner.name} belongs to cluster {msg.cluster!r}; "
                f"this is cluster {self.state.cluster!r}"
            )
        existing = ms.member(self.state, joiner.name)
        if (
            existing is not None
            and existing.status in ("up", "joining")
            and existing.node_addr != joiner.node_addr
            and (existing.name == self.name or existing.name not in self.down)
        ):
            raise ClusterError(
                f"name {joiner.name!r} is in use by a member up at {existing.node_addr}"
            )
        if existing is not None and existing.node_addr != joiner.node_addr:
            # The old holder of the name is down: the name moves to the new address.
            self.state = ms.mark_removed(self.state, joiner.name)
        state = ms.request_join(self.state, joiner)
        self._adopt(state)
        self._logs.append(
            Log("info", "member_joining", {"name": joiner.name, "addr": joiner.node_addr})
        )
        self._reachable(joiner.name)
        effects = self._claim()
        effects.extend(Send(peer, Gossip(self.state)) for peer in self._peers())
        effects.append(Send(source, JoinReply(msg.rid, self.state)))
        return effects

    def _join_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, JoinReply)
        if msg.state.cluster == self.state.cluster:
            merged = ms.merge(self.state, msg.state)
            if merged is not self.state:
                self._adopt(merged)
                self._logs.append(Log("info", "joined", {"cluster": msg.state.cluster}))
        return []

    def _gossip(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, Gossip)
        if msg.state.cluster != self.state.cluster:
            self._logs.append(
                Log("warning", "foreign_gossip", {"from": source, "cluster": msg.state.cluster})
            )
            return []
        self._reachable(source)
        merged = ms.merge(self.state, msg.state)
        effects: list[Effect] = []
        if merged is not self.state:
            self._adopt(merged)
            effects.extend(self._claim())
        if merged != msg.state:
            effects.append(Send(source, Gossip(self.state)))
        return effects

    def _cluster_change(self, now: float, source: str, msg: Message) -> list[Effect]:
        """An operator's leave or remove, through any member."""
        assert isinstance(msg, ClientClusterChange)
        if msg.op == "leave":
            state = ms.request_leave(self.state, msg.name)
        elif msg.op == "remove":
            target = ms.member(self.state, msg.name)
            if (
                target is not None
                and target.status != "removed"
                and (msg.name == self.name or msg.name not in self.down)
            ):
                raise ClusterError(
                    f"{msg.name} is up: remove takes out a dead node; use leave to hand off "
                    f"a live node's partitions"
                )
            state = ms.mark_removed(self.state, msg.name)
        else:
            raise InvalidRequest(f"unknown cluster change {msg.op!r}; use leave or remove")
        self._adopt(state)
        self._logs.append(Log("info", f"member_{msg.op}", {"name": msg.name}))
        effects = self._claim()
        effects.extend(Send(peer, Gossip(self.state)) for peer in self._peers())
        effects.append(Send(source, ClusterInfo(msg.rid, self.state)))
        return effects

    def _claim(self) -> list[Effect]:
        """The claimant's duty: plan rings, start transfers, install the ring when data moved."""
        state = self.state
        if state.ring.epoch == 0 or ms.claimant(state) != self.name:
            return []
        plan = ms.plan_ring(state)
        if plan is not None:
            if plan.owners == state.ring.ring.owners:
                new = ms.install_ring(state, plan, self.name)
            else:
                new = ms.start_transfer(state, plan, self.name)
                moves = len(ms.pending_moves(new, self.replication))
                self._logs.append(Log("info", "transfer_planned", {"moves": moves}))
        elif state.ring.next is not None and not self._pending_moves:
            new = ms.finish_transfer(state, self.name)
            self._logs.append(Log("info", "ring_installed", {"epoch": new.ring.epoch}))
        else:
            return []
        self._adopt(new)
        return [Send(peer, Gossip(self.state)) for peer in self._peers()]

    def _leave_when_done(self) -> list[Effect]:
        """A leaving member whose partitions have all moved marks itself removed and stops."""
        me = ms.member(self.state, self.name)
        if me is None or self.stopping:
            return []
        if me.status == "leaving" and self.state.ring.next is None:
            if self.name in self.state.ring.ring.owners:
                return []
            self._adopt(ms.mark_removed(self.state, self.name))
        elif me.status != "removed":
            return []
        self.stopping = True
        self._logs.append(Log("info", "left_cluster", {"name": self.name}))
        # Gossip the removal to everyone, then stop once it has had time to leave.
        effects: list[Effect] = [Send(peer, Gossip(self.state)) for peer in self._peers()]
        effects.append(SetTimer("stop", self._now + 2 * self.config.gossip_interval))
        return effects

    def _adopt(self, state: Membership) -> None:
        self.state = state
        self._persist_state(state)
        self._refresh_moves()
        self._removed = _removed_names(state)

    def _refresh_moves(self) -> None:
        moves: dict[int, set[str]] = {}
        for partition, node in ms.pending_moves(self.state, self.replication):
            moves.setdefault(partition, set()).add(node)
        self._pending_moves = moves

    def _my_moves(self) -> list[int]:
        return sorted(p for p, nodes in self._pending_moves.items() if self.name in nodes)

    # --- ownership transfer (receiving side pulls) ---------------------------------------
    def _transfer_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = [SetTimer("transfer", now + self.config.transfer_interval)]
        effects.extend(self._start_pulls(now))
        for pull in self.pulls.values():
            if pull.in_flight and now < pull.deadline:
                continue
            effects.extend(self._request_batch(pull, now))
        return effects

    def _start_pulls(self, now: float) -> list[Effect]:
        """Begin pulling the partitions this node still needs, up to the concurrency limit."""
        effects: list[Effect] = []
        record = self.state.ring
        mine = set(self._my_moves()) if record.next is not None else set()
        for partition in [
            p for p, pull in self.pulls.items() if p not in mine or pull.epoch != record.epoch
        ]:
            del self.pulls[partition]
        for partition in sorted(mine):
            if len(self.pulls) >= self.budget.scale(self.config.transfer_concurrency):
                break
            if partition not in self.pulls:
                sources = [
                    x
                    for x in record.ring.preference_list(partition, self.replication)
                    if x != self.name
                ]
                pull = Pull(record.epoch, partition, sources)
                pull.restore(self.engine.meta_get(pull.meta_name))
                self.pulls[partition] = pull
                self._logs.append(
                    Log("info", "transfer_started", {"partition": partition, "sources": sources})
                )
                effects.extend(self._request_batch(pull, now))
        return effects

    def _request_batch(self, pull: Pull, now: float) -> list[Effect]:
        while (
            pull.source_index < len(pull.sources) and pull.sources[pull.source_index] in self.down
        ):
            # A source that is down is skipped: the other replicas hold its keys too.
            pull.source_index += 1
            pull.cursor = b""
            pull.keys_from_source = 0
        if pull.source_index >= len(pull.sources):
            return self._pull_finished(pull)
        rid = self._rid()
        pull.in_flight = rid
        pull.deadline = now + self.config.request_timeout
        source = pull.sources[pull.source_index]
        limit = self.config.transfer_batch
        return [Send(source, TransferRequest(rid, pull.partition, pull.cursor, limit))]

    def _transfer_batch(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, TransferBatch)
        pull = self.pulls.get(msg.partition)
        if pull is None or pull.in_flight != msg.rid:
            return []
        pull.in_flight = 0
        for raw in msg.records:
            try:
                size = self.store.merge_record(raw, self._is_lww)
            except (CorruptRecord, InvalidRequest) as exc:
                self._logs.append(Log("error", "corrupt_transfer_record", {"error": str(exc)}))
                continue
            pull.keys += 1
            pull.keys_from_source += 1
            pull.bytes += size
        if msg.total_keys:
            pull.total_keys, pull.total_bytes = msg.total_keys, msg.total_bytes
        pull.cursor = msg.last
        if msg.done:
            pull.source_index += 1
            pull.cursor = b""
            pull.keys_from_source = 0
            pull.total_keys = pull.total_bytes = 0
        self.engine.meta_put(pull.meta_name, pull.encode_cursor())
        return self._request_batch(pull, now)

    def _pull_finished(self, pull: Pull) -> list[Effect]:
        del self.pulls[pull.partition]
        self._logs.append(
            Log(
                "info",
                "transfer_finished",
                {"partition": pull.partition, "keys": pull.keys, "bytes": pull.bytes},
            )
        )
        self._adopt(ms.mark_transferred(self.state, pull.partition, self.name))
        effects = self._claim()
        effects.extend(self._start_pulls(self._now))
        claimant = ms.claimant(self.state)
        if claimant != self.name:
            effects.append(Send(claimant, Gossip(self.state)))
        return effects

    def _transfer_request(self, now: float, source: str, msg: Message) -> list[Effect]:
        """Serve one batch of a key partition to the node pulling it."""
        assert isinstance(msg, TransferRequest)
        size = self.state.ring.ring.size
        if not 0 <= msg.partition < size or not 1 <= msg.limit <= 10_000:
            raise InvalidRequest(f"bad transfer request for partition {msg.partition}")
        start, end = partition_range(msg.partition, size)
        records, last, done = self.store.scan_records(
            start, end, msg.after, msg.limit, self.config.transfer_batch_bytes
        )
        total_keys = total_bytes = 0
        if not msg.after:
            total_keys, total_bytes = self.store.measure(start, end)
        return [
            Send(
                source,
                TransferBatch(msg.rid, msg.partition, records, last, done, total_keys, total_bytes),
            )
        ]

    def _is_lww(self, bucket: str) -> bool:
        return self.config.bucket(bucket).policy == "lww"

    # --- helpers ---------------------------------------------------------------------------
    def _rid(self) -> int:
        rid = self._next_rid
        self._next_rid += 1
        return rid

    def _log_local_failure(self, bucket: str, key: str, exc: DynakvError) -> None:
        self._logs.append(
            Log("error", "local_read_failed", {"bucket": bucket, "key": key, "error": str(exc)})
        )

    @property
    def ring(self) -> Ring:
        """The installed ring (during a transfer, partitions already moved follow ring.next)."""
        return self.state.ring.ring


def _removed_names(state: Membership) -> frozenset[str]:
    return frozenset(m.name for m in state.members if m.status == "removed")


def _counter(clock: Clock, actor: str) -> int:
    return next(entry.counter for entry in clock.entries if entry.actor == actor)


def _quorum_param(name: str, given: int | None, default: int, n: int) -> int:
    value = default if given is None else given
    if not 1 <= value <= n:
        raise InvalidRequest(f"{name} must be between 1 and n={n}, got {value}")
    return value


def _error(rid: int, exc: DynakvError) -> ErrorReply:
    if isinstance(exc, Unavailable):
        return ErrorReply(rid, exc.code, exc.message, exc.needed, exc.got)
    return ErrorReply(rid, exc.code, exc.message)


def _get_result(rid: int, merged: Clock | None) -> GetResult:
    if merged is None:
        return GetResult(rid, [], [], "")
    live = versions.live_values(merged)
    return GetResult(
        rid,
        [s.value for s in live],
        [s.content_type for s in live],
        versions.encode_context(versions.join(merged)),
    )
