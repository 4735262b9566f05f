"""DynamoDB's error classes: the exact names SDKs dispatch on, statuses and defaults."""

from __future__ import annotations

import pytest

from dynakv.dynamodb import errors
from dynakv.dynamodb.errors import (
    ConditionalCheckFailedException,
    DynamoError,
    InternalServerError,
    ResourceNotFoundException,
    ValidationException,
    invalid_expression,
)


def every_error_class() -> list[type[DynamoError]]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, DynamoError)
        and value.__module__ == errors.__name__
    ]


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_each_error_is_named_as_dynamodb_names_it(cls: type[DynamoError]) -> None:
    if cls.__name__ not in ("DynamoError", "ClientError"):
        assert cls.name == cls.__name__
    assert cls.status in (400, 500, 503)
    assert (cls.status == 400) == issubclass(cls, errors.ClientError)


def test_defaults_and_extra_fields() -> None:
    failed = ConditionalCheckFailedException(extra={"Item": {"id": {"S": "k"}}})
    assert failed.message == "The conditional request failed"
    assert failed.extra == {"Item": {"id": {"S": "k"}}}
    assert failed.status == 400
    assert ResourceNotFoundException().message == "Requested resource not found"
    assert ValidationException("bad").extra == {}
    assert InternalServerError("boom").status == 500
    error = invalid_expression("Update", 'Syntax error; token: "x"')
    assert isinstance(error, ValidationException)
    assert error.message == 'Invalid UpdateExpression: Syntax error; token: "x"'
