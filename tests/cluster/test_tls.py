"""TLS on the node, HTTP and Redis ports (issue 19 §2), on real processes: certificates from
`dynakv cert`, a cluster joined over mutual TLS (with the cluster secret too), curl,
redis-cli, the Python clients and the CLI with the right CA, refusals with a wrong one, and a
node-port peer without a certificate of the cluster CA refused."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dynakv.client import AsyncClient, Client
from dynakv.errors import Unavailable
from dynakv.messages import ErrorReply, Hello
from tests.cluster.harness import ProcessCluster, free_port
from tests.cluster.peer_tools import (
    RawPeer,
    join_request,
    member_names,
    new_secret,
    refusals,
    replica_absent,
    replica_put,
    write_secret_config,
)

MEMBERS = ["node1", "node2", "node3"]


@dataclass
class TlsCluster:
    procs: ProcessCluster
    certs: Path  # ca.pem and nodeN.pem / .key
    other: Path  # another CA, and a node certificate it signed

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.pem")

    @property
    def wrong_ca(self) -> str:
        return str(self.other / "ca.pem")


def make_certs(directory: Path, *names: str) -> None:
    command = [sys.executable, "-m", "dynakv", "cert", "--out", str(directory)]
    for name in names:
        command += ["--node", name]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    root = tmp_path_factory.mktemp("tls")
    make_certs(root / "certs", *MEMBERS)
    make_certs(root / "other", "node1")
    procs = ProcessCluster(root, 3)
    secret = new_secret()
    for node in procs.nodes:
        tls_lines = (
            f'tls_cert = "{root}/certs/{node.name}.pem"\n'
            f'tls_key = "{root}/certs/{node.name}.key"\n'
            f'tls_ca = "{root}/certs/ca.pem"\n'
        )
        config = write_secret_config(root / "conf", node.name, [secret], tls_lines)
        node.extra_args = ["--config", str(config), "--resp", f"127.0.0.1:{free_port()}"]
        node.ca_file = str(root / "certs" / "ca.pem")
    try:
        procs.start()
        yield TlsCluster(procs, root / "certs", root / "other")
    finally:
        procs.stop()


def resp_port(cluster: TlsCluster, index: int = 0) -> str:
    args = cluster.procs[index].extra_args
    return args[args.index("--resp") + 1].rsplit(":", 1)[1]


def test_dynakv_cert_makes_a_ca_and_node_certificates_with_private_keys(
    tls_cluster: TlsCluster,
) -> None:
    for name in ("ca", *MEMBERS):
        assert (tls_cluster.certs / f"{name}.pem").exists()
        mode = (tls_cluster.certs / f"{name}.key").stat().st_mode
        assert not mode & (stat.S_IRWXG | stat.S_IRWXO)  # 0600


def test_the_cluster_joins_over_mutual_tls_and_replicates(tls_cluster: TlsCluster) -> None:
    procs = tls_cluster.procs
    assert all(member_names(n) == MEMBERS for n in procs.nodes)
    with Client(procs.node_addrs, tls=tls_cluster.ca) as client:
        client.put("tls", "replicated", b"v", w=3)
    assert not replica_absent(procs.nodes, "tls", "replicated")  # on node1 at least
    assert all(
        not replica_absent([n], "tls", "replicated") for n in procs.nodes
    )  # and on every replica (N=3)


def test_curl_with_the_right_ca_writes_and_reads_over_https(tls_cluster: TlsCluster) -> None:
    url = f"{tls_cluster.procs[0].url}/v1/kv/tls/by-curl"
    ca = ["--cacert", tls_cluster.ca]
    put = subprocess.run(
        ["curl", "-sS", "-f", *ca, "-X", "PUT", "--data-binary", "hello", url],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    get = subprocess.run(["curl", "-sS", "-f", *ca, url], capture_output=True, timeout=60)
    assert get.returncode == 0 and get.stdout == b"hello", get.stderr


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
def test_redis_cli_with_the_right_ca_writes_and_reads_over_tls(tls_cluster: TlsCluster) -> None:
    base = ["redis-cli", "--tls", "--cacert", tls_cluster.ca, "-h", "127.0.0.1"]
    port = ["-p", resp_port(tls_cluster)]
    put = subprocess.run([*base, *port, "SET", "r", "v1"], capture_output=True, timeout=60)
    assert put.stdout.strip() == b"OK", put.stderr
    got = subprocess.run([*base, *port, "GET", "r"], capture_output=True, timeout=60)
    assert got.stdout.strip() == b"v1", got.stderr


def test_the_python_clients_and_the_cli_with_the_right_ca(tls_cluster: TlsCluster) -> None:
    procs = tls_cluster.procs
    with Client(procs[1].node_addr, tls=tls_cluster.ca) as client:
        client.put("tls", "by-client", b"blocking")
        assert client.get("tls", "by-client").value == b"blocking"
        assert client.get("tls", "by-client").value == b"blocking"  # a kept TLS socket

    async def use_async() -> bytes | None:
        context = ssl.create_default_context(cafile=tls_cluster.ca)
        async with AsyncClient(procs[2].node_addr, tls=context) as client:
            await client.put("tls", "by-async", b"async")
            return (await client.get("tls", "by-async")).value

    assert asyncio.run(use_async()) == b"async"
    cli = [sys.executable, "-m", "dynakv", "get", "tls", "by-async"]
    cli += ["--node", procs[0].node_addr, "--cacert", tls_cluster.ca]
    result = subprocess.run(cli, capture_output=True, timeout=60)
    assert result.returncode == 0 and result.stdout == b"async\n", result.stderr


def test_cluster_commands_reach_the_http_port_over_https_with_cacert(
    tls_cluster: TlsCluster,
) -> None:
    first = tls_cluster.procs[0]
    command = [sys.executable, "-m", "dynakv", "cluster", "status", "--json"]
    command += ["--node", first.node_addr, "--cacert", tls_cluster.ca]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert sorted(m["name"] for m in view["members"]) == MEMBERS
    assert all(status is not None for status in view["member_status"].values())


def test_a_wrong_ca_is_refused_on_every_port(tls_cluster: TlsCluster) -> None:
    first = tls_cluster.procs[0]
    wrong = tls_cluster.wrong_ca
    curl = subprocess.run(
        ["curl", "-sS", "--cacert", wrong, f"{first.url}/v1/status"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert curl.returncode != 0 and b"certificate" in curl.stderr.lower()
    if shutil.which("redis-cli"):
        redis = subprocess.run(
            ["redis-cli", "--tls", "--cacert", wrong, "-h", "127.0.0.1", "-p",
             resp_port(tls_cluster), "PING"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert b"PONG" not in redis.stdout and b"certificate verify failed" in redis.stderr
    with (
        pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"),
        Client(first.node_addr, tls=wrong, route=False) as client,
    ):
        client.get("tls", "anything")
    plain = subprocess.run(
        ["curl", "-sS", f"http://{first.http_addr}/v1/status"], capture_output=True, timeout=60
    )
    assert plain.returncode != 0 or not plain.stdout.startswith(b"{")  # no plain HTTP


def test_a_node_port_peer_without_a_certificate_of_the_cluster_ca_is_refused(
    tls_cluster: TlsCluster,
) -> None:
    procs = tls_cluster.procs
    first = procs[0]
    # A TLS client without a certificate may send requests, not a peer's Hello.
    before = refusals(first, "no_certificate")
    no_cert = RawPeer(first.node_addr, ssl.create_default_context(cafile=tls_cluster.ca))
    no_cert.send(Hello("intruder", "dynakv"), replica_put("tls", "k-nocert", b"x"))
    assert [type(r) for r in no_cert.read_until_closed()] == [ErrorReply]
    assert refusals(first, "no_certificate") == before + 1
    # One signed by another CA does not get past the TLS handshake.
    other = ssl.create_default_context(cafile=tls_cluster.ca)
    other.load_cert_chain(tls_cluster.other / "node1.pem", tls_cluster.other / "node1.key")
    foreign = RawPeer(first.node_addr, other)
    try:
        foreign.send(Hello("intruder", "dynakv"), replica_put("tls", "k-foreign", b"x"))
        foreign.send(join_request())
        assert foreign.read_until_closed() == []
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass  # refused while sending: as refused
    assert replica_absent(procs.nodes, "tls", "k-nocert")
    assert replica_absent(procs.nodes, "tls", "k-foreign")
    assert all(member_names(n) == MEMBERS for n in procs.nodes)


def test_tls_settings_that_do_not_go_together_stop_the_node_with_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "half.toml"
    config.write_text('[security]\ntls_cert = "/nowhere/node.pem"\n')
    command = [sys.executable, "-m", "dynakv", "serve", "--config", str(config)]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert b"tls_cert, tls_key and tls_ca go together" in result.stderr
    config.write_text(
        f'[security]\ntls_cert = "{tmp_path}/no.pem"\ntls_key = "{tmp_path}/no.key"\n'
        f'tls_ca = "{tmp_path}/no-ca.pem"\n'
    )
    command += ["--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert b"[security] TLS files" in result.stderr
    assert not (tmp_path / "d").exists()  # stopped before its store was opened
