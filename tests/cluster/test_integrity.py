"""Corrupt bytes of a stored value on disk: detected by its checksum, reported, repaired
from the other replicas, and the node keeps serving — for a value in its key's record
(format v1) and for a large value stored apart from it (format v2)."""

from __future__ import annotations

import base64
from collections.abc import Callable

from dynakv import Client
from dynakv.ring import key_digest
from dynakv.storage import open_lmdb
from dynakv.storage.engine import VALUES
from dynakv.storage.lmdb import LmdbEngine
from tests.cluster.harness import ProcessCluster, http, wait_for


def _damaged_then_repaired(
    cluster: ProcessCluster, key: str, value: bytes, damage: Callable[[LmdbEngine, bytes], None]
) -> None:
    """Write `value` on every replica, damage the second node's copy on disk while it is
    stopped, restart it: its copy reads as missing, a read at R=3 answers the value, and
    the copy is repaired from the others."""
    victim = cluster[1]
    with Client(cluster[0].node_addr) as client:
        client.put("safe", key, value, w=3)
    victim.stop()
    engine = open_lmdb(str(victim.data_dir))  # LMDB's own pages, whatever the node's engine
    try:
        damage(engine, key_digest("safe", key))
        engine.commit()
    finally:
        engine.close()
    victim.start()
    victim.wait_ready()
    cluster.wait_up(victim.name)

    assert http("GET", f"{victim.url}/v1/replica/safe/{key}").status == 404  # read as missing
    with Client(victim.node_addr) as client:
        assert client.get("safe", key, r=3).value == value
    url = f"{victim.url}/v1/replica/safe/{key}"
    wait_for(lambda: http("GET", url).status == 200, f"the repair of {key}", timeout=30)
    siblings = http("GET", url).json()["siblings"]
    assert [base64.b64decode(s["value_b64"]) for s in siblings] == [value]
    assert victim.status()["corrupt_records_found"] >= 1


def test_corrupt_value_on_disk_is_detected_and_repaired(fresh_cluster):
    def flip_inside_the_value(engine: LmdbEngine, digest: bytes) -> None:
        raw = bytearray(engine.get(digest))
        raw[raw.find(b"one hundred")] ^= 0x20  # "One hundred": one flipped bit in the value
        engine.put(digest, bytes(raw))

    _damaged_then_repaired(fresh_cluster, "deposit", b"one hundred coins", flip_inside_the_value)
    assert "corrupt_record" in fresh_cluster[1].log_path.read_text()


def test_a_corrupt_value_stored_apart_is_detected_when_read_and_repaired(fresh_cluster):
    def flip_inside_the_value_apart(engine: LmdbEngine, digest: bytes) -> None:
        assert len(engine.get(digest)) < 1024  # the record holds the versions only
        (vkey, stored), *_ = [kv for kv in engine.scan(digest, b"", VALUES) if kv[0][:16] == digest]
        raw = bytearray(stored)
        raw[len(raw) // 2] ^= 0x20
        engine.put(vkey, bytes(raw), VALUES)

    value = bytes(range(256)) * 1024  # 256 KiB: stored apart from its record (format v2)
    _damaged_then_repaired(fresh_cluster, "vault", value, flip_inside_the_value_apart)
