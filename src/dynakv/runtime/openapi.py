"""The OpenAPI 3 document of the HTTP API (runtime/http.py), served at GET /openapi.json.

One place describes every route, its parameters, bodies and answers; tests/unit/
test_openapi.py holds it to the aiohttp router (every route documented, nothing documented
that is no route), and schemathesis holds the live node to it (tests/cluster/
test_fuzz_http.py, `make fuzz`). Every error is {"error": CODE, "message": TEXT}.
"""

from __future__ import annotations

from typing import Any

from dynakv.listing import MAX_LIMIT

JSON = "application/json"
ERROR_STATUSES = {
    "400": "invalid_request: a bad bucket, key, parameter, context or body",
    "408": "request_timeout: the body did not arrive within request_read_timeout",
    "413": "value_too_large: a body above the bucket's max_value_bytes",
    "503": "unavailable: too few replicas answered (needed, got)",
    "504": "timeout: the node did not answer in time",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: _json(_ref("Error"), ERROR_STATUSES[s]) for s in statuses}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


BUCKET = _path("bucket", "1-255 bytes of UTF-8, no NUL")
KEY = _path("key", "1-1024 bytes of UTF-8")
LEVEL = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]}
CONTEXT = {
    "name": "X-Dynakv-Context",
    "in": "header",
    "required": False,
    "description": "the context of the last read (url-safe base64)",
    "schema": {"type": "string"},
}
CONTEXT_OUT = {"X-Dynakv-Context": {"schema": {"type": "string"}}}
TTL = {
    "name": "X-Dynakv-TTL",
    "in": "header",
    "required": False,
    "description": "seconds the value lives (a positive number, at most 315360000: ten "
    "years); after that it reads as not found and is deleted in the background",
    "schema": {"type": "string"},
}
TTL_OUT = {
    "X-Dynakv-TTL": {
        "description": "seconds the value has left to live (absent: it does not expire)",
        "schema": {"type": "string"},
    }
}
ANY_BODY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
OBJECT = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "needed": {"type": "integer"},
            "got": {"type": "integer"},
        },
    },
    "Siblings": {
        "type": "object",
        "required": ["context", "siblings"],
        "properties": {
            "context": {"type": "string"},
            "siblings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["value_b64", "content_type"],
                    "properties": {
                        "value_b64": {"type": "string"},
                        "content_type": {"type": "string"},
                        "ttl": {"type": "number", "description": "seconds left to live"},
                    },
                },
            },
        },
    },
    "KeyPage": {
        "type": "object",
        "required": ["keys", "cursor"],
        "properties": {
            "keys": {"type": "array", "items": {"type": "string"}},
            "cursor": {"type": ["string", "null"]},
            "unreachable": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Replica": {
        "type": "object",
        "required": ["siblings", "tombstones", "context", "version_vector"],
        "properties": {
            "siblings": {"type": "array", "items": OBJECT},
            "tombstones": {"type": "integer"},
            "context": {"type": "string"},
            "version_vector": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "BucketProps": {
        "type": "object",
        "description": "n, r, w, policy, max_value_bytes, datacenters: the ones to change",
        "additionalProperties": {
            "oneOf": [
                {"type": "integer"},
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "integer"}},
            ]
        },
    },
    "Bucket": {
        "type": "object",
        "required": ["bucket", "type", "n", "r", "w", "policy", "max_value_bytes"],
        "properties": {
            "bucket": {"type": "string"},
            "type": {"type": "string"},
            "n": {"type": "integer"},
            "r": LEVEL,
            "w": LEVEL,
            "policy": {"type": "string", "enum": ["siblings", "lww"]},
            "max_value_bytes": {"type": "integer"},
        },
    },
}


