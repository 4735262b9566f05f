"""Users of a cluster with authentication on: a versioned record per user kept in the
cluster's gossiped metadata (core/membership.py), merged as bucket types are, with deletes
as tombstones. Pure values and functions (hashing is computation, not I/O): no clock, and
the salt of a new password comes from the caller.

A record never holds a password: only its scrypt hash with the salt and cost parameters it
was made with (so the parameters can change without breaking old records), and/or the
SHA-256 of a bearer token (a random 32-byte token needs no slow hash).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

import msgspec

from dynakv.errors import InvalidRequest
from dynakv.records import merge_by_name

__all__ = [
    "ALL_BUCKETS",
    "PERMISSIONS",
    "SCRYPT_N",
    "Scrypt",
    "UserRecord",
    "changed",
    "check_admin_left",
    "deleted",
    "find",
    "granted",
    "hash_password",
    "live",
    "merge_users",
    "redacted",
    "revoked",
    "token_digest",
    "verify",
    "with_user",
]

PERMISSIONS = ("read", "write", "admin")  # each includes the ones before it
ALL_BUCKETS = "*"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB and some tens of ms per hash (OWASP's
# minimum for scrypt); a record carries its own, so raising these later breaks nothing.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
_MAX_N, _MAX_R, _MAX_P = 1 << 17, 16, 4  # beyond: a gossiped record could stall a node
SALT_BYTES = 16
HASH_BYTES = 32

Grant = tuple[str, str]  # (bucket name or "*", permission)


class Scrypt(msgspec.Struct, frozen=True, array_like=True):
    """A password's scrypt hash and how it was made."""

    salt: bytes
    n: int
    r: int
    p: int
    digest: bytes

    def __post_init__(self) -> None:
        n, r, p = self.n, self.r, self.p
        if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
            raise ValueError(f"scrypt parameters out of range: n={n} r={r} p={p}")
        if len(self.salt) < 8 or len(self.digest) != HASH_BYTES:
            raise ValueError("a scrypt hash needs a salt of 8+ bytes and a 32-byte digest")


class UserRecord(msgspec.Struct, frozen=True, array_like=True):
    """One user as the cluster knows it; a newer version replaces an older one."""

    name: str
    version: int  # bumped by whoever changes the record
    password: Scrypt | None = None
    token_sha256: bytes = b""  # of the bearer token; b"" for none
    grants: tuple[Grant, ...] = ()  # sorted, without repeats
    deleted: bool = False  # a tombstone: gossip that is late cannot bring the user back

    def __post_init__(self) -> None:
        if USER_NAME.fullmatch(self.name) is None:
            raise ValueError(f"invalid user name {self.name!r}")
        if self.version < 1:
            raise ValueError(f"a user version must be >= 1, got {self.version}")
        if self.token_sha256 and len(self.token_sha256) != 32:
            raise ValueError("a token digest is 32 bytes")
        for bucket, permission in self.grants:
            if permission not in PERMISSIONS or not bucket:
                raise ValueError(f"invalid grant {permission!r} on {bucket!r}")
        if list(self.grants) != sorted(set(self.grants)):
            raise ValueError("grants must be sorted without repeats")


# --- credentials -----------------------------------------------------------------------------


def hash_password(password: str, salt: bytes) -> Scrypt:
    """The scrypt hash of password with `salt` (the caller's fresh random bytes)."""
    if not password:
        raise InvalidRequest("a password must not be empty")
    if len(salt) < 8:
        raise InvalidRequest("a password salt needs 8 bytes or more")
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return Scrypt(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, digest)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def verify(user: UserRecord, secret: str) -> bool:
    """Whether secret is user's password, or its bearer token. Constant-time compares."""
    if user.deleted or not secret:
        return False
    if user.token_sha256 and hmac.compare_digest(token_digest(secret), user.token_sha256):
        return True
    h = user.password
    if h is None:
        return False
    return hmac.compare_digest(_scrypt(secret, h.salt, h.n, h.r, h.p), h.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    memory = 128 * n * r * (p + 1) + (1 << 20)
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=memory, dklen=HASH_BYTES
    )


# --- merge -----------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def _greater(a: UserRecord, b: UserRecord) -> UserRecord:
    """The record that wins for one name: higher version, ties by encoding (a total order,
    so every node picks the same one)."""
    if a is b or a == b:
        return a
    if a.version != b.version:
        return a if a.version > b.version else b
    return a if _encoder.encode(a) > _encoder.encode(b) else b


