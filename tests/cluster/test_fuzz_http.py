"""schemathesis against a live node's HTTP API (of the shared 3-node cluster: conftest.py),
from the node's own /openapi.json: no answer is a 5xx, and every answer conforms to the
document (status, content type, body schema).

A short, derandomized run here (FUZZ_HTTP_EXAMPLES per operation, 25 unless set); `make
fuzz` runs it longer. A failure prints schemathesis's report, with a curl command for each
case that broke a check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.harness import ProcessCluster, http

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return [found]


def test_the_http_api_answers_no_5xx_and_as_documented(cluster: ProcessCluster, tmp_path) -> None:
    examples = os.environ.get("FUZZ_HTTP_EXAMPLES", "25")
    url = f"{cluster[0].url}/openapi.json"
    command = [
        *schemathesis(), "run", url,
        "--checks", CHECKS,
        "--max-examples", examples,
        "--seed", os.environ.get("FUZZ_HTTP_SEED", "1"),
        "--generation-deterministic",  # the same cases every run, no example database
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-4000:]
    assert http("GET", f"{cluster[0].url}/v1/status").status == 200  # still serving


def test_a_context_of_bad_utf8_is_a_400_not_a_500(cluster: ProcessCluster) -> None:
    """Found by the context fuzzer (tests/unit/test_fuzz_context.py): this header made the
    node answer 500."""
    headers = {"X-Dynakv-Context": "kZKi__4B"}
    reply = http("PUT", f"{cluster[0].url}/v1/kv/b/k", b"v", headers)
    assert reply.status == 400, reply
    assert reply.json()["error"] == "invalid_request"
    assert "not UTF-8" in reply.json()["message"]
