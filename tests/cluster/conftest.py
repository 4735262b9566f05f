"""Fixtures starting real dynakv processes; teardown stops them by PID even when a test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dynakv.config import SECRET_FILE_ENV
from tests.cluster import secure_mode
from tests.cluster.harness import ProcessCluster


@contextmanager
def _security_mode(mode: str, root: Path) -> Iterator[str]:
    """The environment of `mode` while the context lasts (files made under `root`): "open"
    sets nothing; "secret" sets DYNAKV_CLUSTER_SECRET_FILE, which every node process
    inherits, so peers run the HMAC handshake while clients change nothing; "secure" turns
    on harness's secure mode (secure_mode.py): nodes started by the harness get the secret,
    TLS on every port and users, and its helpers (http, Client, AsyncClient, the RESP client,
    the CLI through DYNAKV_CACERT/USER/PASSWORD, the cart client) use the CA and an admin."""
    if mode == "open":
        yield mode
        return
    if mode == "secret":
        secret = root / "cluster.secret"
        secret.write_text("a-cluster-secret-for-the-tests-0123456789\n")
        secret.chmod(0o600)
        settings = {SECRET_FILE_ENV: str(secret)}
    elif mode == "secure":
        settings = secure_mode.set_up(root)
    else:
        raise ValueError(f"unknown security mode {mode!r}")
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield mode
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def security(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The security mode of the nodes the module's tests start (see _security_mode). A
    module runs its tests open and secure with `pytestmark = harness.RUN_BOTH_WAYS` (the
    shared clusters below ask for this fixture); "secret" stays available as a parameter."""
    mode = getattr(request, "param", "open")
    with _security_mode(mode, tmp_path_factory.mktemp(mode)) as running:
        yield running


@pytest.fixture
def security_per_test(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """As `security` for one test: for a module whose other tests must not inherit the mode
    (a module-scoped mode stays set until the module ends). Parametrize it indirectly."""
    mode = getattr(request, "param", "open")
    with _security_mode(mode, tmp_path_factory.mktemp(mode)) as running:
        yield running


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
