"""The HTTP front ends as `dynakv bench` clients (`--api dynamodb`, `--api http`): aiohttp
clients with the callback interface of `AsyncClient.start_get`/`start_put`, so the same
load_generator slots drive them and the same report comes out.

DynamoDB: a table with a string hash key `k` and the value in a binary attribute `v`; a read
is GetItem (ConsistentRead off unless asked), an update PutItem, a read-modify-write one
UpdateItem (SET the value, ADD 1 to a counter: the node reads and writes at the key's
primary). Requests carry no SigV4 signature: the endpoint checks none while security is off.
Workload E (bench_query.py) uses a table with a range key `s` as well: records are placed
`per_key` to a partition key, and a scan is a Query of a sort-key range.

KV HTTP (`/v1/kv/{bucket}/{key}`): GET, and PUT with the context last seen
(`X-Dynakv-Context`), with HTTP Basic credentials when a user is given.

HTTP/1.1 has one request at a time per connection, so each client keeps a pool of
keep-alive connections to one node, as many as the slots using it have in flight.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp

from dynakv.bench_query import (
    HASH_KEY,
    Scan,
    ScanResult,
    key_attributes,
    key_schema,
    next_limit,
    query_body,
    record_of,
)
from dynakv.errors import DynakvError
from dynakv.messages import GetResult, Message, PutResult

if TYPE_CHECKING:
    from dynakv.load_generator import BenchSpec

APIS = ("binary", "dynamodb", "http")
TARGET = "DynamoDB_20120810."
JSON_10 = "application/x-amz-json-1.0"
VALUE, COUNTER = "v", "n"
CONTEXT_HEADER = "X-Dynakv-Context"
Callback = Callable[[Message | BaseException], None]
ScanCallback = Callable[[ScanResult | BaseException], None]


class ApiError(DynakvError):
    """A front end's error reply, counted by its name (e.g. ResourceNotFoundException, or
    the KV API's `error` code) as the binary protocol's errors are by their code."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.code = kind


def _ssl(cacert: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=cacert) if cacert else False


class _HttpClient:
    """One node's endpoint; requests run as tasks whose end calls the slot's callback."""

    def __init__(self, address: str, timeout: float, cacert: str | None) -> None:
        scheme = "https" if cacert else "http"
        self.base = f"{scheme}://{address}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = _ssl(cacert)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made inside the running loop, on first use
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _spawn(self, request: Coroutine[Any, Any, Any], callback: Callable[[Any], None]) -> None:
        async def run() -> None:
            try:
                reply: object = await request
            except (aiohttp.ClientError, ValueError) as exc:
                reply = ApiError(type(exc).__name__, str(exc))
            except (DynakvError, OSError, TimeoutError) as exc:
                reply = exc
            callback(reply)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_get(self, bucket: str, key: str, callback: Callback, *, r: object = None) -> None:
        self._spawn(self._get(bucket, key, r), callback)

    def start_put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        callback: Callback,
        *,
        context: str | None = None,
        w: object = None,
    ) -> None:
        self._spawn(self._put(bucket, key, value, context, w), callback)

    async def _get(self, bucket: str, key: str, r: object) -> Message:
        raise NotImplementedError

    async def _put(
        self, bucket: str, key: str, value: bytes, context: str | None, w: object
    ) -> Message:
        raise NotImplementedError

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


class DynamoClient(_HttpClient):
    """GetItem / PutItem / UpdateItem against one node's DynamoDB endpoint."""

    def __init__(
        self,
        address: str,
        timeout: float,
        cacert: str | None,
        consistent_read: bool = False,
        per_key: int | None = None,
    ) -> None:
        super().__init__(address, timeout, cacert)
        self.consistent_read = consistent_read
        self.per_key = per_key  # set: the table has a range key (workload E's layout)

    def _key(self, key: str) -> dict[str, Any]:
        if self.per_key is None:
            return {HASH_KEY: {"S": key}}
        return key_attributes(record_of(key), self.per_key)

    async def call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-Amz-Target": TARGET + op, "Content-Type": JSON_10}
        async with self.session.post(
            self.base + "/", data=json.dumps(body), headers=headers
        ) as response:
            text = await response.read()
        reply = json.loads(text) if text else {}
        if response.status != 200:
            kind = str(reply.get("__type", f"http_{response.status}")).rpartition("#")[2]
            raise ApiError(kind, str(reply.get("message", "")))
        return reply

    async def _get(self, table: str, key: str, r: object) -> Message:
        body = {"TableName": table, "Key": self._key(key)}
        if self.consistent_read:
            body["ConsistentRead"] = True
        item = (await self.call("GetItem", body)).get("Item")
        values = [base64.b64decode(item[VALUE]["B"])] if item else []
        return GetResult(0, values, [""] * len(values), "")

    async def _put(
        self, table: str, key: str, value: bytes, context: str | None, w: object
    ) -> Message:
        item = self._key(key)
        item[VALUE] = {"B": base64.b64encode(value).decode()}
        return await self._write("PutItem", {"TableName": table, "Item": item})

    def start_query(self, table: str, scan: Scan, page: int | None, callback: ScanCallback) -> None:
        """One scan of workload E: Query pages until it has `scan.length` items or the node
        says there are no more (no LastEvaluatedKey)."""
        self._spawn(self._scan(table, scan, page), callback)

    async def _scan(self, table: str, scan: Scan, page: int | None) -> ScanResult:
        got = pages = 0
        start: dict[str, Any] | None = None
        while True:
            body = query_body(table, scan, next_limit(scan, got, page), start, self.consistent_read)
            reply = await self.call("Query", body)
            pages += 1
            # Counted, not decoded: the items' JSON is parsed (as any client would), their
            # base64 values are not needed for the report.
            got += len(reply.get("Items", ()))
            start = reply.get("LastEvaluatedKey")
            if start is None or got >= scan.length:
                return ScanResult(got, pages, scan.expected)

    def start_update(
        self, table: str, key: str, value: bytes, callback: Callback, *, w: object = None
    ) -> None:
        """Read-modify-write in one request: set the value and count the update."""
        body = {
            "TableName": table,
            "Key": self._key(key),
            "UpdateExpression": "SET #v = :v ADD #n :one",
            "ExpressionAttributeNames": {"#v": VALUE, "#n": COUNTER},
            "ExpressionAttributeValues": {
                ":v": {"B": base64.b64encode(value).decode()},
                ":one": {"N": "1"},
            },
        }
        self._spawn(self._write("UpdateItem", body), callback)

    async def _write(self, op: str, body: dict[str, Any]) -> Message:
        await self.call(op, body)
        return PutResult(0, "")


