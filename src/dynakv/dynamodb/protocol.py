"""DynamoDB's JSON protocol (awsJson1_0) without the HTTP: which operation a request names,
its body as a JSON object, the operations there are, and errors as DynamoDB writes them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from dynakv.dynamodb import batch_ops, item_ops, query_ops, table_ops, ttl_ops
from dynakv.dynamodb.backend import Backend, Request
from dynakv.dynamodb.errors import (
    DynamoError,
    SerializationException,
    ServiceUnavailable,
    UnknownOperationException,
)
from dynakv.errors import DynakvError, InvalidRequest, Timeout, Unavailable

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"

Operation = Callable[[Backend, Request], Awaitable[dict[str, Any]]]
OPERATIONS: dict[str, Operation] = {
    "CreateTable": table_ops.create_table,
    "DescribeTable": table_ops.describe_table,
    "ListTables": table_ops.list_tables,
    "UpdateTable": table_ops.update_table,
    "DeleteTable": table_ops.delete_table,
    "PutItem": item_ops.put_item,
    "GetItem": item_ops.get_item,
    "DeleteItem": item_ops.delete_item,
    "UpdateItem": item_ops.update_item,
    "Query": query_ops.query,
    "Scan": query_ops.scan,
    "BatchGetItem": batch_ops.batch_get_item,
    "BatchWriteItem": batch_ops.batch_write_item,
    "UpdateTimeToLive": ttl_ops.update_time_to_live,
    "DescribeTimeToLive": ttl_ops.describe_time_to_live,
}


def operation(target: str | None) -> Operation:
    """The operation an X-Amz-Target header names."""
    if not target or not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException()
    found = OPERATIONS.get(target[len(TARGET_PREFIX) :])
    if found is None:
        raise UnknownOperationException()
    return found


def parse_body(body: bytes) -> Request:
    try:
        request = json.loads(body) if body.strip() else {}
    except ValueError:
        raise SerializationException("Start of structure or map found where not expected") from None
    if not isinstance(request, dict):
        raise SerializationException("Start of structure or map found where not expected")
    return request


def as_dynamo(error: Exception) -> DynamoError:
    """A dynakv error as DynamoDB would report it: replicas that cannot answer are a
    ServiceUnavailable (SDKs retry it), anything else an internal error."""
    if isinstance(error, DynamoError):
        return error
    if isinstance(error, Unavailable | Timeout):
        return ServiceUnavailable(error.message or "too few replicas answered")
    if isinstance(error, InvalidRequest):
        from dynakv.dynamodb.errors import ValidationException

        return ValidationException(error.message)
    if isinstance(error, DynakvError):
        return DynamoError(error.message or type(error).__name__)
    return DynamoError("The server encountered an internal error trying to fulfill the request")


def error_body(error: DynamoError) -> dict[str, Any]:
    body: dict[str, Any] = {"__type": ERROR_PREFIX + error.name, "message": error.message}
    body.update(error.extra)
    return body


def encode(body: dict[str, Any]) -> tuple[bytes, str]:
    """The response body and its x-amz-crc32 header value."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return data, str(zlib.crc32(data) & 0xFFFFFFFF)
