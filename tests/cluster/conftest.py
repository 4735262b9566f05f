"""Fixtures starting real dynakv processes; teardown stops them by PID even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv.config import SECRET_FILE_ENV
from tests.cluster.harness import ProcessCluster


@pytest.fixture(scope="module")
def security(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """How the nodes started meanwhile prove themselves to each other: "open" (no secret, as
    `make run`) or "secret" (every node process inherits DYNAKV_CLUSTER_SECRET_FILE, so peers
    run the HMAC handshake; clients need nothing). A module runs its tests both ways with
    `pytestmark = pytest.mark.parametrize("security", SECURITY, indirect=True, scope=
    "module")` and `usefixtures("security")`; the shared clusters below ask for it."""
    mode = getattr(request, "param", "open")
    if mode == "open":
        yield mode
        return
    secret = tmp_path_factory.mktemp("secret") / "cluster.secret"
    secret.write_text("a-cluster-secret-for-the-tests-0123456789\n")
    secret.chmod(0o600)
    before = os.environ.get(SECRET_FILE_ENV)
    os.environ[SECRET_FILE_ENV] = str(secret)
    try:
        yield mode
    finally:
        if before is None:
            os.environ.pop(SECRET_FILE_ENV, None)
        else:
            os.environ[SECRET_FILE_ENV] = before


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, security: str) -> Iterator[ProcessCluster]:
    """A shared 3-node cluster for tests that do not kill nodes."""
    procs = ProcessCluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path, security: str) -> Iterator[ProcessCluster]:
    """A 3-node cluster of its own, for tests that kill and restart nodes."""
    procs = ProcessCluster(tmp_path, 3)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()
