"""The OpenAPI document (runtime/openapi.py) against the aiohttp app's router: every route is
documented, nothing is documented that is no route, each with the methods it takes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiohttp import hdrs

from dynakv.config import NodeConfig
from dynakv.runtime import openapi
from dynakv.runtime.http import build_app

# The catch-all under /v1/kv that answers 400 to a path without both a bucket and a key: not
# an operation of the API, so not in the document.
UNDOCUMENTED = {"/v1/kv{rest}"}
# What the routes taking any method ("*") answer with something other than 405.
ANY_METHOD = {
    "/v1/kv/{bucket}/{key}": {"get", "put", "delete"},  # and HEAD, as GET
    "/v1/kv/{bucket}": {"get"},
    "/v1/buckets/{bucket}": {"get", "put"},
}
OPERATIONS = {"get", "put", "post", "delete", "patch", "head", "options"}


def routes() -> dict[str, set[str]]:
    app = build_app(SimpleNamespace(config=NodeConfig(), gate=None))  # type: ignore[arg-type]
    found: dict[str, set[str]] = {}
    for resource in app.router.resources():
        path = resource.canonical
        for route in resource:
            method = route.method.lower()
            if method == hdrs.METH_ANY.lower():
                found.setdefault(path, set()).update(ANY_METHOD.get(path, set()))
            elif method != "head":  # aiohttp adds HEAD beside every GET
                found.setdefault(path, set()).add(method)
    return found


def documented() -> dict[str, set[str]]:
    paths: dict[str, Any] = openapi.document()["paths"]
    return {path: set(item) & OPERATIONS for path, item in paths.items()}


def test_every_route_is_documented_and_nothing_else() -> None:
    served = {p: m for p, m in routes().items() if p not in UNDOCUMENTED}
    assert documented() == served


def test_the_any_method_routes_listed_here_exist() -> None:
    assert set(ANY_METHOD) <= set(routes())


def test_every_operation_documents_its_answers_and_path_parameters() -> None:
    for path, item in openapi.document()["paths"].items():
        names = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path
        for method in set(item) & OPERATIONS:
            operation = item[method]
            assert operation["responses"], (path, method)
            assert operation["operationId"]
