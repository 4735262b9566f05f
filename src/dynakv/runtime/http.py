"""The HTTP front end of a node (aiohttp): /v1/kv (and its key listing), /v1/replica,
/v1/buckets, /v1/status, /v1/cluster, /metrics; the console's routes (runtime/console.py).

Handlers turn requests into the messages the binary protocol carries and run them through the
server's API (frontend.ServerApi). Every error is JSON: {"error": CODE, "message": TEXT}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from dynakv import expiry, levels, listing, tls, versions
from dynakv.bucket_types import DEFAULT, PROPS
from dynakv.config import validate_location
from dynakv.errors import (
    DynakvError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    Unavailable,
    ValueTooLarge,
)
from dynakv.messages import (
    ClientBucketChange,
    ClientGet,
    ClientPut,
    ClientRepair,
    ClusterInfo,
    ErrorReply,
    GetResult,
    PutResult,
    RepairResult,
    TransferBatch,
)
from dynakv.runtime import openapi
from dynakv.runtime.console import Console
from dynakv.runtime.frontend import ServerApi
from dynakv.runtime.http_auth import authentication
from dynakv.runtime.http_limits import listen, runner_options, unread_body_too_large
from dynakv.runtime.limits import PortGuard
from dynakv.runtime.metrics import consistency_label

CONTEXT_HEADER = "X-Dynakv-Context"
TTL_HEADER = "X-Dynakv-TTL"  # PUT: seconds the value lives; GET: seconds it has left
ALLOWED_PARAMS = {"GET": {"r"}, "PUT": {"w"}, "DELETE": {"w"}, "HEAD": {"r"}}
LIST_PARAMS = {"list", "cursor", "limit"}
SERVER_KEY: web.AppKey[ServerApi] = web.AppKey("server")


def error_response(exc: DynakvError) -> web.Response:
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if isinstance(exc, Unavailable):
        body["needed"] = exc.needed
        body["got"] = exc.got
    return web.json_response(body, status=exc.status)


def _raise_reply_error(reply: Any) -> None:
    if isinstance(reply, ErrorReply):
        from dynakv.errors import from_code

        raise from_code(reply.code, reply.message, reply.needed, reply.got)


def _location(request: web.Request, prefix: str) -> tuple[str, str]:
    """Bucket and key from the raw path, so invalid UTF-8 is refused rather than replaced."""
    raw = request.raw_path.split("?", 1)[0]
    rest = raw[len(prefix) :]
    bucket_raw, sep, key_raw = rest.partition("/")
    if not sep:
        raise InvalidRequest("path must be /v1/kv/{bucket}/{key}")
    try:
        bucket = unquote_to_bytes(bucket_raw).decode("utf-8")
        key = unquote_to_bytes(key_raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("bucket and key must be valid UTF-8") from exc
    validate_location(bucket, key)
    return bucket, key


def _quorum_param(request: web.Request) -> dict[str, int | str]:
    allowed = ALLOWED_PARAMS.get(request.method, set())
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    params: dict[str, int | str] = {}
    for name in allowed & set(request.query):
        params[name] = levels.parse(name, request.query[name])
    return params


def _bucket_name(request: web.Request, prefix: str = "/v1/buckets/") -> str:
    """The bucket of /v1/buckets/{bucket} (or of another `prefix`), from the raw path (as
    _location does)."""
    raw = request.raw_path.split("?", 1)[0][len(prefix) :]
    try:
        bucket = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("a bucket name must be valid UTF-8") from exc
    validate_location(bucket, "k")
    return bucket


def _bucket_props(body: bytes) -> dict[str, int | str | dict[str, int]]:
    """The JSON object of a bucket type change: property -> number or string, and
    datacenters -> an object of data center -> count (bucket_types.change checks them)."""
    try:
        props = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body must be a JSON object of bucket properties: {exc}") from exc
    if not isinstance(props, dict):
        raise InvalidRequest(
            f"the body must be a JSON object of bucket properties ({', '.join(PROPS)})"
        )
    for name, value in props.items():
        if name == "datacenters":
            if not isinstance(value, dict):
                raise InvalidRequest(
                    f"datacenters must be an object of data center -> count, got "
                    f"{json.dumps(value)}"
                )
        elif isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidRequest(f"{name} must be a number or a string, got {json.dumps(value)}")
    return props


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ValueTooLarge(f"value is {request.content_length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    seconds = request.app[SERVER_KEY].config.request_read_timeout
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise ValueTooLarge(f"value exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive whole within request_read_timeout ({seconds} s)"
        ) from None
    return b"".join(chunks)


def _lifetimes(count: int, expires: list[int], now: float) -> list[str | None]:
    """Each of `count` values' remaining lifetime as the TTL header shows it (seconds, to
    the millisecond), None for a value that does not expire (`expires` empty: none do)."""
    if not expires:
        return [None] * count
    return [
        None if ms == 0 else f"{expiry.remaining_ms(ms, now) / 1000:.3f}" for ms in expires
    ]


class Api:
    def __init__(self, server: ServerApi) -> None:
        self.server = server

    async def _timed(self, op: str, level: str | None, call: Any) -> web.StreamResponse:
        t0 = time.perf_counter()
        code: str | None = None
        try:
            return await call
        except DynakvError as exc:
            if not isinstance(exc, NotFound):
                code = exc.code
            raise
        finally:
            consistency = consistency_label(level)
            self.server.metrics.observe(op, time.perf_counter() - t0, code, consistency)

    async def kv(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            return await self._timed("get", request.query.get("r"), self._get(request))
        w = request.query.get("w")
        if request.method == "PUT":
            return await self._timed("put", w, self._put(request, delete=False))
        if request.method == "DELETE":
            return await self._timed("delete", w, self._put(request, delete=True))
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "DELETE"])

    async def _get(self, request: web.Request) -> web.StreamResponse:
        bucket, key = _location(request, "/v1/kv/")
        params = _quorum_param(request)
        reply = await self.server.call(ClientGet(0, bucket, key, params.get("r")))
        _raise_reply_error(reply)
        assert isinstance(reply, GetResult)
        headers = {CONTEXT_HEADER: reply.context} if reply.context else {}
        if not reply.values:
            body = {"error": NotFound.code, "message": f"{bucket}/{key} not found"}
            return web.json_response(body, status=404, headers=headers)
        lifetimes = _lifetimes(len(reply.values), reply.expires, time.time())
        if len(reply.values) == 1:
            if lifetimes[0] is not None:
                headers[TTL_HEADER] = lifetimes[0]
            return web.Response(
                body=reply.values[0],
                headers=headers,
                content_type=reply.content_types[0] or "application/octet-stream",
            )
        siblings: list[dict[str, Any]] = [
            {"value_b64": base64.b64encode(v).decode(), "content_type": ct}
            for v, ct in zip(reply.values, reply.content_types, strict=True)
        ]
        for sibling, left in zip(siblings, lifetimes, strict=True):
            if left is not None:
                sibling["ttl"] = float(left)
        body = {"context": reply.context, "siblings": siblings}
        return web.json_response(body, status=300, headers=headers)

    async def _put(self, request: web.Request, delete: bool) -> web.StreamResponse:
        bucket, key = _location(request, "/v1/kv/")
        params = _quorum_param(request)
        context = request.headers.get(CONTEXT_HEADER, "")
        versions.decode_context(context)  # refuse a bad context before reading the body
        limit = self.server.bucket(bucket).max_value_bytes
        ttl = request.headers.get(TTL_HEADER)
        if ttl is not None and delete:
            raise InvalidRequest(f"{TTL_HEADER} is for PUT, not DELETE")
        expires = 0 if ttl is None else expiry.ttl_header(ttl, time.time())
        value = b"" if delete else await _read_body(request, limit)
        content_type = "" if delete else request.headers.get("Content-Type", "")
        message = ClientPut(
            0, bucket, key, value, context, params.get("w"), content_type, delete=delete,
            expires=expires,
        )  # fmt: skip
        reply = await self.server.call(message)
        _raise_reply_error(reply)
        assert isinstance(reply, PutResult)
        return web.Response(status=204, headers={CONTEXT_HEADER: reply.context})

    async def list_keys(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/kv/{bucket}?list=keys[&cursor=C][&limit=L]: a page of the bucket's live
        keys and the cursor of the next page (null after the last). A full scan: every
        partition is read from each of its replicas."""
        if request.method != "GET" or "list" not in request.query:
            return await _bad_kv_path(request)
        unknown = set(request.query) - LIST_PARAMS
        if unknown:
            raise InvalidRequest(
                f"unknown query parameter(s) {', '.join(sorted(unknown))}; "
                f"allowed with list=keys: {', '.join(sorted(LIST_PARAMS))}"
            )
        if request.query["list"] != "keys":
            raise InvalidRequest(f"list must be 'keys', got {request.query['list'][:64]!r}")
        bucket = _bucket_name(request, "/v1/kv/")
        limit = listing.parse_limit(request.query.get("limit"))
        cursor = request.query.get("cursor")
        after = listing.decode_cursor(cursor) if cursor is not None else b""
        page = listing.KeyPage(
            bucket, limit, self.server.config.ring_size, self.server.partition_replicas, after,
            now=time.time(),
        )  # fmt: skip
        page.advance()
        while not page.done:
            wanted = page.wanted()
            # Every replica of the partition at once: the page waits for the slowest anyway.
            answers = await asyncio.gather(
                *(self.server.partition_batch(*w, listing.BATCH) for w in wanted),
                return_exceptions=True,
            )
            for (address, _, _), answer in zip(wanted, answers, strict=True):
                if isinstance(answer, TransferBatch):
                    page.add(address, answer)
                elif isinstance(answer, DynakvError):
                    page.failed(address)
                else:
                    raise answer
            page.advance()
        body: dict[str, Any] = {"keys": page.keys, "cursor": page.cursor}
        if page.unreachable:
            # Keys only those nodes hold are missing from this page.
            body["unreachable"] = sorted(page.unreachable)
        return web.json_response(body)

    async def replica(self, request: web.Request) -> web.StreamResponse:
        bucket, key = _location(request, "/v1/replica/")
        _quorum_param(request)
        clock = self.server.replica(bucket, key)
        if clock is None:
            raise NotFound(f"this node holds no copy of {bucket}/{key}")
        siblings = versions.values(clock)
        body = {
            "siblings": [
                {
                    "value_b64": base64.b64encode(s.value).decode(),
                    "content_type": s.content_type,
                    "timestamp": s.timestamp,
                    "expires": s.expires,  # epoch ms, 0: never
                }
                for s in siblings
                if not s.deleted
            ],
            "tombstones": sum(1 for s in siblings if s.deleted),
            "context": versions.encode_context(versions.join(clock)),
            "version_vector": dict(versions.join(clock)),
        }
        return web.json_response(body)

    async def buckets(self, request: web.Request) -> web.StreamResponse:
        """The cluster's bucket types as this node knows them."""
        return web.json_response({"default_type": DEFAULT, "types": self.server.bucket_types()})

    async def bucket(self, request: web.Request) -> web.StreamResponse:
        """GET: the props a bucket has now; PUT: create or update its bucket type."""
        bucket = _bucket_name(request)
        if request.method == "PUT":
            props = _bucket_props(await _read_body(request, 1 << 16))
            reply = await self.server.call(ClientBucketChange(0, bucket, props, "put"))
            _raise_reply_error(reply)
            assert isinstance(reply, ClusterInfo)
        elif request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT"])
        return web.json_response(self._bucket_body(bucket))

    def _bucket_body(self, bucket: str) -> dict[str, Any]:
        props = self.server.bucket(bucket)
        stored = next((t for t in self.server.bucket_types() if t["name"] == props.type), None)
        body: dict[str, Any] = {
            "bucket": bucket,
            "type": props.type,
            "own_type": props.type == bucket,
            "n": props.n,
            "r": props.r,
            "w": props.w,
            "policy": props.policy,
            "max_value_bytes": props.max_value_bytes,
            "datacenters": dict(props.datacenters),
            "stored": stored,  # the type as kept: r and w as given, its version
        }
        members = [m for m in self.server.cluster()["members"] if m["status"] != "removed"]
        if stored is not None and stored.get("seen") is not None:
            # The change is in force here but not yet known to hold everywhere.
            body["not_yet_held_by"] = sorted(
                {m["name"] for m in members} - set(stored["seen"])
            )
        if props.n > len(members):
            body["note"] = (
                f"n={props.n} is more than the {len(members)} members: each key has "
                f"{len(members)} replicas (R and W are capped at that) until more nodes join"
            )
        return body

    async def status(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.server.status())

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.server.cluster())

    async def repair(self, request: web.Request) -> web.StreamResponse:
        """`dynakv cluster repair`: an anti-entropy round now, with every other replica."""
        unknown = set(request.query) - {"partition"}
        if unknown:
            raise InvalidRequest(f"unknown query parameter(s) {', '.join(sorted(unknown))}")
        text = request.query.get("partition", "-1")
        try:
            partition = int(text)
        except ValueError as exc:
            raise InvalidRequest(f"partition must be an integer, got {text!r}") from exc
        size = self.server.config.ring_size
        if not -1 <= partition < size:
            raise InvalidRequest(f"partition must be 0 to {size - 1} (or -1: all), got {partition}")
        timeout = 8 * self.server.config.request_timeout
        reply = await self.server.call(ClientRepair(0, partition), timeout=timeout)
        _raise_reply_error(reply)
        assert isinstance(reply, RepairResult)
        body = {
            "exchanges": reply.exchanges,
            "keys_pushed": reply.keys_pushed,
            "keys_pulled": reply.keys_pulled,
        }
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.server.metrics.render(), content_type="text/plain")


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except DynakvError as exc:
        response = error_response(exc)
        if unread_body_too_large(request) or isinstance(exc, RequestTimeout):
            # Refused before its body was read: answer, then close, rather than let aiohttp
            # read and drop the rest of it first.
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        by_status = {404: NotFound, 405: MethodNotAllowed, 413: ValueTooLarge}
        code = by_status.get(exc.status, InvalidRequest).code
        body = json.dumps({"error": code, "message": exc.reason})
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
        return web.Response(
            text=body, status=exc.status, content_type="application/json", headers=headers
        )


