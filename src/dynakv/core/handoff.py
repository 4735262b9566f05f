"""Handoff: copies this node holds for others, and their delivery.

Hinted handoff: a fallback stores the object in its own replica store like any other and,
beside it in the engine's "hints" table, a record naming the primary it stands in for.
Records are keyed by `primary NUL digest`, so one primary's hints are one range scan and
several writes to a key while its primary is away collapse into one record. Bounded by
bytes and by age. `Handoff` offers each reachable primary a bounded batch and removes what
the primary acknowledged.

Ownership handoff (Riak's): a copy of a key whose partition this node no longer replicates
(the replication was lowered, a join moved the partition, a fallback's hint was delivered)
is pushed to the key's primaries and deleted once every one acknowledged, and only if the
local copy is still what was pushed (compare-and-delete). Never while a transfer is under
way, for a key this node holds a hint for, or before an unreachable primary is back.
Pure apart from synchronous engine calls; time is the `now` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dynakv import versions
from dynakv.core.admission import BackgroundBudget
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer
from dynakv.core.replica import ReplicaStore, unseal
from dynakv.item_keys import storage_key
from dynakv.messages import ReplicaPut
from dynakv.ring import partition_of_digest, partition_range
from dynakv.storage.engine import HINTS, Engine

HINT_EXPIRY_SWEEP = 60.0  # seconds between two sweeps of every hint for age

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[str, str, float, int, int])


@dataclass(frozen=True, slots=True)
class Hint:
    record_key: bytes
    primary: str
    bucket: str
    key: str
    created: float
    size: int
    version: int  # changes with every write recorded, so a delivery only clears what it sent


def record_key(primary: str, digest: bytes) -> bytes:
    return primary.encode() + b"\0" + digest


class HintStore:
    """The hints table plus in-memory totals (rebuilt from the table at start-up)."""

    def __init__(self, engine: Engine, budget_bytes: int) -> None:
        self.engine = engine
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.per_primary: dict[str, int] = {}
        self.dropped = 0  # hints given up since start (budget spent, or too old)
        self._version = 0
        for raw_key, raw in engine.scan(b"", b"", table=HINTS):
            hint = _decode(raw_key, raw)
            self.bytes += hint.size
            self._version = max(self._version, hint.version)
            self.per_primary[hint.primary] = self.per_primary.get(hint.primary, 0) + 1

    def pending(self) -> int:
        return sum(self.per_primary.values())

    def drop_log(self, primary: str, bucket: str, key: str, reason: str) -> Log:
        """Count a hint given up (or never recorded), and the operator's line saying so."""
        self.dropped += 1
        fields = {"primary": primary, "bucket": bucket, "key": key, "reason": reason}
        return Log("warning", "hint_dropped", fields)

    def record(
        self, primary: str, digest: bytes, bucket: str, key: str, now: float, size: int
    ) -> bool:
        """Remember that `primary` should get this key; False when the byte budget is spent."""
        rkey = record_key(primary, digest)
        old = self.engine.get(rkey, table=HINTS)
        if old is not None:
            previous = _decode(rkey, old)
            created = previous.created  # the age window counts from the first missed write
            delta = size - previous.size
        else:
            created = now
            delta = size
        if delta > 0 and self.bytes + delta > self.budget_bytes:
            return False
        self._version += 1
        value = _encoder.encode((primary, bucket + "\0" + key, created, size, self._version))
        self.engine.put(rkey, value, HINTS)
        self.bytes += delta
        if old is None:
            self.per_primary[primary] = self.per_primary.get(primary, 0) + 1
        return True

    def batch(self, primary: str, limit: int, skip: set[bytes]) -> list[Hint]:
        """Up to `limit` hints for `primary`, oldest key order, leaving out those in `skip`."""
        prefix = primary.encode() + b"\0"
        end = primary.encode() + b"\x01"
        out: list[Hint] = []
        for raw_key, raw in self.engine.scan(prefix, end, table=HINTS):
            if raw_key in skip:
                continue
            out.append(_decode(raw_key, raw))
            if len(out) >= limit:
                break
        return out

    def get(self, rkey: bytes) -> Hint | None:
        raw = self.engine.get(rkey, table=HINTS)
        return None if raw is None else _decode(rkey, raw)

    def holding(self, digest: bytes) -> list[Hint]:
        """The hints this node holds for the key with this digest, whatever the primary."""
        out = []
        for primary in self.per_primary:
            hint = self.get(record_key(primary, digest))
            if hint is not None:
                out.append(hint)
        return out

    def remove(self, hint: Hint) -> None:
        """Forget the hint, unless a newer write re-recorded it since `hint` was read."""
        current = self.get(hint.record_key)
        if current is None or current.version != hint.version:
            return
        self.engine.delete(hint.record_key, table=HINTS)
        self.bytes -= hint.size
        left = self.per_primary.get(hint.primary, 0) - 1
        if left > 0:
            self.per_primary[hint.primary] = left
        else:
            self.per_primary.pop(hint.primary, None)


