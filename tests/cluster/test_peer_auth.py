"""Peers prove they hold the cluster secret (issue 19 §1), on real processes: a cluster with
the secret works; a node without it, with a wrong one, and a replayed handshake are refused,
write no replica and change no membership; the secret rotates in three rolling restarts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dynakv.client import Client
from dynakv.messages import ErrorReply, Hello, HelloProof, ReplicaPutReply
from dynakv.peer_auth import Handshake, NonceMemory
from tests.cluster.harness import NodeProcess, ProcessCluster, local_node, wait_for
from tests.cluster.peer_tools import (
    RawPeer,
    RecordingProxy,
    join_request,
    member_names,
    new_secret,
    refusal_lines,
    refusals,
    replica_absent,
    replica_put,
    split_frames,
    write_secret_config,
)

SECRET = new_secret()
MEMBERS = ["node1", "node2", "node3"]


def secret_cluster(root: Path, lines: list[str]) -> ProcessCluster:
    procs = ProcessCluster(root, 3)
    for node in procs.nodes:
        node.extra_args = ["--config", str(write_secret_config(root / "conf", node.name, lines))]
    return procs


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    procs = secret_cluster(tmp_path_factory.mktemp("secured"), [SECRET])
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


def extra_node(root: Path, name: str, config: Path | None) -> NodeProcess:
    return local_node(root, name, ["--config", str(config)] if config else None)


def assert_refused_and_harmless(
    procs: ProcessCluster, reason: str, before: float, lines_before: int, key: str
) -> None:
    """Node 1 counted one refusal for `reason` with one log line; the key is on no node and
    the membership is what it was."""
    first = procs[0]
    wait_for(lambda: refusals(first, reason) >= before + 1, f"a {reason} refusal on node1")
    assert refusals(first, reason) == before + 1
    assert refusal_lines(first) == lines_before + 1
    assert replica_absent(procs.nodes, "sec", key)
    assert all(member_names(n) == MEMBERS for n in procs.nodes)


def test_a_cluster_with_the_secret_joins_replicates_and_reads_back(
    secured: ProcessCluster,
) -> None:
    assert all(member_names(n) == MEMBERS for n in secured.nodes)
    with Client(secured.node_addrs) as client:
        client.put("sec", "hello", b"world", w=3)
        assert client.get("sec", "hello", r=3).value == b"world"
    assert not replica_absent(secured.nodes[:1], "sec", "hello")
    assert all(refusals(n, "bad_proof") == 0 for n in secured.nodes)


def test_a_proven_raw_peer_can_write_a_replica(secured: ProcessCluster) -> None:
    """The control for the refusals below: the same frames, after the right proof, land."""
    peer = RawPeer(secured[0].node_addr)
    mine = Handshake((SECRET.encode(),), "tester", "dynakv", b"\x11" * 32, NonceMemory())
    peer.send(mine.start())
    challenge = peer.read()
    assert isinstance(challenge, Hello) and challenge.name == "node1"
    peer.send(*mine.on_hello(challenge).send)
    answer = peer.read()
    assert isinstance(answer, HelloProof) and mine.on_proof(answer).peer == "node1"
    peer.send(replica_put("sec", "control", b"proven"))
    assert isinstance(peer.read(), ReplicaPutReply)
    peer.close()
    assert not replica_absent(secured.nodes[:1], "sec", "control")


def test_a_peer_without_the_secret_is_refused_and_cannot_write(secured: ProcessCluster) -> None:
    first = secured[0]
    before, lines = refusals(first, "no_proof"), refusal_lines(first)
    peer = RawPeer(first.node_addr)
    peer.send(Hello("intruder", "dynakv"), replica_put("sec", "k-none", b"x"), join_request())
    replies = peer.read_until_closed()
    assert [type(r) for r in replies] == [ErrorReply]
    assert_refused_and_harmless(secured, "no_proof", before, lines, "k-none")


def test_a_peer_with_a_wrong_secret_is_refused_and_cannot_write(secured: ProcessCluster) -> None:
    first = secured[0]
    before, lines = refusals(first, "bad_proof"), refusal_lines(first)
    peer = RawPeer(first.node_addr)
    wrong = Handshake((new_secret().encode(),), "intruder", "dynakv", b"\x22" * 32, NonceMemory())
    peer.send(wrong.start())
    challenge = peer.read()
    assert isinstance(challenge, Hello)
    peer.send(*wrong.on_hello(challenge).send, replica_put("sec", "k-wrong", b"x"), join_request())
    assert [type(r) for r in peer.read_until_closed()] == [ErrorReply]
    assert_refused_and_harmless(secured, "bad_proof", before, lines, "k-wrong")


def test_a_client_connection_cannot_send_peer_messages_but_can_send_requests(
    secured: ProcessCluster,
) -> None:
    first = secured[0]
    before, lines = refusals(first, "not_a_peer"), refusal_lines(first)
    peer = RawPeer(first.node_addr)
    peer.send(replica_put("sec", "k-client", b"x"), join_request())
    assert [type(r) for r in peer.read_until_closed()] == [ErrorReply]
    assert_refused_and_harmless(secured, "not_a_peer", before, lines, "k-client")
    with Client(first.node_addr, route=False) as client:  # plain client requests still work
        client.put("sec", "by-client", b"ok")
        assert client.get("sec", "by-client").value == b"ok"


def test_real_nodes_without_or_with_a_wrong_secret_cannot_join(
    secured: ProcessCluster, tmp_path: Path
) -> None:
    first = secured[0]
    cases = [
        ("open", None, "no_proof"),
        ("wrong", write_secret_config(tmp_path / "conf", "wrong", [new_secret()]), "bad_proof"),
    ]
    for name, config, reason in cases:
        before = refusals(first, reason)
        node = extra_node(tmp_path, name, config)
        try:
            node.start(join=first.node_addr)
            assert node.proc is not None
            assert node.proc.wait(timeout=60) != 0  # the refused join stops it
        finally:
            node.stop()
        assert refusals(first, reason) >= before + 1
        assert "join refused" in node.log_path.read_text()
        assert all(member_names(n) == MEMBERS for n in secured.nodes)


def test_a_recorded_handshake_replayed_is_refused_and_cannot_write(
    secured: ProcessCluster, tmp_path: Path
) -> None:
    """Tap a real node's handshake as it joins, then play it again from a raw socket with a
    replica write after it."""
    first = secured[0]
    proxy = RecordingProxy(first.node_addr)
    config = write_secret_config(tmp_path / "conf", "tapped", [SECRET])
    node = extra_node(tmp_path, "tapped", config)
    try:
        node.start(join=proxy.addr)
        wait_for(lambda: len(split_frames(proxy.recorded)) >= 2, "the tapped handshake")
        wait_for(lambda: "tapped" in member_names(first), "the tapped node's join")
    finally:
        node.stop()
        proxy.stop()
    hello, proof = split_frames(proxy.recorded)[:2]
    members = member_names(first)
    before, lines = refusals(first, "replayed"), refusal_lines(first)
    peer = RawPeer(first.node_addr)
    peer.send_raw(hello + proof)
    peer.send(replica_put("sec", "k-replay", b"x"), join_request())
    assert [type(r) for r in peer.read_until_closed()] == [ErrorReply]
    wait_for(lambda: refusals(first, "replayed") >= before + 1, "a replayed refusal")
    assert refusal_lines(first) == lines + 1
    assert replica_absent(secured.nodes, "sec", "k-replay")
    assert member_names(first) == members


def test_rotation_add_the_new_secret_second_move_it_first_drop_the_old(tmp_path: Path) -> None:
    old, new = new_secret(), new_secret()
    procs = secret_cluster(tmp_path, [old])
    try:
        procs.start()
        for step, lines in enumerate(([old, new], [new, old], [new]), 1):
            for node in procs.nodes:  # a rolling restart, one node at a time
                write_secret_config(tmp_path / "conf", node.name, lines)
                node.stop()
                node.start()
                node.wait_ready()
                procs.wait_up(node.name, timeout=60)
            procs.wait_members(3, timeout=60)
            with Client(procs.node_addrs) as client:
                client.put("sec", f"step{step}", b"v", w=3)
                assert client.get("sec", f"step{step}", r=3).value == b"v"
        assert all(refusals(n, "bad_proof") == 0 for n in procs.nodes)
        # the old secret is out: a node holding only it is refused
        stale = extra_node(tmp_path, "stale", write_secret_config(tmp_path / "s", "stale", [old]))
        try:
            stale.start(join=procs[0].node_addr)
            assert stale.proc is not None and stale.proc.wait(timeout=60) != 0
        finally:
            stale.stop()
        assert refusals(procs[0], "bad_proof") >= 1
    finally:
        procs.stop()
