"""Jepsen-style checker: judges a history of client operations plus what each replica holds.

Pure: plain data in, a `Report` out; no simulator needed, so histories recorded against real
processes can be judged the same way.

Entry points (each takes the whole history and the final replica reads):

    check_cart(history: Sequence[Read | Write], replicas: Sequence[ReplicaRead]) -> Report
    check_register(history, replicas) -> Report
    check_lww(history, replicas) -> Report

History format:
- `Write(process, bucket, key, id, value, seen, delete, invoke, complete, outcome)`: one put
  (or delete, `delete=True`, `value=b""`). `id` is unique in the history and is carried by
  the value itself (see below). `seen` lists the ids of the live values the client read
  just before and whose context it sent with the write: the write's causal parents. `()`
  means a blind write (no context). `invoke`/`complete` are times on one clock (any unit);
  `complete` is when the answer came or when the client gave up.
- `Read(process, bucket, key, invoke, complete, outcome, values)`: one get, with the live
  values it returned.
- `outcome` is "ok" (acknowledged), "failed" (certainly had no effect: e.g. the connection
  was refused) or "unknown" (an error or no answer: a put may still have taken effect,
  since a coordinator stores before it replicates).
- `ReplicaRead(node, bucket, key, values, tombstones, context)`: one replica's own copy of a
  key after the faults stopped and the cluster healed (`GET /v1/replica/...`, or
  `Node.replica()` in the simulator): its live values, its tombstone count and its causal
  context; an absent key is `values=()`, `tombstones=0`, `context=""`. Give every replica of
  every key that the history touched.

Values are UTF-8 JSON objects with the writing op's id: `{"id": "c1.7"}` (register, lww) or
`{"id": "c1.7", "items": ["c0.3", "c1.7"]}` (cart); `encode_value` / `value_id` build and
read them. The ids link every value seen back to the write that made it.

Invariants, each reported separately (`Report.counts`):
- `lost`: an acknowledged write is in no final value's causal past (the causal past of a
  value is its write plus, transitively, every write in `seen`), and no delete (acknowledged
  or not) saw it. For a cart this is an acknowledged add (or remove) gone.
- `never_written`: a read or a replica returned bytes that no write of that key wrote (or
  that its write had not even been invoked by the time the read completed).
- `merged` (siblings silently merged): of two acknowledged writes that had not seen each
  other, one is lost while the other survives (in a final value's causal past, and in no
  delete's: causality through a tombstone is not in `seen`, so only then does "neither is
  in the other's past" prove them concurrent); each such lost write is also `lost`.
- `came_back`: a live final value is in the causal past of an acknowledged write or delete:
  the write superseded it or the delete removed it, and it came back. (A cart item that a
  client removed may legitimately return through a concurrent sibling that still holds it:
  that is Dynamo's documented anomaly for union-merged carts, and is not reported.)
- `divergent`: the replicas of a key do not hold the same values, tombstones and context.
- lww buckets: `lww_siblings` (a replica holds more than one value) instead of `merged`;
  and lost updates are counted, not failed: an acknowledged write invoked after the
  surviving write was acknowledged, yet not the survivor. That is the price of
  last-writer-wins (with skewed clocks it is most of the writes); see `Report.lww_lost`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "failed", "unknown"]

LOST = "lost"
NEVER_WRITTEN = "never_written"
MERGED = "merged"
CAME_BACK = "came_back"
DIVERGENT = "divergent"
LWW_SIBLINGS = "lww_siblings"
EXPIRED_SHOWN = "expired_shown"  # sim/expiry_check.py
# sim/ddb_check.py (the DynamoDB workload)
QUERY_ORDER = "query_order"
QUERY_BOUNDS = "query_bounds"
QUERY_MISSING = "query_missing"
INCREMENT_LOST = "increment_lost"
INTERNAL_ERROR = "internal_error"
INVARIANTS = (
    LOST, NEVER_WRITTEN, MERGED, CAME_BACK, DIVERGENT, LWW_SIBLINGS, EXPIRED_SHOWN,
    QUERY_ORDER, QUERY_BOUNDS, QUERY_MISSING, INCREMENT_LOST, INTERNAL_ERROR,
)  # fmt: skip


@dataclass(frozen=True)
class Write:
    """One put or delete, and what came of it."""

    process: str
    bucket: str
    key: str
    id: str
    value: bytes
    seen: tuple[str, ...]
    delete: bool
    invoke: float
    complete: float
    outcome: Outcome
    expires: int = 0  # when the value expires (ms on the history's clock); 0: never


@dataclass(frozen=True)
class Read:
    """One get, with the live values it returned (when ok)."""

    process: str
    bucket: str
    key: str
    invoke: float
    complete: float
    outcome: Outcome
    values: tuple[bytes, ...] = ()


Op = Read | Write


@dataclass(frozen=True)
class ReplicaRead:
    """One replica's own copy of a key, read directly after the cluster healed."""

    node: str
    bucket: str
    key: str
    values: tuple[bytes, ...]
    tombstones: int
    context: str


