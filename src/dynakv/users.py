"""Users of a cluster with authentication on: a versioned record per user kept in the
cluster's gossiped metadata (core/membership.py), merged as bucket types are, with deletes
as tombstones. Pure values and functions (hashing is computation, not I/O): no clock, and
the salt of a new password comes from the caller.

A record never holds a password: only its scrypt hash with the salt and cost parameters it
was made with (so the parameters can change without breaking old records), and/or the
SHA-256 of a bearer token (a random 32-byte token needs no slow hash). Its access keys
(SigV4, the DynamoDB endpoint) hold their secret sealed under the cluster secret
(key_sealing.py): SigV4 needs the secret itself, so a hash would not do.
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
    "AccessKey",
    "Scrypt",
    "UserRecord",
    "changed",
    "check_admin_left",
    "deleted",
    "find",
    "granted",
    "hash_password",
    "key_added",
    "key_owner",
    "key_removed",
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
ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")  # as AWS's: upper-case letters and digits
MAX_ACCESS_KEYS = 8  # per user; AWS allows 2, rotation needs at least that


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


class AccessKey(msgspec.Struct, frozen=True, array_like=True):
    """An AWS-style access key of a user: its id, and its secret sealed under the cluster
    secret (key_sealing.py); b"" where clients see it (redacted)."""

    key_id: str
    sealed: bytes

    def __post_init__(self) -> None:
        if ACCESS_KEY_ID.fullmatch(self.key_id) is None:
            raise ValueError(f"invalid access key id {self.key_id!r}")


class UserRecord(msgspec.Struct, frozen=True, array_like=True):
    """One user as the cluster knows it; a newer version replaces an older one."""

    name: str
    version: int  # bumped by whoever changes the record
    password: Scrypt | None = None
    token_sha256: bytes = b""  # of the bearer token; b"" for none
    grants: tuple[Grant, ...] = ()  # sorted, without repeats
    deleted: bool = False  # a tombstone: gossip that is late cannot bring the user back
    access_keys: tuple[AccessKey, ...] = ()  # sorted by key id

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
        ids = [k.key_id for k in self.access_keys]
        if ids != sorted(set(ids)) or len(ids) > MAX_ACCESS_KEYS:
            raise ValueError(f"access keys must be sorted, unique, at most {MAX_ACCESS_KEYS}")


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
    keys = tuple(AccessKey(k.key_id, b"") for k in user.access_keys)
    return msgspec.structs.replace(
        user,
        password=password,
        token_sha256=bytes(32) if user.token_sha256 else b"",
        access_keys=keys,
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
    alive = old is not None and not old.deleted
    kept = old.grants if alive else ()
    keys = old.access_keys if alive else ()
    version = 1 if old is None else old.version + 1
    return _record(name, version, password, token_sha256, [*kept, *_checked(grants)], keys)


def granted(users: tuple[UserRecord, ...], name: str, grants: Iterable[Grant]) -> UserRecord:
    old = _existing(users, name)
    grants = [*old.grants, *_checked(grants)]
    return _record(name, old.version + 1, old.password, old.token_sha256, grants, old.access_keys)


def revoked(users: tuple[UserRecord, ...], name: str, grants: Iterable[Grant]) -> UserRecord:
    old = _existing(users, name)
    gone = set(_checked(grants))
    rest = [g for g in old.grants if g not in gone]
    return _record(name, old.version + 1, old.password, old.token_sha256, rest, old.access_keys)


def deleted(users: tuple[UserRecord, ...], name: str) -> UserRecord:
    """The tombstone of user name: no credentials, no grants."""
    old = _existing(users, name)
    return UserRecord(name, old.version + 1, deleted=True)


def key_added(users: tuple[UserRecord, ...], name: str, key_id: str, sealed: bytes) -> UserRecord:
    """User name with one more access key; InvalidRequest for a key id that is malformed or
    in use, a missing secret, or too many keys."""
    old = _existing(users, name)
    if ACCESS_KEY_ID.fullmatch(key_id) is None:
        raise InvalidRequest(f"invalid access key id {key_id!r}: 16-128 A-Z and 0-9")
    if not sealed:
        raise InvalidRequest("an access key needs its secret")
    key = AccessKey(key_id, sealed)
    if any(k.key_id == key.key_id for u in users for k in u.access_keys):
        raise InvalidRequest(f"access key id {key.key_id} is in use")
    if len(old.access_keys) >= MAX_ACCESS_KEYS:
        raise InvalidRequest(f"user {name!r} has {MAX_ACCESS_KEYS} access keys: delete one first")
    keys = tuple(sorted([*old.access_keys, key], key=lambda k: k.key_id))
    return _record(name, old.version + 1, old.password, old.token_sha256, old.grants, keys)


def key_removed(users: tuple[UserRecord, ...], name: str, key_id: str) -> UserRecord:
    old = _existing(users, name)
    keys = tuple(k for k in old.access_keys if k.key_id != key_id)
    if len(keys) == len(old.access_keys):
        raise InvalidRequest(f"user {name!r} has no access key {key_id!r}")
    return _record(name, old.version + 1, old.password, old.token_sha256, old.grants, keys)


def key_owner(users: Iterable[UserRecord], key_id: str) -> tuple[UserRecord, AccessKey] | None:
    """The live user holding access key key_id, and the key; None for an unknown id."""
    for user in users:
        if user.deleted:
            continue
        for key in user.access_keys:
            if key.key_id == key_id:
                return user, key
    return None


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
    name: str,
    version: int,
    password: Scrypt | None,
    token: bytes,
    grants: Iterable[Grant],
    keys: tuple[AccessKey, ...] = (),
) -> UserRecord:
    return UserRecord(name, version, password, token, tuple(sorted(set(grants))), False, keys)


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
