"""A node process, composed: the Server, then its front ends (HTTP always, RESP with
`resp_addr`), stopped in reverse order; `run` is `dynakv serve` (signals, logging, GC).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dynakv.config import NodeConfig
from dynakv.runtime import allocator, logs
from dynakv.runtime.dynamodb_http import DynamoFrontend
from dynakv.runtime.frontend import Frontend, ServerApi
from dynakv.runtime.http import HttpFrontend
from dynakv.runtime.resp import RespFrontend
from dynakv.runtime.server import Server

# The cyclic collector's young-generation threshold (CPython's default is 700). Under RESP
# load the objects of the requests in flight (slots, reply callbacks, pending requests) went
# past 700 dozens of times a second, so young collections kept promoting them, and every few
# seconds a full collection walked the whole heap: 35-70 ms with the loop stopped, once or
# twice per 5 s on the coordinator (benchmarks/README.md, "Garbage collector pauses"). The
# node makes almost no cyclic garbage; at 10,000 young collections are rare and take ~3 ms.
GC_YOUNG_THRESHOLD = 10_000


def frontends(server: ServerApi) -> list[Frontend]:
    """The front ends the config asks for, in the order they start."""
    chosen: list[Frontend] = [HttpFrontend(server)]
    if server.config.resp_addr:
        chosen.append(RespFrontend(server))
    if server.config.dynamodb_addr:
        chosen.append(DynamoFrontend(server))
    return chosen


class CannotListen(OSError):
    """A port of the node is taken (or not ours to bind): `dynakv serve` says which in one
    line and exits, before the node has joined or gossiped anything."""


def _port_of(frontend: Frontend, config: NodeConfig) -> tuple[str, str]:
    if isinstance(frontend, RespFrontend):
        return "Redis port (--resp)", config.resp_addr or ""
    if isinstance(frontend, DynamoFrontend):
        return "DynamoDB port (--dynamodb)", config.dynamodb_addr or ""
    return "HTTP port (--http)", config.http_addr


@asynccontextmanager
async def _binding(what: str, addr: str) -> AsyncIterator[None]:
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(exc.errno, f"cannot listen on {addr}, the {what}: {reason}") from exc


@asynccontextmanager
async def running(config: NodeConfig, join: str | None = None) -> AsyncIterator[Server]:
    """A started node with its front ends. The ports are all bound before the node starts
    (a port already taken ends the process before it joins or gossips). On leaving, the
    front ends stop first (the requests in flight answered), then the server — except after
    a storage failure, when the node stops at once and the front ends after it."""
    server = Server(config, join)
    async with _binding("node port (--listen)", config.node_addr):
        await server.listen()
    started: list[Frontend] = []
    try:
        for frontend in frontends(server):
            async with _binding(*_port_of(frontend, config)):
                await frontend.start()
            started.append(frontend)
        server.begin()
        yield server
    finally:
        if server.storage_failed:
            await server.stop()
        for frontend in reversed(started):
            await frontend.stop()
        if not server.stopped.is_set():
            await server.stop()


async def serve(config: NodeConfig, join: str | None = None) -> int:
    """Run one node until SIGINT or SIGTERM (or until it leaves the cluster, its join is
    refused or its storage fails); the process's exit status."""
    async with running(config, join) as server:
        loop = asyncio.get_running_loop()
        stop = server.stop_requested
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    return server.exit_status


def raise_open_files_limit(config: NodeConfig) -> None:
    """Let the process open what max_connections allows on its three ports: the soft limit
    of open files up to the hard one (as Redis does for maxclients); a warning if short."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * config.max_connections + 256  # and peers, LMDB, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            logging.getLogger("dynakv").warning(
                "open_files_limit limit=%d wanted=%d: lower max_connections or raise the "
                "hard limit (ulimit -Hn)",
                raised,
                wanted,
            )


def run(config: NodeConfig, join: str | None = None) -> int:
    """`dynakv serve`: log to stderr (in the config's format, from its level), raise the
    collector's young threshold, keep large buffers in the heap (allocator.py), serve on
    uvloop; the exit status (non-zero when the node stopped on an error, such as a refused
    join)."""
    import uvloop

    logs.configure(config.name, config.log_level, config.log_format)
    allocator.tune()
    raise_open_files_limit(config)
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    return uvloop.run(serve(config, join))
