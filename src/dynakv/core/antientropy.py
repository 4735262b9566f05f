"""Active anti-entropy: one Merkle tree per partition this node replicates, kept current as
writes land, and compared top-down with each other replica to repair what diverged for good.

Trees are built from storage one partition per tick (a fresh node serves at once; its
trees follow), updated on every write with the key's old and new causal versions, and an
exchange repairs in both directions: this side pushes its copy of every key the other side
lacks or holds differently, and pulls theirs, so both end with the merge (never
last-writer-wins unless the bucket is lww). `AntiEntropy` holds the trees; `Exchanges`
schedules the rounds with peers and carries their messages. Pure: time is the `now` passed
in; storage through the synchronous store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dynakv.core.admission import BackgroundBudget
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer
from dynakv.core.merkle import (
    DEFAULT_BRANCHING,
    DEFAULT_SEGMENTS,
    Exchange,
    HashRequest,
    HashTree,
    SegmentDiff,
    version_hash,
)
from dynakv.core.replica import CorruptRecord, ReplicaStore, stored_clock, unseal
from dynakv.errors import InvalidRequest
from dynakv.messages import (
    AaeFetch,
    AaeFetchReply,
    AaeHashes,
    AaeHashesReply,
    AaeKeys,
    AaeKeysReply,
    ClientRepair,
    Message,
    RepairResult,
    ReplicaPut,
)
from dynakv.ring import log2_size, partition_range
from dynakv.versions import Clock

KEYS_PER_REQUEST = 256  # segments per key-map request; digests per fetch
BUILD_PACE = 0.25  # seconds between two tree builds while trees are missing
REMOTE_PACE = 4  # with several data centers, one exchange start in this many may go remote


@dataclass
class ExchangeRound:
    """One comparison of a partition's tree with one peer's."""

    partition: int
    peer: str
    exchange: Exchange
    deadline: float
    waiting: str = "hashes"  # hashes | keys | fetch
    segments: list[int] = field(default_factory=list)  # differing, not yet compared
    fetching: list[bytes] = field(default_factory=list)  # digests to pull from the peer
    pushed: int = 0
    pulled: int = 0
    requester: tuple[str, int] | None = None  # an operator's repair waiting for this round


class AntiEntropy:
    """The trees of this node and the counters an operator sees in /v1/status."""

    def __init__(
        self,
        store: ReplicaStore,
        ring_size: int,
        segments: int = DEFAULT_SEGMENTS,
        branching: int = DEFAULT_BRANCHING,
    ) -> None:
        self.store = store
        self.ring_size = ring_size
        self.segments = segments
        self.branching = branching
        self.trees: dict[int, HashTree] = {}
        self._partition_shift = 128 - log2_size(ring_size)
        self.keys_repaired = 0
        self.exchanges = 0
        self.tree_builds = 0  # trees built since start (rebuilds count again)
        self.exchanges_in_sync = 0

    # --- keeping trees current -------------------------------------------------------------
    def on_write(self, digest: bytes, old: Clock | None, new: Clock | None) -> None:
        # On every write: the partition is the digest's top bits (ring.partition_of_digest,
        # without its checks: a storage key is 16 bytes or more).
        tree = self.trees.get(int.from_bytes(digest[:16], "big") >> self._partition_shift)
        if tree is None:
            return  # not built yet: the build scans storage and sees this write
        tree.update(
            digest,
            None if old is None else version_hash(old),
            None if new is None else version_hash(new),
        )

    def build(self, partition: int) -> HashTree:
        """Build a partition's tree from storage (replacing any old one)."""
        tree = HashTree(partition, self.ring_size, self.segments, self.branching)
        start, end = partition_range(partition, self.ring_size)
        tree.rebuild(self._versions(start, end))
        self.trees[partition] = tree
        self.tree_builds += 1
        return tree

    def build_next(self, wanted: Iterable[int]) -> int | None:
        """Build the first partition of `wanted` that has no tree yet; None when all have."""
        for partition in wanted:
            if partition not in self.trees:
                self.build(partition)
                return partition
        return None

    def forget(self, keep: set[int]) -> None:
        for partition in [p for p in self.trees if p not in keep]:
            del self.trees[partition]

    def _versions(self, start: bytes, end: bytes) -> Iterable[tuple[bytes, bytes]]:
        for digest, raw in self.store.engine.scan(start, end):
            try:
                _, _, clock = stored_clock(raw)
            except (CorruptRecord, InvalidRequest):
                self.store.corrupt_total += 1
                self.store.found_corrupt.append(("?", digest.hex(), "failed its checksum"))
                continue  # left out of the tree: the exchange will fetch the other copy
            yield digest, version_hash(clock)

    # --- answering a peer ------------------------------------------------------------------
    def hashes(
        self, partition: int, shape: tuple[int, int], level: int, indices: list[int]
    ) -> list[bytes] | None:
        tree = self.trees.get(partition)
        if tree is None or (tree.shape.segments, tree.shape.branching) != shape:
            return None
        if not 0 <= level <= tree.depth:
            return None
        if any(not 0 <= i < tree.level_size(level) for i in indices):
            return None
        return tree.level_hashes(level, indices)

    def key_map(self, partition: int, segments: list[int]) -> dict[bytes, bytes] | None:
        tree = self.trees.get(partition)
        if tree is None or any(not 0 <= s < tree.level_size(tree.depth) for s in segments):
            return None
        found: dict[bytes, bytes] = {}
        for segment in segments:
            start, end = tree.segment_range(segment)
            found.update(self._versions(start, end))
        return found

    def records(self, digests: list[bytes]) -> list[bytes]:
        """Stored records for the given digests (those present and sound)."""
        out: list[bytes] = []
        for digest in digests:
            raw = self.store.engine.get(digest)
            record = None if raw is None else self.store.handed_on(digest, raw)
            if record is not None:
                out.append(record)
        return out

    # --- the initiator's side --------------------------------------------------------------
    def compare_segments(
        self, round_: ExchangeRound, remote: dict[bytes, bytes]
    ) -> tuple[list[bytes], list[bytes]]:
        """(digests to push, digests to pull) for the segments just compared; also mends
        any drift of the local tree over those segments."""
        from dynakv.core.merkle import diff_keys

        tree = self.trees[round_.partition]
        local: dict[bytes, bytes] = {}
        for segment in round_.segments[:KEYS_PER_REQUEST]:
            start, end = tree.segment_range(segment)
            items = list(self._versions(start, end))
            tree.reset_segment(segment, items)
            local.update(items)
        diff = diff_keys(local, remote)
        push = diff.remote_missing + diff.different
        pull = diff.missing + diff.different
        return push, pull

    def status(self, wanted: int) -> dict[str, object]:
        return {
            "trees_built": len(self.trees),
            "trees_wanted": wanted,
            "tree_builds": self.tree_builds,
            "keys_repaired": self.keys_repaired,
            "exchanges": self.exchanges,
            "exchanges_in_sync": self.exchanges_in_sync,
        }