def _kv() -> dict[str, Any]:
    get_answers = {
        "200": {
            "description": "the one live value (body), its context in X-Dynakv-Context",
            "headers": {**CONTEXT_OUT, **TTL_OUT},
            "content": ANY_BODY,
        },
        "300": _json(_ref("Siblings"), "several concurrent values"),
        "404": _json(_ref("Error"), "no live value (a context if tombstones exist)"),
        **_errors("400", "503", "504"),
    }
    written = {
        "204": {"description": "written; the new context", "headers": CONTEXT_OUT},
        **_errors("400", "408", "413", "503", "504"),
    }
    r = _query("r", "read quorum: a number or one, quorum, all, local_one, ...", LEVEL)
    w = _query("w", "write quorum: a number or a level name", LEVEL)
    return {
        "parameters": [BUCKET, KEY],
        "get": {"operationId": "get", "parameters": [r], "responses": get_answers},
        "put": {
            "operationId": "put",
            "parameters": [w, CONTEXT, TTL],
            "requestBody": {"required": False, "content": ANY_BODY},
            "responses": written,
        },
        "delete": {"operationId": "delete", "parameters": [w, CONTEXT], "responses": written},
    }


def _list_keys() -> dict[str, Any]:
    return {
        "parameters": [BUCKET],
        "get": {
            "operationId": "listKeys",
            "parameters": [
                {
                    **_query("list", "what to list", {"type": "string", "enum": ["keys"]}),
                    "required": True,
                },
                _query("cursor", "the cursor of the previous page"),
                _query(
                    "limit",
                    "keys per page",
                    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                ),
            ],
            "responses": {"200": _json(_ref("KeyPage"), "a page of keys"), **_errors("400")},
        },
    }


def _simple(operation: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "responses": {"200": _json(schema, description)},
        }
    }


def _html(operation: str, description: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "responses": {
                "200": {
                    "description": description,
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this node's HTTP API."""
    bucket_answer = {"200": _json(_ref("Bucket"), "the bucket's props now"), **_errors("400")}
    paths: dict[str, Any] = {
        "/v1/kv/{bucket}/{key}": _kv(),
        "/v1/kv/{bucket}": _list_keys(),
        "/v1/replica/{bucket}/{key}": {
            "parameters": [BUCKET, KEY],
            "get": {
                "operationId": "replica",
                "responses": {
                    "200": _json(_ref("Replica"), "this node's own copy"),
                    "404": _json(_ref("Error"), "this node holds no copy"),
                    **_errors("400"),
                },
            },
        },
        "/v1/buckets": _simple("bucketTypes", "the cluster's bucket types", OBJECT),
        "/v1/buckets/{bucket}": {
            "parameters": [BUCKET],
            "get": {"operationId": "bucket", "responses": bucket_answer},
            "put": {
                "operationId": "changeBucket",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("BucketProps")}},
                },
                "responses": {**bucket_answer, **_errors("408", "413", "503", "504")},
            },
        },
        "/v1/status": _simple("status", "this node's status", OBJECT),
        "/v1/cluster": _simple("cluster", "members, ring and replication", OBJECT),
        "/v1/repair": {
            "post": {
                "operationId": "repair",
                "parameters": [
                    _query("partition", "one partition, or -1: all", {"type": "integer"})
                ],
                "responses": {
                    "200": _json(OBJECT, "exchanges, keys_pushed, keys_pulled"),
                    **_errors("400", "503", "504"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": _html("console", "the console page (runtime/console.py)"),
        "/console/{file}": {
            "parameters": [_path("file", "index.html, console.js or console.css")],
            "get": {
                "operationId": "console_file",
                "responses": {
                    "200": {
                        "description": "one of the console page's files",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _json(_ref("Error"), "not_found: not one of the page's files"),
                },
            }
        },
        "/v1/console": {
            "get": {
                "operationId": "console_cluster",
                "parameters": [
                    _query(
                        "timeout",
                        "seconds to wait for each member, 0.1-10 (default 2)",
                        {"type": "number", "minimum": 0.1, "maximum": 10},
                    )
                ],
                "responses": {
                    "200": _json(OBJECT, "every member's report and what the page shows"),
                    **_errors("400"),
                },
            }
        },
        "/v1/console/node": _simple("console_node", "this node's status and load", OBJECT),
        "/openapi.json": _simple("openapi", "this document", OBJECT),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "dynakv HTTP API", "version": "1"},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