async def _bad_kv_path(request: web.Request) -> web.StreamResponse:
    raise InvalidRequest(
        f"path must be /v1/kv/{{bucket}}/{{key}} with a non-empty bucket and key "
        f"(or GET /v1/kv/{{bucket}}?list=keys), got {request.path}"
    )


async def _openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi.document())


def build_app(server: ServerApi) -> web.Application:
    api = Api(server)
    app = web.Application(
        middlewares=[json_errors, authentication(server.gate)],
        client_max_size=server.config.max_value_bytes + (1 << 16),
    )
    app[SERVER_KEY] = server
    app.router.add_route("*", "/v1/kv/{bucket}/{key:.+}", api.kv)
    app.router.add_route("*", "/v1/kv/{bucket}", api.list_keys)
    # Anything else under /v1/kv (no key, an empty bucket or key) is a malformed request,
    # not a missing object: a 404 there reads as "the key does not exist".
    app.router.add_route("*", "/v1/kv{rest:.*}", _bad_kv_path)
    app.router.add_get("/v1/replica/{bucket}/{key:.+}", api.replica)
    app.router.add_get("/v1/buckets", api.buckets)
    app.router.add_route("*", "/v1/buckets/{bucket:.+}", api.bucket)
    app.router.add_get("/v1/status", api.status)
    app.router.add_get("/v1/cluster", api.cluster)
    app.router.add_post("/v1/repair", api.repair)
    app.router.add_get("/metrics", api.metrics)
    Console(server).add_routes(app)  # /, /console/{file}, /v1/console, /v1/console/node
    app.router.add_get("/openapi.json", _openapi)
    return app


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, except that a request it cannot parse (binary traffic, a
    client of another protocol on this port) is one short line: aiohttp logs those with a
    traceback quoting the whole payload, tens of KB per connection."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = args[0] if args else "?"
            first = (exc.message or type(exc).__name__).splitlines()[0][:80]
            self.logger.warning("http_bad_request peer=%s error=%r", peer, first)
            return
        self.logger.exception(msg, *args, **kwargs)


class HttpFrontend:
    """The HTTP API on `config.http_addr` (a Frontend): every node has it."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self._runner: web.AppRunner | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._guard: PortGuard | None = None

    async def start(self) -> None:
        server_log = _ServerLog(logging.getLogger("aiohttp.server"), {})
        config = self.server.config
        runner = web.AppRunner(
            build_app(self.server), access_log=None, logger=server_log, **runner_options(config)
        )
        await runner.setup()
        self._runner = runner
        context = tls.server_context(config.security)
        self._tcp, self._guard = await listen(runner, config, self.server.metrics, context)

    async def stop(self) -> None:
        """Close the listener; aiohttp lets the requests in flight finish first."""
        if self._tcp is not None:
            self._tcp.close()
            self._guard.stop()
        if self._runner is not None:
            await self._runner.cleanup()
