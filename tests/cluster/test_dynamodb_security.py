"""The DynamoDB endpoint with `[security] authentication = true`, over real processes: boto3
signs with a user's access key (`dynakv user key create`), the node checks the SigV4
signature and the user's grants per table, with DynamoDB's own errors; failed logins from
one address are limited while other addresses are served; the failures are counted in
/metrics. And the endpoint over TLS, for boto3 and the aws CLI with the CA."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import client as http_client
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import SSLError

from dynakv import peer_credential
from dynakv.client import Client
from dynakv.messages import ClientUserChange
from tests.cluster.ddb_harness import error_of, make_table
from tests.cluster.harness import ProcessCluster, engine_setting, free_port, http, wait_for

PASSWORDS = {
    "admin": "adm1n-Secret-7a1c",
    "reader": "r3ader-Secret-22d0",
    "writer": "wr1ter-Secret-9e4b",
    "nobody": "n0body-Secret-c5f1",
}
BURST = 30  # failed logins an address may make before it is limited
TABLE = "orders"
CLUSTER_SECRET = "dynamodb-security-test-secret-0123456789"


@dataclass
class Keys:
    """A user's access key as `dynakv user key create` printed it."""

    key_id: str
    secret: str


@dataclass
class SecureDynamo:
    procs: ProcessCluster
    root: Path
    endpoints: list[str]
    resp_addrs: list[str]
    keys: dict[str, Keys] = field(default_factory=dict)

    def cli(self, *args: str, user: str | None = "admin") -> subprocess.CompletedProcess:
        env = {**os.environ, "DYNAKV_PASSWORD": PASSWORDS[user or "admin"]}
        argv = [sys.executable, "-m", "dynakv", *(["--user", user] if user else []), *args]
        argv += ["--node", self.procs[0].node_addr]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    def ddb(self, user: str | None, node: int = 0, secret: str | None = None) -> Any:
        """boto3's client signing with user's key (secret: another one instead)."""
        key = self.keys[user] if user else Keys("DKIAUNKNOWNKEY00000A", "x" * 40)
        return dynamo_client("http://" + self.endpoints[node], key.key_id, secret or key.secret)


def dynamo_client(url: str, key_id: str, secret: str, **extra: Any) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=url, region_name="eu-west-1",
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=60),
        **extra,
    )  # fmt: skip


def basic(user: str, password: str | None = None) -> dict[str, str]:
    pair = f"{user}:{PASSWORDS[user] if password is None else password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _answers(url: str, context: Any = None) -> bool:
    try:
        return http("GET", f"{url}/v1/status", context=context).status in (200, 401)
    except OSError:
        return False


def _secure_config(root: Path, more: str, name: str = "secure") -> Path:
    """A node config with users on, a cluster secret, and `more` lines of [security]."""
    secret = root / "cluster.secret"
    secret.write_text(CLUSTER_SECRET + "\n")
    secret.chmod(0o600)
    config = root / f"{name}.toml"
    config.write_text(
        f'{engine_setting()}[security]\nauthentication = true\ncluster_secret_file = "{secret}"\n'
        + more
    )
    return config


def _key_created(done: subprocess.CompletedProcess) -> Keys:
    assert done.returncode == 0, done.stderr
    key_id = re.search(r"aws_access_key_id = (\S+)", done.stdout)
    secret = re.search(r"aws_secret_access_key = (\S+)", done.stdout)
    assert key_id and secret, done.stdout
    return Keys(key_id.group(1), secret.group(1))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDynamo]:
    root = tmp_path_factory.mktemp("ddbsec")
    limits = f"failed_login_burst = {BURST}\nfailed_logins_per_minute = 0.5\n"
    config = _secure_config(root, limits)
    procs = ProcessCluster(root, 2, ["--config", str(config)])
    endpoints, resp = [], []
    for node in procs.nodes:
        endpoints.append(f"127.0.0.1:{free_port()}")
        resp.append(f"127.0.0.1:{free_port()}")
        node.extra_args += ["--dynamodb", endpoints[-1], "--resp", resp[-1]]
    try:
        for i, node in enumerate(procs.nodes):
            node.start(join=None if i == 0 else procs[0].node_addr)
            wait_for(lambda n=node: _answers(n.url), f"{node.name} to answer HTTP")
        secured = SecureDynamo(procs, root, endpoints, resp)
        for name, password in PASSWORDS.items():
            password_file = root / f"{name}.password"
            password_file.write_text(password)
            args = ["user", "add", name, "--password-file", str(password_file)]
            if name == "admin":  # the bootstrap rule: the first admin needs no credentials
                done = secured.cli(*args, "--admin", user=None)
            else:
                done = secured.cli(*args)
            assert done.returncode == 0, done.stderr
        for grant in (("reader", "read"), ("writer", "write")):
            done = secured.cli("user", "grant", grant[0], grant[1], TABLE, "--table")
            assert done.returncode == 0, done.stderr
        for name in PASSWORDS:
            secured.keys[name] = _key_created(secured.cli("user", "key", "create", name))
        for endpoint in endpoints:  # the keys' gossip has reached every node
            _wait_signed("127.0.0.9", endpoint, secured.keys["nobody"], 200, "the access keys")
        make_table(secured.ddb("admin"), TABLE, range_type=None)
        yield secured
    finally:
        procs.stop()


