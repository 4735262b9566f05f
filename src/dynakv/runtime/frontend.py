"""How a front end (HTTP, RESP, ...) plugs into a node: `ServerApi`, all it may use of the
server, and `Frontend`, what the process (runtime/process.py) starts and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from dynakv.bucket_types import ResolvedProps
from dynakv.config import NodeConfig
from dynakv.messages import Message, TransferBatch
from dynakv.runtime.gatekeeper import Gatekeeper
from dynakv.runtime.metrics import Metrics
from dynakv.versions import Clock


class ServerApi(Protocol):
    """The node as its front ends see it (runtime/server.py `Server` provides it).

    Requests are the client messages of the binary protocol (ClientGet, ClientPut,
    ClientRepair, ClientBucketChange, with rid 0); their replies are released only once
    what they acknowledge is durable. A front end records its requests' latencies in `metrics`.
    """

    config: NodeConfig
    metrics: Metrics
    gate: Gatekeeper  # who the client is, and what it may do (authentication on)

    async def call(self, message: Message, timeout: float | None = None) -> Message:
        """Run one request and wait for its reply (errors.Timeout after `timeout` seconds,
        by default the node's request timeout + 2 s)."""
        ...

    def submit(self, message: Message, callback: Callable[[Message], None]) -> str:
        """Run one request; `callback(reply)` runs when the reply is released. No future is
        made: for front ends that run many requests at once. Returns the request's token."""
        ...

    def forget(self, token: str) -> None:
        """Drop the callback of a submitted request: it will not run."""
        ...

    def status(self) -> dict[str, Any]:
        """This node's state as /v1/status shows it (JSON-ready), keys stored included."""
        ...

    def cluster(self) -> dict[str, Any]:
        """Membership as this node knows it, as /v1/cluster shows it (JSON-ready)."""
        ...

    def bucket(self, name: str) -> ResolvedProps:
        """The properties bucket `name` has now, from the bucket types this node knows."""
        ...

    def bucket_types(self) -> list[dict[str, Any]]:
        """The cluster's bucket types as this node knows them (JSON-ready), sorted by name."""
        ...

    def replica(self, bucket: str, key: str) -> Clock | None:
        """This node's own copy of a key (None when it holds none), without a quorum."""
        ...

    def uptime(self) -> float:
        """Seconds since the server was made."""
        ...

    def partition_replicas(self, partition: int) -> list[str]:
        """Node addresses holding key `partition` (export.partition_replicas): this ring's
        replicas and, while one is being moved towards, the next ring's."""
        ...

    async def partition_batch(
        self, address: str, partition: int, after: bytes, limit: int
    ) -> TransferBatch:
        """Up to `limit` stored records of key `partition` after digest `after`, from the
        node at `address` alone (its own copy, as an ownership transfer pulls it);
        errors.Unavailable or errors.Timeout when that node cannot be read."""
        ...

    @property
    def stopped(self) -> asyncio.Event:
        """Set once the server has stopped: nothing in flight will be answered any more."""
        ...


class Frontend(Protocol):
    """One way in to a node, made from a `ServerApi`; it listens on its own address."""

    async def start(self) -> None:
        """Listen; requests go through the server from then on."""
        ...

    async def stop(self) -> None:
        """Stop accepting, answer what is in flight if it can, close every connection."""
        ...
