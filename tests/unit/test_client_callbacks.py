"""AsyncClient.start_get / start_put against a scripted node: replies, errors, timeouts."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dynakv.client import AsyncClient
from dynakv.errors import Timeout, Unavailable
from dynakv.messages import (
    ClientGet,
    ClientPut,
    ErrorReply,
    GetResult,
    Message,
    PutResult,
    decode,
)
from dynakv.runtime.transport import LENGTH, frame


async def _node(mode: str) -> tuple[asyncio.Server, str]:
    """A node that answers every request ("answer"), never answers ("silent"), or answers the
    first request and closes the connection on the next ("close")."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for seen in itertools.count():
                length = int.from_bytes(await reader.readexactly(LENGTH), "big")
                request = decode(await reader.readexactly(length))
                if mode == "close" and seen:
                    writer.close()
                    return
                if mode == "silent":
                    continue
                reply: Message
                if isinstance(request, ClientGet) and request.key == "missing":
                    reply = ErrorReply(request.rid, "unavailable", "no", needed=2, got=1)
                elif isinstance(request, ClientGet):
                    reply = GetResult(request.rid, [b"v"], [""], f"ctx-{request.key}")
                else:
                    assert isinstance(request, ClientPut)
                    reply = PutResult(request.rid, f"put-{request.key}")
                writer.write(frame(reply))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


async def _outcomes(mode: str, requests: list[tuple[str, str]]) -> list[Message | BaseException]:
    """Send `requests` ("get"/"put", key) one after the other; what each callback got."""
    server, address = await _node(mode)
    got: list[Message | BaseException] = []
    async with server, AsyncClient([address], timeout=0.3, route=False) as client:
        for op, key in requests:
            answered = asyncio.Event()

            def callback(outcome: Message | BaseException, answered: asyncio.Event = answered):
                got.append(outcome)
                answered.set()

            if op == "get":
                client.start_get("b", key, callback)
            else:
                client.start_put("b", key, b"x", callback)
            await asyncio.wait_for(answered.wait(), 5)
    return got


def test_replies_and_errors_reach_the_callbacks() -> None:
    # the first request connects (the coroutine path), the next ones use the open connection
    got = asyncio.run(
        _outcomes("answer", [("get", "a"), ("get", "b"), ("put", "c"), ("get", "missing")])
    )
    assert isinstance(got[0], GetResult) and got[0].context == "ctx-a"
    assert isinstance(got[1], GetResult) and got[1].values == [b"v"]
    assert isinstance(got[2], PutResult) and got[2].context == "put-c"
    assert isinstance(got[3], Unavailable) and (got[3].needed, got[3].got) == (2, 1)


def test_a_silent_node_times_out_on_both_paths() -> None:
    got = asyncio.run(_outcomes("silent", [("get", "a"), ("get", "b"), ("put", "c")]))
    assert all(isinstance(outcome, Timeout) for outcome in got)


@pytest.mark.parametrize("op", ["get", "put"])
def test_a_lost_connection_fails_the_request(op: str) -> None:
    # the second request is on the open connection, which the node closes: a get is retried on
    # the key's other nodes (there are none here), a put is not (it may have been applied)
    got = asyncio.run(_outcomes("close", [(op, "a"), (op, "b")]))
    assert isinstance(got[0], GetResult if op == "get" else PutResult)
    assert isinstance(got[1], Unavailable)
