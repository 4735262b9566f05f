"""Authentication at a node's doors: who a client is (a password or bearer token checked
against the users the node knows) and whether access.py lets it make a request. Every
front end (binary, HTTP, RESP) asks this one object; with `security.authentication` off
it lets everything through, as before.

scrypt is slow on purpose, so a checked secret is remembered (keyed by an HMAC under a key
that lives only in this process, never the secret itself) for as long as the user's record
keeps the same credentials, and the hashing runs on a thread, not in the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Callable

import msgspec

from dynakv import access
from dynakv.access import Need
from dynakv.core.membership import Membership
from dynakv.errors import Forbidden, Unauthenticated
from dynakv.messages import ClientLogin, ErrorReply, LoginResult, Message, error_reply
from dynakv.runtime.logs import NodeLog
from dynakv.users import UserRecord, find, hash_password, redacted, token_digest, verify

WRONGPASS = "invalid username-password pair or user is disabled."
_DECOY = UserRecord("decoy", 1, hash_password("decoy", bytes(16)))
_REMEMBERED = 4096  # checked secrets kept; beyond, the oldest are forgotten


class Gatekeeper:
    """Logins and permission checks for every client port of one node."""

    def __init__(self, enabled: bool, state: Callable[[], Membership], log: NodeLog) -> None:
        self.enabled = enabled
        self._state = state
        self._log = log
        self._key = os.urandom(32)
        self._checked: dict[bytes, object] = {}  # hmac(user, secret) -> credentials seen
        self.sessions: dict[str, str] = {}  # binary connection token -> user name

    def users(self) -> tuple[UserRecord, ...]:
        return self._state().users

    def user(self, name: str | None) -> UserRecord | None:
        """The live record of user `name` now (None once deleted): grants are read at each
        request, so a revoke or delete gossiped here takes effect at once."""
        return None if name is None else find(self.users(), name)

    async def login(self, name: str, secret: str, door: str) -> UserRecord:
        """The user whose password or token `secret` is; Unauthenticated otherwise."""
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
        self._log.event(logging.WARNING, "login_refused", user=name[:64], door=door)
        raise Unauthenticated(WRONGPASS)

    def bearer(self, token: str) -> UserRecord:
        """The user whose bearer token this is; Unauthenticated otherwise."""
        digest = token_digest(token)
        for user in self.users():
            token_of = user.token_sha256
            if token_of and not user.deleted and hmac.compare_digest(token_of, digest):
                return user
        self._log.event(logging.WARNING, "login_refused", user="(bearer token)", door="http")
        raise Unauthenticated("invalid bearer token")

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

    async def login_frame(self, token: str, message: ClientLogin) -> Message:
        try:
            user = await self.login(message.user, message.secret, "binary")
        except Unauthenticated as exc:
            self.sessions.pop(token, None)
            return error_reply(message.rid, exc)
        self.sessions[token] = user.name
        return LoginResult(message.rid, user.name, [tuple(g) for g in user.grants])  # type: ignore[misc]


def without_secrets(state: Membership) -> Membership:
    """state as a client may see it: its users' grants, not their hashes."""
    users = tuple(redacted(u) for u in state.users)
    return msgspec.structs.replace(state, users=users)
