"""TLS contexts (the standard ssl module) from the [security] table's files: the server side
of every port, mutual TLS between peers on the node port, and a client's check of a node.

Builds contexts only; the listeners and dialers that use them are in runtime/ and client.py.
"""

from __future__ import annotations

import ssl

from dynakv.config import SecurityConfig


class SecurityFilesError(ValueError):
    """A cluster secret or TLS file the node cannot use: `dynakv serve` says which in one
    line and exits before listening."""


def enabled(security: SecurityConfig) -> bool:
    return security.tls_cert is not None


def server_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """For the HTTP and Redis ports: this node's certificate; clients present none."""
    if not enabled(security):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert security.tls_cert is not None
    context.load_cert_chain(security.tls_cert, security.tls_key)
    return context


def node_port_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """For the node port: as server_context, and a certificate the other side presents must
    be signed by the cluster CA. Optional, because binary clients share the port; a peer
    without one is refused at its Hello (runtime/peer_gate.py)."""
    context = server_context(security)
    if context is not None:
        context.load_verify_locations(security.tls_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_dial_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """For a node dialling a peer: check the peer's certificate against the cluster CA (and
    its address against the certificate's names), and present this node's own."""
    if not enabled(security):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(security.tls_ca)
    assert security.tls_cert is not None
    context.load_cert_chain(security.tls_cert, security.tls_key)
    return context


def node_contexts(
    security: SecurityConfig,
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The node port's context and the peer dialler's, built at start so that an unusable
    file stops the node there with its name."""
    try:
        return node_port_context(security), peer_dial_context(security)
    except (OSError, ssl.SSLError) as exc:
        files = f"{security.tls_cert}, {security.tls_key}, {security.tls_ca}"
        raise SecurityFilesError(f"[security] TLS files ({files}): {exc}") from exc


def client_context(tls: ssl.SSLContext | str | None) -> ssl.SSLContext | None:
    """A client's context: one given as is, or the CA file (PEM) that signed the nodes'
    certificates; None: plain TCP."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    return ssl.create_default_context(cafile=tls)
