"""`dynakv bench`'s choice of front end and its security options: `--api binary|dynamodb|http`,
`--consistent-read`, `--user` (its password from DYNAKV_PASSWORD or a prompt, as every client
command's) and, with `--local`, `--secure` (bench_secure.py). The rest of the command is in
cli.py; this module turns these options into BenchSpec and LocalCluster arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from dynakv.bench_apis import APIS
from dynakv.cli_user import PASSWORD_ENV, credentials


def bench_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options below, added to the `bench` command."""
    options = [
        click.option(
            "--api",
            type=click.Choice(APIS),
            default="binary",
            show_default=True,
            help="The front end measured: the binary protocol (node ports), the DynamoDB "
            "endpoint (GetItem/PutItem, UpdateItem for F; --nodes are its HOST:PORTs) or the "
            "KV HTTP API (--nodes are HTTP ports).",
        ),
        click.option(
            "--consistent-read", is_flag=True, help="--api dynamodb: GetItem with ConsistentRead."
        ),
        click.option(
            "--user",
            "bench_user",
            help=f"Log in as this user (authentication on); password from ${PASSWORD_ENV}, "
            "else a prompt. Default: the global --user.",
        ),
        click.option(
            "--secure",
            is_flag=True,
            help="With --local: start the nodes with a cluster secret, TLS on every port and "
            "users on, and log in as an admin made for the run.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def client_settings(
    api: str,
    consistent_read: bool,
    bench_user: str | None,
    secure: bool,
    local: int | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """BenchSpec and LocalCluster keyword arguments for these options; ValueError for a
    combination that cannot work."""
    if consistent_read and api != "dynamodb":
        raise ValueError("--consistent-read applies to --api dynamodb only")
    if secure and local is None:
        raise ValueError("--secure starts a secure --local cluster; for a cluster of your own "
                         "give --user and --cacert")  # fmt: skip
    global_user = click.get_current_context().find_root().params.get("user")
    if secure and (bench_user or global_user):
        raise ValueError("--secure makes its own admin user: no --user")
    if api == "dynamodb" and (secure or bench_user or global_user):
        # The endpoint does not check SigV4 signatures yet, so a node refuses to serve it
        # with authentication on; the bench has nothing to sign with either.
        raise ValueError("--api dynamodb runs with security off: no --secure or --user")
    spec: dict[str, Any] = {"api": api, "consistent_read": consistent_read}
    if bench_user:
        spec["user"] = bench_user
        spec["password"] = os.environ.get(PASSWORD_ENV) or click.prompt(
            f"password for {bench_user}", hide_input=True, err=True
        )
    else:
        spec.update(credentials())
    cluster: dict[str, Any] = {"dynamodb": api == "dynamodb"}
    if secure:
        from dynakv.bench_secure import LocalSecurity

        cluster["security"] = LocalSecurity()
    return spec, cluster