class Exchanges(Component):
    """Rounds of tree exchange with the other replicas of this node's partitions: one every
    `aae_interval` (up to `aae_concurrency` at once), or all at once for an operator's
    repair; and the answers to peers' rounds."""

    def __init__(
        self, context: Context, store: ReplicaStore, aae: AntiEntropy, budget: BackgroundBudget
    ) -> None:
        super().__init__(context)
        self.store = store
        self.aae = aae
        self.budget = budget
        self.rounds: dict[int, ExchangeRound] = {}
        self._cursor = 0
        self._starts = 0  # exchange starts so far (see REMOTE_PACE)
        self._next_exchange = 0.0
        # operator repairs: (source, rid) -> [rounds left, pushed, pulled, rounds]
        self._repairs: dict[tuple[str, int], list[int]] = {}

    def partitions(self) -> list[int]:
        """Partitions this node is a primary replica of, not moving right now."""
        view = self.view
        record = view.state.ring
        if record.ring.size != self.aae.ring_size or view.epoch == 0:
            return []
        mine = []
        for partition in range(record.ring.size):
            if record.next is not None and partition in view.pending_moves:
                continue
            if view.name in view.replicas(partition):
                mine.append(partition)
        return mine

    def on_tick(self, now: float) -> list[Effect]:
        """Build one missing tree per tick (a few per second, so the loop never stalls
        long), and every aae_interval start an exchange of one (partition, peer) pair."""
        wanted = self.partitions()
        self.aae.forget(set(wanted))
        built = self.aae.build_next(wanted)
        if built is not None:
            self.logs.append(Log("info", "aae_tree_built", {"partition": built}))
        interval = self.budget.stretch(self.config.aae_interval)
        pace = self.budget.stretch(BUILD_PACE) if built is not None else interval
        effects: list[Effect] = [SetTimer("aae", now + min(pace, interval))]
        concurrency = self.budget.scale(self.config.aae_concurrency)
        if len(self.rounds) >= concurrency or now < self._next_exchange:
            return effects
        self._next_exchange = now + interval
        view = self.view
        pairs = [
            (partition, peer)
            for partition in wanted
            if partition in self.aae.trees
            for peer in view.replicas(partition)
            if peer != view.name and peer not in view.down
        ]
        if view.spans_datacenters():
            # Replicas in other data centers are exchanged with at a quarter of the pace:
            # the WAN is the scarce link, and writes already cross it on every put.
            self._starts += 1
            if self._starts % REMOTE_PACE:
                here = view.datacenter(view.name)
                pairs = [pair for pair in pairs if view.datacenter(pair[1]) == here]
        busy = {(r.partition, r.peer) for r in self.rounds.values()}
        for _ in range(min(len(pairs), concurrency - len(self.rounds))):
            partition, peer = pairs[self._cursor % len(pairs)]
            self._cursor += 1
            if (partition, peer) not in busy:
                effects.extend(self._start_round(now, partition, peer, None))
        return effects

    def on_repair(self, now: float, source: str, msg: Message) -> list[Effect]:
        """`dynakv cluster repair`: exchange now with every other replica of the partitions."""
        assert isinstance(msg, ClientRepair)
        if not self.config.anti_entropy:
            raise InvalidRequest("anti-entropy is switched off on this node (anti_entropy)")
        mine = self.partitions()
        if msg.partition >= 0:
            if msg.partition not in mine:
                raise InvalidRequest(
                    f"this node is not a replica of partition {msg.partition}; "
                    f"it holds {len(mine)} partitions"
                )
            mine = [msg.partition]
        view = self.view
        pairs = [
            (p, peer) for p in mine for peer in view.replicas(p)
            if peer != view.name and peer not in view.down
        ]  # fmt: skip
        if not pairs:
            return [Send(source, RepairResult(msg.rid, 0, 0, 0))]
        self._repairs[(source, msg.rid)] = [len(pairs), 0, 0, len(pairs)]
        effects: list[Effect] = []
        for partition, peer in pairs:
            effects.extend(self._start_round(now, partition, peer, (source, msg.rid)))
        return effects

    def expire(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for rid, round_ in list(self.rounds.items()):
            if round_.deadline <= now:
                effects.extend(self._end_round(rid, round_, "timed out"))
        return effects

    # --- this node's rounds ----------------------------------------------------------------
    def _start_round(
        self, now: float, partition: int, peer: str, requester: tuple[str, int] | None
    ) -> list[Effect]:
        tree = self.aae.trees.get(partition) or self.aae.build(partition)
        exchange = Exchange(tree)
        round_ = ExchangeRound(partition, peer, exchange, now + 4 * self.config.request_timeout)
        round_.requester = requester
        rid = self.ids.next()
        self.rounds[rid] = round_
        return [self._ask_hashes(rid, round_, exchange.start())]

    def _ask_hashes(self, rid: int, round_: ExchangeRound, request: HashRequest) -> Send:
        tree = round_.exchange.tree
        shape = (tree.shape.segments, tree.shape.branching)
        message = AaeHashes(rid, round_.partition, shape, request.level, list(request.indices))
        return Send(round_.peer, message)

    def on_hashes_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
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

    def on_keys_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
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

    def on_fetch_reply(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeFetchReply)
        round_ = self.rounds.get(msg.rid)
        if round_ is None or source != round_.peer or round_.waiting != "fetch":
            return []
        for raw in msg.records:
            try:
                self.store.merge_record(raw, self.view.is_lww)
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
            self.logs.append(Log("info", "aae_exchange", fields))
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

    # --- peers' rounds ---------------------------------------------------------------------
    def on_hashes(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeHashes)
        if (
            self.config.anti_entropy
            and msg.partition not in self.aae.trees
            and msg.partition in self.partitions()
        ):
            self.aae.build(msg.partition)  # a peer asks first: build now rather than stall it
        hashes = self.aae.hashes(msg.partition, tuple(msg.shape), msg.level, msg.indices)
        return [Send(source, AaeHashesReply(msg.rid, hashes))]

    def on_keys(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeKeys)
        if len(msg.segments) > KEYS_PER_REQUEST:
            raise InvalidRequest(f"at most {KEYS_PER_REQUEST} segments per request")
        return [Send(source, AaeKeysReply(msg.rid, self.aae.key_map(msg.partition, msg.segments)))]

    def on_fetch(self, now: float, source: str, msg: Message) -> list[Effect]:
        assert isinstance(msg, AaeFetch)
        if len(msg.digests) > KEYS_PER_REQUEST:
            raise InvalidRequest(f"at most {KEYS_PER_REQUEST} digests per request")
        return [Send(source, AaeFetchReply(msg.rid, self.aae.records(msg.digests)))]

    def status(self) -> dict[str, object]:
        return self.aae.status(len(self.partitions()))
