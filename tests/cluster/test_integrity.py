"""Corrupt bytes of a stored value on disk: detected by its checksum, reported, repaired
from the other replicas, and the node keeps serving."""

from __future__ import annotations

import base64
import time

from dynakv import Client
from dynakv.ring import key_digest
from dynakv.storage.engine import VALUES
from dynakv.storage.lmdb import LmdbEngine
from tests.cluster.harness import http


def test_corrupt_value_on_disk_is_detected_and_repaired(fresh_cluster):
    victim = fresh_cluster[1]
    with Client(fresh_cluster[0].node_addr) as client:
        client.put("safe", "deposit", b"one hundred coins", w=3)
    victim.stop()
    engine = LmdbEngine(victim.data_dir)
    try:
        digest = key_digest("safe", "deposit")
        raw = bytearray(engine.get(digest))
        position = raw.find(b"one hundred")
        raw[position] ^= 0x20  # "One hundred": one flipped bit inside the value
        engine.put(digest, bytes(raw))
        engine.commit()
    finally:
        engine.close()
    victim.start()
    victim.wait_ready()
    fresh_cluster.wait_up(victim.name)

    assert http("GET", f"{victim.url}/v1/replica/safe/deposit").status == 404  # read as missing
    with Client(victim.node_addr) as client:
        assert client.get("safe", "deposit", r=3).value == b"one hundred coins"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = http("GET", f"{victim.url}/v1/replica/safe/deposit")
        if reply.status == 200:
            break
        time.sleep(0.1)
    values = [base64.b64decode(s["value_b64"]) for s in reply.json()["siblings"]]
    assert values == [b"one hundred coins"]
    assert victim.status()["corrupt_records_found"] >= 1
    assert "corrupt_record" in victim.log_path.read_text()


def test_a_corrupt_value_stored_apart_is_detected_when_read_and_repaired(fresh_cluster):
    value = bytes(range(256)) * 1024  # 256 KiB: stored apart from its record (format v2)
    victim = fresh_cluster[1]
    with Client(fresh_cluster[0].node_addr) as client:
        client.put("safe", "vault", value, w=3)
    victim.stop()
    engine = LmdbEngine(victim.data_dir)
    try:
        digest = key_digest("safe", "vault")
        assert len(engine.get(digest)) < 1024  # the record holds the versions only
        (vkey, stored), *_ = [kv for kv in engine.scan(digest, b"", VALUES) if kv[0][:16] == digest]
        raw = bytearray(stored)
        raw[len(raw) // 2] ^= 0x20
        engine.put(vkey, bytes(raw), VALUES)
        engine.commit()
    finally:
        engine.close()
    victim.start()
    victim.wait_ready()
    fresh_cluster.wait_up(victim.name)

    assert http("GET", f"{victim.url}/v1/replica/safe/vault").status == 404  # read as missing
    with Client(victim.node_addr) as client:
        assert client.get("safe", "vault", r=3).value == value
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reply = http("GET", f"{victim.url}/v1/replica/safe/vault")
        if reply.status == 200:
            break
        time.sleep(0.1)
    assert [base64.b64decode(s["value_b64"]) for s in reply.json()["siblings"]] == [value]
    assert victim.status()["corrupt_records_found"] >= 1
