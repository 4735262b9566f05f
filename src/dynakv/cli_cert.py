"""`dynakv cert`: a development CA and per-node certificates (with 127.0.0.1 and localhost
among their names), for TLS on every port (README, Security). For development and tests:
a production cluster's certificates come from the operator's own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.pem", "ca.key"
Key = ec.EllipticCurvePrivateKey


def _write_key(path: Path, key: Key) -> None:
    """A private key, readable by its owner only (created so, never widened)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dynakv development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def load_or_make_ca(directory: Path, days: int) -> tuple[x509.Certificate, Key]:
    """The CA in `directory` (so a node added later is signed by the same one), or a new
    one written there."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Key):
            raise click.ClickException(f"{key_path}: not an EC key made by `dynakv cert`")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: two development CAs must not pass for each other's issuer.
    name = _name(f"dynakv development CA {os.urandom(4).hex()}")
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert, key


def make_node_cert(
    ca_cert: x509.Certificate, ca_key: Key, name: str, hosts: list[str], days: int
) -> tuple[x509.Certificate, Key]:
    """A certificate for node `name`, valid as a server (its ports) and as a client (when it
    dials a peer), for the DNS names and IP addresses in `hosts`."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(_name(name), ca_cert.subject, key, days)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@click.command("cert")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for ca.pem, ca.key and NAME.pem / NAME.key per node.")  # fmt: skip
@click.option("--node", "nodes", multiple=True, required=True,
              help="A node name to make a certificate for; repeat for each node.")  # fmt: skip
@click.option("--host", "hosts", multiple=True, default=("127.0.0.1", "localhost"),
              show_default=True, help="A name or address the certificates hold.")  # fmt: skip
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650),
              help="How long the certificates are valid.")  # fmt: skip
def cert_command(out: str, nodes: tuple[str, ...], hosts: tuple[str, ...], days: int) -> None:
    """Make a development CA (or reuse the one in --out) and a certificate per --node."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = load_or_make_ca(directory, days)
    for name in nodes:
        cert, key = make_node_cert(ca_cert, ca_key, name, list(hosts), days)
        _write_key(directory / f"{name}.key", key)
        _write_cert(directory / f"{name}.pem", cert)
        click.echo(f"{directory / name}.pem and .key: {name}, valid for {', '.join(hosts)}")
    where = directory.resolve()
    click.echo(
        f"CA: {where / CA_CERT} (give it to clients: --cacert, curl --cacert, redis-cli --tls "
        f"--cacert). In each node's config:\n[security]\ntls_cert = \"{where}/NAME.pem\"\n"
        f"tls_key = \"{where}/NAME.key\"\ntls_ca = \"{where / CA_CERT}\""
    )


# --- --cacert: the CLI as a client of nodes with TLS on --------------------------------------

CACERT_META = "dynakv.cacert"


def _remember_cacert(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[CACERT_META] = value


CACERT_OPTION = click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="DYNAKV_CACERT",
    expose_value=False,
    callback=_remember_cacert,
    help="CA file (PEM) of nodes with TLS on: their ports are reached over TLS and checked "
    "against it (env DYNAKV_CACERT).",
)


def cacert() -> str | None:
    """The --cacert of the command running, if any."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(CACERT_META) if ctx is not None else None


def http_url(addr: str, path: str) -> str:
    """A node's HTTP API URL: https when --cacert says its ports have TLS on."""
    return f"{'https' if cacert() else 'http'}://{addr}{path}"


def https_context() -> ssl.SSLContext | None:
    """For urlopen(context=...): checks a node's HTTP port against --cacert."""
    ca = cacert()
    return ssl.create_default_context(cafile=ca) if ca else None
