"""The HTTP front ends as `dynakv bench` clients (`--api dynamodb`, `--api http`): aiohttp
clients with the callback interface of `AsyncClient.start_get`/`start_put`, so the same
load_generator slots drive them and the same report comes out.

DynamoDB: a table with a string hash key `k` and the value in a binary attribute `v`; a read
is GetItem (ConsistentRead off unless asked), an update PutItem, a read-modify-write one
UpdateItem (SET the value, ADD 1 to a counter: the node reads and writes at the key's
primary). Requests carry no SigV4 signature: the endpoint checks none while security is off.

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

from dynakv.errors import DynakvError
from dynakv.messages import GetResult, Message, PutResult

if TYPE_CHECKING:
    from dynakv.load_generator import BenchSpec

APIS = ("binary", "dynamodb", "http")
TARGET = "DynamoDB_20120810."
JSON_10 = "application/x-amz-json-1.0"
HASH_KEY, VALUE, COUNTER = "k", "v", "n"
CONTEXT_HEADER = "X-Dynakv-Context"
Callback = Callable[[Message | BaseException], None]


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

    def _spawn(self, request: Coroutine[Any, Any, Message], callback: Callback) -> None:
        async def run() -> None:
            try:
                reply: Message | BaseException = await request
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
        self, address: str, timeout: float, cacert: str | None, consistent_read: bool = False
    ) -> None:
        super().__init__(address, timeout, cacert)
        self.consistent_read = consistent_read

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
        body = {"TableName": table, "Key": {HASH_KEY: {"S": key}}}
        if self.consistent_read:
            body["ConsistentRead"] = True
        item = (await self.call("GetItem", body)).get("Item")
        values = [base64.b64decode(item[VALUE]["B"])] if item else []
        return GetResult(0, values, [""] * len(values), "")

    async def _put(
        self, table: str, key: str, value: bytes, context: str | None, w: object
    ) -> Message:
        item = {HASH_KEY: {"S": key}, VALUE: {"B": base64.b64encode(value).decode()}}
        return await self._write("PutItem", {"TableName": table, "Item": item})

    def start_update(
        self, table: str, key: str, value: bytes, callback: Callback, *, w: object = None
    ) -> None:
        """Read-modify-write in one request: set the value and count the update."""
        body = {
            "TableName": table,
            "Key": {HASH_KEY: {"S": key}},
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
        return [DynamoClient(a, spec.timeout, spec.cacert, spec.consistent_read) for a in order]
    auth = basic_auth(spec.user, spec.password or "") if spec.user else None
    return [KvHttpClient(a, spec.timeout, spec.cacert, auth) for a in order]


# --- the table ----------------------------------------------------------------------------


async def _ensure_table(endpoints: list[str], table: str, cacert: str | None) -> None:
    """Create the table unless it exists, then wait until every endpoint knows it (a table
    is a bucket type, gossiped to the other nodes)."""
    clients = [DynamoClient(address, 10.0, cacert) for address in endpoints]
    try:
        create = {
            "TableName": table,
            "KeySchema": [{"AttributeName": HASH_KEY, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": HASH_KEY, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }
        try:
            await clients[0].call("CreateTable", create)
        except ApiError as exc:
            if exc.code != "ResourceInUseException":
                raise
        for client in clients:
            await _until(lambda c=client: c.call("DescribeTable", {"TableName": table}))
    finally:
        for client in clients:
            await client.close()


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


def ensure_table(endpoints: list[str], table: str, cacert: str | None = None) -> None:
    """`--api dynamodb`: the bench's table on every endpoint before the load starts;
    RuntimeError saying why when the endpoints cannot give it."""
    try:
        asyncio.run(_ensure_table(endpoints, table, cacert))
    except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise RuntimeError(
            f"could not create or find table {table!r} at the DynamoDB endpoint(s) "
            f"{', '.join(endpoints)}: {type(exc).__name__}: {exc}"
        ) from exc
