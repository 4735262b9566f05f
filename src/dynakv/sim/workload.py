"""Simulated clients that run a workload against a SimCluster and record the checker's history.

Each client runs one operation at a time, like a Jepsen process, against a node it picks at
random for every request, and gives up on an answer after `client_timeout`. Workloads:
- cart: read the cart, union the item sets of its siblings, add a new unique item (or, now
  and then, remove one it saw) and write it back with the read's context; some adds are
  blind (no read, no context), as a client whose read failed would do to stay writable.
- register: read, then write a new value (or delete) with the read's context; some blind.
- lww: blind writes (and some reads) to a last-writer-wins bucket.
- expiry: as register (no deletes), but most writes give the value a lifetime of up to
  `lifetime_max` seconds (ClientPut.expires, from the cluster's true time); checked by
  sim/expiry_check.py: no read started after a value's expiry returns it.
Randomness comes from the injected `random.Random`; time is the cluster's virtual clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from dynakv.messages import ClientGet, ClientPut, ErrorReply, GetResult, Message, PutResult
from dynakv.sim.checker import Op, Outcome, Read, Write, encode_value, value_id, value_items
from dynakv.sim.cluster import REFUSED, SimCluster

WorkloadName = Literal["cart", "register", "lww", "expiry", "ddb"]
WORKLOADS: tuple[WorkloadName, ...] = ("cart", "register", "lww", "expiry")
# With the DynamoDB workload (sim/ddb_workload.py, checked by sim/ddb_check.py), which has
# its own tests (tests/sim/test_ddb.py) rather than a window in test_seeds.py.
ALL_WORKLOADS: tuple[WorkloadName, ...] = (*WORKLOADS, "ddb")
BUCKET: dict[str, str] = {
    "cart": "carts", "register": "registers", "lww": "lww", "expiry": "expiring"
}  # fmt: skip


@dataclass(frozen=True)
class WorkloadOptions:
    """How hard the clients push: how many, on how many keys, for how long (virtual seconds)."""

    clients: int = 5
    keys: int = 3
    duration: float = 12.0  # clients start operations only within this window
    think_max: float = 0.1  # pause before each operation: uniform in [0, think_max]
    client_timeout: float = 3.0  # a client gives up on an answer after this long
    blind_probability: float = 0.1  # cart, register: write without reading first
    remove_probability: float = 0.2  # cart: remove an item seen instead of adding one
    delete_probability: float = 0.1  # register: delete (with the read's context)
    read_probability: float = 0.3  # lww: a plain read instead of a blind write
    expire_probability: float = 0.7  # expiry: a write that gives its value a lifetime
    lifetime_max: float = 2.0  # expiry: lifetimes are uniform in [0.05, lifetime_max] s
    value_padding: int = 0  # bytes added to each value: from 16 KiB, values are stored apart


class Workload:
    """Clients of one workload on one cluster; `history` fills as operations complete."""

    def __init__(
        self,
        name: WorkloadName,
        cluster: SimCluster,
        rng: random.Random,
        options: WorkloadOptions,
        end: float,
    ) -> None:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        self.name = name
        self.bucket = BUCKET[name]
        self.keys = [f"k{i}" for i in range(options.keys)]
        self.history: list[Op] = []
        self.clients = [
            _Client(f"#c{i}", self, cluster, random.Random(rng.random()), options, end)
            for i in range(options.clients)
        ]
        for client in self.clients:
            client.begin()

    def idle(self) -> bool:
        return all(client.pending is None for client in self.clients)

    def finish(self) -> None:
        """Record operations still waiting for an answer as unknown (failed for reads)."""
        for client in self.clients:
            client.give_up()


class _Client:
    def __init__(
        self,
        name: str,
        workload: Workload,
        cluster: SimCluster,
        rng: random.Random,
        options: WorkloadOptions,
        end: float,
    ) -> None:
        self.name = name
        self.process = name.lstrip("#")
        self.workload = workload
        self.cluster = cluster
        self.rng = rng
        self.options = options
        self.end = end
        self.nodes = sorted(cluster.names)
        self.pending: _Pending | None = None
        self._rid = 0
        self._writes = 0
        cluster.attach_client(name, self._reply)

    # --- the operation loop ------------------------------------------------------------------
    def begin(self) -> None:
        self.cluster.call_at(
            self.cluster.now + self.rng.uniform(0.0, self.options.think_max), self._next
        )

    def _next(self) -> None:
        if self.cluster.now >= self.end:
            return
        workload = self.workload.name
        key = self.rng.choice(self.workload.keys)
        if workload == "lww":
            if self.rng.random() < self.options.read_probability:
                self._read(key)
            else:
                self._write(key, (), "")
        elif self.rng.random() < self.options.blind_probability:
            self._write(key, (), "", items=set() if workload == "cart" else None)
        else:
            self._read(key)

    def _after_read(self, key: str, values: tuple[bytes, ...], context: str) -> None:
        """The modify-write half of read-modify-write: what to write after this read."""
        seen = tuple(sorted({i for i in map(value_id, values) if i is not None}))
        if self.workload.name == "cart":
            items: set[str] = set()
            for value in values:
                items |= value_items(value)
            if items and self.rng.random() < self.options.remove_probability:
                items.discard(self.rng.choice(sorted(items)))
                self._write(key, seen, context, items=items, add=False)
            else:
                self._write(key, seen, context, items=items)
        elif (
            self.workload.name == "register"
            and seen
            and self.rng.random() < self.options.delete_probability
        ):
            self._write(key, seen, context, delete=True)
        else:
            self._write(key, seen, context)

    # --- requests ----------------------------------------------------------------------------
    def _read(self, key: str) -> None:
        message = ClientGet(self._next_rid(), self.workload.bucket, key)
        self._send(message, _Pending(message.rid, "read", key, self.cluster.now))

    def _write(
        self,
        key: str,
        seen: tuple[str, ...],
        context: str,
        items: set[str] | None = None,
        add: bool = True,
        delete: bool = False,
    ) -> None:
        """Write a new value (a cart: `items`, plus a new item named after the write if
        `add`), or a tombstone, with the context of the read that saw `seen`."""
        write_id = self._next_id()
        if items is not None and add:
            items = items | {write_id}
        value = b"" if delete else encode_value(write_id, items, self.options.value_padding)
        expires = 0
        options = self.options
        if self.workload.name == "expiry" and self.rng.random() < options.expire_probability:
            lifetime = self.rng.uniform(0.05, options.lifetime_max)
            expires = int((self.cluster.now + lifetime) * 1000)
        message = ClientPut(
            self._next_rid(), self.workload.bucket, key, value, context, delete=delete,
            expires=expires,
        )  # fmt: skip
        pending = _Pending(
            message.rid, "write", key, self.cluster.now, write_id, value, seen, delete, expires
        )
        self._send(message, pending)

    def _send(self, message: ClientGet | ClientPut, pending: _Pending) -> None:
        node = self.rng.choice(self.nodes)
        self.pending = pending
        what = "delete" if pending.delete else pending.kind
        extra = f" id={pending.write_id} seen={list(pending.seen)}" if pending.write_id else ""
        self.cluster.note(
            f"{self.process} invoke {what} {message.bucket}/{pending.key} via {node}{extra}"
        )
        self.cluster.request(node, self.name, message)
        rid = message.rid
        self.cluster.call_at(
            self.cluster.now + self.options.client_timeout, lambda: self._timeout(rid)
        )

    def _reply(self, now: float, message: Message) -> None:
        pending = self.pending
        if pending is None or getattr(message, "rid", None) != pending.rid:
            return  # an answer after the client gave up, or a duplicate
        self.pending = None
        if pending.kind == "read":
            if isinstance(message, GetResult):
                values = tuple(message.values)
                self._record_read(pending, "ok", values)
                if self.workload.name != "lww":
                    self._after_read(pending.key, values, message.context)
                    return
            else:
                self._record_read(pending, "failed", ())
        elif isinstance(message, PutResult):
            self._record_write(pending, "ok")
        elif isinstance(message, ErrorReply) and message.code in (REFUSED, "invalid_request"):
            self._record_write(pending, "failed")
        else:
            self._record_write(pending, "unknown")
        self.begin()

    def _timeout(self, rid: int) -> None:
        if self.pending is not None and self.pending.rid == rid:
            self.give_up()
            self.begin()

    def give_up(self) -> None:
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if pending.kind == "read":
            self._record_read(pending, "failed", ())
        else:
            self._record_write(pending, "unknown")

    # --- history -----------------------------------------------------------------------------
    def _record_read(self, pending: _Pending, outcome: Outcome, values: tuple[bytes, ...]) -> None:
        bucket = self.workload.bucket
        now = self.cluster.now
        self.workload.history.append(
            Read(self.process, bucket, pending.key, pending.invoke, now, outcome, values)
        )
        ids = sorted(value_id(v) or repr(v) for v in values)
        self.cluster.note(f"{self.process} {outcome} read {bucket}/{pending.key} {ids}")

    def _record_write(self, pending: _Pending, outcome: Outcome) -> None:
        bucket = self.workload.bucket
        now = self.cluster.now
        assert pending.write_id is not None and pending.value is not None
        self.workload.history.append(
            Write(
                self.process,
                bucket,
                pending.key,
                pending.write_id,
                pending.value,
                pending.seen,
                pending.delete,
                pending.invoke,
                now,
                outcome,
                pending.expires,
            )
        )
        what = "delete" if pending.delete else "write"
        self.cluster.note(
            f"{self.process} {outcome} {what} {bucket}/{pending.key} id={pending.write_id}"
        )

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _next_id(self) -> str:
        self._writes += 1
        return f"{self.process}.{self._writes}"


@dataclass
class _Pending:
    rid: int
    kind: Literal["read", "write"]
    key: str
    invoke: float
    write_id: str | None = None
    value: bytes | None = None
    seen: tuple[str, ...] = ()
    delete: bool = False
    expires: int = 0  # epoch ms the value expires at (cluster time); 0: never
