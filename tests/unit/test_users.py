"""Users as gossiped records (users.py): hashing, changes, and the merge laws."""

from __future__ import annotations

import itertools

import pytest

from dynakv import users as us
from dynakv.core import membership as ms
from dynakv.errors import InvalidRequest
from dynakv.users import UserRecord

SALT = b"0123456789abcdef"


@pytest.fixture(scope="module")
def hashed() -> us.Scrypt:
    return us.hash_password("correct horse", SALT)


def test_a_password_is_kept_only_as_its_salted_scrypt_hash(hashed: us.Scrypt) -> None:
    user = us.changed((), "alice", hashed, b"", [("*", "read")])
    encoded = ms.encode(ms.set_user(_state(), user))
    assert b"correct horse" not in encoded
    assert (hashed.n, hashed.r, hashed.p) == (us.SCRYPT_N, us.SCRYPT_R, us.SCRYPT_P)
    assert us.verify(user, "correct horse")
    assert not us.verify(user, "correct horsf")
    assert not us.verify(user, "")


def test_the_same_password_with_another_salt_hashes_differently(hashed: us.Scrypt) -> None:
    other = us.hash_password("correct horse", b"fedcba9876543210")
    assert other.digest != hashed.digest


def test_a_token_is_kept_as_its_sha256_and_verifies() -> None:
    user = us.changed((), "robot", None, us.token_digest("t0ken"), [])
    assert user.token_sha256 != b"t0ken"
    assert us.verify(user, "t0ken")
    assert not us.verify(user, "t0kem")


def test_a_user_needs_a_credential_and_valid_grants() -> None:
    with pytest.raises(InvalidRequest, match="password or a token"):
        us.changed((), "alice", None, b"", [])
    with pytest.raises(InvalidRequest, match="unknown permission"):
        us.changed((), "alice", None, us.token_digest("t"), [("*", "sudo")])
    with pytest.raises(InvalidRequest, match="invalid user name"):
        us.changed((), "bad name", None, us.token_digest("t"), [])


def test_grant_revoke_and_delete_each_bump_the_version() -> None:
    users: tuple[UserRecord, ...] = ()
    add = us.changed(users, "bob", None, us.token_digest("t"), [("a", "write")])
    users = us.with_user(users, add)
    grant = us.granted(users, "bob", [("b", "read")])
    users = us.with_user(users, grant)
    revoke = us.revoked(users, "bob", [("a", "write")])
    users = us.with_user(users, revoke)
    gone = us.deleted(users, "bob")
    assert [add.version, grant.version, revoke.version, gone.version] == [1, 2, 3, 4]
    assert grant.grants == (("a", "write"), ("b", "read"))
    assert revoke.grants == (("b", "read"),)
    assert gone.deleted and gone.token_sha256 == b"" and gone.grants == ()
    with pytest.raises(InvalidRequest, match="no user"):
        us.granted(us.with_user(users, gone), "bob", [("a", "read")])


def test_a_delete_wins_over_the_older_record_gossiped_late() -> None:
    add = us.changed((), "bob", None, us.token_digest("t"), [("a", "read")])
    gone = us.deleted((add,), "bob")
    assert us.merge_users((add,), (gone,)) == (gone,)
    assert us.merge_users((gone,), (add,)) == (gone,)
    again = us.changed((gone,), "bob", None, us.token_digest("u"), [])
    assert again.version == gone.version + 1 and again.grants == ()


def test_merge_is_commutative_associative_and_idempotent() -> None:
    t = us.token_digest
    records = [
        (us.changed((), "a", None, t("1"), [("x", "read")]),),
        (us.changed((), "a", None, t("2"), [("y", "read")]),),  # same version, other content
        (us.changed((), "b", None, t("3"), []),),
        (UserRecord("a", 2, deleted=True),),
        (),
    ]
    for x, y in itertools.product(records, repeat=2):
        assert us.merge_users(x, y) == us.merge_users(y, x)
        assert us.merge_users(x, x) == x
    for x, y, z in itertools.product(records, repeat=3):
        left = us.merge_users(us.merge_users(x, y), z)
        assert left == us.merge_users(x, us.merge_users(y, z))


def test_membership_merge_carries_users() -> None:
    user = us.changed((), "alice", None, us.token_digest("t"), [("*", "admin")])
    base = _state()
    with_alice = ms.set_user(base, user)
    assert ms.merge(base, with_alice).users == (user,)
    assert ms.decode(ms.encode(with_alice)) == with_alice


def test_redacted_users_keep_grants_but_no_hash(hashed: us.Scrypt) -> None:
    user = us.changed((), "alice", hashed, us.token_digest("t"), [("a", "read")])
    shown = us.redacted(user)
    assert shown.grants == user.grants and shown.password is not None
    assert shown.password.digest == bytes(32) and shown.token_sha256 == bytes(32)
    assert not us.verify(shown, "correct horse")


def _state() -> ms.Membership:
    founder = ms.MemberRecord("n1", "127.0.0.1:1", "127.0.0.1:2", "i", "up", 1)
    return ms.new_cluster("c", founder, 8)


def test_no_change_may_leave_users_without_an_admin() -> None:
    admin = us.changed((), "admin", None, us.token_digest("a"), [("*", "admin")])
    reader = us.changed((admin,), "reader", None, us.token_digest("r"), [("a", "read")])
    users = us.with_user((admin,), reader)
    for change in (
        us.deleted(users, "admin"),
        us.revoked(users, "admin", [("*", "admin")]),
    ):
        with pytest.raises(InvalidRequest, match="no admin"):
            us.check_admin_left(users, change)
    us.check_admin_left(users, us.deleted(users, "reader"))
    us.check_admin_left((admin,), us.deleted((admin,), "admin"))  # no user left: bootstrap
