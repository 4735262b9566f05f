"""Who may do what: the permission checks every front end (HTTP, RESP, binary) calls when
authentication is on. Pure: given the users the node knows and a request, the answer.

A grant is (bucket or "*", permission); permissions rise read < write < admin, each
including the ones below it. A bucket's grant also covers its bucket type (a type is named
after its bucket). Cluster-changing operations (leave, remove, repair, backup, users) need
admin on "*"; a bucket type change needs admin on that type or on "*".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    Message,
    TransferRequest,
)
from dynakv.users import ALL_BUCKETS, PERMISSIONS, UserRecord, live

_RANK = {permission: rank for rank, permission in enumerate(PERMISSIONS)}
BOOTSTRAP_HINT = (
    "the cluster has no users yet: create the first admin with `dynakv user add NAME --admin`"
)


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs: a permission on a bucket, or on "*" (the whole cluster)."""

    permission: str
    bucket: str = ALL_BUCKETS

    def __str__(self) -> str:
        where = "the cluster" if self.bucket == ALL_BUCKETS else f"bucket {self.bucket!r}"
        return f"{self.permission} on {where}"


ANY_USER: Need | None = None  # any authenticated user may (cluster info, status)
CLUSTER_ADMIN = Need("admin")


def allows(user: UserRecord, need: Need | None) -> bool:
    """Whether user's grants cover need."""
    if user.deleted:
        return False
    if need is None:
        return True
    wanted = _RANK[need.permission]
    return any(
        _RANK[permission] >= wanted and (bucket == ALL_BUCKETS or bucket == need.bucket)
        for bucket, permission in user.grants
    )


def check(user: UserRecord | None, need: Need | None, users: Iterable[UserRecord]) -> None:
    """Unauthenticated without a user (naming the bootstrap rule while there is none),
    Forbidden when user's grants do not cover need."""
    if user is None or user.deleted:
        if not live(users):
            raise Unauthenticated(BOOTSTRAP_HINT)
        raise Unauthenticated("authentication required: give a user and its password or token")
    if not allows(user, need):
        raise Forbidden(f"user {user.name!r} lacks {need}")


def need_of(message: Message) -> Need | None:
    """What a binary-protocol client request needs (ANY_USER: being logged in)."""
    kind = type(message)
    if kind is ClientGet:
        return Need("read", message.bucket)  # type: ignore[attr-defined]
    if kind is ClientPut:
        return Need("write", message.bucket)  # type: ignore[attr-defined]
    if kind is ClientBucketChange:
        return Need("admin", message.name)  # type: ignore[attr-defined]
    if kind is TransferRequest:  # a key listing or export reads every bucket's partition
        return Need("read")
    if kind in (ClientClusterChange, ClientRepair, ClientBackup, ClientUserChange):
        return CLUSTER_ADMIN
    if kind is ClientClusterInfo:
        return ANY_USER
    return CLUSTER_ADMIN  # anything else a client sends is a peer's business: admins only


def may_bootstrap(users: Iterable[UserRecord], message: Message) -> bool:
    """The bootstrap rule: while the cluster has no live user, anyone who can reach a node
    may add one user, and only as an admin of the whole cluster (as Riak's and Cassandra's
    first superuser is made from the node's own console)."""
    return (
        isinstance(message, ClientUserChange)
        and message.op == "add"
        and (ALL_BUCKETS, "admin") in [tuple(g) for g in message.grants]
        and not live(users)
    )