def _wait_signed(address: str, endpoint: str, key: Keys, status: int, what: str) -> None:
    """Until a request key signs, sent from address, gets status. Polls slowly: each refusal
    is a failed login of that address, which the node limits."""
    deadline = time.monotonic() + 60
    while _signed_from(address, endpoint, key)[0] != status:
        assert time.monotonic() < deadline, f"timed out waiting for {what} on {endpoint}"
        time.sleep(0.5)


# --- the signature and the grants --------------------------------------------------------------


def test_boto3_with_a_users_key_writes_and_reads_through_every_node(secure: SecureDynamo) -> None:
    writer, reader = secure.ddb("writer", node=1), secure.ddb("reader", node=0)
    wait_for(
        lambda: reader.describe_table(TableName=TABLE)["Table"]["TableStatus"] == "ACTIVE",
        "the table on node 0",
    )
    item = {"pk": {"S": "a"}, "n": {"N": "1"}}
    writer.put_item(TableName=TABLE, Item=item)
    got = reader.get_item(TableName=TABLE, Key={"pk": {"S": "a"}}, ConsistentRead=True)
    assert got["Item"] == item
    # A conditional write runs at the key's primary: sent to node 1 only, those whose primary
    # is node 0 are forwarded there, and node 0 checks the client's signature again.
    for i in range(16):
        writer.put_item(
            TableName=TABLE,
            Item={"pk": {"S": f"c{i}"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    assert _puts(secure.procs[0]) > 0
    assert "forwarding to" not in secure.procs[1].log_path.read_text()
    assert "orders" in secure.ddb("nobody").list_tables()["TableNames"]


def test_a_wrong_secret_is_an_invalid_signature(secure: SecureDynamo) -> None:
    ddb = secure.ddb("writer", secret="W" * 40)
    code, message = error_of(ddb.get_item, TableName=TABLE, Key={"pk": {"S": "a"}})
    assert code == "InvalidSignatureException"
    assert "signature we calculated does not match" in message


def test_an_unknown_key_is_an_unrecognized_client(secure: SecureDynamo) -> None:
    code, message = error_of(secure.ddb(None).list_tables)
    assert (code, message) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_an_unsigned_request_is_missing_its_token(secure: SecureDynamo) -> None:
    url = "http://" + secure.endpoints[0]
    ddb = boto3.client(
        "dynamodb", endpoint_url=url, region_name="eu-west-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )  # fmt: skip
    assert error_of(ddb.list_tables)[0] == "MissingAuthenticationTokenException"


def test_a_user_without_a_grant_is_denied_and_a_reader_cannot_put(secure: SecureDynamo) -> None:
    key = {"pk": {"S": "a"}}
    code, message = error_of(secure.ddb("nobody").get_item, TableName=TABLE, Key=key)
    assert code == "AccessDeniedException"
    assert "user/nobody is not authorized to perform: dynamodb:GetItem" in message
    assert "table/orders" in message
    reader = secure.ddb("reader")
    code, _ = error_of(reader.put_item, TableName=TABLE, Item={"pk": {"S": "r"}})
    assert code == "AccessDeniedException"
    code, _ = error_of(reader.delete_table, TableName=TABLE)
    assert code == "AccessDeniedException"
    writes = {TABLE: [{"PutRequest": {"Item": {"pk": {"S": "b"}}}}]}
    assert error_of(reader.batch_write_item, RequestItems=writes)[0] == "AccessDeniedException"
    assert reader.batch_get_item(RequestItems={TABLE: {"Keys": [key]}})["Responses"][TABLE]
    assert error_of(secure.ddb("writer").delete_table, TableName=TABLE)[0] == (
        "AccessDeniedException"
    )


def test_a_malformed_authorization_header_is_refused_and_the_node_serves_on(
    secure: SecureDynamo,
) -> None:
    conn = http_client.HTTPConnection(*secure.endpoints[0].split(":"), timeout=30)
    headers = {
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=garbage",
    }
    conn.request("POST", "/", body=b"{}", headers=headers)
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert reply.status == 400
    assert body["__type"].endswith("#IncompleteSignatureException")
    assert secure.ddb("admin").list_tables()["TableNames"]


def test_access_key_secrets_are_not_on_disk_in_the_clear(secure: SecureDynamo) -> None:
    secret = secure.keys["writer"].secret.encode()
    for node in secure.procs.nodes:
        for path in node.data_dir.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path
    listed = secure.cli("user", "key", "list", "writer")
    assert listed.stdout.split() == [secure.keys["writer"].key_id]


def test_key_commands_refuse_bad_input_clearly(secure: SecureDynamo) -> None:
    ghost = secure.cli("user", "key", "create", "ghost")
    assert ghost.returncode != 0 and "no user 'ghost'" in ghost.stderr
    missing = secure.cli("user", "key", "delete", "writer", "DKIANOSUCHKEY0000000")
    assert missing.returncode != 0 and "has no access key" in missing.stderr
    reader = secure.cli("user", "key", "create", "writer", user="reader")
    assert reader.returncode != 0 and "forbidden" in reader.stderr
    assert secure.cli("user", "key", "list", "writer").stdout.split() == [
        secure.keys["writer"].key_id
    ]


def test_a_peer_credential_opens_status_only(secure: SecureDynamo) -> None:
    url = secure.procs[1].url
    good = {"Authorization": peer_credential.make(CLUSTER_SECRET.encode(), "n", time.time())}
    assert http("GET", f"{url}/v1/status", headers=good).status == 200
    for path in ("/v1/cluster", "/metrics", "/v1/kv/a/k"):
        assert http("GET", url + path, headers=good).status == 401, path
    forged = {"Authorization": peer_credential.make(b"not-the-secret", "n", time.time())}
    reply = http("GET", f"{url}/v1/status", headers=forged)
    assert reply.status == 401 and reply.json()["error"] == "unauthenticated"


def test_a_deleted_key_is_unrecognized_everywhere(secure: SecureDynamo) -> None:
    extra = _key_created(secure.cli("user", "key", "create", "nobody"))
    for endpoint in secure.endpoints:
        _wait_signed("127.0.0.7", endpoint, extra, 200, "the new key")
    done = secure.cli("user", "key", "delete", "nobody", extra.key_id)
    assert done.returncode == 0, done.stderr
    for endpoint in secure.endpoints:
        _wait_signed("127.0.0.8", endpoint, extra, 400, "the key's deletion")
        ddb = dynamo_client("http://" + endpoint, extra.key_id, extra.secret)
        assert error_of(ddb.list_tables)[0] == "UnrecognizedClientException"


# --- failed logins are limited per address ---------------------------------------------------


def _signed_from(address: str, endpoint: str, key: Keys) -> tuple[int, dict]:
    """A ListTables botocore signs with key, sent from source address `address`."""
    request = AWSRequest(
        method="POST", url=f"http://{endpoint}/", data=b"{}",
        headers={"X-Amz-Target": "DynamoDB_20120810.ListTables",
                 "Content-Type": "application/x-amz-json-1.0"},
    )  # fmt: skip
    SigV4Auth(Credentials(key.key_id, key.secret), "dynamodb", "eu-west-1").add_auth(request)
    host, port = endpoint.split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=30, source_address=(address, 0))
    try:
        conn.request("POST", "/", body=request.body, headers=dict(request.headers.items()))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def _basic_from(address: str, http_addr: str, user: str, password: str) -> int:
    host, port = http_addr.split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=30, source_address=(address, 0))
    try:
        conn.request("GET", "/v1/status", headers=basic(user, password))
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def test_failed_signatures_from_one_address_are_limited_and_others_served(
    secure: SecureDynamo,
) -> None:
    endpoint, good = secure.endpoints[1], secure.keys["reader"]
    wrong = Keys(good.key_id, "Z" * 40)
    answers = [_signed_from("127.0.0.3", endpoint, wrong) for _ in range(BURST + 2)]
    kinds = [body["__type"].rsplit("#", 1)[1] for _, body in answers]
    assert kinds[:BURST] == ["InvalidSignatureException"] * BURST
    assert kinds[BURST:] == ["ThrottlingException"] * 2
    assert "too many failed logins from 127.0.0.3" in answers[-1][1]["message"]
    # limited: even the right key is not checked from there
    status, body = _signed_from("127.0.0.3", endpoint, good)
    assert (status, body["__type"].rsplit("#", 1)[1]) == (400, "ThrottlingException")
    # another address, the same key: served
    assert _signed_from("127.0.0.4", endpoint, good)[0] == 200
    assert secure.ddb("reader", node=1).list_tables()["TableNames"]


def test_failed_basic_logins_from_one_address_get_429_and_others_are_served(
    secure: SecureDynamo,
) -> None:
    http_addr = secure.procs[1].http_addr
    statuses = [_basic_from("127.0.0.5", http_addr, "admin", "guess") for _ in range(BURST + 1)]
    assert statuses == [401] * BURST + [429]
    assert _basic_from("127.0.0.5", http_addr, "admin", PASSWORDS["admin"]) == 429
    assert _basic_from("127.0.0.6", http_addr, "admin", PASSWORDS["admin"]) == 200


def _auth_from(address: str, resp_addr: str, password: str) -> bytes:
    """Redis's `AUTH admin password` from source address `address`: the reply's line."""
    host, port = resp_addr.split(":")
    with socket.create_connection((host, int(port)), 30, source_address=(address, 0)) as sock:
        sock.sendall(b"*3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$%d\r\n%s\r\n" % (
            len(password), password.encode()))  # fmt: skip
        return sock.makefile("rb").readline().rstrip(b"\r\n")


def test_failed_redis_auths_from_one_address_are_limited_and_others_served(
    secure: SecureDynamo,
) -> None:
    resp_addr = secure.resp_addrs[1]
    replies = [_auth_from("127.0.0.11", resp_addr, "guess") for _ in range(BURST + 1)]
    assert all(r.startswith(b"-WRONGPASS") for r in replies[:BURST]), replies
    assert replies[BURST].startswith(b"-ERR too many failed logins from 127.0.0.11")
    assert _auth_from("127.0.0.11", resp_addr, PASSWORDS["admin"]).startswith(b"-ERR too many")
    assert _auth_from("127.0.0.12", resp_addr, PASSWORDS["admin"]) == b"+OK"


def test_failures_are_counted_by_port_and_reason_in_metrics(secure: SecureDynamo) -> None:
    error_of(secure.ddb("writer", node=1, secret="Q" * 40).list_tables)
    reply = http("GET", f"{secure.procs[1].url}/metrics", headers=basic("admin"))
    assert reply.status == 200
    text = reply.body.decode()
    for port, reason in (
        ("dynamodb", "bad_signature"),
        ("dynamodb", "rate_limited"),
        ("http", "bad_password"),
        ("http", "rate_limited"),
        ("resp", "bad_password"),
        ("resp", "rate_limited"),
    ):
        line = f'dynakv_auth_failures_total{{port="{port}",reason="{reason}"}}'
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        assert found and float(found[0].split()[-1]) >= 1, (line, text[-3000:])
    log = secure.procs[1].log_path.read_text()
    assert "login_limited" in log


# --- TLS on the DynamoDB port ------------------------------------------------------------------


@dataclass
class TlsCluster:
    procs: ProcessCluster
    endpoints: list[str]  # https://HOST:PORT of each node's DynamoDB endpoint
    ca: str
    key: Keys


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """Two nodes with TLS on every port, users on, an admin with an access key."""
    root = tmp_path_factory.mktemp("ddbtls")
    certs = root / "certs"
    made = subprocess.run(
        [sys.executable, "-m", "dynakv", "cert", "--out", str(certs),
         "--node", "node1", "--node", "node2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ca = str(certs / "ca.pem")
    procs = ProcessCluster(root, 2)
    endpoints = []
    for node in procs.nodes:
        files = (
            f'tls_cert = "{certs}/{node.name}.pem"\ntls_key = "{certs}/{node.name}.key"\n'
            f'tls_ca = "{ca}"\nfailed_login_burst = 100000\n'
        )
        config = _secure_config(root, files, node.name)
        endpoints.append(f"127.0.0.1:{free_port()}")
        node.extra_args += ["--config", str(config), "--dynamodb", endpoints[-1]]
        node.ca_file = ca
    try:
        for i, node in enumerate(procs.nodes):
            node.start(join=None if i == 0 else procs[0].node_addr)
            wait_for(lambda n=node: _answers(n.url, n.tls), f"{node.name} to answer HTTPS")
        password = PASSWORDS["admin"]
        key = Keys("DKIATLSTESTKEY000001", "tls-test-secret-0123456789abcdefghijklmn")
        first = procs[0].node_addr
        with Client(first, tls=ca) as client:  # the bootstrap rule: the first admin
            client.change_user(_add_admin(password))
        with Client(first, tls=ca, user="admin", password=password) as client:
            change = ClientUserChange(
                0, "key_create", "admin", key_id=key.key_id, key_secret=key.secret.encode()
            )
            client.change_user(change)
        yield TlsCluster(procs, [f"https://{e}" for e in endpoints], ca, key)
    finally:
        procs.stop()


def _add_admin(password: str) -> ClientUserChange:
    from dynakv.users import ALL_BUCKETS, hash_password

    hashed = hash_password(password, os.urandom(16))
    return ClientUserChange(0, "add", "admin", hashed, grants=[(ALL_BUCKETS, "admin")])


def test_boto3_over_tls_with_the_ca(tls_cluster: TlsCluster) -> None:
    key, ca = tls_cluster.key, tls_cluster.ca
    ddb = dynamo_client(tls_cluster.endpoints[0], key.key_id, key.secret, verify=ca)
    make_table(ddb, "secure_orders", range_type=None)
    ddb.put_item(TableName="secure_orders", Item={"pk": {"S": "k"}, "v": {"S": "tls"}})
    got = ddb.get_item(TableName="secure_orders", Key={"pk": {"S": "k"}})
    assert got["Item"]["v"] == {"S": "tls"}
    # without the CA, the node's certificate is not trusted
    untrusting = dynamo_client(tls_cluster.endpoints[0], key.key_id, key.secret)
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.list_tables()


def test_conditional_writes_are_forwarded_to_the_primary_over_tls(tls_cluster: TlsCluster) -> None:
    key, ca = tls_cluster.key, tls_cluster.ca
    admin = dynamo_client(tls_cluster.endpoints[0], key.key_id, key.secret, verify=ca)
    make_table(admin, "forwarded", range_type=None)
    second = dynamo_client(tls_cluster.endpoints[1], key.key_id, key.secret, verify=ca)
    written = iter(range(1_000_000))

    def forwarded_one() -> bool:
        # Through node 2 only; node 1 serves PutItem only when node 2 forwards it there
        # (over HTTPS, checking node 1's certificate, its signature checked again).
        try:
            second.put_item(
                TableName="forwarded",
                Item={"pk": {"S": f"k{next(written)}"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except second.exceptions.ClientError:
            return False  # the key or the table has not reached node 2 yet
        return _puts(tls_cluster.procs[0]) > 0

    wait_for(forwarded_one, "a conditional write forwarded from node 2 to node 1")
    assert "forwarding to" not in tls_cluster.procs[1].log_path.read_text()


def _puts(node: Any) -> float:
    """The PutItem requests node served (not forwarded elsewhere), from its /metrics."""
    reply = http("GET", f"{node.url}/metrics", headers=basic("admin"), context=node.tls)
    wanted = 'dynakv_requests_total{consistency="default",op="dynamodb_PutItem"}'
    lines = [ln for ln in reply.body.decode().splitlines() if ln.startswith(wanted)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_the_aws_cli_over_tls_with_the_ca_bundle(tls_cluster: TlsCluster) -> None:
    url, ca, key = tls_cluster.endpoints[1], tls_cluster.ca, tls_cluster.key
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": key.key_id,
        "AWS_SECRET_ACCESS_KEY": key.secret,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    argv = ["aws", "dynamodb", "list-tables", "--endpoint-url", url, "--ca-bundle", ca]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "TableNames" in json.loads(done.stdout)
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-0123456789abcdefghijklmnop"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "InvalidSignatureException" in done.stderr
