"""Ownership transfer: a node that the next ring makes a replica of a key partition pulls
that partition, in batches, from the replicas the installed ring gives it.

One replica's copy is pulled in full (the one the next ring drops, else a near, little
used one: `pull.order_sources`); every other replica that is up then sends only the
(key, version hash) pairs of its copy, and the keys whose version differs from what was
merged are fetched and merged, so a write that reached only some replicas still arrives
(core/version_digests.py). Pull-based, so the receiver paces it (at most
`transfer_concurrency` partitions at once, at the background budget's duty cycle) and
resumes after either side restarts: its cursor (sources, which one, last key merged or
compared) is kept in the engine's metadata and committed with the merged objects.
`Transfers` drives the pulls and serves them to other nodes. Pure: time is the `now`
passed in; storage through synchronous engine calls.
"""

from __future__ import annotations

from collections import Counter

from dynakv.core.admission import BackgroundBudget
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer
from dynakv.core.gossip import Gossiper
from dynakv.core.pull import Pull, order_sources
from dynakv.core.replica import CorruptRecord, ReplicaStore
from dynakv.core.version_digests import (
    check_digests,
    fetch_records,
    local_differs,
    scan_versions,
)
from dynakv.errors import InvalidRequest
from dynakv.messages import (
    ErrorReply,
    Message,
    TransferBatch,
    TransferDigestRequest,
    TransferDigests,
    TransferFetch,
    TransferRequest,
)
from dynakv.ring import partition_range
from dynakv.storage.engine import Engine

__all__ = ["Pull", "Transfers"]

# A digest batch reads records as a full batch does but sends 50 bytes a key: it may read
# this many times the bytes of a full batch, and list this many times its keys.
DIGEST_READ_FACTOR = 4
DIGEST_KEYS_FACTOR = 16
MAX_BATCH = 10_000  # keys (or digests) one request may ask for


