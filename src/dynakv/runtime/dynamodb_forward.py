"""Read-modify-writes (conditional writes, UpdateItem) run at the item's first reachable
primary, so that concurrent ones through different nodes are serialised by one node's
per-key lock instead of racing.

A peer's DynamoDB endpoint is read from its /v1/status (`dynamodb_addr`) over its HTTP port,
which membership gossips, and kept. A request forwarded carries FORWARDED and is never
forwarded again; when the primary cannot be reached or serves no DynamoDB endpoint, the node
serves the request itself (docs/DESIGN.md says what that allows).
"""

from __future__ import annotations

import logging

import aiohttp

from dynakv import tls
from dynakv.item_keys import storage_key
from dynakv.ring import partition_of_digest
from dynakv.runtime.frontend import ServerApi

FORWARDED = "X-Dynakv-Forwarded"
_PASSED = {"content-type", "authorization", "host"}
_RETURNED = {"x-amz-crc32", "content-type", "x-amzn-requestid"}
log = logging.getLogger(__name__)


def _amz(header: str) -> bool:
    return header.lower().startswith("x-amz-")


class Forwarder:
    """Finds a key's first reachable primary and its DynamoDB endpoint; forwards to it."""

    def __init__(self, server: ServerApi) -> None:
        self.server = server
        self.endpoints: dict[str, str] = {}  # node name -> its DynamoDB HOST:PORT
        self._session: aiohttp.ClientSession | None = None
        self._scheme = "http"

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # With TLS every port of a peer speaks it, its certificate signed by the cluster CA.
            security = self.server.config.security
            context = tls.client_context(security.tls_ca) if tls.enabled(security) else None
            connector = aiohttp.TCPConnector(ssl=context) if context else None
            self._session = aiohttp.ClientSession(connector=connector)
            self._scheme = "https" if context else "http"
        return self._session

    def primary(self, bucket: str, key: str) -> dict | None:
        """The membership entry of the key's first replica that is up (None: none is)."""
        partition = partition_of_digest(storage_key(bucket, key), self.server.config.ring_size)
        members = {m["node_addr"]: m for m in self.server.cluster()["members"]}
        for address in self.server.partition_replicas(partition):
            member = members.get(address)
            if member is not None and member["status"] == "up":
                return member
        return None

    async def _endpoint(self, member: dict) -> str | None:
        name = member["name"]
        if name not in self.endpoints:
            timeout = aiohttp.ClientTimeout(total=self.server.config.request_timeout)
            session = self._client()
            url = f"{self._scheme}://{member['http_addr']}/v1/status"
            headers = self.server.gate.peer_headers(self.server.config.name)
            async with session.get(url, timeout=timeout, headers=headers) as response:
                if response.status != 200:
                    raise ValueError(f"its /v1/status answered {response.status}")
                found = (await response.json()).get("dynamodb_addr")
            if not found:
                return None
            self.endpoints[name] = found
        return self.endpoints[name]

    async def forward(
        self, bucket: str, key: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """The primary's answer to the request, or None to serve it here (this node is the
        primary, or the primary cannot be reached)."""
        member = self.primary(bucket, key)
        if member is None or member["name"] == self.server.config.name:
            return None
        # The primary checks the client's SigV4 signature again: every header it may cover
        # goes along as it came, Host included.
        sent = {k: v for k, v in headers.items() if k.lower() in _PASSED or _amz(k)}
        sent[FORWARDED] = self.server.config.name
        timeout = aiohttp.ClientTimeout(total=self.server.config.request_timeout * 3)
        try:
            address = await self._endpoint(member)
            if address is None:
                return None
            session = self._client()
            url = f"{self._scheme}://{address}/"
            async with session.post(url, data=body, headers=sent, timeout=timeout) as got:
                data = await got.read()
                kept = {k: v for k, v in got.headers.items() if k.lower() in _RETURNED}
                return got.status, kept, data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # After a timeout the primary may still apply the write: this node's own attempt
            # can then race it (docs/DESIGN.md, conditional writes).
            log.warning("forwarding to %s failed (%s): serving the request here", member, exc)
            self.endpoints.pop(member["name"], None)
            return None