def merge_users(a: tuple[UserRecord, ...], b: tuple[UserRecord, ...]) -> tuple[UserRecord, ...]:
    """Per-name winners of two name-sorted tuples; a or b itself when it covers the other."""
    return merge_by_name(a, b, _greater)


def with_user(users: tuple[UserRecord, ...], user: UserRecord) -> tuple[UserRecord, ...]:
    rest = [u for u in users if u.name != user.name]
    return tuple(sorted([*rest, user], key=lambda u: u.name))


def redacted(user: UserRecord) -> UserRecord:
    """user as clients see it: which credentials it has, never their hashes."""
    password = user.password
    if password is not None:
        password = Scrypt(bytes(8), password.n, password.r, password.p, bytes(HASH_BYTES))
    return msgspec.structs.replace(
        user, password=password, token_sha256=bytes(32) if user.token_sha256 else b""
    )


def live(users: Iterable[UserRecord]) -> list[UserRecord]:
    """The users that are not deleted."""
    return [u for u in users if not u.deleted]


def find(users: Iterable[UserRecord], name: str) -> UserRecord | None:
    """The live user called name, or None."""
    return next((u for u in users if u.name == name and not u.deleted), None)


# --- changes ---------------------------------------------------------------------------------


def changed(
    users: tuple[UserRecord, ...],
    name: str,
    password: Scrypt | None,
    token_sha256: bytes,
    grants: Iterable[Grant],
) -> UserRecord:
    """A new user (or new credentials for an existing one, grants added), one version above
    any record of the name; InvalidRequest for a bad name, grant or no credential."""
    if USER_NAME.fullmatch(name) is None:
        raise InvalidRequest(
            f"invalid user name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'"
        )
    if password is None and not token_sha256:
        raise InvalidRequest(f"user {name!r} needs a password or a token")
    old = next((u for u in users if u.name == name), None)
    kept = () if old is None or old.deleted else old.grants
    version = 1 if old is None else old.version + 1
    return _record(name, version, password, token_sha256, [*kept, *_checked(grants)])


def granted(users: tuple[UserRecord, ...], name: str, grants: Iterable[Grant]) -> UserRecord:
    old = _existing(users, name)
    return _record(
        name, old.version + 1, old.password, old.token_sha256, [*old.grants, *_checked(grants)]
    )


def revoked(users: tuple[UserRecord, ...], name: str, grants: Iterable[Grant]) -> UserRecord:
    old = _existing(users, name)
    gone = set(_checked(grants))
    rest = [g for g in old.grants if g not in gone]
    return _record(name, old.version + 1, old.password, old.token_sha256, rest)


def deleted(users: tuple[UserRecord, ...], name: str) -> UserRecord:
    """The tombstone of user name: no credentials, no grants."""
    old = _existing(users, name)
    return UserRecord(name, old.version + 1, deleted=True)


def check_admin_left(users: tuple[UserRecord, ...], record: UserRecord) -> None:
    """InvalidRequest when users with record in place would have live users but no admin
    of the whole cluster left: nobody could change users again."""
    after = live(with_user(users, record))
    if after and not any((ALL_BUCKETS, "admin") in u.grants for u in after):
        raise InvalidRequest(
            f"this change to {record.name!r} would leave no admin of the cluster (admin on "
            f"'*'); grant another user admin first"
        )


def _existing(users: tuple[UserRecord, ...], name: str) -> UserRecord:
    old = find(users, name)
    if old is None:
        raise InvalidRequest(f"no user {name!r}")
    return old


def _record(
    name: str, version: int, password: Scrypt | None, token: bytes, grants: Iterable[Grant]
) -> UserRecord:
    return UserRecord(name, version, password, token, tuple(sorted(set(grants))))


def _checked(grants: Iterable[Grant]) -> list[Grant]:
    out: list[Grant] = []
    for grant in grants:
        if not (isinstance(grant, list | tuple) and len(grant) == 2):
            raise InvalidRequest(f"a grant is (bucket, permission), got {grant!r}")
        bucket, permission = grant
        if permission not in PERMISSIONS:
            raise InvalidRequest(
                f"unknown permission {permission!r}; use one of {', '.join(PERMISSIONS)}"
            )
        if not isinstance(bucket, str) or not 1 <= len(bucket.encode()) <= 255:
            raise InvalidRequest(f"a grant names a bucket (1-255 bytes) or '*', got {bucket!r}")
        out.append((bucket, permission))
    return out
