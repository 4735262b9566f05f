"""Authentication on the HTTP API: `Authorization: Basic` (user and password or token) or
`Bearer` (a token), and the permission each route needs (access.py). Without credentials:
401 with WWW-Authenticate; without the permission: 403; both JSON errors like every other.
With `security.authentication` off the middleware lets every request through.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from dynakv import peer_credential
from dynakv.access import CLUSTER_ADMIN, Need
from dynakv.errors import Unauthenticated
from dynakv.runtime.gatekeeper import Gatekeeper
from dynakv.users import UserRecord

CHALLENGES = ('Basic realm="dynakv", charset="UTF-8"', 'Bearer realm="dynakv"')
_READS = ("GET", "HEAD")


def route_need(method: str, raw_path: str) -> Need | None:
    """What a request needs, from its method and raw path (None: any authenticated user).
    A bucket that is not valid UTF-8 needs cluster admin: the handler refuses it anyway."""
    path = raw_path.split("?", 1)[0]
    for prefix, per_method in (
        ("/v1/kv/", None),
        ("/v1/replica/", "read"),
        ("/v1/buckets/", "admin"),
    ):
        if path.startswith(prefix):
            raw_bucket = path[len(prefix) :].split("/", 1)[0]
            try:
                bucket = unquote_to_bytes(raw_bucket).decode("utf-8")
            except UnicodeDecodeError:
                return CLUSTER_ADMIN
            if per_method is None:
                return Need("read" if method in _READS else "write", bucket)
            if method in _READS and prefix == "/v1/buckets/":
                return None  # a bucket's properties: any user
            return Need(per_method, bucket)
    if path == "/v1/repair":
        return CLUSTER_ADMIN
    return None  # status, cluster, bucket types, metrics, the console


async def request_user(
    gate: Gatekeeper, header: str | None, source: str = "unknown"
) -> UserRecord | None:
    """The user an Authorization header names (None for no header); Unauthenticated for
    credentials that are wrong or malformed (TooManyLogins while source is limited)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return gate.bearer(value, source)
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        name, sep, secret = decoded.partition(":")
        if sep:
            return await gate.login(name, secret, "http", source)
        _malformed(gate, source)
        raise Unauthenticated("malformed Basic credentials: base64 of user:password")
    _malformed(gate, source)
    raise Unauthenticated("unsupported Authorization: use Basic or Bearer")


def _status(request: web.Request) -> bool:
    """A member's read of /v1/status (the DynamoDB forwarder's): the one route a peer
    credential opens."""
    return request.method == "GET" and request.path == "/v1/status"


def _malformed(gate: Gatekeeper, source: str) -> None:
    gate.admit_attempt("http", source)
    gate.failed("http", "malformed", source)


def authentication(gate: Gatekeeper) -> Any:
    """The aiohttp middleware (inside json_errors) that admits a request or refuses it."""

    @web.middleware
    async def admit(request: web.Request, handler: Any) -> web.StreamResponse:
        if gate.enabled:
            try:
                header = request.headers.get("Authorization") or ""
                source = request.remote or "unknown"
                if header.startswith(peer_credential.SCHEME + " ") and _status(request):
                    gate.peer(header[len(peer_credential.SCHEME) + 1 :], source)
                    return await handler(request)
                user = await request_user(gate, header, source)
                gate.check(user, route_need(request.method, request.raw_path))
            except Unauthenticated as exc:
                body = {"error": exc.code, "message": exc.message}
                response = web.json_response(body, status=exc.status)
                if exc.status == 401:
                    for challenge in CHALLENGES:
                        response.headers.add("WWW-Authenticate", challenge)
                return response
        return await handler(request)

    return admit
