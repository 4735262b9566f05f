"""What each HTTP route needs when authentication is on (runtime/http_auth.py)."""

from __future__ import annotations

import pytest

from dynakv.access import CLUSTER_ADMIN, Need
from dynakv.runtime.http_auth import route_need


@pytest.mark.parametrize(
    ("method", "path", "need"),
    [
        ("GET", "/v1/kv/a/k", Need("read", "a")),
        ("HEAD", "/v1/kv/a/k", Need("read", "a")),
        ("PUT", "/v1/kv/a/k", Need("write", "a")),
        ("DELETE", "/v1/kv/a/k?w=2", Need("write", "a")),
        ("GET", "/v1/kv/a?list=keys", Need("read", "a")),
        ("GET", "/v1/kv/caf%C3%A9/k", Need("read", "café")),
        ("GET", "/v1/kv/%FF/k", CLUSTER_ADMIN),  # not UTF-8: refused by the handler anyway
        ("GET", "/v1/replica/a/k", Need("read", "a")),
        ("GET", "/v1/buckets/a", None),
        ("PUT", "/v1/buckets/a", Need("admin", "a")),
        ("POST", "/v1/repair", CLUSTER_ADMIN),
        ("GET", "/v1/status", None),
        ("GET", "/v1/cluster", None),
        ("GET", "/metrics", None),
    ],
)
def test_each_route_needs_its_permission(method: str, path: str, need: Need | None) -> None:
    assert route_need(method, path) == need
