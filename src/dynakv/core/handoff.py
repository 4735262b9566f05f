"""Hinted handoff records: which keys this node holds on behalf of an unreachable primary.

A fallback stores the object in its own replica store like any other and, beside it in the
engine's "hints" table, a record naming the primary it stands in for. Records are keyed by
`primary NUL digest`, so one primary's hints are one range scan and several writes to a key
while its primary is away collapse into one record. Bounded by bytes and by age. `Handoff`
delivers them: it offers each reachable primary a bounded batch and removes what the
primary acknowledged. Pure apart from synchronous engine calls; time is the `now` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dynakv.core.admission import BackgroundBudget
from dynakv.core.component import Component, Context
from dynakv.core.events import Effect, Log, Send, SetTimer
from dynakv.core.replica import ReplicaStore
from dynakv.messages import ReplicaPut
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


@dataclass
class Delivery:
    hint: Hint
    deadline: float


class Handoff(Component):
    """Delivery of held hints to their primaries once reachable, at the pace of their
    acknowledgements, backing off from a primary whose deliveries fail."""

    def __init__(
        self, context: Context, store: ReplicaStore, hints: HintStore, budget: BackgroundBudget
    ) -> None:
        super().__init__(context)
        self.store = store
        self.hints = hints
        self.budget = budget
        self.deliveries: dict[int, Delivery] = {}
        self._backoff: dict[str, tuple[float, int]] = {}  # primary -> (until, failures)
        self._next_expiry = 0.0

    def on_tick(self, now: float) -> list[Effect]:
        """Offer held hints to their primaries that are reachable, a bounded batch each."""
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
        return effects

    def _offer(self, primary: str, now: float) -> list[Effect]:
        """Top up the hints in flight to `primary` to the (budgeted) batch size.

        Called every handoff tick and whenever an acknowledgement has halved the batch in
        flight, so delivery runs at the pace of the acknowledgements, not of the tick."""
        if primary in self.view.down or now < self._backoff.get(primary, (0.0, 0))[0]:
            return []
        busy = {d.hint.record_key for d in self.deliveries.values() if d.hint.primary == primary}
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
            self.deliveries[rid] = Delivery(hint, now + self.config.request_timeout)
            effects.append(Send(primary, ReplicaPut(rid, hint.bucket, hint.key, state)))
        return effects

    def _expire_hints(self, now: float) -> None:
        for primary in sorted(self.hints.per_primary):
            for hint in self.hints.batch(primary, 1 << 30, set()):
                if now - hint.created > self.config.hint_window:
                    self.hints.remove(hint)
                    self.logs.append(self.hints.drop_log(primary, hint.bucket, hint.key, "age"))

    def on_ack(self, now: float, rid: int) -> list[Effect] | None:
        """A primary stored a delivered hint; None if `rid` is no delivery of ours."""
        delivery = self.deliveries.pop(rid, None)
        if delivery is None:
            return None
        primary = delivery.hint.primary
        self.hints.remove(delivery.hint)
        self._backoff.pop(primary, None)
        left = sum(1 for d in self.deliveries.values() if d.hint.primary == primary)
        if left <= self.budget.scale(self.config.handoff_batch) // 2:
            return self._offer(primary, now)
        return []

    def on_error(self, now: float, rid: int) -> bool:
        """A primary refused a delivery: back off from it. False if `rid` is not ours."""
        delivery = self.deliveries.pop(rid, None)
        if delivery is None:
            return False
        self._back_off(delivery.hint.primary, now)
        return True

    def peer_down(self, name: str) -> None:
        for rid, delivery in list(self.deliveries.items()):
            if delivery.hint.primary == name:
                del self.deliveries[rid]

    def expire(self, now: float) -> None:
        """Deliveries not acknowledged in time: back off from their primary."""
        for rid, delivery in list(self.deliveries.items()):
            if delivery.deadline > now:
                break
            del self.deliveries[rid]
            self._back_off(delivery.hint.primary, now)

    def _back_off(self, primary: str, now: float) -> None:
        failures = self._backoff.get(primary, (0.0, 0))[1] + 1
        delay = min(30.0, self.config.handoff_interval * 2 ** min(failures, 5))
        self._backoff[primary] = (now + delay, failures)
