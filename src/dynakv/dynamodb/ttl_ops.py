"""UpdateTimeToLive and DescribeTimeToLive: a table's TTL attribute, kept in its record
(tables.Table.ttl_attribute) and changed cluster-wide like any bucket-type change.

DynamoDB passes through ENABLING/DISABLING for up to an hour; here the change is
acknowledged by every member that is up before it answers, so the status is ENABLED or
DISABLED at once. What an enabled TTL does to items is in items.py (expires_of, decode).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dynakv.dynamodb.backend import Backend, Request, table_of
from dynakv.dynamodb.errors import SerializationException, ValidationException

MAX_ATTRIBUTE_NAME = 255


def _null(field: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value null at '{field}' failed to satisfy "
        "constraint: Member must not be null"
    )


def _specification(request: Request) -> tuple[bool, str]:
    """(enabled, attribute name) of a TimeToLiveSpecification, checked as DynamoDB does."""
    spec = request.get("TimeToLiveSpecification")
    if spec is None:
        raise _null("timeToLiveSpecification")
    if not isinstance(spec, dict):
        raise SerializationException("Start of structure or map found where not expected")
    enabled = spec.get("Enabled")
    name = spec.get("AttributeName")
    if enabled is None:
        raise _null("timeToLiveSpecification.enabled")
    if not isinstance(enabled, bool):
        raise SerializationException("Enabled must be a boolean")
    if name is None:
        raise _null("timeToLiveSpecification.attributeName")
    if not isinstance(name, str):
        raise SerializationException("AttributeName must be a string")
    if not 1 <= len(name.encode("utf-8")) <= MAX_ATTRIBUTE_NAME:
        raise ValidationException(
            f"1 validation error detected: Value '{name[:300]}' at "
            "'timeToLiveSpecification.attributeName' failed to satisfy constraint: "
            f"Member must have length between 1 and {MAX_ATTRIBUTE_NAME}"
        )
    return enabled, name


async def update_time_to_live(backend: Backend, request: Request) -> dict[str, Any]:
    table = table_of(backend, request)
    enabled, name = _specification(request)
    current = table.ttl_attribute
    if enabled and current:
        raise ValidationException("TimeToLive is already enabled")
    if not enabled and not current:
        raise ValidationException("TimeToLive is already disabled")
    if not enabled and name != current:
        raise ValidationException(
            f"TimeToLive is active on a different AttributeName: current AttributeName is "
            f"{current}"
        )
    changed = dataclasses.replace(table, ttl_attribute=name if enabled else "")
    await backend.set_table(changed, "put")
    return {"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": name}}


async def describe_time_to_live(backend: Backend, request: Request) -> dict[str, Any]:
    table = table_of(backend, request)
    if not table.ttl_attribute:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
    return {
        "TimeToLiveDescription": {
            "TimeToLiveStatus": "ENABLED",
            "AttributeName": table.ttl_attribute,
        }
    }
