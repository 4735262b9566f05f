"""Hinted handoff records: which keys this node holds on behalf of an unreachable primary.

A fallback stores the object in its own replica store like any other and, beside it in the
engine's "hints" table, a record naming the primary it stands in for. Records are keyed by
`primary NUL digest`, so one primary's hints are one range scan and several writes to a key
while its primary is away collapse into one record. Bounded by bytes and by age. Pure apart
from synchronous engine calls; the node decides when to deliver.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from dynakv.storage.engine import HINTS, Engine

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
        self._version = 0
        for raw_key, raw in engine.scan(b"", b"", table=HINTS):
            hint = _decode(raw_key, raw)
            self.bytes += hint.size
            self._version = max(self._version, hint.version)
            self.per_primary[hint.primary] = self.per_primary.get(hint.primary, 0) + 1

    def pending(self) -> int:
        return sum(self.per_primary.values())

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
