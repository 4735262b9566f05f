"""`dynakv serve` whose outbound peer connections leave from the node's own --listen address.

Nodes sharing one loopback as 127.0.0.2, .3, ... would otherwise all connect from 127.0.0.1,
and nftables rules between address pairs could not tell them apart. Harness-only: the rest of
the node is the unchanged `dynakv serve`. Run: python node_shim.py [--inject-bug NAME] serve ...
where --inject-bug turns on one of core.bugs' deliberate bugs, to prove the nemesis check
catches it (core.Node takes them as a constructor argument only; this process passes it).
"""

from __future__ import annotations

import functools
import sys
from itertools import pairwise

import uvloop

from dynakv.cli import main


def listen_host(argv: list[str]) -> str:
    for flag, value in pairwise(argv):
        if flag == "--listen":
            return value.rpartition(":")[0]
    raise SystemExit("node_shim needs --listen HOST:PORT")


def bind_outbound_connections(host: str) -> None:
    """Every loop.create_connection without a local address gets (host, any port)."""
    original = uvloop.Loop.create_connection

    async def create_connection(self, protocol_factory, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("sock") is None and kwargs.get("local_addr") is None:
            kwargs["local_addr"] = (host, 0)
        return await original(self, protocol_factory, *args, **kwargs)

    uvloop.Loop.create_connection = create_connection  # type: ignore[method-assign]


def inject_bug(name: str) -> None:
    """The server builds its core.Node with this bug switched on."""
    from dynakv.core.bugs import InjectedBugs
    from dynakv.runtime import server

    server.Node = functools.partial(server.Node, bugs=InjectedBugs(**{name: True}))  # type: ignore[misc]


if __name__ == "__main__":
    if sys.argv[1] == "--inject-bug":
        inject_bug(sys.argv[2])
        del sys.argv[1:3]
    bind_outbound_connections(listen_host(sys.argv))
    main()
