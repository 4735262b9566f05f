"""Who may call the DynamoDB endpoint when `[security] authentication` is on: the request's
SigV4 signature names an access key, the key its user (gatekeeper.py checks both), and the
user's grants on each table the operation touches decide (a table is a bucket type:
item_keys.table_bucket). Errors are DynamoDB's, with its names and status codes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dynakv import sigv4
from dynakv.access import Need, allows
from dynakv.dynamodb.errors import (
    AccessDeniedException,
    ClientError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    ThrottlingException,
    UnrecognizedClientException,
)
from dynakv.errors import TooManyLogins
from dynakv.item_keys import table_bucket
from dynakv.runtime.gatekeeper import Gatekeeper
from dynakv.users import ALL_BUCKETS, UserRecord

SERVICE = "dynamodb"
ACCOUNT = "000000000000"  # ARNs in messages need an account; a dynakv cluster has one
READS = frozenset(
    {"GetItem", "Query", "Scan", "BatchGetItem", "DescribeTable", "DescribeTimeToLive"}
)
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
ADMINS = frozenset({"CreateTable", "DeleteTable", "UpdateTable", "UpdateTimeToLive"})
ANY_USER = frozenset({"ListTables"})
_ERRORS: dict[str, type[ClientError]] = {
    "missing": MissingAuthenticationTokenException,
    "malformed": IncompleteSignatureException,
    "unknown_key": UnrecognizedClientException,
    "expired": InvalidSignatureException,
    "bad_signature": InvalidSignatureException,
}


def signer(gate: Gatekeeper, request: web.Request, raw: bytes) -> UserRecord:
    """The user whose access key signed the request; DynamoDB's error otherwise."""
    signed = sigv4.SignedRequest(
        request.method, request.raw_path, tuple(request.headers.items()), raw
    )
    try:
        return gate.signer(signed, SERVICE, request.remote or "unknown")
    except sigv4.SignatureError as exc:
        raise _ERRORS[exc.reason](exc.message) from None
    except TooManyLogins as exc:
        # botocore retries a throttled call with backoff: the address is told to slow down.
        raise ThrottlingException(exc.message) from None


def needs(operation: str, body: dict[str, Any]) -> list[Need | None]:
    """What an operation on body's tables needs (None: being a user). An operation not
    listed needs admin of the whole cluster: a new one is closed until it is mapped here."""
    if operation in ANY_USER:
        return [None]
    if operation in READS:
        permission = "read"
    elif operation in WRITES:
        permission = "write"
    elif operation in ADMINS:
        permission = "admin"
    else:
        return [Need("admin", ALL_BUCKETS)]
    if operation.startswith("Batch"):
        items = body.get("RequestItems")
        tables = [t for t in items if isinstance(t, str)] if isinstance(items, dict) else []
    else:
        name = body.get("TableName")
        tables = [name] if isinstance(name, str) else []
    # A body without a usable table name gets DynamoDB's ValidationException from the
    # operation itself, which touches no table.
    return [Need(permission, table_bucket(t)) for t in tables]


def check(user: UserRecord, operation: str, body: dict[str, Any], region: str) -> None:
    """AccessDeniedException unless user's grants cover every table the call touches."""
    for need in needs(operation, body):
        if not allows(user, need):
            assert need is not None
            if need.bucket == ALL_BUCKETS:
                resource = f"arn:aws:dynamodb:{region}:{ACCOUNT}:*"
            else:
                table = need.bucket.removeprefix(table_bucket(""))
                resource = f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}"
            raise AccessDeniedException(
                f"User: arn:aws:iam::{ACCOUNT}:user/{user.name} is not authorized to perform: "
                f"dynamodb:{operation} on resource: {resource} because no identity-based "
                f"policy allows the dynamodb:{operation} action ({need.permission} needed)"
            )


def region_of(request: web.Request) -> str:
    """The region of the credential scope (for messages), "us-east-1" when unreadable."""
    try:
        return sigv4.parse(request.headers.get("Authorization", "")).region
    except sigv4.SignatureError:
        return "us-east-1"
