"""Export, import and backup against real processes: a cluster's keys (siblings, tombstones)
survive export, wipe and import; a backup taken while writes run restores every key
acknowledged before it, by the README's procedure; bad import lines are named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dynakv import Client
from tests.cluster.harness import ProcessCluster


def dynakv(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dynakv", *args], input=stdin, capture_output=True, timeout=120
    )


def contents(client: Client, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[bytes]]:
    return {k: sorted(client.get(*k, r="all").values) for k in keys}


def test_export_wipe_import_gives_the_same_keys_values_and_siblings(tmp_path: Path) -> None:
    for part in ("first", "second"):
        (tmp_path / part).mkdir()
    first = ProcessCluster(tmp_path / "first", 3)
    try:
        first.start()
        with Client(first.node_addrs) as client:
            for i in range(200):
                client.put("plain", f"k{i}", f"value {i}".encode(), content_type="text/plain")
            client.put("carts", "alice", b"apple")
            client.put("carts", "alice", b"pear")  # blind: a sibling
            client.put("carts", "bob", b"bread")
            client.delete("carts", "bob")  # tombstone only: not exported
            client.put("carts", "carol", b"cheese")
            client.delete("carts", "carol")
            client.put("carts", "carol", b"cake")  # blind: beside the tombstone, exported too
            keys = [("plain", f"k{i}") for i in range(200)]
            keys += [("carts", "alice"), ("carts", "carol")]
            before = contents(client, keys)
            alice_context = client.get("carts", "alice").context
        assert len(before[("carts", "alice")]) == 2
        exported = dynakv("export", "--node", first[0].node_addr, "--no-progress")
        assert exported.returncode == 0, exported.stderr
        lines = [json.loads(line) for line in exported.stdout.decode().splitlines()]
        assert sorted((x["bucket"], x["key"]) for x in lines) == sorted(keys)  # each once
        alice = next(x for x in lines if x["key"] == "alice")
        assert alice["context"] == alice_context
        only_carts = dynakv("export", "--node", first[1].node_addr, "--bucket", "carts")
        assert len(only_carts.stdout.splitlines()) == 2
    finally:
        first.stop()

    second = ProcessCluster(tmp_path / "second", 3)  # empty disks: the wiped cluster
    try:
        second.start()
        dump = tmp_path / "dump.jsonl"
        dump.write_bytes(exported.stdout)
        imported = dynakv("import", str(dump), "--node", second[2].node_addr, "--no-progress")
        assert imported.returncode == 0, imported.stderr
        with Client(second.node_addrs) as client:
            assert contents(client, keys) == before
            assert not client.get("carts", "bob").values
            # The exported context still resolves the siblings it covered, and only them.
            client.put("carts", "alice", b"apple,pear", context=alice_context)
            assert client.get("carts", "alice", r="all").values == [b"apple,pear"]
            assert client.get("plain", "k7").content_types == ["text/plain"]
        again = dynakv("import", str(dump), "--node", second[0].node_addr, "--no-progress")
        assert again.returncode == 0  # idempotent: states already held merge to themselves
        with Client(second.node_addrs) as client:
            assert client.get("carts", "alice", r="all").values == [b"apple,pear"]
    finally:
        second.stop()


def test_import_names_a_bad_line_and_writes_nothing(cluster: ProcessCluster, tmp_path: Path):
    good = {"bucket": "imp", "key": "a", "context": "", "siblings": []}
    dump = tmp_path / "bad.jsonl"
    dump.write_text(json.dumps(good) + "\n{not json\n")
    result = dynakv("import", str(dump), "--node", cluster[0].node_addr)
    assert result.returncode != 0
    assert b"line 1" in result.stderr and b"siblings" in result.stderr
    dump.write_text('{"bucket": "", "key": "k", "context": "", "siblings": []}\n')
    result = dynakv("import", str(dump), "--node", cluster[0].node_addr)
    assert b"line 1: bucket must be 1-255 bytes" in result.stderr, result.stderr
    dump.write_text("\n" + '{"bucket": "b\\u0000x", "key": "k"}\n')
    result = dynakv("import", str(dump), "--node", cluster[0].node_addr)
    assert b"line 2: bucket must not contain NUL" in result.stderr, result.stderr
    dump.write_text('{"bucket": "b", "key": "k", "context": "", "siblings": [{}]}\n[1\n')
    result = dynakv("import", str(dump), "--node", cluster[0].node_addr)
    assert b"line 1" in result.stderr and b"nothing imported" in result.stderr


@pytest.mark.parametrize("engine", ["wal", "lmdb"])
def test_backup_while_writing_then_readme_restore_brings_every_acknowledged_key_back(
    tmp_path: Path, engine: str
) -> None:
    (tmp_path / "live").mkdir()
    config = tmp_path / "engine.toml"
    config.write_text(f'engine = "{engine}"\n')
    procs = ProcessCluster(tmp_path / "live", 3, ["--config", str(config)])
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with Client(procs.node_addrs) as client:
            i = 0
            while not stop.is_set():
                client.put("orders", f"o{i}", b"x" * 100)
                acknowledged.append(f"o{i}")
                i += 1

    try:
        procs.start()
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while len(acknowledged) < 300:
                stop.wait(0.05)
            before = list(acknowledged)  # each acknowledged before any backup began
            for node in procs.nodes:
                target = str(tmp_path / "bk" / node.name)
                result = dynakv("backup", "--node", node.node_addr, target)
                assert result.returncode == 0, result.stderr
        finally:
            stop.set()
            thread.join()
        assert len(acknowledged) > len(before)  # writes ran through the backups
        # The README's restore: stop every node, replace each data directory by its backup.
        procs.stop()
        for node in procs.nodes:
            shutil.rmtree(node.data_dir)
            shutil.copytree(tmp_path / "bk" / node.name, node.data_dir)
        for node in procs.nodes:
            node.start()
        for node in procs.nodes:
            node.wait_ready()
        with Client(procs.node_addrs) as client:
            missing = [k for k in before if client.get("orders", k).values != [b"x" * 100]]
        assert missing == []
    finally:
        stop.set()
        procs.stop()
