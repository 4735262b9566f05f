"""The permission checks every front end calls (access.py)."""

from __future__ import annotations

import pytest

from dynakv import access
from dynakv.access import Need
from dynakv.errors import Forbidden, Unauthenticated
from dynakv.messages import (
    ClientBackup,
    ClientBucketChange,
    ClientClusterChange,
    ClientClusterInfo,
    ClientGet,
    ClientPut,
    ClientRepair,
    ClientUserChange,
    ReplicaPut,
    TransferRequest,
)
from dynakv.users import UserRecord


def _user(name: str, *grants: tuple[str, str]) -> UserRecord:
    return UserRecord(name, 1, token_sha256=bytes(32), grants=tuple(sorted(grants)))


READER = _user("reader", ("a", "read"))
WRITER = _user("writer", ("a", "write"))
BUCKET_ADMIN = _user("owner", ("a", "admin"))
ADMIN = _user("admin", ("*", "admin"))
EVERYONE = (READER, WRITER, BUCKET_ADMIN, ADMIN)


def test_a_reader_can_read_its_bucket_but_not_write_it() -> None:
    assert access.allows(READER, Need("read", "a"))
    assert not access.allows(READER, Need("write", "a"))
    assert not access.allows(READER, Need("read", "b"))


def test_write_includes_read_and_admin_includes_both() -> None:
    assert access.allows(WRITER, Need("read", "a"))
    assert access.allows(BUCKET_ADMIN, Need("write", "a"))
    assert not access.allows(WRITER, Need("write", "b"))


def test_cluster_wide_needs_are_met_only_by_grants_on_star() -> None:
    assert not access.allows(BUCKET_ADMIN, access.CLUSTER_ADMIN)
    assert access.allows(ADMIN, access.CLUSTER_ADMIN)
    assert access.allows(ADMIN, Need("write", "anything"))


def test_check_raises_unauthenticated_then_forbidden() -> None:
    with pytest.raises(Unauthenticated, match="no users yet"):
        access.check(None, Need("read", "a"), ())
    with pytest.raises(Unauthenticated, match="authentication required"):
        access.check(None, Need("read", "a"), EVERYONE)
    with pytest.raises(Forbidden, match=r"reader.*write on bucket 'a'"):
        access.check(READER, Need("write", "a"), EVERYONE)
    access.check(READER, access.ANY_USER, EVERYONE)
    gone = UserRecord("reader", 2, deleted=True)
    with pytest.raises(Unauthenticated):
        access.check(gone, access.ANY_USER, EVERYONE)


def test_each_binary_request_needs_its_permission() -> None:
    assert access.need_of(ClientGet(1, "a", "k")) == Need("read", "a")
    assert access.need_of(ClientPut(1, "a", "k", b"v")) == Need("write", "a")
    assert access.need_of(ClientBucketChange(1, "a", {})) == Need("admin", "a")
    assert access.need_of(TransferRequest(1, 0, b"", 10)) == Need("read")
    assert access.need_of(ClientClusterInfo(1)) is access.ANY_USER
    for admin_only in (
        ClientClusterChange(1, "remove", "n2"),
        ClientRepair(1),
        ClientBackup(1, "/tmp/x"),
        ClientUserChange(1, "delete", "bob"),
        ReplicaPut(1, "a", "k", b""),  # a peer's message from a client connection
    ):
        assert access.need_of(admin_only) == access.CLUSTER_ADMIN


def test_only_a_first_cluster_admin_may_be_added_without_credentials() -> None:
    first = ClientUserChange(1, "add", "admin", token_sha256=bytes(32), grants=[("*", "admin")])
    reader = ClientUserChange(1, "add", "r", token_sha256=bytes(32), grants=[("a", "read")])
    assert access.may_bootstrap((), first)
    assert not access.may_bootstrap((), reader)
    assert not access.may_bootstrap((ADMIN,), first)
    assert access.may_bootstrap((UserRecord("old", 3, deleted=True),), first)
    assert not access.may_bootstrap((), ClientGet(1, "a", "k"))
