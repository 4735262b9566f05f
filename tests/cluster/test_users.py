"""Users and permissions over real processes (issue 19 §3): a 3-node cluster with
`[security] authentication = true`, the first admin made by the bootstrap rule, and the
401/403 matrix over HTTP, RESP and the binary protocol."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynakv.client import AsyncClient, Client
from dynakv.errors import ClusterError, Forbidden, Unauthenticated
from tests.cluster.harness import (
    HttpReply,
    ProcessCluster,
    engine_setting,
    free_port,
    http,
    wait_for,
)

ADMIN_PASSWORD = "adm1n-Secret-9f2c"
PASSWORDS = {
    "admin": ADMIN_PASSWORD,
    "reader": "r3ader-Secret-71ab",
    "writer": "wr1ter-Secret-c3d0",  # write on bucket a and on the RESP bucket
    "doomed": "d00med-Secret-5e6f",
}


@dataclass
class Secured:
    procs: ProcessCluster
    root: Path
    resp_addrs: list[str]
    before_bootstrap: HttpReply
    tokens: dict[str, str] = field(default_factory=dict)

    def cli(
        self, *args: str, user: str | None = None, node: int = 0
    ) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("DYNAKV_PASSWORD", None)
        head = [sys.executable, "-m", "dynakv"]
        if user is not None:
            head += ["--user", user]
            env["DYNAKV_PASSWORD"] = PASSWORDS[user]
        argv = [*head, *args, "--node", self.procs[node].node_addr]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def basic(user: str, password: str | None = None) -> dict[str, str]:
    secret = PASSWORDS[user] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def wait_everywhere(
    secured: Secured, method: str, path: str, user: str, status: int, what: str
) -> None:
    """Until every node answers `user`'s request with `status` (gossip has reached it)."""
    body = b"v" if method == "PUT" else None
    for node in secured.procs.nodes:
        wait_for(
            lambda n=node: http(method, n.url + path, body, basic(user)).status == status,
            f"{what} to reach {node.name}",
        )


def _add(secured: Secured, name: str, *grants: str, admin_user: str | None = "admin") -> None:
    password_file = secured.root / f"{name}.password"
    password_file.write_text(PASSWORDS[name] + "\n")
    args = ["user", "add", name, "--password-file", str(password_file)]
    for grant in grants:
        args += ["--grant", *grant.split(":")]
    done = secured.cli(*args, user=admin_user)
    assert done.returncode == 0, done.stderr
    password_file.unlink()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("users")
    config = root / "secure.toml"
    secret = root / "cluster.secret"
    secret.write_text("users-test-secret-0123456789\n")
    secret.chmod(0o600)
    # The 401/403 matrix fails many logins from 127.0.0.1 on purpose: a burst that never
    # limits it (test_dynamodb_security.py tests the limit).
    config.write_text(
        engine_setting() + f'[security]\nauthentication = true\ncluster_secret_file = "{secret}"\n'
        "failed_login_burst = 100000\n"
    )
    procs = ProcessCluster(root, 3, ["--config", str(config)])
    resp_addrs = []
    for node in procs.nodes:
        resp_addrs.append(f"127.0.0.1:{free_port()}")
        node.extra_args += ["--resp", resp_addrs[-1]]
    try:
        for i, node in enumerate(procs.nodes):
            node.start(join=None if i == 0 else procs[0].node_addr)
            # Ready once it answers at all: with authentication on, that is a 401.
            wait_for(lambda n=node: _answers(n.url), f"{node.name} to answer HTTP")
        before = http("GET", f"{procs[0].url}/v1/kv/a/k")
        _add_first_admin(root, procs)
        wait_for(lambda: _members_up(procs, 3), "3 members up")
        secured = Secured(procs, root, resp_addrs, before)
        _add(secured, "reader", "read:a", "read:default")
        _add(secured, "writer", "write:a", "write:default")
        for user in ("reader", "writer"):  # every test may use any node
            wait_everywhere(secured, "GET", "/v1/buckets/a", user, 200, f"user {user}")
        wrote = http("PUT", f"{procs[0].url}/v1/kv/a/k", b"v1", basic("writer"))
        assert wrote.status in (200, 204), wrote.body
        yield secured
    finally:
        procs.stop()


def _answers(url: str) -> bool:
    try:
        return http("GET", f"{url}/v1/status").status in (200, 401)
    except OSError:
        return False


def _add_first_admin(root: Path, procs: ProcessCluster) -> None:
    password_file = root / "admin.password"
    password_file.write_text(ADMIN_PASSWORD)
    argv = [sys.executable, "-m", "dynakv", "user", "add", "admin", "--admin"]
    argv += ["--password-file", str(password_file), "--node", procs[0].node_addr]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    password_file.unlink()