@dataclass(frozen=True)
class Violation:
    invariant: str
    bucket: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.bucket}/{self.key}: {self.detail}"


@dataclass
class Report:
    """The verdict: violations by invariant, plus figures about the history."""

    workload: str
    violations: list[Violation] = field(default_factory=list)
    writes: int = 0
    acknowledged: int = 0
    unknown: int = 0
    reads: int = 0
    keys: int = 0
    lww_acked: int = 0  # lww: acknowledged writes
    lww_lost: int = 0  # lww: acknowledged writes lost to an earlier write (not a failure)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(INVARIANTS, 0)
        for violation in self.violations:
            counts[violation.invariant] += 1
        return counts

    def summary(self) -> str:
        figures = (
            f"{self.writes} writes ({self.acknowledged} ok, {self.unknown} unknown), "
            f"{self.reads} reads, {self.keys} keys"
        )
        if self.workload == "lww" and self.lww_acked:
            share = 100.0 * self.lww_lost / self.lww_acked
            figures += f"; lww lost {self.lww_lost} of {self.lww_acked} acked ({share:.0f}%)"
        if self.ok:
            return f"ok: {figures}"
        bad = " ".join(f"{name}={n}" for name, n in self.counts.items() if n)
        return f"VIOLATIONS {bad}: {figures}"


# --- values ----------------------------------------------------------------------------------
def encode_value(write_id: str, items: Iterable[str] | None = None, padding: int = 0) -> bytes:
    """The bytes a workload writes: JSON with the write's id (and a cart's sorted items, and
    `padding` bytes of filler, to make large values)."""
    document: dict[str, object] = {"id": write_id}
    if items is not None:
        document["items"] = sorted(items)
    if padding:
        document["pad"] = "." * padding
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def value_id(value: bytes) -> str | None:
    """The write id a value carries, or None when it is not a workload value."""
    document = _document(value)
    return document.get("id") if document is not None else None  # type: ignore[return-value]


def value_items(value: bytes) -> frozenset[str]:
    document = _document(value)
    items = document.get("items", []) if document is not None else []
    return frozenset(item for item in items if isinstance(item, str))  # type: ignore[union-attr]


def _document(value: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("id"), str):
        return None
    return document


# --- entry points ----------------------------------------------------------------------------
def check_cart(history: Sequence[Op], replicas: Sequence[ReplicaRead]) -> Report:
    """Carts: read-merge-write of item sets (union of siblings), some removes, some blind adds."""
    return _check_siblings("cart", history, replicas)


def check_register(history: Sequence[Op], replicas: Sequence[ReplicaRead]) -> Report:
    """Registers: read-modify-write of single values with contexts, some deletes."""
    return _check_siblings("register", history, replicas)


