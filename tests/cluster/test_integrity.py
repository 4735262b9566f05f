"""Corrupt bytes of a stored value on disk: detected by its checksum, reported, repaired
from the other replicas, and the node keeps serving."""

from __future__ import annotations

import base64
import time

from dynakv import Client
from dynakv.ring import key_digest
from dynakv.storage import open_lmdb
from tests.cluster.harness import http


def test_corrupt_value_on_disk_is_detected_and_repaired(fresh_cluster):
    victim = fresh_cluster[1]
    with Client(fresh_cluster[0].node_addr) as client:
        client.put("safe", "deposit", b"one hundred coins", w=3)
    victim.stop()
    engine = open_lmdb(str(victim.data_dir))  # LMDB's own pages, whatever the node's engine
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
