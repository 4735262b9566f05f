"""`dynakv user add|list|grant|revoke|delete`, and the credentials every client command
sends (`dynakv --user NAME`, the password from DYNAKV_PASSWORD or a prompt). A password is
never an argument (arguments show in `ps`): it comes from --password-file or a prompt, and
is hashed here, so the node only ever receives its scrypt hash.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import click

from dynakv import users as us
from dynakv.client import Client
from dynakv.errors import DynakvError
from dynakv.item_keys import is_table_bucket, table_bucket
from dynakv.messages import ClientUserChange

PASSWORD_ENV = "DYNAKV_PASSWORD"
USER_OPTION = click.option(
    "--user",
    envvar="DYNAKV_USER",
    help="Authenticate as this user (clusters with [security] authentication on); its "
    f"password or token from ${PASSWORD_ENV}, else a prompt.",
)
NODE = click.option(
    "--node",
    default="127.0.0.1:7001",
    show_default=True,
    help="Any member's node port (binary protocol), HOST:PORT.",
)
PERMISSION = click.Choice(us.PERMISSIONS)


def credentials() -> dict[str, Any]:
    """user= and password= for a Client, from the global --user (nothing without it)."""
    root = click.get_current_context().find_root()
    user = root.params.get("user")
    if not user:
        return {}
    obj = root.ensure_object(dict)
    if "password" not in obj:
        obj["password"] = os.environ.get(PASSWORD_ENV) or click.prompt(
            f"password for {user}", hide_input=True, err=True
        )
    return {"user": user, "password": obj["password"]}


def http_request(url: str, method: str = "GET") -> urllib.request.Request:
    """A request to a node's HTTP API carrying the --user credentials (Basic) if any."""
    found = credentials()
    headers = {}
    if found:
        pair = f"{found['user']}:{found['password']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    data = b"" if method == "POST" else None
    return urllib.request.Request(url, data=data, method=method, headers=headers)


def send_change(node: str, change: ClientUserChange) -> list[us.UserRecord]:
    try:
        with Client(node, **credentials()) as client:
            return list(us.live(client.change_user(change).users))
    except DynakvError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


def _new_password(password_file: str | None, name: str) -> str:
    if password_file is not None:
        text = Path(password_file).read_text().rstrip("\r\n")
        if not text:
            raise click.ClickException(f"{password_file} is empty")
        return text
    return click.prompt(
        f"new password for {name}", hide_input=True, confirmation_prompt=True, err=True
    )


def _grants(grants: tuple[tuple[str, str], ...], admin: bool) -> list[tuple[str, str]]:
    out = [(bucket, permission) for permission, bucket in grants]
    return [*out, (us.ALL_BUCKETS, "admin")] if admin else out


GRANT_OPTION = click.option(
    "--grant",
    "grants",
    multiple=True,
    type=(PERMISSION, str),
    metavar="PERMISSION BUCKET",
    help="read|write|admin on a bucket (its bucket type) or '*' for all; repeatable.",
)


@click.group("user")
def user_group() -> None:
    """Users and their permissions (a cluster with [security] authentication on).

    While the cluster has no user, `dynakv user add NAME --admin` needs no credentials:
    that first admin then adds the others."""


@user_group.command("add")
@click.argument("name")
@NODE
@click.option("--admin", is_flag=True, help="Admin of the whole cluster (admin on '*').")
@GRANT_OPTION
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the password from this file (else a prompt).",
)
@click.option(
    "--token", is_flag=True, help="Make a bearer token instead of a password; printed once."
)
def user_add(
    name: str,
    node: str,
    admin: bool,
    grants: tuple[tuple[str, str], ...],
    password_file: str | None,
    token: bool,
) -> None:
    """Add user NAME (or give it new credentials, keeping its grants)."""
    password: us.Scrypt | None = None
    digest = b""
    made = ""
    if token:
        made = secrets.token_urlsafe(32)
        digest = us.token_digest(made)
    else:
        password = us.hash_password(_new_password(password_file, name), os.urandom(16))
    change = ClientUserChange(0, "add", name, password, digest, _grants(grants, admin))
    send_change(node, change)
    click.echo(f"user {name} added")
    if made:
        click.echo(f"bearer token (shown once, keep it secret): {made}")


def _grant_command(op: str, doc: str, done: str) -> None:
    """`dynakv user grant|revoke NAME PERMISSION BUCKET`: one shape, two verbs."""

    @user_group.command(op, help=doc)
    @click.argument("name")
    @click.argument("permission", type=PERMISSION)
    @click.argument("bucket")
    @NODE
    @click.option("--table", is_flag=True, help="BUCKET names a DynamoDB table.")
    def command(name: str, permission: str, bucket: str, node: str, table: bool) -> None:
        where = table_bucket(bucket) if table else bucket
        send_change(node, ClientUserChange(0, op, name, grants=[(where, permission)]))
        shown = f"table {bucket}" if table else bucket
        click.echo(done.format(permission=permission, bucket=shown, name=name))


_grant_command(
    "grant",
    "Give user NAME PERMISSION (read|write|admin) on BUCKET ('*': every bucket).",
    "granted {permission} on {bucket} to {name}",
)
_grant_command(
    "revoke",
    "Take PERMISSION on BUCKET from user NAME.",
    "revoked {permission} on {bucket} from {name}",
)


@user_group.command("delete")
@click.argument("name")
@NODE
def user_delete(name: str, node: str) -> None:
    """Delete user NAME everywhere (its sessions stop at their next request)."""
    send_change(node, ClientUserChange(0, "delete", name))
    click.echo(f"user {name} deleted")


@user_group.command("list")
@NODE
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def user_list(node: str, as_json: bool) -> None:
    """The cluster's users, their kind of credential and their grants (never hashes)."""
    try:
        with Client(node, **credentials()) as client:
            found = us.live(client.cluster().users)
    except DynakvError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    rows = [
        {
            "name": u.name,
            "password": u.password is not None,
            "token": bool(u.token_sha256),
            "grants": [f"{p}:{_shown(b)}" for b, p in u.grants],
            "access_keys": [k.key_id for k in u.access_keys],
        }
        for u in found
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        kinds = "+".join(k for k in ("password", "token") if row[k]) or "none"
        click.echo(f"{row['name']}\t{kinds}\t{' '.join(row['grants']) or '(no grants)'}")


def _shown(bucket: str) -> str:
    """A grant's bucket as an operator types it: a table's as table/NAME."""
    return "table/" + bucket.removeprefix(table_bucket("")) if is_table_bucket(bucket) else bucket
