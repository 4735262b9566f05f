"""Fixtures starting real dynakv processes; teardown stops them by PID even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import ProcessCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A shared 3-node cluster for tests that do not kill nodes."""
    procs = ProcessCluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A 3-node cluster of its own, for tests that kill and restart nodes."""
    procs = ProcessCluster(tmp_path, 3)
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()
