"""DynamoDB's errors, with the exact names SDKs dispatch on and the HTTP status of each.

Pure data: the endpoint turns a DynamoError into
`{"__type": "com.amazonaws.dynamodb.v20120810#<name>", "message": ...}` with `.status`.
"""

from __future__ import annotations

from typing import Any


class DynamoError(Exception):
    """An error DynamoDB would return; `.extra` carries fields beside the message."""

    name = "InternalServerError"
    status = 500

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = extra or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ClientError(DynamoError):
    """Base of the 400 errors: the request is wrong, retrying it unchanged will not help."""

    status = 400


class ValidationException(ClientError):
    name = "ValidationException"


class SerializationException(ClientError):
    name = "SerializationException"


class ResourceNotFoundException(ClientError):
    name = "ResourceNotFoundException"

    def __init__(self, message: str = "Requested resource not found", **kw: Any) -> None:
        super().__init__(message, **kw)


class ResourceInUseException(ClientError):
    name = "ResourceInUseException"


class ConditionalCheckFailedException(ClientError):
    """A ConditionExpression did not hold; `.extra` may hold {"Item": old item}."""

    name = "ConditionalCheckFailedException"

    def __init__(self, message: str = "The conditional request failed", **kw: Any) -> None:
        super().__init__(message, **kw)


class UnknownOperationException(ClientError):
    name = "UnknownOperationException"

    def __init__(self, message: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)


class ProvisionedThroughputExceededException(ClientError):
    name = "ProvisionedThroughputExceededException"


class ItemCollectionSizeLimitExceededException(ClientError):
    name = "ItemCollectionSizeLimitExceededException"


class LimitExceededException(ClientError):
    name = "LimitExceededException"


class TransactionConflictException(ClientError):
    name = "TransactionConflictException"


class TransactionCanceledException(ClientError):
    """`.extra` holds {"CancellationReasons": [...]}, one reason per action."""

    name = "TransactionCanceledException"


class TransactionInProgressException(ClientError):
    name = "TransactionInProgressException"


class ThrottlingException(ClientError):
    name = "ThrottlingException"


class RequestLimitExceeded(ClientError):
    name = "RequestLimitExceeded"


class MissingAuthenticationTokenException(ClientError):
    name = "MissingAuthenticationTokenException"


class AccessDeniedException(ClientError):
    name = "AccessDeniedException"


class UnrecognizedClientException(ClientError):
    name = "UnrecognizedClientException"


class InvalidSignatureException(ClientError):
    name = "InvalidSignatureException"


class IncompleteSignatureException(ClientError):
    name = "IncompleteSignatureException"


class InternalServerError(DynamoError):
    name = "InternalServerError"
    status = 500


class ServiceUnavailable(DynamoError):
    name = "ServiceUnavailable"
    status = 503


def invalid_expression(kind: str, detail: str) -> ValidationException:
    """DynamoDB's "Invalid <Kind>Expression: <detail>" ValidationException."""
    return ValidationException(f"Invalid {kind}Expression: {detail}")
