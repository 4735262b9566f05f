"""The `ddb` workload: clients of the simulated nodes' DynamoDB endpoints (sim/ddb_backend.py)
on one table, recording the history sim/ddb_check.py judges.

Table `ddb`: hash key `pk` (p0, p1), range key `sk`; value items (v0-v5) take PutItem of a
unique `v` (a quarter of them only if the item is absent, `attribute_not_exists(pk)`) and
DeleteItem, counter items (c0, c1) take increments only: a
GetItem, then UpdateItem `SET n = n + :one, v = :id` if `n = :seen` (or `SET n = :one,
v = :id` if `attribute_not_exists(n)`), or one time in three a blind `ADD n :one SET
v = :id` with ReturnValues ALL_NEW. Besides: GetItem of any item (a third consistent), and
Query of one partition key, ascending or descending, with or without a Limit and a sort-key
condition (BETWEEN, begins_with), paged by ExclusiveStartKey until LastEvaluatedKey is
absent. Each client runs one operation at a time against a node it picks at random, as the
KV workloads' clients do, and gives up after CLIENT_TIMEOUT: longer than theirs, since a
forwarded conditional write may wait three request timeouts before it is served locally.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dynakv.dynamodb import items
from dynakv.dynamodb.tables import Table, new_table
from dynakv.item_keys import table_bucket
from dynakv.sim.cluster import SimCluster
from dynakv.sim.ddb_backend import DynamoFrontends
from dynakv.sim.ddb_check import (
    TABLE,
    DdbOp,
    DdbOutcome,
    ItemRead,
    ItemWrite,
    QueryPage,
    WriteKind,
    from_wire,
)
from dynakv.sim.workload import WorkloadOptions

PKS = ("p0", "p1")
VALUE_SKS = tuple(f"v{i}" for i in range(6))
COUNTER_SKS = ("c0", "c1")
SORT_KEYS = tuple(sorted(VALUE_SKS + COUNTER_SKS))
CLIENT_TIMEOUT = 8.0  # virtual seconds; above a forward's 3 request timeouts plus a serve
MAX_PAGES = 20
CREATED = 1_700_000_000.0  # the table's generation: fixed, so a seed fixes the whole run
# Shares of the operations (the rest are Queries); a share of the puts are conditional.
PUT, DELETE, GET, INCREMENT = 0.3, 0.08, 0.12, 0.25
CONDITIONAL_PUT = 0.25

CREATE_REQUEST: dict[str, Any] = {
    "TableName": TABLE,
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}


def table() -> Table:
    return new_table(CREATE_REQUEST, {}, CREATED)


def item_keys() -> list[str]:
    """The KV keys of every item the workload may write (for the repair reads)."""
    t = table()
    return [items.location(t, _key(pk, sk))[1] for pk in PKS for sk in SORT_KEYS]


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def outcome_of(status: int, reply: dict[str, Any]) -> DdbOutcome:
    """An answer as a history outcome: refused and client errors failed (no effect), a
    failed condition rejected, a server error unknown (a write may have taken effect)."""
    if status == 200:
        return "ok"
    kind = str(reply.get("__type", "")).rsplit("#", 1)[-1]
    if kind == "ConditionalCheckFailedException":
        return "rejected"
    if status == 0 or 400 <= status < 500:
        return "failed"
    return "unknown"


class DdbWorkload:
    """Clients of the ddb workload on one cluster; `history` fills as operations complete."""

    def __init__(
        self,
        cluster: SimCluster,
        frontends: DynamoFrontends,
        rng: random.Random,
        options: WorkloadOptions,
        end: float,
    ) -> None:
        self.name = "ddb"
        self.bucket = table_bucket(TABLE)
        self.keys = item_keys()
        self.history: list[DdbOp] = []
        self._queries = 0
        self.clients = [
            _Client(f"c{i}", self, cluster, frontends, random.Random(rng.random()), options, end)
            for i in range(options.clients)
        ]
        for client in self.clients:
            client.begin()

    def next_query(self) -> int:
        self._queries += 1
        return self._queries

    def idle(self) -> bool:
        return all(client.pending is None for client in self.clients)

    def finish(self) -> None:
        for client in self.clients:
            client.give_up()


class _Client:
    def __init__(
        self,
        process: str,
        workload: DdbWorkload,
        cluster: SimCluster,
        frontends: DynamoFrontends,
        rng: random.Random,
        options: WorkloadOptions,
        end: float,
    ) -> None:
        self.process = process
        self.workload = workload
        self.cluster = cluster
        self.frontends = frontends
        self.rng = rng
        self.options = options
        self.end = end
        self.nodes = sorted(cluster.names)
        self.pending: tuple[int, Callable[[], None]] | None = None
        self._token = 0
        self._writes = 0

    # --- the operation loop ----------------------------------------------------------------
    def begin(self) -> None:
        at = self.cluster.now + self.rng.uniform(0.0, self.options.think_max)
        self.cluster.call_at(at, self._next)

    def _next(self) -> None:
        if self.cluster.now >= self.end:
            return
        rng = self.rng
        pk = rng.choice(PKS)
        roll = rng.random()
        if roll < PUT:
            self._put(pk, rng.choice(VALUE_SKS), conditional=rng.random() < CONDITIONAL_PUT)
        elif roll < PUT + DELETE:
            self._delete(pk, rng.choice(VALUE_SKS))
        elif roll < PUT + DELETE + GET:
            self._get(pk, rng.choice(SORT_KEYS), then=None)
        elif roll < PUT + DELETE + GET + INCREMENT:
            sk = rng.choice(COUNTER_SKS)
            if rng.random() < 1 / 3:
                self._add(pk, sk)
            else:
                self._get(pk, sk, then=self._increment)
        else:
            self._query(pk)

    # --- operations --------------------------------------------------------------------------
    def _put(self, pk: str, sk: str, conditional: bool) -> None:
        """PutItem of a new v; conditional: only if the item is absent (put-if-absent)."""
        write_id = self._next_id()
        item = {**_key(pk, sk), "v": {"S": write_id}}
        body: dict[str, Any] = {"TableName": TABLE, "Item": item}
        if conditional:
            body["ConditionExpression"] = "attribute_not_exists(pk)"
        self._write("PutItem", body, "cput" if conditional else "put", pk, sk, write_id, None)

    def _delete(self, pk: str, sk: str) -> None:
        body = {"TableName": TABLE, "Key": _key(pk, sk)}
        self._write("DeleteItem", body, "delete", pk, sk, self._next_id(), None)

    def _add(self, pk: str, sk: str) -> None:
        write_id = self._next_id()
        body = {
            "TableName": TABLE,
            "Key": _key(pk, sk),
            "UpdateExpression": "ADD n :one SET v = :id",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":id": {"S": write_id}},
            "ReturnValues": "ALL_NEW",
        }
        self._write("UpdateItem", body, "add", pk, sk, write_id, None)

    def _increment(self, pk: str, sk: str, seen: dict[str, Any] | None) -> None:
        write_id = self._next_id()
        values: dict[str, Any] = {":one": {"N": "1"}, ":id": {"S": write_id}}
        if seen is None or "n" not in seen:
            update, condition, n = "SET n = :one, v = :id", "attribute_not_exists(n)", 1
        else:
            update, condition, n = "SET n = n + :one, v = :id", "n = :seen", seen["n"] + 1
            values[":seen"] = {"N": str(seen["n"])}
        body = {
            "TableName": TABLE,
            "Key": _key(pk, sk),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        self._write("UpdateItem", body, "increment", pk, sk, write_id, n)

    def _write(
        self,
        operation: str,
        body: dict[str, Any],
        kind: WriteKind,
        pk: str,
        sk: str,
        write_id: str,
        n: int | None,
    ) -> None:
        invoke = self.cluster.now

        def record(outcome: DdbOutcome, reply: dict[str, Any]) -> None:
            stored = n
            if outcome == "ok" and "Attributes" in reply:
                stored = from_wire(reply["Attributes"]).get("n", n)
            write = ItemWrite(
                self.process, kind, pk, sk, write_id, stored, invoke, self.cluster.now, outcome
            )
            self.workload.history.append(write)
            self.cluster.note(f"{self.process} {outcome} {kind} {pk}/{sk} id={write_id} n={stored}")
            self.begin()

        self.cluster.note(f"{self.process} invoke {kind} {pk}/{sk} id={write_id}")
        self._request(operation, body, record, lambda: record("unknown", {}))

    def _get(
        self,
        pk: str,
        sk: str,
        then: Callable[[str, str, dict[str, Any] | None], None] | None,
    ) -> None:
        invoke = self.cluster.now
        consistent = self.rng.random() < 1 / 3
        body = {"TableName": TABLE, "Key": _key(pk, sk), "ConsistentRead": consistent}

        def record(outcome: DdbOutcome, reply: dict[str, Any]) -> None:
            outcome = "ok" if outcome == "ok" else "failed"  # a read has no effect
            item = from_wire(reply["Item"]) if "Item" in reply else None
            read = ItemRead(self.process, pk, sk, invoke, self.cluster.now, outcome, item)
            self.workload.history.append(read)
            self.cluster.note(f"{self.process} {outcome} get {pk}/{sk} {item}")
            if then is not None and outcome == "ok":
                then(pk, sk, item)
            else:
                self.begin()

        self._request("GetItem", body, record, lambda: record("failed", {}))

    def _query(self, pk: str) -> None:
        rng = self.rng
        query = self.workload.next_query()
        forward = rng.random() < 0.5
        limit = rng.choice((None, None, 1, 2, 3, 5))
        low: str | None = None
        high: str | None = None
        values: dict[str, Any] = {":p": {"S": pk}}
        condition = "pk = :p"
        shape = rng.random()
        if shape < 0.3:
            low, high = sorted(rng.sample(SORT_KEYS, 2))
            condition += " AND sk BETWEEN :lo AND :hi"
            values.update({":lo": {"S": low}, ":hi": {"S": high}})
        elif shape < 0.45:
            prefix = rng.choice(("v", "c"))
            low, high = prefix, prefix + "\U0010ffff"
            condition += " AND begins_with(sk, :prefix)"
            values[":prefix"] = {"S": prefix}
        body: dict[str, Any] = {
            "TableName": TABLE,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
            "ConsistentRead": rng.random() < 0.25,
        }
        if limit is not None:
            body["Limit"] = limit
        self._page(query, 1, pk, forward, limit, low, high, None, body)

    def _page(
        self,
        query: int,
        page: int,
        pk: str,
        forward: bool,
        limit: int | None,
        low: str | None,
        high: str | None,
        start: str | None,
        body: dict[str, Any],
    ) -> None:
        invoke = self.cluster.now
        if start is not None:
            body = {**body, "ExclusiveStartKey": _key(pk, start)}

        def record(outcome: DdbOutcome, reply: dict[str, Any]) -> None:
            outcome = "ok" if outcome == "ok" else "failed"
            found = tuple(from_wire(item) for item in reply.get("Items", []))
            last_key = reply.get("LastEvaluatedKey")
            last = from_wire(last_key)["sk"] if last_key else None
            self.workload.history.append(
                QueryPage(
                    self.process, query, page, pk, forward, limit, low, high, start, invoke,
                    self.cluster.now, outcome, found, last,
                )
            )  # fmt: skip
            shown = [item.get("sk") for item in found]
            self.cluster.note(f"{self.process} {outcome} query {query}.{page} {pk} {shown}")
            if outcome == "ok" and last is not None and page < MAX_PAGES:
                self._page(query, page + 1, pk, forward, limit, low, high, last, body)
            else:
                self.begin()

        self._request("Query", body, record, lambda: record("failed", {}))

    # --- requests --------------------------------------------------------------------------
    def _request(
        self,
        operation: str,
        body: dict[str, Any],
        answered: Callable[[DdbOutcome, dict[str, Any]], None],
        gave_up: Callable[[], None],
    ) -> None:
        node = self.rng.choice(self.nodes)
        self._token += 1
        token = self._token
        self.pending = (token, gave_up)

        def answer(status: int, reply: dict[str, Any]) -> None:
            if self.pending is None or self.pending[0] != token:
                return  # an answer after the client gave up
            self.pending = None
            answered(outcome_of(status, reply), reply)

        self.frontends.request(node, operation, body, answer)
        self.cluster.call_at(self.cluster.now + CLIENT_TIMEOUT, lambda: self._timeout(token))

    def _timeout(self, token: int) -> None:
        if self.pending is not None and self.pending[0] == token:
            self.give_up()

    def give_up(self) -> None:
        """Give up on the operation in flight (its write is unknown, its read failed)."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending[1]()

    def _next_id(self) -> str:
        self._writes += 1
        return f"{self.process}.{self._writes}"