class Transfers(Component):
    """The partitions this node pulls for the next ring, and the batches it serves to the
    nodes pulling from it."""

    def __init__(
        self,
        context: Context,
        store: ReplicaStore,
        engine: Engine,
        gossip: Gossiper,
        budget: BackgroundBudget,
    ) -> None:
        super().__init__(context)
        self.store = store
        self.engine = engine
        self.gossip = gossip
        self.budget = budget
        self.pulls: dict[int, Pull] = {}
        # Since start, over every pull (finished or not): what joins and leaves moved here.
        self.keys_moved = 0
        self.bytes_moved = 0
        self.keys_compared = 0  # keys of other sources' digests compared with the copy here

    def on_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = [SetTimer("transfer", now + self.config.transfer_interval)]
        effects.extend(self._start_pulls(now))
        # A copy: a pull whose sources are all down finishes (and others start) in the loop.
        for pull in list(self.pulls.values()):
            if self.pulls.get(pull.partition) is not pull:
                continue
            if pull.in_flight and now < pull.deadline:
                continue
            if not pull.in_flight and now < pull.resume_at:
                continue
            effects.extend(self._request_batch(pull, now))
        return effects

    def _start_pulls(self, now: float) -> list[Effect]:
        """Begin pulling the partitions this node still needs, up to the concurrency limit."""
        effects: list[Effect] = []
        view = self.view
        record = view.state.ring
        mine = set(view.my_moves()) if record.next is not None else set()
        for partition in [
            p for p, pull in self.pulls.items() if p not in mine or pull.epoch != record.epoch
        ]:
            del self.pulls[partition]
        for partition in sorted(mine):
            if len(self.pulls) >= self.budget.scale(self.config.transfer_concurrency):
                break
            if partition not in self.pulls:
                # Where the partition's data is now: the installed ring's replicas at the
                # placed replication (not the wanted one, whose new replicas are empty).
                walk = [x for x in view.placed_replicas(partition) if x != view.name]
                busy = Counter(p.source for p in self.pulls.values() if not p.copied)
                sources = order_sources(view, partition, busy)
                pull = Pull(record.epoch, partition, sources, walk)
                # A replica already (a lowered replication makes the replicas that remain
                # pull): its own copy is the whole one, and every source is compared.
                pull.copied = view.name in view.placed_replicas(partition)
                pull.restore(self.engine.meta_get(pull.meta_name))
                self.pulls[partition] = pull
                fields = {"partition": partition, "sources": pull.sources}
                self.logs.append(Log("info", "transfer_started", fields))
                effects.extend(self._request_batch(pull, now))
        return effects

    def _request_batch(self, pull: Pull, now: float) -> list[Effect]:
        down = self.view.down
        while pull.source is not None and pull.source in down:
            # A source that is down is skipped: the other replicas hold its keys too (the
            # next one is pulled in full if this one's copy was not merged whole yet).
            pull.next_source()
        source = pull.source
        if source is None:
            return self._pull_finished(pull, now)
        rid = self.ids.next()
        pull.in_flight = rid
        pull.requested_at = now
        pull.deadline = now + self.config.request_timeout
        batch = self.config.transfer_batch
        request: Message
        if not pull.copied:
            request = TransferRequest(rid, pull.partition, pull.cursor, batch)
        elif pull.fetching:
            request = TransferFetch(rid, pull.partition, pull.fetching[:batch])
        else:
            limit = min(MAX_BATCH, batch * DIGEST_KEYS_FACTOR)
            request = TransferDigestRequest(rid, pull.partition, pull.cursor, limit)
        return [Send(source, request)]

    def on_batch(self, now: float, source: str, msg: Message) -> list[Effect]:
        """Records of the partition: of the source copied in full, or those fetched."""
        assert isinstance(msg, TransferBatch)
        pull = self.pulls.get(msg.partition)
        if pull is None or pull.in_flight != msg.rid:
            return []
        pull.in_flight = 0
        pull.source_share = msg.share
        fetched = pull.copied
        for raw in msg.records:
            try:
                size = self.store.merge_record(raw, self.view.is_lww)
            except (CorruptRecord, InvalidRequest) as exc:
                self.logs.append(Log("error", "corrupt_transfer_record", {"error": str(exc)}))
                continue
            pull.keys += 1
            pull.keys_from_source += 1
            pull.bytes += size
            pull.fetched += int(fetched)
            self.keys_moved += 1
            self.bytes_moved += size
        if fetched:
            # The fetches of one digest batch: once all are merged, past that batch.
            pull.fetching = [] if msg.done else [d for d in pull.fetching if d > msg.last]
            if not pull.fetching:
                self._advance(pull, pull.fetch_last, pull.fetch_done)
        else:
            if msg.total_keys:
                pull.total_keys, pull.total_bytes = msg.total_keys, msg.total_bytes
            pull.copied = msg.done  # this source's whole copy is merged: compare the others
            self._advance(pull, msg.last, msg.done)
        return self._after_reply(pull, now)

    def on_digests(self, now: float, source: str, msg: Message) -> list[Effect]:
        """The (key, version hash) pairs of a source other than the one copied in full:
        the keys whose version differs here are fetched before the cursor moves on."""
        assert isinstance(msg, TransferDigests)
        pull = self.pulls.get(msg.partition)
        if pull is None or pull.in_flight != msg.rid or not pull.copied:
            return []
        start, end = partition_range(msg.partition, self.view.ring.size)
        try:
            check_digests([digest for digest, _ in msg.versions], start, end)
        except InvalidRequest as exc:
            # Asked again after the request's deadline; the other sources go on meanwhile.
            fields = {"from": source, "partition": msg.partition, "error": str(exc)}
            self.logs.append(Log("error", "bad_transfer_digests", fields))
            return []
        pull.in_flight = 0
        pull.source_share = msg.share
        pull.compared += len(msg.versions)
        pull.keys_from_source += len(msg.versions)
        self.keys_compared += len(msg.versions)
        pull.fetching = local_differs(self.store, msg.versions)
        if pull.fetching:
            pull.fetch_last, pull.fetch_done = msg.last, msg.done
        else:
            self._advance(pull, msg.last, msg.done)
        return self._after_reply(pull, now)

    def on_error(self, now: float, source: str, msg: ErrorReply) -> list[Effect] | None:
        """A source refused a digest or fetch request (a node from before them does not
        know the messages): this source is pulled in full from the cursor on, which merges
        at least what comparing it would have. None when the error is not of a pull."""
        pull = next((p for p in self.pulls.values() if p.in_flight == msg.rid), None)
        if pull is None:
            return None
        pull.in_flight = 0
        if pull.copied and source == pull.source:
            fields = {"from": source, "partition": pull.partition, "error": msg.message}
            self.logs.append(Log("warning", "transfer_digests_refused", fields))
            pull.copied, pull.fetching = False, []
            self.engine.meta_put(pull.meta_name, pull.encode_cursor())
        return self._after_reply(pull, now)

    def _advance(self, pull: Pull, last: bytes, done: bool) -> None:
        """Everything of the current source up to `last` is merged; the cursor says so."""
        pull.cursor = last
        if done:
            pull.next_source()
        self.engine.meta_put(pull.meta_name, pull.encode_cursor())

    def _after_reply(self, pull: Pull, now: float) -> list[Effect]:
        # Under foreground pressure a pull takes batches at the budget's duty cycle, not
        # back to back: with 1 MiB values, back-to-back 4 MiB batches at the lowest budget
        # still moved 100 MB/s and took foreground p99 from 41 ms to 1.2 s
        # (benchmarks/join_large_values.py). The sources feel a pull more than the puller
        # does (they serve the clients; a new node serves none), so the pause follows the
        # lower of the two budgets. The next tick after the pause asks again.
        rest = self.budget.rest(now - pull.requested_at, pull.source_share)
        if rest > 0:
            pull.resume_at = now + rest
            return []
        return self._request_batch(pull, now)

    def _pull_finished(self, pull: Pull, now: float) -> list[Effect]:
        del self.pulls[pull.partition]
        fields = {
            "partition": pull.partition,
            "keys": pull.keys,
            "bytes": pull.bytes,
            "compared": pull.compared,
            "fetched": pull.fetched,
        }
        self.logs.append(Log("info", "transfer_finished", fields))
        effects = self.gossip.transferred(pull.partition)
        effects.extend(self._start_pulls(now))
        effects.extend(self.gossip.tell_claimant())
        return effects

    # --- serving the nodes that pull -------------------------------------------------------
    def _range(self, partition: int, limit: int) -> tuple[bytes, bytes]:
        size = self.view.ring.size
        if not 0 <= partition < size or not 1 <= limit <= MAX_BATCH:
            raise InvalidRequest(f"bad transfer request for partition {partition}")
        return partition_range(partition, size)

    def on_request(self, now: float, source: str, msg: Message) -> list[Effect]:
        """Serve one batch of a key partition to the node pulling it."""
        assert isinstance(msg, TransferRequest)
        start, end = self._range(msg.partition, msg.limit)
        records, last, done = self.store.scan_records(
            start, end, msg.after, msg.limit, self.config.transfer_batch_bytes
        )
        total_keys = total_bytes = 0
        if not msg.after:
            total_keys, total_bytes = self.store.measure(start, end)
        batch = TransferBatch(
            msg.rid, msg.partition, records, last, done, total_keys, total_bytes, self.budget.share
        )
        return [Send(source, batch)]

    def on_digest_request(self, now: float, source: str, msg: Message) -> list[Effect]:
        """Serve the (key, version hash) pairs of one stretch of a key partition."""
        assert isinstance(msg, TransferDigestRequest)
        start, end = self._range(msg.partition, msg.limit)
        read = self.config.transfer_batch_bytes * DIGEST_READ_FACTOR
        pairs, last, done = scan_versions(self.store, start, end, msg.after, msg.limit, read)
        share = self.budget.share
        return [Send(source, TransferDigests(msg.rid, msg.partition, pairs, last, done, share))]

    def on_fetch(self, now: float, source: str, msg: Message) -> list[Effect]:
        """Serve the records of the keys a puller found different from its copy."""
        assert isinstance(msg, TransferFetch)
        start, end = self._range(msg.partition, max(1, len(msg.digests)))
        check_digests(msg.digests, start, end)
        if any(a >= b for a, b in zip(msg.digests, msg.digests[1:], strict=False)):
            raise InvalidRequest("transfer fetch keys must be sorted and distinct")
        budget = self.config.transfer_batch_bytes
        records, last, done = fetch_records(self.store, msg.digests, budget)
        share = self.budget.share
        return [
            Send(source, TransferBatch(msg.rid, msg.partition, records, last, done, share=share))
        ]

    def status(self) -> list[dict[str, object]]:
        return [pull.progress() for pull in self.pulls.values()]
