"""The console's HTTP side: the page and its static files (`/`, `/console/{file}`), this node's
own report (GET /v1/console/node) and the whole cluster's (GET /v1/console), which the serving
node gathers by asking every member's report at once with a short timeout, so a member down or
hung is marked and never holds the page up. It also samples the node's request histograms
every SAMPLE_INTERVAL for the load charts (console/summary.py LoadHistory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from dynakv import tls
from dynakv.console.summary import LoadHistory, summarize
from dynakv.errors import InvalidRequest, NotFound
from dynakv.runtime.frontend import ServerApi

SAMPLE_INTERVAL = 2.0  # s between two samples of the request histograms
GATHER_TIMEOUT = 2.0  # s the serving node waits for a member's report, by default
MAX_GATHER_TIMEOUT = 10.0
# The page's files; nothing else under /console/ is served (no path from the request
# reaches the file system).
STATIC = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}


def _static(name: str) -> bytes:
    return resources.files("dynakv.console").joinpath(name).read_bytes()


def gather_timeout(query: dict[str, str] | Any) -> float:
    """The `timeout` of GET /v1/console (seconds to wait for each member), checked."""
    unknown = set(query) - {"timeout"}
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s) {', '.join(sorted(unknown))}; allowed: timeout"
        )
    text = query.get("timeout")
    if text is None:
        return GATHER_TIMEOUT
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidRequest(f"timeout must be a number of seconds, got {text[:64]!r}") from exc
    if not 0.1 <= value <= MAX_GATHER_TIMEOUT:
        raise InvalidRequest(f"timeout must be 0.1 to {MAX_GATHER_TIMEOUT:g} seconds, got {text}")
    return value


class Console:
    """The console routes of one node's HTTP front end, its load sampler and the client
    session it asks the other members with."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self.history = LoadHistory()
        self._session: aiohttp.ClientSession | None = None
        self._sampler: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/console/{file}", self.static)
        app.router.add_get("/v1/console", self.cluster)
        app.router.add_get("/v1/console/node", self.node)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    async def _start(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession()
        self._sampler = asyncio.create_task(self._sample())

    async def _stop(self, app: web.Application) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._session is not None:
            await self._session.close()

    async def _sample(self) -> None:
        metrics = self.server.metrics
        while True:
            self.history.sample(
                time.time(), list(metrics.requests.values()), sum(metrics.errors.values())
            )
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if name not in STATIC:
            raise NotFound(f"no console file {name[:64]!r}: there are {', '.join(STATIC)}")
        return web.Response(body=_static(name), content_type=STATIC[name], charset="utf-8")

    def own_report(self) -> dict[str, Any]:
        return {"status": self.server.status(), "load": self.history.as_json()}

    async def node(self, request: web.Request) -> web.StreamResponse:
        """This node alone: its status and its load history."""
        if request.query:
            raise InvalidRequest(
                f"unknown query parameter(s) {', '.join(sorted(request.query))}; allowed: none"
            )
        return web.json_response(self.own_report())

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        """Every member's report, gathered now, and what the page shows of them."""
        timeout = gather_timeout(request.query)
        view = self.server.cluster()
        me = self.server.config.name
        asked = [m for m in view["members"] if m["status"] != "removed" and m["name"] != me]
        # The caller's own credentials ask the members (each checks them as it would the
        # caller's), over https when the ports have TLS.
        authorization = request.headers.get("Authorization")
        answers = await asyncio.gather(
            *(self._ask(m["http_addr"], timeout, authorization) for m in asked)
        )
        reports: dict[str, dict[str, Any] | str] = {
            m["name"]: answer for m, answer in zip(asked, answers, strict=True)
        }
        reports[me] = self.own_report()
        return web.json_response(summarize(me, view, reports, time.time()))

    async def _ask(
        self, http_addr: str, timeout: float, authorization: str | None
    ) -> dict[str, Any] | str:
        """A member's report, or why there is none (one short phrase for the page)."""
        assert self._session is not None
        security = self.server.config.security
        context: ssl.SSLContext | None = None
        if tls.enabled(security):
            context = ssl.create_default_context(cafile=security.tls_ca)
        url = f"{'https' if context else 'http'}://{http_addr}/v1/console/node"
        headers = {"Authorization": authorization} if authorization else {}
        try:
            async with self._session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout),
                headers=headers,
                ssl=context if context is not None else True,
            ) as response:
                if response.status != 200:
                    return f"HTTP {response.status} from {url}"
                body = await response.json()
        except TimeoutError:
            return f"no answer in {timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return "unreachable: connection refused"
            return f"unreachable: {exc.os_error.strerror or exc.os_error}"
        except (aiohttp.ClientError, ValueError) as exc:
            return f"bad answer: {type(exc).__name__}"
        if not isinstance(body, dict):
            return "bad answer: not a JSON object"
        return body