def _members_up(procs: ProcessCluster, count: int) -> bool:
    for node in procs.nodes:
        reply = http("GET", f"{node.url}/v1/cluster", headers=basic("admin"))
        if reply.status != 200:
            return False
        view = reply.json()
        if len(view["members"]) != count or view["next_ring"] is not None:
            return False
        if any(m["status"] != "up" for m in view["members"]):
            return False
    return True


# --- bootstrap -------------------------------------------------------------------------------


def test_without_users_the_node_asks_for_the_first_admin(secured: Secured) -> None:
    reply = secured.before_bootstrap
    assert reply.status == 401
    assert "Basic" in reply.headers.get("WWW-Authenticate", "")
    assert reply.json()["error"] == "unauthenticated"
    assert "dynakv user add" in reply.json()["message"]


def test_once_a_user_exists_adding_an_admin_needs_credentials(secured: Secured) -> None:
    password_file = secured.root / "mallory.password"
    password_file.write_text("mallory-pw")
    done = secured.cli("user", "add", "mallory", "--admin", "--password-file", str(password_file))
    assert done.returncode != 0
    assert "unauthenticated" in done.stderr
    listed = secured.cli("user", "list", user="admin", node=2)
    assert listed.returncode == 0, listed.stderr
    assert "mallory" not in listed.stdout and "admin:*" in listed.stdout


# --- HTTP ------------------------------------------------------------------------------------


def test_http_answers_401_without_credentials_and_403_without_the_permission(
    secured: Secured,
) -> None:
    url = secured.procs[1].url
    anonymous = http("PUT", f"{url}/v1/kv/a/k", b"v")
    assert anonymous.status == 401 and "WWW-Authenticate" in anonymous.headers
    assert anonymous.json()["error"] == "unauthenticated"
    wrong = http("GET", f"{url}/v1/kv/a/k", headers=basic("reader", "not-it"))
    assert wrong.status == 401 and wrong.json()["error"] == "unauthenticated"

    wrote = http("PUT", f"{url}/v1/kv/a/by-http", b"h1", headers=basic("writer"))
    assert wrote.status in (200, 204), wrote.body
    read = http("GET", f"{url}/v1/kv/a/by-http", headers=basic("reader"))
    assert read.status == 200 and read.body == b"h1"

    denied = http("PUT", f"{url}/v1/kv/a/k", b"v2", headers=basic("reader"))
    assert denied.status == 403 and denied.json()["error"] == "forbidden"
    assert "write on bucket 'a'" in denied.json()["message"]
    other_bucket = http("PUT", f"{url}/v1/kv/b/k", b"v", headers=basic("writer"))
    assert other_bucket.status == 403
    unread = http("GET", f"{url}/v1/kv/b/k", headers=basic("reader"))
    assert unread.status == 403

    props = b'{"n": 3, "r": 2, "w": 2}'
    by_writer = http("PUT", f"{url}/v1/buckets/a", props, headers=basic("writer"))
    assert by_writer.status == 403
    by_admin = http("PUT", f"{url}/v1/buckets/a", props, headers=basic("admin"))
    assert by_admin.status == 200, by_admin.body
    repair = http("POST", f"{url}/v1/repair?partition=0", b"", headers=basic("writer"))
    assert repair.status == 403