class KvHttpClient(_HttpClient):
    """GET and PUT on one node's KV HTTP API (`/v1/kv/...`)."""

    def __init__(
        self, address: str, timeout: float, cacert: str | None, auth: str | None = None
    ) -> None:
        super().__init__(address, timeout, cacert)
        self._auth = {"Authorization": auth} if auth else {}

    def _url(self, bucket: str, key: str, param: str, level: object) -> str:
        url = f"{self.base}/v1/kv/{bucket}/{key}"
        return url if level is None else f"{url}?{param}={level}"

    async def _get(self, bucket: str, key: str, r: object) -> Message:
        url = self._url(bucket, key, "r", r)
        async with self.session.get(url, headers=self._auth) as response:
            body = await response.read()
            context = response.headers.get(CONTEXT_HEADER, "")
            if response.status == 200:
                return GetResult(0, [body], [response.content_type], context)
            if response.status == 300:  # siblings: the count is what the report needs
                siblings = json.loads(body)["siblings"]
                return GetResult(0, [b""] * len(siblings), [""] * len(siblings), context)
            if response.status == 404 and _error_code(body) == "not_found":
                return GetResult(0, [], [], context)
            raise _kv_error(response.status, body)

    async def _put(
        self, bucket: str, key: str, value: bytes, context: str | None, w: object
    ) -> Message:
        headers = dict(self._auth)
        if context:
            headers[CONTEXT_HEADER] = context
        url = self._url(bucket, key, "w", w)
        async with self.session.put(url, data=value, headers=headers) as response:
            body = await response.read()
            if response.status in (200, 204):
                return PutResult(0, response.headers.get(CONTEXT_HEADER, ""))
            raise _kv_error(response.status, body)


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return ""


def _kv_error(status: int, body: bytes) -> ApiError:
    return ApiError(_error_code(body) or f"http_{status}", body[:200].decode(errors="replace"))


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def api_clients(spec: BenchSpec, index: int) -> list[_HttpClient]:
    """One client per node of `spec.nodes` (the front end's addresses), each generator
    process starting at a different node."""
    nodes = list(spec.nodes)
    first = index % len(nodes)
    order = nodes[first:] + nodes[:first]
    if spec.api == "dynamodb":
        per_key = spec.items_per_key if spec.workload == "e" else None
        return [
            DynamoClient(a, spec.timeout, spec.cacert, spec.consistent_read, per_key) for a in order
        ]
    auth = basic_auth(spec.user, spec.password or "") if spec.user else None
    return [KvHttpClient(a, spec.timeout, spec.cacert, auth) for a in order]


# --- the table ----------------------------------------------------------------------------


class WrongKeySchema(DynakvError):
    """The table exists with other keys than the workload needs."""


async def _ensure_table(endpoints: list[str], table: str, cacert: str | None, ranged: bool) -> None:
    """Create the table unless it exists, then wait until every endpoint knows it (a table
    is a bucket type, gossiped to the other nodes). `ranged`: with workload E's range key."""
    clients = [DynamoClient(address, 10.0, cacert) for address in endpoints]
    schema, attributes = key_schema(ranged)
    try:
        create = {
            "TableName": table,
            "KeySchema": schema,
            "AttributeDefinitions": attributes,
            "BillingMode": "PAY_PER_REQUEST",
        }
        try:
            await clients[0].call("CreateTable", create)
        except ApiError as exc:
            if exc.code != "ResourceInUseException":
                raise
        described: dict[str, Any] = {}
        for client in clients:
            await _until(lambda c=client: _describe(c, table, described))
        # An existing table made by another workload: its items would not be the ones read.
        if described.get("KeySchema") != schema:
            raise WrongKeySchema(
                f"it exists with the key schema {described.get('KeySchema')}, the workload "
                f"needs {schema}: give another --bucket"
            )
    finally:
        for client in clients:
            await client.close()


async def _describe(client: DynamoClient, table: str, into: dict[str, Any]) -> None:
    into.update((await client.call("DescribeTable", {"TableName": table}))["Table"])


async def _until(attempt: Callable[[], Awaitable[object]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await attempt()
            return
        except ApiError as exc:
            if exc.code != "ResourceNotFoundException" or loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)


def ensure_table(
    endpoints: list[str], table: str, cacert: str | None = None, ranged: bool = False
) -> None:
    """`--api dynamodb`: the bench's table on every endpoint before the load starts (with a
    range key for workload E when `ranged`); RuntimeError saying why when the endpoints
    cannot give it."""
    try:
        asyncio.run(_ensure_table(endpoints, table, cacert, ranged))
    except (
        ApiError, WrongKeySchema, aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError
    ) as exc:  # fmt: skip
        raise RuntimeError(
            f"could not create or find table {table!r} at the DynamoDB endpoint(s) "
            f"{', '.join(endpoints)}: {type(exc).__name__}: {exc}"
        ) from exc