def _decode(raw_key: bytes, raw: bytes) -> Hint:
    primary, location, created, size, version = _decoder.decode(raw)
    bucket, _, key = location.partition("\0")
    return Hint(raw_key, primary, bucket, key, created, size, version)


@dataclass(eq=False)
class Surplus:
    """A copy of a key whose partition this node no longer replicates, being handed to the
    key's primaries; deleted once every one acknowledged, if still `state`."""

    bucket: str
    key: str
    digest: bytes
    state: bytes
    epoch: int  # of the ring the primaries were read from
    waiting: set[str]  # primaries that have not acknowledged yet


@dataclass
class Delivery:
    """One ReplicaPut in flight: a hint to its primary, or a surplus copy to one of the
    key's primaries."""

    target: str
    deadline: float
    hint: Hint | None = None
    surplus: Surplus | None = None


class Handoff(Component):
    """Delivery of held hints to their primaries once reachable, and of surplus copies to
    their keys' primaries, at the pace of their acknowledgements, backing off from a
    target whose deliveries fail."""

    def __init__(
        self, context: Context, store: ReplicaStore, hints: HintStore, budget: BackgroundBudget
    ) -> None:
        super().__init__(context)
        self.store = store
        self.hints = hints
        self.budget = budget
        self.deliveries: dict[int, Delivery] = {}
        self._backoff: dict[str, tuple[float, int]] = {}  # target -> (until, failures)
        self._next_expiry = 0.0
        self._surplus: dict[bytes, Surplus] = {}  # digest -> the copy being handed back
        self._cursor = (0, b"")  # (partition, last digest offered) of the surplus sweep
        self._stale: tuple[object, list[int]] = (None, [])  # ring record -> partitions
        self.handed_back = 0  # surplus copies deleted since start
        self.delivered = 0  # hints their primary acknowledged since start

    def on_tick(self, now: float) -> list[Effect]:
        """Offer held hints to their primaries that are reachable, a bounded batch each, and
        surplus copies to their keys' primaries."""
        effects: list[Effect] = [SetTimer("handoff", now + self.config.handoff_interval)]
        if self.view.name in self.view.removed:
            return effects  # a removed node's hints are old news: its data was rebuilt
        if now >= self._next_expiry:
            self._next_expiry = now + HINT_EXPIRY_SWEEP
            self._expire_hints(now)
        members = set(self.view.peers())
        for primary in sorted(self.hints.per_primary):
            if primary in members:
                effects.extend(self._offer(primary, now))
        effects.extend(self._hand_back(now))
        return effects

    def _reachable(self, target: str, now: float) -> bool:
        return target not in self.view.down and now >= self._backoff.get(target, (0.0, 0))[0]

    def _offer(self, primary: str, now: float) -> list[Effect]:
        """Top up the hints in flight to `primary` to the (budgeted) batch size.

        Called every handoff tick and whenever an acknowledgement has halved the batch in
        flight, so delivery runs at the pace of the acknowledgements, not of the tick."""
        if not self._reachable(primary, now):
            return []
        busy = {
            d.hint.record_key
            for d in self.deliveries.values()
            if d.hint is not None and d.target == primary
        }
        room = self.budget.scale(self.config.handoff_batch) - len(busy)
        if room <= 0:
            return []
        effects: list[Effect] = []
        for hint in self.hints.batch(primary, room, busy):
            if now - hint.created > self.config.hint_window:
                self.hints.remove(hint)
                self.logs.append(self.hints.drop_log(primary, hint.bucket, hint.key, "age"))
                continue
            state = self.store.get_state(hint.bucket, hint.key)
            if state is None:
                self.hints.remove(hint)
                continue
            rid = self.ids.next()
            self.deliveries[rid] = Delivery(primary, now + self.config.request_timeout, hint)
            effects.append(Send(primary, ReplicaPut(rid, hint.bucket, hint.key, state)))
        return effects

    def _expire_hints(self, now: float) -> None:
        for primary in sorted(self.hints.per_primary):
            for hint in self.hints.batch(primary, 1 << 30, set()):
                if now - hint.created > self.config.hint_window:
                    self.hints.remove(hint)
                    self.logs.append(self.hints.drop_log(primary, hint.bucket, hint.key, "age"))

    # --- ownership handoff: surplus copies -------------------------------------------------
    def _stale_partitions(self) -> list[int]:
        """The key partitions this node is no placed replica of (none during a transfer:
        the installed ring's replicas serve until it is done, and ring.next may make this
        node a replica again)."""
        view = self.view
        record = view.state.ring
        if self._stale[0] is not record:
            stale: list[int] = []
            if record.epoch and record.next is None:
                stale = [
                    p for p in range(record.ring.size) if view.name not in view.placed_replicas(p)
                ]
            self._stale = (record, stale)
        return self._stale[1]

    def _still_surplus(self, digest: bytes) -> bool:
        """Whether this node may hand back (and drop) its copy of the key: it replicates
        none of the key's partition, no transfer is under way, and it holds no hint for it
        (delivering a hint is the other duty's)."""
        partition = partition_of_digest(digest, self.view.ring.size)
        return partition in self._stale_partitions() and not self.hints.holding(digest)

    def _hand_back(self, now: float) -> list[Effect]:
        """Push the next surplus copies, up to the (budgeted) batch in flight, to their keys'
        primaries: one pass at most over the partitions this node no longer replicates."""
        stale = self._stale_partitions()
        room = self.budget.scale(self.config.handoff_batch) - len(self._surplus)
        if not stale or room <= 0:
            return []
        size = self.view.ring.size
        effects: list[Effect] = []
        partition, after = self._cursor
        for _ in range(size):
            if partition in stale:
                start, end = partition_range(partition, size)
                records, last, done = self.store.scan_records(
                    start, end, after, room, self.config.transfer_batch_bytes
                )
                for raw in records:
                    effects.extend(self._push(raw, now))
                room -= len(records)
                if not done:
                    self._cursor = (partition, last)
                    return effects
            partition, after = (partition + 1) % size, b""
            self._cursor = (partition, after)
            if room <= 0:
                break
        return effects

    def _push(self, raw: bytes, now: float) -> list[Effect]:
        """Send one surplus copy to each of its key's primaries, if all are reachable."""
        bucket, key, state = unseal(raw)  # scan_records hands out only sound records
        digest = storage_key(bucket, key)
        if digest in self._surplus or not self._still_surplus(digest):
            return []
        primaries = self.view.placed_for(bucket, key)[1][0]
        if self.view.name in primaries or not all(self._reachable(x, now) for x in primaries):
            return []  # an unreachable primary: the next sweep tries again
        surplus = Surplus(bucket, key, digest, state, self.view.epoch, set(primaries))
        self._surplus[digest] = surplus
        deadline = now + self.config.request_timeout
        effects: list[Effect] = []
        for primary in primaries:
            rid = self.ids.next()
            self.deliveries[rid] = Delivery(primary, deadline, surplus=surplus)
            effects.append(Send(primary, ReplicaPut(rid, bucket, key, state)))
        return effects

    def handing_back(self, digest: bytes) -> bool:
        """Whether this node's copy of the key is being pushed to its primaries now."""
        return digest in self._surplus

    def _acknowledged(self, surplus: Surplus, primary: str) -> None:
        """A primary stored the surplus copy: once all have, delete it if it is unchanged."""
        surplus.waiting.discard(primary)
        if surplus.waiting:
            return
        del self._surplus[surplus.digest]
        if self.view.epoch != surplus.epoch or not self._still_surplus(surplus.digest):
            return  # the ring changed meanwhile: the next sweep decides afresh
        clock, stored = self.store.get_encoded(surplus.bucket, surplus.key)
        if clock is None or stored is None or not versions.same_encoding(stored, surplus.state):
            return  # written since it was pushed: the next sweep pushes the new state
        self.store.delete(surplus.bucket, surplus.key, clock)
        self.handed_back += 1

    def _abandon(self, surplus: Surplus) -> None:
        """A primary did not take the surplus copy: keep it, and forget its deliveries."""
        if self._surplus.get(surplus.digest) is surplus:
            del self._surplus[surplus.digest]
        for rid in [rid for rid, d in self.deliveries.items() if d.surplus is surplus]:
            del self.deliveries[rid]

    # --- acknowledgements ------------------------------------------------------------------
    def on_ack(self, now: float, rid: int) -> list[Effect] | None:
        """A target stored a delivered copy; None if `rid` is no delivery of ours."""
        delivery = self.deliveries.pop(rid, None)
        if delivery is None:
            return None
        target = delivery.target
        self._backoff.pop(target, None)
        if delivery.surplus is not None:
            self._acknowledged(delivery.surplus, target)
            return []
        assert delivery.hint is not None
        self.hints.remove(delivery.hint)
        self.delivered += 1
        left = sum(1 for d in self.deliveries.values() if d.hint and d.target == target)
        if left <= self.budget.scale(self.config.handoff_batch) // 2:
            return self._offer(target, now)
        return []

    def on_error(self, now: float, rid: int) -> bool:
        """A target refused a delivery: back off from it. False if `rid` is not ours."""
        delivery = self.deliveries.pop(rid, None)
        if delivery is None:
            return False
        self._failed(delivery, now)
        return True

    def peer_down(self, name: str) -> None:
        for rid, delivery in list(self.deliveries.items()):
            if rid in self.deliveries and delivery.target == name:
                del self.deliveries[rid]
                if delivery.surplus is not None:
                    self._abandon(delivery.surplus)

    def expire(self, now: float) -> None:
        """Deliveries not acknowledged in time: back off from their target."""
        for rid, delivery in list(self.deliveries.items()):
            if delivery.deadline > now:
                break
            if self.deliveries.pop(rid, None) is not None:
                self._failed(delivery, now)

    def _failed(self, delivery: Delivery, now: float) -> None:
        if delivery.surplus is not None:
            self._abandon(delivery.surplus)
        self._back_off(delivery.target, now)

    def _back_off(self, target: str, now: float) -> None:
        failures = self._backoff.get(target, (0.0, 0))[1] + 1
        delay = min(30.0, self.config.handoff_interval * 2 ** min(failures, 5))
        self._backoff[target] = (now + delay, failures)

    def status(self) -> dict[str, object]:
        return {
            "surplus_in_flight": len(self._surplus),
            "handed_back": self.handed_back,
            "hints_delivered": self.delivered,
        }
