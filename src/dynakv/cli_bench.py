"""`dynakv bench`'s choice of front end and its security options: `--api binary|dynamodb|http`,
`--consistent-read`, `--user` (its password from DYNAKV_PASSWORD or a prompt, as every client
command's), with `--local`, `--secure` (bench_secure.py), and workload E's `--items-per-key`,
`--max-scan-length` and `--query-page` (bench_query.py). The rest of the command is in
cli.py; this module turns these options into BenchSpec and LocalCluster arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from dynakv.bench_apis import APIS
from dynakv.bench_query import DEFAULT_ITEMS_PER_KEY
from dynakv.cli_user import PASSWORD_ENV, credentials
from dynakv.ycsb import MAX_SCAN_LENGTH


def bench_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options below, added to the `bench` command."""
    options = [
        click.option(
            "--api",
            type=click.Choice(APIS),
            default="binary",
            show_default=True,
            help="The front end measured: the binary protocol (node ports), the DynamoDB "
            "endpoint (GetItem/PutItem, UpdateItem for F, Query for E; --nodes are its "
            "HOST:PORTs) or the KV HTTP API (--nodes are HTTP ports).",
        ),
        click.option(
            "--consistent-read",
            is_flag=True,
            help="--api dynamodb: GetItem and Query with ConsistentRead.",
        ),
        click.option(
            "--items-per-key",
            type=click.IntRange(1),
            help=f"Workload E: records per partition key [{DEFAULT_ITEMS_PER_KEY}].",
        ),
        click.option(
            "--max-scan-length",
            type=click.IntRange(1),
            help=f"Workload E: scans read 1 to this many items, uniformly [{MAX_SCAN_LENGTH}].",
        ),
        click.option(
            "--query-page",
            type=click.IntRange(1),
            help="Workload E: Limit of one Query; a longer scan pages with ExclusiveStartKey "
            "[the scan's length].",
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


def scan_settings(
    workload: str, items_per_key: int | None, max_scan_length: int | None, query_page: int | None
) -> dict[str, Any]:
    """BenchSpec keyword arguments of workload E's options; ValueError when they are given
    to another workload (they would silently change nothing)."""
    given = {
        "items_per_key": items_per_key,
        "max_scan_length": max_scan_length,
        "query_page": query_page,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if given and workload != "e":
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"{options} apply to --workload e only")
    return given