def test_a_bearer_token_authenticates_over_http(secured: Secured) -> None:
    done = secured.cli("user", "add", "robot", "--token", "--grant", "read", "a", user="admin")
    assert done.returncode == 0, done.stderr
    token = done.stdout.rsplit(":", 1)[1].strip()
    secured.tokens["robot"] = token
    url = secured.procs[2].url
    headers = {"Authorization": f"Bearer {token}"}
    wait_for(
        lambda: http("GET", f"{url}/v1/kv/a/k", headers=headers).status in (200, 404),
        "the token user to reach node3",
    )
    assert http("PUT", f"{url}/v1/kv/a/k", b"x", headers=headers).status == 403
    bad = http("GET", f"{url}/v1/kv/a/k", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401


# --- RESP ------------------------------------------------------------------------------------


class Resp:
    def __init__(self, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.file = self.sock.makefile("rb")

    def __call__(self, *args: str) -> bytes:
        out = b"*%d\r\n" % len(args)
        for a in args:
            data = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return self.reply()

    def reply(self) -> bytes:
        """One reply: a bulk's value, an array's items joined by spaces, else its line."""
        line = self.file.readline()
        if line.startswith(b"$") and line != b"$-1\r\n":
            return self.file.readline().rstrip(b"\r\n")
        if line.startswith(b"*"):
            return b" ".join(self.reply() for _ in range(int(line[1:])))
        return line.rstrip(b"\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_resp_needs_auth_and_the_bucket_permission(secured: Secured) -> None:
    conn = Resp(secured.resp_addrs[0])
    try:
        assert conn("GET", "k") == b"-NOAUTH Authentication required."
        assert conn("AUTH", "reader", "wrong") == (
            b"-WRONGPASS invalid username-password pair or user is disabled."
        )
        assert conn("AUTH", "reader", PASSWORDS["reader"]) == b"+OK"
        assert conn("GET", "k") in (b"$-1", b"")
        assert conn("SET", "k", "v").startswith(b"-NOPERM")
        assert conn("AUTH", "writer", PASSWORDS["writer"]) == b"+OK"
        assert conn("SET", "k", "v") == b"+OK"
        assert conn("GET", "k") == b"v"
    finally:
        conn.close()
    hello = Resp(secured.resp_addrs[1])
    try:
        assert hello("HELLO", "3").startswith(b"-NOPROTO")
        answer = hello("HELLO", "2", "AUTH", "reader", PASSWORDS["reader"])
        assert b"redis" in answer and b"proto" in answer
        assert hello("GET", "k") == b"v"
    finally:
        hello.close()


def test_commands_pipelined_behind_auth_run_as_its_user(secured: Secured) -> None:
    conn = Resp(secured.resp_addrs[0])
    try:
        pipeline = [("AUTH", "writer", PASSWORDS["writer"]), ("SET", "piped", "1")]
        pipeline += [("GET", "piped"), ("AUTH", "reader", "wrong"), ("GET", "piped")]
        out = b""
        for args in pipeline:
            out += b"*%d\r\n" % len(args)
            for a in args:
                out += b"$%d\r\n%s\r\n" % (len(a), a.encode())
        conn.sock.sendall(out)
        replies = [conn.reply() for _ in pipeline]
        assert replies[:3] == [b"+OK", b"+OK", b"1"]
        assert replies[3].startswith(b"-WRONGPASS")
        assert replies[4] == b"1"  # a failed AUTH leaves the user logged in, as on Redis
    finally:
        conn.close()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_authenticates_with_user_and_pass(secured: Secured) -> None:
    host, port = secured.resp_addrs[2].rsplit(":", 1)
    base = ["redis-cli", "-h", host, "-p", port, "--no-auth-warning"]
    login = ["--user", "writer", "--pass", PASSWORDS["writer"]]
    wrote = subprocess.run([*base, *login, "SET", "cli", "yes"], capture_output=True, text=True)
    assert wrote.stdout.strip() == "OK", wrote
    read = subprocess.run([*base, *login, "GET", "cli"], capture_output=True, text=True)
    assert read.stdout.strip() == "yes"
    anonymous = subprocess.run([*base, "GET", "cli"], capture_output=True, text=True)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr


# --- binary protocol -------------------------------------------------------------------------


def test_binary_clients_log_in_and_only_admins_change_the_cluster(secured: Secured) -> None:
    nodes = secured.procs.node_addrs
    with Client(nodes, route=False) as anonymous, pytest.raises(Unauthenticated):
        anonymous.get("a", "k")
    with Client(nodes, user="reader", password="wrong") as wrong, pytest.raises(Unauthenticated):
        wrong.get("a", "k")
    with Client(nodes, user="reader", password=PASSWORDS["reader"]) as reader:
        assert reader.get("a", "k").values
        with pytest.raises(Forbidden):
            reader.put("a", "k", b"nope")
    with Client(nodes, user="writer", password=PASSWORDS["writer"]) as writer:
        writer.put("a", "bin", b"ok")
        with pytest.raises(Forbidden):
            writer.cluster_change("remove", "node3")
        with pytest.raises(Forbidden):
            writer.set_bucket_type("a", n=3)
    with Client(nodes, user="admin", password=ADMIN_PASSWORD) as admin:
        # Past the gate; the node then refuses to remove a member that is up.
        with pytest.raises(ClusterError, match="is up"):
            admin.cluster_change("remove", "node3")
        assert [u.name for u in admin.cluster().users if not u.deleted]


def test_the_asyncio_client_logs_in_too(secured: Secured) -> None:
    nodes = secured.procs.node_addrs

    async def run() -> None:
        reader = AsyncClient(nodes, user="reader", password=PASSWORDS["reader"])
        try:
            assert (await reader.get("a", "k")).values
            with pytest.raises(Forbidden):
                await reader.put("a", "k", b"nope")
        finally:
            await reader.close()
        wrong = AsyncClient(nodes, user="reader", password="wrong")
        try:
            with pytest.raises(Unauthenticated):
                await wrong.get("a", "k")
        finally:
            await wrong.close()

    asyncio.run(run())


def test_the_cli_sends_the_global_credentials(secured: Secured) -> None:
    anonymous = secured.cli("cluster", "status")
    assert anonymous.returncode != 0 and "unauthenticated" in anonymous.stderr
    status = secured.cli("cluster", "status", "--json", user="admin")
    assert status.returncode == 0, status.stderr
    assert "node3" in status.stdout
    put = secured.cli("put", "a", "from-cli", "v", user="writer", node=1)
    assert put.returncode == 0, put.stderr
    denied = secured.cli("put", "a", "from-cli", "v", user="reader", node=1)
    assert denied.returncode != 0 and "forbidden" in denied.stderr


# --- cluster-wide changes --------------------------------------------------------------------


def test_a_user_added_through_one_node_works_through_the_others(secured: Secured) -> None:
    _add(secured, "doomed", "read:a", "write:a")
    wait_everywhere(secured, "GET", "/v1/kv/a/k", "doomed", 200, "user doomed to work")


def test_revoke_and_delete_take_effect_on_every_node(secured: Secured) -> None:
    test_a_user_added_through_one_node_works_through_the_others(secured)
    done = secured.cli("user", "revoke", "doomed", "write", "a", user="admin", node=1)
    assert done.returncode == 0, done.stderr
    wait_everywhere(secured, "PUT", "/v1/kv/a/k2", "doomed", 403, "the revoke")
    assert http("GET", f"{secured.procs[0].url}/v1/kv/a/k", headers=basic("doomed")).status == 200
    done = secured.cli("user", "delete", "doomed", user="admin", node=2)
    assert done.returncode == 0, done.stderr
    wait_everywhere(secured, "GET", "/v1/kv/a/k", "doomed", 401, "the delete")


# --- secrets at rest and bad input -----------------------------------------------------------


def test_the_last_admin_cannot_be_deleted_while_other_users_remain(secured: Secured) -> None:
    done = secured.cli("user", "delete", "admin", user="admin")
    assert done.returncode != 0 and "no admin" in done.stderr
    assert http("GET", f"{secured.procs[0].url}/v1/status", headers=basic("admin")).status == 200


def test_passwords_and_tokens_are_stored_only_hashed(secured: Secured) -> None:
    # Every node holds every user (gossip), so each data directory and log is searched.
    wait_everywhere(secured, "GET", "/v1/kv/a/k", "writer", 200, "the users")
    secrets = [p.encode() for p in [*PASSWORDS.values(), *secured.tokens.values()]]
    files = [p for p in secured.root.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in files)
    assert any("node2" in str(p) and "mdb" in p.name for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} found in {path}"


def test_bad_credentials_get_clear_errors_and_the_node_keeps_serving(secured: Secured) -> None:
    url = secured.procs[0].url
    for header in (
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Digest username=admin",
        "Bearer",
        "Basic " + base64.b64encode(b"ghost:" + b"x" * 5000).decode(),
    ):
        reply = http("GET", f"{url}/v1/kv/a/k", headers={"Authorization": header})
        assert reply.status == 401, (header, reply.body)
        assert reply.json()["error"] == "unauthenticated"
    conn = Resp(secured.resp_addrs[0])
    try:
        assert conn("AUTH", "a", "b", "c").startswith(b"-ERR wrong number of arguments")
        assert conn("AUTH", "\u00e9\u00e9", "x").startswith(b"-WRONGPASS")
        assert conn("HELLO", "2", "AUTH", "only-user").startswith(b"-ERR syntax error")
    finally:
        conn.close()
    empty = Client(secured.procs.node_addrs[:1], user="", password="")
    with empty, pytest.raises(Unauthenticated):
        empty.get("a", "k")
    ok = http("GET", f"{url}/v1/kv/a/k", headers=basic("reader"))
    assert ok.status == 200 and ok.body == b"v1"


def test_authentication_without_a_peer_secret_stops_the_node_with_one_line(tmp_path: Path):
    """Users need peers that prove themselves: else a client could claim to be a peer."""
    config = tmp_path / "users-only.toml"
    config.write_text("[security]\nauthentication = true\n")
    command = [
        sys.executable, "-m", "dynakv", "serve", "--config", str(config),
        "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert b"authentication = true needs peers to prove themselves" in result.stderr
    assert not (tmp_path / "d").exists()  # stopped before its store was opened
