"""Authentication at a node's doors: who a client is (a password or bearer token checked
against the users the node knows) and whether access.py lets it make a request. Every
front end (binary, HTTP, RESP) asks this one object; with `security.authentication` off
it lets everything through, as before.

scrypt is slow on purpose, so a checked secret is remembered (keyed by an HMAC under a key
that lives only in this process, never the secret itself) for as long as the user's record
keeps the same credentials, and the hashing runs on a thread, not in the event loop. Failed
logins are counted and limited per source address (login_limits.py); access keys' secrets
are sealed here before a key_create reaches the core, and opened to check SigV4 signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable

import msgspec

from dynakv import access, peer_credential, sigv4
from dynakv.access import Need
from dynakv.core.membership import Membership
from dynakv.errors import Forbidden, InvalidRequest, TooManyLogins, Unauthenticated
from dynakv.key_sealing import NONCE_BYTES, Sealer
from dynakv.messages import (
    ClientLogin,
    ClientUserChange,
    ErrorReply,
    LoginResult,
    Message,
    error_reply,
)
from dynakv.runtime.login_limits import LoginLimiter
from dynakv.runtime.logs import NodeLog
from dynakv.users import (
    UserRecord,
    find,
    hash_password,
    key_owner,
    redacted,
    token_digest,
    verify,
)

WRONGPASS = "invalid username-password pair or user is disabled."
_DECOY = UserRecord("decoy", 1, hash_password("decoy", bytes(16)))
_REMEMBERED = 4096  # checked secrets kept; beyond, the oldest are forgotten


class Gatekeeper:
    """Logins and permission checks for every client port of one node."""

    def __init__(
        self,
        enabled: bool,
        state: Callable[[], Membership],
        log: NodeLog,
        limiter: LoginLimiter | None = None,
        cluster_secrets: tuple[bytes, ...] = (),
    ) -> None:
        self.enabled = enabled
        self._state = state
        self._log = log
        self.limiter = limiter or LoginLimiter(10, 6.0, log)
        self.sealer = Sealer(cluster_secrets)
        self._cluster_secrets = cluster_secrets
        self._key = os.urandom(32)
        self._checked: dict[bytes, object] = {}  # hmac(user, secret) -> credentials seen
        self.sessions: dict[str, str] = {}  # binary connection token -> user name

    def users(self) -> tuple[UserRecord, ...]:
        return self._state().users

    def user(self, name: str | None) -> UserRecord | None:
        """The live record of user `name` now (None once deleted): grants are read at each
        request, so a revoke or delete gossiped here takes effect at once."""
        return None if name is None else find(self.users(), name)

    def admit_attempt(self, door: str, source: str) -> None:
        """TooManyLogins if source failed too often lately; its credentials are then not
        even checked (a right guess must not show through)."""
        wait = self.limiter.retry_after(source)
        if wait is not None:
            self.limiter.refused(door, source, wait)
            raise TooManyLogins(
                f"too many failed logins from {source}: try again in {math.ceil(wait)} s"
            )

    def failed(self, door: str, reason: str, source: str) -> None:
        self.limiter.failed(door, reason, source)

    async def login(self, name: str, secret: str, door: str, source: str = "") -> UserRecord:
        """The user whose password or token `secret` is; Unauthenticated otherwise
        (TooManyLogins while source is limited)."""
        self.admit_attempt(door, source)
        user = find(self.users(), name)
        if user is None:
            # As long as a wrong password for a real user: the time taken does not tell
            # which names exist.
            await asyncio.to_thread(verify, _DECOY, secret)
        else:
            credentials = (user.password, user.token_sha256)
            mark = hmac.digest(self._key, f"{name}\0{secret}".encode(), hashlib.sha256)
            if self._checked.get(mark) == credentials:
                return user
            if await asyncio.to_thread(verify, user, secret):
                if len(self._checked) >= _REMEMBERED:
                    self._checked.pop(next(iter(self._checked)))
                self._checked[mark] = credentials
                return user
        self.failed(door, "unknown_user" if user is None else "bad_password", source)
        self._log.event(logging.WARNING, "login_refused", user=name[:64], door=door)
        raise Unauthenticated(WRONGPASS)

    def bearer(self, token: str, source: str = "") -> UserRecord:
        """The user whose bearer token this is; Unauthenticated otherwise."""
        self.admit_attempt("http", source)
        digest = token_digest(token)
        for user in self.users():
            token_of = user.token_sha256
            if token_of and not user.deleted and hmac.compare_digest(token_of, digest):
                return user
        self.failed("http", "bad_token", source)
        self._log.event(logging.WARNING, "login_refused", user="(bearer token)", door="http")
        raise Unauthenticated("invalid bearer token")

    def peer_headers(self, name: str) -> dict[str, str]:
        """What member `name` sends to read a peer's /v1/status ({} with users off)."""
        if not self.enabled or not self._cluster_secrets:
            return {}
        return {"Authorization": peer_credential.make(self._cluster_secrets[0], name, time.time())}

    def peer(self, credential: str, source: str) -> str:
        """The member a peer_credential proves (only /v1/status takes one); Unauthenticated
        otherwise."""
        self.admit_attempt("http", source)
        name = peer_credential.check(credential, self._cluster_secrets, time.time())
        if name is None:
            self.failed("http", "bad_peer_credential", source)
            self._log.event(logging.WARNING, "login_refused", user="(peer)", door="http")
            raise Unauthenticated("invalid peer credential")
        return name

    # --- access keys (SigV4) ---------------------------------------------------------------
    def signer(self, request: sigv4.SignedRequest, service: str, source: str) -> UserRecord:
        """The user whose access key signed request; sigv4.SignatureError otherwise (and
        TooManyLogins while source is limited)."""
        self.admit_attempt("dynamodb", source)
        users = self.users()

        def secret_of(key_id: str) -> str | None:
            found = key_owner(users, key_id)
            # A key sealed under a cluster secret this node does not hold is unusable here.
            return None if found is None else self.sealer.open(key_id, found[1].sealed)

        try:
            auth = sigv4.verify(request, service, secret_of, time.time())
        except sigv4.SignatureError as exc:
            if exc.reason == "missing":  # no credentials at all: as HTTP's, not a failed login
                raise
            self.failed("dynamodb", exc.reason, source)
            self._log.event(
                logging.WARNING, "login_refused", user="(access key)", door="dynamodb",
                reason=exc.reason,
            )  # fmt: skip
            raise
        found = key_owner(users, auth.key_id)
        assert found is not None
        return found[0]

    def sealed(self, message: ClientUserChange) -> ClientUserChange:
        """A key_create with its secret sealed under the cluster secret (the core and the
        gossiped records never hold it plain); InvalidRequest without a cluster secret."""
        if message.op != "key_create":
            return message
        if not self.sealer.usable:
            raise InvalidRequest(
                "access keys need a cluster secret to seal them with: set [security] "
                "cluster_secret_file on every node"
            )
        try:
            secret = message.key_secret.decode()
        except UnicodeDecodeError:
            raise InvalidRequest("an access key secret must be UTF-8 text") from None
        if not 16 <= len(secret) <= 128:
            raise InvalidRequest("an access key secret is 16-128 characters")
        box = self.sealer.seal(message.key_id, secret, os.urandom(NONCE_BYTES))
        return msgspec.structs.replace(message, key_secret=box)

    def check(self, user: UserRecord | None, need: Need | None) -> None:
        access.check(user, need, self.users())

    # --- the binary protocol ---------------------------------------------------------------
    def refusal(self, token: str, message: Message) -> ErrorReply | None:
        """The error a binary client's request gets, or None to serve it."""
        try:
            if access.may_bootstrap(self.users(), message):
                self._log.event(logging.WARNING, "bootstrap_user", connection=token)
                return None
            self.check(self.user(self.sessions.get(token)), access.need_of(message))
        except (Unauthenticated, Forbidden) as exc:
            return error_reply(getattr(message, "rid", 0), exc)
        return None

    async def login_frame(self, token: str, message: ClientLogin, source: str = "") -> Message:
        try:
            user = await self.login(message.user, message.secret, "binary", source)
        except Unauthenticated as exc:
            self.sessions.pop(token, None)
            return error_reply(message.rid, exc)
        self.sessions[token] = user.name
        return LoginResult(message.rid, user.name, [tuple(g) for g in user.grants])  # type: ignore[misc]


def without_secrets(state: Membership) -> Membership:
    """state as a client may see it: its users' grants, not their hashes."""
    users = tuple(redacted(u) for u in state.users)
    return msgspec.structs.replace(state, users=users)