FINAL_ATTEMPTS = 6


def final_queries(
    cluster: SimCluster, frontends: DynamoFrontends, workload: DdbWorkload
) -> list[QueryPage]:
    """After the faults: a consistent Query (every replica read) of each partition key, the
    checker's final view of every item; tried through the nodes in turn until one answers."""
    pages: list[QueryPage] = []
    names = sorted(cluster.names)
    answers: dict[tuple[int, int], tuple[int, dict[str, Any]]] = {}  # late ones ignored
    for index, pk in enumerate(PKS):
        body = {
            "TableName": TABLE,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": pk}},
            "ConsistentRead": True,
        }
        for attempt in range(FINAL_ATTEMPTS):
            invoke = cluster.now
            node = names[(index + attempt) % len(names)]

            which = (index, attempt)

            def answer(status: int, reply: dict[str, Any], which: tuple[int, int] = which) -> None:
                answers[which] = (status, reply)

            frontends.request(node, "Query", body, answer)
            cluster.run_until(lambda which=which: which in answers, limit=CLIENT_TIMEOUT)
            status, reply = answers.get(which, (0, {}))
            ok = status == 200 and "LastEvaluatedKey" not in reply
            found = tuple(from_wire(item) for item in reply.get("Items", []))
            pages.append(
                QueryPage(
                    "final", workload.next_query(), 1, pk, True, None, None, None, None, invoke,
                    cluster.now, "ok" if ok else "failed", found if ok else (),
                )
            )  # fmt: skip
            if ok:
                break
            cluster.run_for(1.0 + attempt)
    return pages
