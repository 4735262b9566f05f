"""DynamoDB items on a real 3-node cluster, through boto3: every attribute type, conditional
writes and each condition form, update expressions and every ReturnValues."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from botocore.exceptions import ClientError

from tests.cluster.ddb_harness import client, dynamo_cluster, error_of, make_table
from tests.cluster.harness import ProcessCluster


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with dynamo_cluster(tmp_path_factory.mktemp("ddb")) as started:
        yield started


def test_every_attribute_type_round_trips(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "types", "B", hash_type="N")
    item = {
        "pk": {"N": "12345678901234567890123456789012345678"},
        "sk": {"B": b"\x00\xffbin"},
        "s": {"S": "héllo ✓"},
        "n": {"N": "-0.000000000000000000000000000000000001"},
        "b": {"B": b"\x01\x02"},
        "t": {"BOOL": True},
        "f": {"BOOL": False},
        "z": {"NULL": True},
        "m": {"M": {"deep": {"L": [{"S": "x"}, {"N": "1"}, {"M": {}}]}}},
        "l": {"L": []},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5", "-3"]},
        "bs": {"BS": [b"x", b"y"]},
    }
    ddb.put_item(TableName="types", Item=item)
    for index in range(3):  # read through every node
        got = client(procs, index).get_item(
            TableName="types", Key={"pk": item["pk"], "sk": item["sk"]}, ConsistentRead=True
        )["Item"]
        assert {k: v for k, v in got.items() if k not in ("ss", "ns", "bs")} == {
            k: v for k, v in item.items() if k not in ("ss", "ns", "bs")
        }
        assert sorted(got["ss"]["SS"]) == ["a", "b"]
        assert sorted(Decimal(x) for x in got["ns"]["NS"]) == [Decimal(-3), 1, Decimal("2.5")]
        assert sorted(got["bs"]["BS"]) == [b"x", b"y"]
    got = ddb.get_item(
        TableName="types",
        Key={"pk": item["pk"], "sk": item["sk"]},
        ProjectionExpression="#m.deep[1], s",
        ExpressionAttributeNames={"#m": "m"},
    )["Item"]
    assert got == {"m": {"M": {"deep": {"L": [{"N": "1"}]}}}, "s": item["s"]}


def test_conditional_puts_and_deletes_with_return_values(procs: ProcessCluster) -> None:
    ddb = client(procs, 1)
    make_table(ddb, "cond", None)
    key = {"pk": {"S": "k"}}
    ddb.put_item(
        TableName="cond",
        Item={**key, "v": {"N": "1"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    code, message = error_of(
        ddb.put_item,
        TableName="cond",
        Item={**key, "v": {"N": "2"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    assert (code, message) == ("ConditionalCheckFailedException", "The conditional request failed")
    with pytest.raises(ClientError) as info:
        ddb.put_item(
            TableName="cond",
            Item={**key, "v": {"N": "2"}},
            ConditionExpression="v > :x",
            ExpressionAttributeValues={":x": {"N": "5"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert info.value.response["Item"] == {**key, "v": {"N": "1"}}
    old = ddb.put_item(TableName="cond", Item={**key, "v": {"N": "2"}}, ReturnValues="ALL_OLD")
    assert old["Attributes"] == {**key, "v": {"N": "1"}}
    code, _ = error_of(
        ddb.delete_item,
        TableName="cond",
        Key=key,
        ConditionExpression="v = :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    assert code == "ConditionalCheckFailedException"
    gone = ddb.delete_item(
        TableName="cond",
        Key=key,
        ReturnValues="ALL_OLD",
        ConditionExpression="v = :two",
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    assert gone["Attributes"]["v"] == {"N": "2"}
    assert "Item" not in ddb.get_item(TableName="cond", Key=key, ConsistentRead=True)


CONDITIONS = [  # (expression, values, holds for the item below)
    ("n = :a", {":a": {"N": "5"}}, True),
    ("n <> :a", {":a": {"N": "5"}}, False),
    ("n < :a AND n >= :b", {":a": {"N": "6"}, ":b": {"N": "5"}}, True),
    ("n > :a OR n <= :b", {":a": {"N": "9"}, ":b": {"N": "1"}}, False),
    ("n BETWEEN :a AND :b", {":a": {"N": "1"}, ":b": {"N": "5"}}, True),
    ("s IN (:a, :b)", {":a": {"S": "x"}, ":b": {"S": "hello"}}, True),
    ("NOT attribute_exists(absent)", None, True),
    ("attribute_not_exists(s)", None, False),
    ("attribute_type(l, :t)", {":t": {"S": "L"}}, True),
    ("begins_with(s, :p)", {":p": {"S": "he"}}, True),
    ("contains(l, :e)", {":e": {"S": "b"}}, True),
    ("contains(s, :e)", {":e": {"S": "zz"}}, False),
    ("size(l) = :three", {":three": {"N": "3"}}, True),
    ("m.deep.x = :one", {":one": {"N": "1"}}, True),
    (
        "(n = :a OR n = :b) AND NOT s = :c",
        {":a": {"N": "0"}, ":b": {"N": "5"}, ":c": {"S": "q"}},
        True,
    ),
]


@pytest.mark.parametrize(("expression", "values", "expected"), CONDITIONS)
def test_each_condition_form(
    procs: ProcessCluster, expression: str, values: dict | None, expected: bool
) -> None:
    ddb = client(procs, 2)
    try:
        make_table(ddb, "forms", None)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceInUseException"
    item = {
        "pk": {"S": "it"},
        "n": {"N": "5"},
        "s": {"S": "hello"},
        "l": {"L": [{"S": "a"}, {"S": "b"}, {"S": "c"}]},
        "m": {"M": {"deep": {"M": {"x": {"N": "1"}}}}},
    }
    ddb.put_item(TableName="forms", Item=item)
    extra = {"ExpressionAttributeValues": values} if values else {}
    if expected:
        ddb.put_item(TableName="forms", Item=item, ConditionExpression=expression, **extra)
    else:
        code, _ = error_of(
            ddb.put_item, TableName="forms", Item=item, ConditionExpression=expression, **extra
        )
        assert code == "ConditionalCheckFailedException"


def test_update_expressions_and_every_return_value(procs: ProcessCluster) -> None:
    ddb = client(procs, 0)
    make_table(ddb, "upd", "N")
    key = {"pk": {"S": "u"}, "sk": {"N": "1"}}
    new = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="ALL_NEW",
        UpdateExpression="SET c = if_not_exists(c, :zero) + :one, l = list_append(:l, :l), "
        "m = :m ADD tags :tags",
        ExpressionAttributeValues={
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":l": {"L": [{"S": "a"}]},
            ":m": {"M": {"x": {"N": "1"}}},
            ":tags": {"SS": ["t1", "t2"]},
        },
    )["Attributes"]
    assert new["c"] == {"N": "1"} and new["l"] == {"L": [{"S": "a"}, {"S": "a"}]}
    old = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="UPDATED_OLD",
        UpdateExpression="SET m.x = m.x + :ten REMOVE l[0] DELETE tags :t1",
        ExpressionAttributeValues={":ten": {"N": "10"}, ":t1": {"SS": ["t1"]}},
    )
    assert "Attributes" in old  # UPDATED_OLD: the written paths' old values
    assert old["Attributes"]["m"] == {"M": {"x": {"N": "1"}}}
    updated_new = ddb.update_item(
        TableName="upd",
        Key=key,
        ReturnValues="UPDATED_NEW",
        UpdateExpression="SET c = c - :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )["Attributes"]
    assert updated_new == {"c": {"N": "0"}}
    everything_old = ddb.update_item(
        TableName="upd", Key=key, ReturnValues="ALL_OLD", UpdateExpression="REMOVE c"
    )["Attributes"]
    assert everything_old["c"] == {"N": "0"}
    item = ddb.get_item(TableName="upd", Key=key, ConsistentRead=True)["Item"]
    assert "c" not in item and item["tags"] == {"SS": ["t2"]}
    assert item["l"] == {"L": [{"S": "a"}]} and item["m"] == {"M": {"x": {"N": "11"}}}
    none = ddb.update_item(
        TableName="upd",
        Key=key,
        UpdateExpression="SET z = :z",
        ExpressionAttributeValues={":z": {"NULL": True}},
    )
    assert "Attributes" not in none
    code, message = error_of(
        ddb.update_item,
        TableName="upd",
        Key=key,
        UpdateExpression="SET sk = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    assert code == "ValidationException" and "part of the key" in message