def check_lww(history: Sequence[Op], replicas: Sequence[ReplicaRead]) -> Report:
    """Blind writes to a last-writer-wins bucket: lost updates are counted, not failed."""
    report, keys = _prepare("lww", history, replicas)
    for (bucket, key), state in keys.items():
        finals = sorted(state.final)
        if any(len(set(r.values)) > 1 for r in state.replicas):
            report.violations.append(
                Violation(LWW_SIBLINGS, bucket, key, f"replicas hold several values: {finals}")
            )
        acked = [w for w in state.writes.values() if w.outcome == "ok" and not w.delete]
        report.lww_acked += len(acked)
        if not finals:
            if acked and not any(w.delete for w in state.writes.values()):
                report.violations.append(
                    Violation(LOST, bucket, key, f"{len(acked)} acknowledged writes, none left")
                )
            continue
        for final in finals:
            winner = state.writes[final]
            if winner.outcome != "ok":
                continue  # it may have taken effect at any time after its invoke
            report.lww_lost += sum(
                1 for w in acked if w.id != winner.id and w.invoke > winner.complete
            )
    return report


# --- the shared core -------------------------------------------------------------------------
@dataclass
class _Key:
    writes: dict[str, Write] = field(default_factory=dict)
    replicas: list[ReplicaRead] = field(default_factory=list)
    final: set[str] = field(default_factory=set)  # ids of live values on any replica
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict)

    def ancestors(self, write_id: str) -> frozenset[str]:
        """Ids of every write in the causal past of write_id (through `seen`), not itself."""
        memo = self._ancestors
        if write_id in memo:
            return memo[write_id]
        stack = [write_id]
        while stack:  # iterative post-order: chains of writes can be long
            top = stack[-1]
            if top in memo:
                stack.pop()
                continue
            parents = [p for p in self.writes[top].seen if p in self.writes]
            pending = [p for p in parents if p not in memo and p != top]
            if pending:
                stack.extend(pending)
                if len(stack) > 10 * len(self.writes) + 10:
                    raise ValueError("history has a cycle in `seen`")
                continue
            result: set[str] = set()
            for p in parents:
                if p != top:
                    result.add(p)
                    result |= memo[p]
            memo[top] = frozenset(result)
            stack.pop()
        return memo[write_id]


def _prepare(
    workload: str, history: Sequence[Op], replicas: Sequence[ReplicaRead]
) -> tuple[Report, dict[tuple[str, str], _Key]]:
    """Index the history by key; check `never_written` (for reads and replicas) and
    `divergent`, which every workload shares."""
    report = Report(workload)
    keys: dict[tuple[str, str], _Key] = {}
    ids: set[str] = set()
    for op in history:
        state = keys.setdefault((op.bucket, op.key), _Key())
        if isinstance(op, Write):
            if op.id in ids:
                raise ValueError(f"write id {op.id!r} appears twice in the history")
            ids.add(op.id)
            state.writes[op.id] = op
            report.writes += 1
            report.acknowledged += op.outcome == "ok"
            report.unknown += op.outcome == "unknown"
        else:
            report.reads += 1
    reported: set[tuple[str, str, bytes]] = set()

    def known(bucket: str, key: str, value: bytes, before: float | None, where: str) -> bool:
        state = keys.get((bucket, key))
        write = state.writes.get(value_id(value) or "") if state is not None else None
        problem = None
        if write is None:
            problem = "no write of this key wrote it"
        elif write.delete or write.value != value:
            problem = f"write {write.id} wrote other bytes"
        elif write.outcome == "failed":
            problem = f"its write {write.id} failed"
        elif before is not None and write.invoke > before:
            problem = f"its write {write.id} was invoked only at {write.invoke:.6f}"
        if problem is None:
            return True
        if (bucket, key, value) not in reported:
            reported.add((bucket, key, value))
            report.violations.append(
                Violation(NEVER_WRITTEN, bucket, key, f"{where} returned {value!r}: {problem}")
            )
        return False

    for op in history:
        if isinstance(op, Read) and op.outcome == "ok":
            for value in op.values:
                where = f"read by {op.process} at {op.complete:.6f}"
                known(op.bucket, op.key, value, op.complete, where)
    by_key: dict[tuple[str, str], list[ReplicaRead]] = {}
    for replica in replicas:
        by_key.setdefault((replica.bucket, replica.key), []).append(replica)
    for (bucket, key), reads in sorted(by_key.items()):
        state = keys.setdefault((bucket, key), _Key())
        state.replicas = reads
        for replica in reads:
            for value in replica.values:
                if known(bucket, key, value, None, f"replica {replica.node}"):
                    state.final.add(value_id(value))  # type: ignore[arg-type]
        shapes = {(tuple(sorted(r.values)), r.tombstones, r.context) for r in reads}
        if len(shapes) > 1:
            shown = "; ".join(
                f"{r.node}: {sorted(value_id(v) or repr(v) for v in r.values)} "
                f"+{r.tombstones} tombstones"
                for r in reads
            )
            report.violations.append(Violation(DIVERGENT, bucket, key, shown))
    report.keys = len(keys)
    return report, dict(sorted(keys.items()))


