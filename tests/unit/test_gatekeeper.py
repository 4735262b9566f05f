"""Logins and the binary protocol's gate (runtime/gatekeeper.py), over an in-memory state."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from dynakv import users as us
from dynakv.core import membership as ms
from dynakv.errors import Unauthenticated
from dynakv.messages import ClientGet, ClientUserChange, ErrorReply
from dynakv.runtime.gatekeeper import WRONGPASS, Gatekeeper, without_secrets


class Lines:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def event(self, level: int, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def _state(*users: us.UserRecord) -> ms.Membership:
    founder = ms.MemberRecord("n1", "127.0.0.1:1", "127.0.0.1:2", "i", "up", 1)
    return msgspec.structs.replace(ms.new_cluster("c", founder, 8), users=users)


def _gate(holder: list[ms.Membership]) -> tuple[Gatekeeper, Lines]:
    lines = Lines()
    return Gatekeeper(True, lambda: holder[0], lines), lines  # type: ignore[arg-type]


def test_a_login_checks_the_password_and_a_changed_password_ends_the_old_one() -> None:
    alice = us.changed((), "alice", us.hash_password("one", b"s" * 16), b"", [("a", "read")])
    holder = [_state(alice)]
    gate, lines = _gate(holder)
    assert asyncio.run(gate.login("alice", "one", "test")) == alice
    assert asyncio.run(gate.login("alice", "one", "test")) == alice  # remembered
    with pytest.raises(Unauthenticated, match=WRONGPASS):
        asyncio.run(gate.login("alice", "two", "test"))
    with pytest.raises(Unauthenticated, match=WRONGPASS):
        asyncio.run(gate.login("nobody", "one", "test"))
    assert [e for e, _ in lines.events] == ["login_refused", "login_refused"]
    changed = us.changed((alice,), "alice", us.hash_password("two", b"t" * 16), b"", [])
    holder[0] = _state(changed)
    with pytest.raises(Unauthenticated):
        asyncio.run(gate.login("alice", "one", "test"))
    assert asyncio.run(gate.login("alice", "two", "test")).version == 2


def test_binary_requests_need_a_session_except_the_first_admin() -> None:
    holder = [_state()]
    gate, _ = _gate(holder)
    first = ClientUserChange(7, "add", "admin", token_sha256=bytes(32), grants=[("*", "admin")])
    assert gate.refusal("#c1", first) is None
    refused = gate.refusal("#c1", ClientGet(8, "a", "k"))
    assert isinstance(refused, ErrorReply) and refused.rid == 8
    assert refused.code == "unauthenticated" and "no users yet" in refused.message
    reader = us.changed((), "reader", None, us.token_digest("tok"), [("a", "read")])
    holder[0] = _state(reader)
    assert gate.refusal("#c1", first) is not None  # a user exists: no more bootstrap
    gate.sessions["#c1"] = "reader"
    assert gate.refusal("#c1", ClientGet(9, "a", "k")) is None
    forbidden = gate.refusal("#c1", ClientGet(10, "b", "k"))
    assert forbidden is not None and forbidden.code == "forbidden"
    holder[0] = _state(us.deleted((reader,), "reader"))
    gone = gate.refusal("#c1", ClientGet(11, "a", "k"))
    assert gone is not None and gone.code == "unauthenticated"


def test_clients_see_users_without_their_hashes() -> None:
    alice = us.changed((), "alice", us.hash_password("pw", b"s" * 16), us.token_digest("t"), [])
    shown = without_secrets(_state(alice)).users[0]
    assert shown.password is not None and shown.password.digest == bytes(32)
    assert shown.token_sha256 == bytes(32)
