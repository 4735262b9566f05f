"""Run one expression case through moto's in-memory DynamoDB (mock_aws + boto3) and through
dynakv's evaluator, reducing each to a comparable outcome. Helpers for the differential test.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from dynakv.dynamodb.attributes import KeySchema, validate_item
from dynakv.dynamodb.errors import DynamoError
from dynakv.dynamodb.expressions import (
    check_all_used,
    parse_condition,
    parse_filter,
    parse_key_condition,
    parse_projection,
    parse_update,
    validate_expression_attributes,
)
from dynakv.dynamodb.ordering import values_equal

TABLE = "expr"
QUERY_TABLE = "sorted"


@dataclass(frozen=True)
class Case:
    """kind: put, condition, update, projection, filter or key. `item` is the stored item
    (None: none), or for put the item written; for filter and key cases the table holds
    ROWS instead."""

    name: str  # unique: the kind, the expression and what else sets the case apart
    kind: str
    expression: str
    item: dict[str, Any] | None = None
    names: dict[str, str] | None = None
    values: dict[str, Any] | None = None
    rows: tuple[dict[str, Any], ...] = field(default=())


def to_boto(value: Any) -> Any:
    """Wire form (B as base64 text) to what boto3's client takes (B as bytes)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "B" and isinstance(v, str):
                out[k] = base64.b64decode(v)
            elif k == "BS" and isinstance(v, list):
                out[k] = [base64.b64decode(m) for m in v]
            else:
                out[k] = to_boto(v)
        return out
    if isinstance(value, list):
        return [to_boto(v) for v in value]
    return value


def from_boto(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: from_boto(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_boto(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


@contextmanager
def moto_dynamodb() -> Iterator[Any]:
    """A boto3 client on moto's in-memory DynamoDB holding the two test tables; fake
    credentials, so nothing can reach a real account."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            client.create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            client.create_table(
                TableName=QUERY_TABLE,
                KeySchema=[
                    {"AttributeName": "id", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "id", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "N"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            yield client


def _expression_args(case: Case, key: str) -> dict[str, Any]:
    args: dict[str, Any] = {key: case.expression}
    if case.names is not None:
        args["ExpressionAttributeNames"] = case.names
    if case.values is not None:
        args["ExpressionAttributeValues"] = to_boto(case.values)
    return args


def moto_outcome(client: Any, case: Case) -> Any:
    """What moto answers: a bool, an item, a list of keys, or ("error", name)."""
    try:
        return _moto(client, case)
    except ClientError as error:
        return ("error", error.response["Error"]["Code"])
    except Exception as crash:  # moto's own bugs, e.g. comparing str with Decimal
        return ("moto crashed", type(crash).__name__)


def _moto(client: Any, case: Case) -> Any:
    key = {"id": {"S": "k"}}
    if case.kind in ("filter", "key"):
        table = QUERY_TABLE
        for existing in client.scan(TableName=table)["Items"]:
            client.delete_item(TableName=table, Key={k: existing[k] for k in ("id", "sk")})
        for row in case.rows:
            client.put_item(TableName=table, Item=to_boto(row))
        if case.kind == "filter":
            found = client.scan(TableName=table, **_expression_args(case, "FilterExpression"))
            return sorted(_row_name(item) for item in found["Items"])
        args = _expression_args(case, "KeyConditionExpression")
        found = client.query(TableName=table, **args)
        return [item["sk"]["N"] for item in found["Items"]]
    client.delete_item(TableName=TABLE, Key=key)
    if case.kind == "put":
        assert case.item is not None
        client.put_item(TableName=TABLE, Item=to_boto(case.item))
        stored = client.get_item(TableName=TABLE, Key={"id": to_boto(case.item["id"])})
        return from_boto(stored["Item"])
    if case.item is not None:
        client.put_item(TableName=TABLE, Item=to_boto(case.item))
    if case.kind == "condition":
        replacement = {"id": {"S": "k"}, "marker": {"S": "written"}}
        try:
            client.put_item(
                TableName=TABLE,
                Item=replacement,
                **_expression_args(case, "ConditionExpression"),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
    if case.kind == "update":
        answer = client.update_item(
            TableName=TABLE,
            Key=key,
            ReturnValues="ALL_NEW",
            **_expression_args(case, "UpdateExpression"),
        )
        return from_boto(answer.get("Attributes", {}))
    args = _expression_args(case, "ProjectionExpression")
    answer = client.get_item(TableName=TABLE, Key=key, **args)
    return from_boto(answer.get("Item", {}))


def dynakv_outcome(case: Case) -> Any:
    """What dynakv's pure layer answers for the same case, in the same shape."""
    try:
        names, values = validate_expression_attributes(case.names, case.values)
        return _dynakv(case, names or None, values or None)
    except DynamoError as error:
        return ("error", error.name)


def _dynakv(case: Case, names: Any, values: Any) -> Any:
    if case.kind == "put":
        return validate_item(case.item, KeySchema("id", "S"))
    if case.kind == "condition":
        condition = parse_condition(case.expression, names, values)
        check_all_used(names, values, condition)
        return condition.holds(case.item)
    if case.kind == "update":
        update = parse_update(case.expression, names, values)
        check_all_used(names, values, update)
        return update.apply(case.item, key={"id": {"S": "k"}})[0]
    if case.kind == "projection":
        projection = parse_projection(case.expression, names)
        check_all_used(names, values, projection)
        return projection.apply(case.item or {})
    if case.kind == "filter":
        condition = parse_filter(case.expression, names, values)
        check_all_used(names, values, condition)
        return sorted(_row_name(row) for row in case.rows if condition.holds(row))
    key = parse_key_condition(case.expression, names, values, "id", "sk")
    check_all_used(names, values, key)
    key.check_types("S", "N")
    rows = [r for r in case.rows if values_equal(r["id"], key.hash_value)]
    rows = [r for r in rows if key.matches(r["sk"])]
    return [r["sk"]["N"] for r in sorted(rows, key=lambda r: float(r["sk"]["N"]))]


def _row_name(row: dict[str, Any]) -> str:
    return f"{row['id']['S']}/{row['sk']['N']}"


def same(ours: Any, theirs: Any) -> bool:
    """Outcomes agree: errors by name, items by DynamoDB equality (numbers by value, sets
    in any order), everything else exactly."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return values_equal({"M": ours}, {"M": theirs})
    return bool(ours == theirs)