def _check_siblings(
    workload: str, history: Sequence[Op], replicas: Sequence[ReplicaRead]
) -> Report:
    report, keys = _prepare(workload, history, replicas)
    for (bucket, key), state in keys.items():
        writes = state.writes
        surviving: set[str] = set()  # final values and their causal past
        for final in state.final:
            surviving.add(final)
            surviving |= state.ancestors(final)
        deleted: set[str] = set()  # the causal past of every delete that may have happened
        superseded: dict[str, Write] = {}  # value id -> an acknowledged write that saw it
        for write in writes.values():
            past = state.ancestors(write.id)
            if write.delete and write.outcome != "failed":
                deleted |= past
            if write.outcome == "ok":
                for earlier in sorted(past):
                    superseded.setdefault(earlier, write)
        accounted = surviving | deleted
        # Rivals for `merged`: survivors no delete saw. A value read after a delete carries
        # no id of what the tombstone covered, so causality through a delete is not in
        # `seen`; without deletes downstream, "not in each other's past" means concurrent.
        survivors = [
            w
            for w in writes.values()
            if w.outcome == "ok" and not w.delete and w.id in surviving and w.id not in deleted
        ]
        for write in writes.values():
            if write.outcome != "ok" or write.delete or write.id in accounted:
                continue
            what = _describe(workload, state, write)
            report.violations.append(
                Violation(LOST, bucket, key, f"acknowledged {what} is in no final value")
            )
            past = state.ancestors(write.id)
            rival = next(
                (
                    w
                    for w in survivors
                    if w.id not in past and write.id not in state.ancestors(w.id)
                ),
                None,
            )
            if rival is not None:
                report.violations.append(
                    Violation(
                        MERGED,
                        bucket,
                        key,
                        f"acknowledged {what} vanished while its concurrent sibling "
                        f"{rival.id} (acknowledged) survived",
                    )
                )
        for final in sorted(state.final):
            later = superseded.get(final)
            if later is None:
                continue
            verb = "deleted" if later.delete else "superseded"
            report.violations.append(
                Violation(
                    CAME_BACK,
                    bucket,
                    key,
                    f"{_describe(workload, state, writes[final])} is live again after "
                    f"acknowledged {'delete' if later.delete else 'write'} {later.id} "
                    f"{verb} it",
                )
            )
    return report


def _describe(workload: str, state: _Key, write: Write) -> str:
    """A write for a violation message: its id, and for a cart what it added or removed."""
    text = f"write {write.id} by {write.process} at {write.invoke:.6f}"
    if workload != "cart":
        return text
    items = value_items(write.value)
    before: set[str] = set()
    for parent in write.seen:
        if parent in state.writes:
            before |= value_items(state.writes[parent].value)
    added = sorted(items - before)
    removed = sorted(before - items)
    if added:
        text += f" (adds {', '.join(added)})"
    if removed:
        text += f" (removes {', '.join(removed)})"
    return text
