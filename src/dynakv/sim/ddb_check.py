"""The checker of the `ddb` workload: DynamoDB items, conditional increments and queries on
one table (hash key `pk`, range key `sk`, both strings). Pure, as checker.py: plain data in,
a Report out.

History (items in plain form: {"pk": "p0", "sk": "v3", "v": "c1.4"} or with "n": 7):
- `ItemWrite(process, kind, pk, sk, id, n, invoke, complete, outcome)`: kind "put" (an
  unconditional PutItem of {pk, sk, v: id}), "cput" (the same PutItem if
  `attribute_not_exists(pk)`: a read-modify-write at the primary), "delete" (an
  unconditional DeleteItem),
  "increment" (UpdateItem `SET n = n + :one, v = :id` if `n = :seen`, or `SET n = :one,
  v = :id` if `attribute_not_exists(n)`: n is seen + 1) or "add" (UpdateItem `ADD n :one
  SET v = :id`; n from its ALL_NEW answer, None while unknown). Outcomes as checker.py's,
  plus "rejected": ConditionalCheckFailedException, not acknowledged and still possibly
  applied (a forward that timed out may have reached the primary, docs/DESIGN.md).
- `ItemRead(process, pk, sk, invoke, complete, outcome, item)`: a GetItem.
- `QueryPage(process, query, page, pk, forward, limit, low, high, start, invoke, complete,
  outcome, items, last)`: one page of a Query of `pk` (sort keys between `low` and `high`
  inclusive, None: unbounded), ExclusiveStartKey `start`'s sort key, LastEvaluatedKey
  `last`'s; `query` numbers the pages of one paged Query. Process "final": the consistent
  Queries after the faults stopped and the replicas converged.
- `ReplicaRead`s (checker.py) of every item key: each replica's own copy at the end (or
  none at all: the rules on replicas are then skipped).

What holds, under every fault (crash, wipe, loss, partition, skew):
- `lost` (no acknowledged put lost, conditional or not): tables are last-writer-wins by the
  coordinators' hybrid timestamps, and a node's clock runs ahead of true time by up to
  `skew`. So a put W acknowledged is shown by the final Query unless a put or delete W'
  of the same item that was not failed took a later timestamp; W' then cannot have
  completed before W.invoke - skew (its timestamp is at most its completion + skew, W's at
  least W's invocation). The rule checked: the final item is W's, or another put's
  completed after W.invoke - skew - 2 ms (ms timestamps), or it is absent and such a
  delete exists. Writes with unknown outcome count as completing at the end of time. A
  counter (nothing deletes one) with an acknowledged increment is never absent at the end.
  Reads during the faults may miss an acknowledged put (sloppy quorum): not checked.
- `never_written`: every item a GetItem, a Query page or a replica returned is one a
  write of that key stored (the same v, attributes and, when known, n) and whose write was
  invoked before the read completed and did not fail.
  In runs with partitions or crashes an ADD's item is matched by its v alone: a forward
  that timed out is served where it arrived while the primary may have applied it too
  (docs/DESIGN.md), so one ADD can be applied twice, and its v then shows with another n.
- `query_order`: each page's sort keys strictly ascend (descend for ScanIndexForward
  false); a page starts after its ExclusiveStartKey; a page's LastEvaluatedKey is its last
  item; so the pages of one Query never repeat or reorder items.
- `query_bounds`: a page holds only items of its partition key within its key condition,
  and no more than its Limit.
- `internal_error`: no operation failed with an exception that is not a DynamoDB or dynakv
  error (a bug: the runtime would log it and answer InternalServerError).
- `query_missing`: the final consistent Query of a partition key shows exactly the items
  its replicas hold (once they agree): none missing, none extra.
- `divergent`: after the repair reads the replicas of an item hold the same live value.

Only without partitions and crashes (`exact_increments`): `increment_lost`: no two
acknowledged increments of a counter produce the same n, and the final n is at least
every acknowledged one. A conditional write runs at the first primary the serving node
sees up; a partition or a crash makes nodes disagree on which that is (or a forward time
out and be served where it arrived), two nodes then serve one key's read-modify-writes at
once and lww keeps one of two increments that read the same n (docs/DESIGN.md). Under those
faults the duplicates are counted (`DdbReport.increments_duplicated`), not failed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from dynakv.sim.checker import (
    DIVERGENT,
    INCREMENT_LOST,
    INTERNAL_ERROR,
    LOST,
    NEVER_WRITTEN,
    QUERY_BOUNDS,
    QUERY_MISSING,
    QUERY_ORDER,
    ReplicaRead,
    Report,
    Violation,
)

DdbOutcome = Literal["ok", "failed", "unknown", "rejected"]
WriteKind = Literal["put", "cput", "delete", "increment", "add"]
PUTS = ("put", "cput")
PlainItem = dict[str, Any]
TABLE = "ddb"
MARGIN = 0.002  # hybrid timestamps are milliseconds: truncation, and logical steps
FOREVER = float("inf")


@dataclass(frozen=True)
class ItemWrite:
    process: str
    kind: WriteKind
    pk: str
    sk: str
    id: str
    n: int | None  # the n it stores, when known
    invoke: float
    complete: float
    outcome: DdbOutcome


@dataclass(frozen=True)
class ItemRead:
    process: str
    pk: str
    sk: str
    invoke: float
    complete: float
    outcome: DdbOutcome
    item: PlainItem | None


@dataclass(frozen=True)
class QueryPage:
    process: str
    query: int
    page: int
    pk: str
    forward: bool
    limit: int | None
    low: str | None
    high: str | None
    start: str | None
    invoke: float
    complete: float
    outcome: DdbOutcome
    items: tuple[PlainItem, ...] = ()
    last: str | None = None


DdbOp = ItemWrite | ItemRead | QueryPage


@dataclass
class DdbReport(Report):
    rejected: int = 0  # writes whose condition failed
    increments_acked: int = 0
    increments_duplicated: int = 0  # acknowledged increments whose n another one also got
    internal_errors: list[str] = field(default_factory=list)
    # Set by the simulator: read-modify-writes forwarded to the primary, and those served
    # where they arrived after the forward failed.
    forwarded: int = 0
    forward_fallbacks: int = 0

    def summary(self) -> str:
        text = super().summary() + f"; {self.rejected} conditions failed"
        if self.increments_acked:
            text += (
                f"; increments {self.increments_acked} acked, "
                f"{self.increments_duplicated} duplicated"
            )
        if self.forwarded:
            text += f"; {self.forwarded} forwarded, {self.forward_fallbacks} served locally"
        return text


def plain(stored: bytes) -> PlainItem | None:
    """The plain item a stored value holds ({"g": generation, "i": wire item})."""
    document = json.loads(stored)
    return from_wire(document["i"]) if isinstance(document, dict) else None


def from_wire(item: dict[str, Any]) -> PlainItem:
    """A wire item ({"pk": {"S": "p0"}, "n": {"N": "3"}}) in plain form."""
    out: PlainItem = {}
    for name, value in item.items():
        ((kind, raw),) = value.items()
        out[name] = int(raw) if kind == "N" else raw
    return out


def check_ddb(
    history: Sequence[DdbOp],
    replicas: Sequence[ReplicaRead],
    skew: float = 0.0,
    exact_increments: bool = True,
    internal_errors: Sequence[str] = (),
) -> DdbReport:
    report = DdbReport("ddb", internal_errors=list(internal_errors))
    writes: dict[str, ItemWrite] = {}
    by_key: dict[tuple[str, str], list[ItemWrite]] = {}
    keys: set[tuple[str, str]] = set()
    for op in history:
        if isinstance(op, ItemWrite):
            writes[op.id] = op
            by_key.setdefault((op.pk, op.sk), []).append(op)
            keys.add((op.pk, op.sk))
            report.writes += 1
            report.acknowledged += op.outcome == "ok"
            report.unknown += op.outcome == "unknown"
            report.rejected += op.outcome == "rejected"
        else:
            report.reads += 1
            if isinstance(op, ItemRead):
                keys.add((op.pk, op.sk))
    report.keys = len(keys)
    for text in internal_errors:  # an operation that failed with a bug, not a DynamoDB error
        report.violations.append(Violation(INTERNAL_ERROR, TABLE, "-", text))

    def violation(invariant: str, pk: str, sk: str, detail: str) -> None:
        report.violations.append(Violation(invariant, TABLE, f"{pk}/{sk}", detail))

    def written(item: PlainItem, before: float, where: str) -> None:
        pk, sk = str(item.get("pk")), str(item.get("sk"))
        write = writes.get(str(item.get("v")))
        expected: set[str] = {"pk", "sk", "v"}
        if write is not None and write.kind in ("increment", "add"):
            expected.add("n")
        if (
            write is None
            or write.kind == "delete"
            or (write.pk, write.sk) != (pk, sk)
            or write.outcome == "failed"
            or write.invoke > before
            or set(item) != expected
            or (
                write.n is not None
                and item.get("n") != write.n
                and (exact_increments or write.kind != "add")
            )
        ):
            violation(NEVER_WRITTEN, pk, sk, f"{where} returned {item}")

    for op in history:
        if isinstance(op, ItemRead) and op.outcome == "ok" and op.item is not None:
            written(op.item, op.complete, f"GetItem by {op.process} at {op.complete:.6f}")
            if (op.item.get("pk"), op.item.get("sk")) != (op.pk, op.sk):
                violation(NEVER_WRITTEN, op.pk, op.sk, f"GetItem returned {op.item}")
    _check_queries(history, written, violation)

    # Final state: the consistent Queries after the faults, and each replica's copy.
    final: dict[tuple[str, str], PlainItem | None] = {}
    queried: set[str] = set()
    tried: set[str] = set()
    for op in history:
        if isinstance(op, QueryPage) and op.process == "final":
            tried.add(op.pk)
            if op.outcome == "ok":
                queried.add(op.pk)
                for item in op.items:
                    final[(str(item["pk"]), str(item["sk"]))] = item
    for pk in sorted(tried - queried):  # after the faults every replica is up again
        violation(QUERY_MISSING, pk, "-", "no final Query answered: nothing could be checked")
    copies: dict[str, list[tuple[str, PlainItem | None]]] = {}
    for replica in replicas:
        items = [plain(value) for value in replica.values]
        for item in items:
            if item is not None:
                written(item, FOREVER, f"replica {replica.node}")
        copies.setdefault(replica.key, []).append((replica.node, items[0] if items else None))
    agreed: dict[tuple[str, str], PlainItem] = {}  # items every replica holds alike
    unsettled: set[tuple[str, str]] = set()  # items the replicas disagree on
    for key, held in copies.items():
        named = [(str(item["pk"]), str(item["sk"])) for _, item in held if item is not None]
        if len({json.dumps(item, sort_keys=True) for _, item in held}) > 1:
            report.violations.append(Violation(DIVERGENT, TABLE, key, f"replicas hold {held}"))
            unsettled.update(named)
        elif named:
            agreed[named[0]] = held[0][1]  # type: ignore[assignment]
    for (pk, sk), item in sorted(agreed.items()):
        if pk in queried and final.get((pk, sk)) != item:
            detail = f"every replica holds {item}, the final Query shows {final.get((pk, sk))}"
            violation(QUERY_MISSING, pk, sk, detail)
    for (pk, sk), shown_item in sorted(final.items()):
        if replicas and (pk, sk) not in agreed and (pk, sk) not in unsettled:
            detail = f"the final Query shows {shown_item}, no replica holds it"
            violation(QUERY_MISSING, pk, sk, detail)

    for (pk, sk), key_writes in sorted(by_key.items()):
        if pk not in queried:
            continue
        shown = final.get((pk, sk))
        if any(w.kind in ("increment", "add") for w in key_writes):
            _check_counter(report, pk, sk, key_writes, shown, exact_increments, violation)
            continue
        for put in key_writes:
            if put.kind not in PUTS or put.outcome != "ok":
                continue
            if shown is not None and shown.get("v") == put.id:
                continue
            since = put.invoke - skew - MARGIN

            def later(w: ItemWrite, since: float = since) -> bool:
                end = w.complete if w.outcome == "ok" else FOREVER
                return w.outcome != "failed" and end > since

            if shown is None:
                if not any(w.kind == "delete" and later(w) for w in key_writes):
                    violation(LOST, pk, sk, f"{put.id} acknowledged, item absent, no later delete")
            else:
                other = writes.get(str(shown.get("v")))
                if other is None or other.kind not in PUTS or not later(other):
                    violation(LOST, pk, sk, f"{put.id} acknowledged, final item {shown}")
    return report


def _check_counter(
    report: DdbReport,
    pk: str,
    sk: str,
    key_writes: list[ItemWrite],
    shown: PlainItem | None,
    exact: bool,
    violation: Any,
) -> None:
    acked = [w for w in key_writes if w.outcome == "ok" and w.n is not None]
    report.increments_acked += len(acked)
    seen: dict[int, str] = {}
    for write in sorted(acked, key=lambda w: w.invoke):
        assert write.n is not None
        if write.n in seen:
            report.increments_duplicated += 1
            if exact:
                detail = f"{seen[write.n]} and {write.id} both acknowledged n={write.n}"
                violation(INCREMENT_LOST, pk, sk, detail)
        else:
            seen[write.n] = write.id
    if acked and shown is None:  # nothing deletes a counter
        violation(LOST, pk, sk, f"{len(acked)} increments acknowledged, the item is absent")
    elif exact and acked:
        top = max(seen)
        final_n = shown.get("n") if shown is not None else None
        if not isinstance(final_n, int) or final_n < top:
            violation(INCREMENT_LOST, pk, sk, f"final {shown}, below acknowledged n={top}")


def _check_queries(history: Sequence[DdbOp], written: Any, violation: Any) -> None:
    pages: dict[int, list[QueryPage]] = {}
    for op in history:
        if isinstance(op, QueryPage) and op.outcome == "ok":
            pages.setdefault(op.query, []).append(op)
    for query in sorted(pages):
        previous: QueryPage | None = None
        for page in sorted(pages[query], key=lambda p: p.page):
            where = f"Query {query} page {page.page} by {page.process}"
            if previous is not None and page.start != previous.last:
                detail = f"{where} started after {page.start!r}, the last page ended at "
                violation(QUERY_ORDER, page.pk, "-", detail + repr(previous.last))
            keys = [str(item.get("sk")) for item in page.items]
            ordered = [k.encode() for k in keys]
            step = ordered if page.forward else ordered[::-1]
            if any(a >= b for a, b in pairwise(step)):
                direction = "ascending" if page.forward else "descending"
                violation(QUERY_ORDER, page.pk, "-", f"{where} not strictly {direction}: {keys}")
            if page.start is not None and keys:
                first = keys[0].encode()
                start = page.start.encode()
                if (page.forward and first <= start) or (not page.forward and first >= start):
                    violation(QUERY_ORDER, page.pk, "-", f"{where} {keys} after {page.start!r}")
            if page.last is not None and (not keys or keys[-1] != page.last):
                detail = f"{where} LastEvaluatedKey {page.last!r}, items {keys}"
                violation(QUERY_ORDER, page.pk, "-", detail)
            if page.limit is not None and len(keys) > page.limit:
                violation(QUERY_BOUNDS, page.pk, "-", f"{where}: {len(keys)} > Limit")
            for item in page.items:
                sk = str(item.get("sk"))
                if (
                    item.get("pk") != page.pk
                    or (page.low is not None and sk.encode() < page.low.encode())
                    or (page.high is not None and sk.encode() > page.high.encode())
                ):
                    violation(QUERY_BOUNDS, page.pk, sk, f"{where} returned {item}")
                written(item, page.complete, f"{where} at {page.complete:.6f}")
            previous = page
