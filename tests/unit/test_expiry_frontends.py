"""The front ends' pure parts of expiry: RESP's SET options, a DynamoDB item's expiry from
its TTL attribute, and UpdateTimeToLive/DescribeTimeToLive's shapes and errors over a
backend that only keeps the table records."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from dynakv import expiry
from dynakv.dynamodb import items, ttl_ops
from dynakv.dynamodb.errors import (
    ResourceNotFoundException,
    SerializationException,
    ValidationException,
)
from dynakv.dynamodb.tables import Table, new_table
from dynakv.runtime.resp_expiry import KEEP, set_lifetime
from dynakv.runtime.resp_protocol import CommandError

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)


def set_args(*options: str) -> list[bytes]:
    return [b"SET", b"k", b"v", *(o.encode() for o in options)]


@pytest.mark.parametrize(
    ("options", "expires"),
    [
        ((), 0),
        (("EX", "10"), NOW_MS + 10_000),
        (("px", "1500"), NOW_MS + 1500),
        (("EXAT", str(int(NOW) + 5)), NOW_MS + 5000),
        (("PXAT", str(NOW_MS + 7)), NOW_MS + 7),
        (("PXAT", "1"), 1),  # in the past: born expired, as on Redis
        (("KEEPTTL",), KEEP),
    ],
)
def test_set_options_give_the_lifetime(options, expires):
    assert set_lifetime(set_args(*options), NOW) == expires


@pytest.mark.parametrize(
    ("options", "reply"),
    [
        (("EX", "0"), "invalid expire time in 'set' command"),
        (("EX", "-3"), "invalid expire time in 'set' command"),
        (("EX", "1.5"), "value is not an integer or out of range"),
        (("EX", "abc"), "value is not an integer or out of range"),
        (("EX", str(expiry.MAX_TTL_SECONDS + 1)), "invalid expire time in 'set' command"),
        (("EX",), "syntax error"),
        (("EX", "1", "PX", "5"), "syntax error"),
        (("KEEPTTL", "EX", "5"), "syntax error"),
        (("EX", "5", "KEEPTTL"), "syntax error"),
        (("FOO",), "syntax error"),
        (("NX",), "SET option NX is not supported by dynakv"),
    ],
)
def test_bad_set_options_get_redis_errors(options, reply):
    with pytest.raises(CommandError) as caught:
        set_lifetime(set_args(*options), NOW)
    assert caught.value.line == b"-ERR " + reply.encode() + b"\r\n"


def table(ttl: str = "") -> Table:
    request = {
        "TableName": "sessions",
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    return dataclasses.replace(new_table(request, {}, NOW - 100), ttl_attribute=ttl)


def test_an_item_expires_by_its_ttl_attribute_only_when_the_table_has_ttl_on():
    item = {"id": {"S": "a"}, "exp": {"N": str(int(NOW) + 60)}}
    assert items.expires_of(table(), item, NOW) == 0
    assert items.expires_of(table("exp"), item, NOW) == NOW_MS + 60_000
    assert items.expires_of(table("exp"), {**item, "exp": {"N": "1700000000.25"}}, NOW) == (
        1_700_000_000_250
    )
    for ignored in ({"S": "1700000000"}, {"N": "12"}, {"N": "-5"}, {"NULL": True}):
        assert items.expires_of(table("exp"), {**item, "exp": ignored}, NOW) == 0
    assert items.expires_of(table("exp"), {"id": {"S": "a"}}, NOW) == 0


def test_an_expired_item_decodes_as_absent_when_read_at_a_time():
    t = table("exp")
    value = items.encode(t, {"id": {"S": "a"}, "exp": {"N": str(int(NOW) + 1)}})
    assert items.decode(t, value, NOW) is not None
    assert items.decode(t, value, NOW + 1) is None
    assert items.decode(t, value) is not None  # no time given: background work sees it


def test_a_table_record_keeps_its_ttl_attribute_and_old_records_have_none():
    t = table("exp")
    assert Table.from_record(t.record()) == t
    old = table().record().replace(',"ttl":""', "")
    assert '"ttl"' not in old
    assert Table.from_record(old).ttl_attribute == ""


class Tables:
    """The part of a Backend the TTL operations use: the table records."""

    def __init__(self, *tables: Table) -> None:
        self.records = {t.name: t for t in tables}
        self.changes: list[tuple[Table, str]] = []

    def tables(self) -> dict[str, Table]:
        return dict(self.records)

    async def set_table(self, changed: Table, mode: str) -> None:
        self.changes.append((changed, mode))
        self.records[changed.name] = changed


def run(operation: Any, backend: Tables, request: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(operation(backend, request))


def spec(enabled: object, name: object = "exp") -> dict[str, Any]:
    specification = {"Enabled": enabled, "AttributeName": name}
    return {"TableName": "sessions", "TimeToLiveSpecification": specification}


def test_ttl_is_enabled_described_and_disabled_with_dynamodbs_shapes():
    backend = Tables(table())
    describe = {"TableName": "sessions"}
    assert run(ttl_ops.describe_time_to_live, backend, describe) == {
        "TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}
    }
    assert run(ttl_ops.update_time_to_live, backend, spec(True)) == {
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "exp"}
    }
    assert backend.records["sessions"].ttl_attribute == "exp"
    assert backend.changes[-1][1] == "put"
    assert run(ttl_ops.describe_time_to_live, backend, describe) == {
        "TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "exp"}
    }
    assert run(ttl_ops.update_time_to_live, backend, spec(False)) == {
        "TimeToLiveSpecification": {"Enabled": False, "AttributeName": "exp"}
    }
    assert backend.records["sessions"].ttl_attribute == ""


@pytest.mark.parametrize(
    ("current", "request_", "error", "message"),
    [
        ("exp", spec(True), ValidationException, "TimeToLive is already enabled"),
        ("exp", spec(True, "other"), ValidationException, "TimeToLive is already enabled"),
        ("", spec(False), ValidationException, "TimeToLive is already disabled"),
        ("exp", spec(False, "other"), ValidationException, "different AttributeName"),
        ("", {"TableName": "sessions"}, ValidationException, "'timeToLiveSpecification'"),
        ("", spec(None), ValidationException, "timeToLiveSpecification.enabled"),
        ("", spec(True, None), ValidationException, "timeToLiveSpecification.attributeName"),
        ("", spec(True, ""), ValidationException, "length between 1 and 255"),
        ("", spec("yes"), SerializationException, "Enabled must be a boolean"),
        ("", {**spec(True), "TableName": "nope"}, ResourceNotFoundException, "nope not found"),
    ],
)
def test_bad_ttl_changes_get_dynamodbs_errors(current, request_, error, message):
    backend = Tables(table(current))
    with pytest.raises(error, match=message):
        run(ttl_ops.update_time_to_live, backend, request_)
    assert backend.changes == []
