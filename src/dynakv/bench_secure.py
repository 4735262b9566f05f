"""`dynakv bench --local N --secure`: the local cluster with every security mechanism on, so
that the bench measures what they cost — a cluster secret on the node port, TLS on every
port (a development CA from cli_cert.py, one certificate for 127.0.0.1 that all the local
nodes share), and users on, with an admin made for the run by the bootstrap rule (the
cluster has no user yet) whose credentials the generator then logs in with.

Everything lives in the local cluster's directory: the secret and the keys are files
readable by their owner only, and the password never leaves this process but as the
scrypt hash the node stores (users.hash_password) and the logins of the generator.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from dynakv import users
from dynakv.cli_cert import CA_CERT, _write_cert, _write_key, load_or_make_ca, make_node_cert
from dynakv.client import Client
from dynakv.errors import DynakvError
from dynakv.messages import ClientUserChange

ADMIN = "bench-admin"
CERT_NAME = "bench-node"


class LocalSecurity:
    """The `[security]` table of a local cluster and the admin its generator logs in as."""

    def __init__(self, user: str = ADMIN, failed_login_burst: int | None = None) -> None:
        self.user = user
        # None: the node's default. A test that logs in wrong on purpose, then right from
        # the same address, raises it so the per-address limit does not refuse the good run.
        self.failed_login_burst = failed_login_burst
        self.password = secrets.token_urlsafe(24)
        self.directory: Path | None = None

    @property
    def cacert(self) -> str | None:
        return str(self.directory / CA_CERT) if self.directory is not None else None

    def prepare(self, root: Path) -> str:
        """Make the secret, the CA and the nodes' certificate under `root`; the TOML table
        that turns everything on, for the nodes' config file."""
        self.directory = root / "tls"
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = load_or_make_ca(self.directory, days=2)
        cert, key = make_node_cert(ca_cert, ca_key, CERT_NAME, ["127.0.0.1", "localhost"], 2)
        _write_key(self.directory / f"{CERT_NAME}.key", key)
        _write_cert(self.directory / f"{CERT_NAME}.pem", cert)
        secret = root / "cluster.secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        return (
            "[security]\n"
            f'cluster_secret_file = "{secret}"\n'
            "authentication = true\n"
            f'tls_cert = "{self.directory / CERT_NAME}.pem"\n'
            f'tls_key = "{self.directory / CERT_NAME}.key"\n'
            f'tls_ca = "{self.cacert}"\n'
            + (
                f"failed_login_burst = {self.failed_login_burst}\n"
                if self.failed_login_burst is not None
                else ""
            )
        )

    def add_admin(self, node_addr: str, timeout: float = 30.0) -> None:
        """Make the run's admin on the first node (no user exists yet), retrying while the
        node is still starting."""
        hashed = users.hash_password(self.password, os.urandom(16))
        change = ClientUserChange(
            0, "add", self.user, hashed, b"", [(users.ALL_BUCKETS, "admin")]
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(node_addr, timeout=10.0, tls=self.cacert) as client:
                    client.change_user(change)
                return
            except (DynakvError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not add the bench's admin user: {exc}") from exc
                time.sleep(0.2)

    def headers(self) -> dict[str, str]:
        """HTTP Basic credentials of the admin, for the cluster's readiness checks."""
        from dynakv.bench_apis import basic_auth

        return {"Authorization": basic_auth(self.user, self.password)}
