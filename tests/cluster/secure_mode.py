"""The cluster tests' "secure" mode (issue 19): nodes with a cluster secret, TLS on all three
ports (one development CA, a certificate per node made by `dynakv cert`'s code) and users
on, reached by the tests' helpers over TLS as an admin.

The mode lives in environment variables (the CLI's own DYNAKV_CACERT, DYNAKV_USER and
DYNAKV_PASSWORD, and the directory of its files), so everything a test starts meanwhile --
node configs, the CLI, the nemesis's cart client -- uses it; unset, nothing changes. Imports
only dynakv: cart_client.py, run as a script beside it, imports it too.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

DIR_ENV = "DYNAKV_TEST_SECURE_DIR"  # the CA, node certificates and secret; set: the mode is on
CACERT_ENV = "DYNAKV_CACERT"  # as the CLI's --cacert
USER_ENV = "DYNAKV_USER"  # as the CLI's --user
PASSWORD_ENV = "DYNAKV_PASSWORD"  # the CLI reads the --user's password here
ADMIN = "admin"
# Loopback addresses the certificates hold: 127.0.0.1, and the nemesis namespace's nodes.
HOSTS = ("127.0.0.1", "localhost", *(f"127.0.0.{i}" for i in range(2, 10)))


@dataclass(frozen=True)
class SecureMode:
    directory: Path
    user: str
    password: str

    @property
    def ca(self) -> str:
        return str(self.directory / "ca.pem")

    @property
    def secret_file(self) -> Path:
        return self.directory / "cluster.secret"

    def client_settings(self) -> dict[str, str]:
        """tls=, user= and password= for dynakv.Client and AsyncClient."""
        return {"tls": self.ca, "user": self.user, "password": self.password}

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def authorization(self) -> str:
        """The HTTP Authorization header value of the admin."""
        pair = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def security_table(self, name: str) -> str:
        """The [security] table of node `name`: the secret, TLS with its own certificate
        (made now if it has none) and users on."""
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        if not cert.exists():
            make_certificates(self.directory, [name])
        return (
            "\n[security]\n"
            f'cluster_secret_file = "{self.secret_file}"\n'
            f'tls_cert = "{cert}"\ntls_key = "{key}"\ntls_ca = "{self.ca}"\n'
            "authentication = true\n"
        )


def current() -> SecureMode | None:
    """The secure mode the environment sets, or None (open, or a cluster secret only)."""
    directory = os.environ.get(DIR_ENV)
    if not directory:
        return None
    return SecureMode(
        Path(directory), os.environ.get(USER_ENV, ADMIN), os.environ.get(PASSWORD_ENV, "")
    )


def redis_tool_args() -> list[str]:
    """The flags that take redis-cli or redis-benchmark to a node in the secure mode (a
    test's password on a command line is no secret); none outside it."""
    mode = current()
    if mode is None:
        return []
    return ["--tls", "--cacert", mode.ca, "--user", mode.user, "-a", mode.password]


def make_certificates(directory: Path, names: list[str]) -> None:
    """`dynakv cert --out directory --node NAME ...` (in this process: no interpreter start
    per node); the CA already there signs them."""
    from dynakv.cli_cert import cert_command

    args = ["--out", str(directory)]
    for name in names:
        args += ["--node", name]
    for host in HOSTS:
        args += ["--host", host]
    with contextlib.redirect_stdout(io.StringIO()):  # its advice to an operator
        cert_command.main(args, standalone_mode=False)


def set_up(directory: Path) -> dict[str, str]:
    """A CA, a cluster secret (mode 0600) and an admin password in `directory`; the
    environment that turns the mode on."""
    from dynakv.cli_cert import load_or_make_ca

    load_or_make_ca(directory, days=30)
    secret = directory / "cluster.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o600)
    return {
        DIR_ENV: str(directory),
        CACERT_ENV: str(directory / "ca.pem"),
        USER_ENV: ADMIN,
        PASSWORD_ENV: secrets.token_urlsafe(18),
    }


def bootstrap_admin(node_addr: str, mode: SecureMode, timeout: float = 30.0) -> None:
    """Make the mode's admin through a node that founded a cluster, by the bootstrap rule
    (no credentials while the cluster has no user). Done, too, once the cluster has users:
    then whoever made them did this."""
    from dynakv import Client, users
    from dynakv.errors import Unauthenticated, Unavailable
    from dynakv.messages import ClientUserChange

    password = users.hash_password(mode.password, os.urandom(16))
    change = ClientUserChange(0, "add", mode.user, password, b"", [(users.ALL_BUCKETS, "admin")])
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(node_addr, timeout=10, route=False, tls=mode.ca) as client:
                client.change_user(change)
            return
        except Unauthenticated:
            return  # the cluster has users already
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
