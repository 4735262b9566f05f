"""`dynakv user key create|list|delete USER`: AWS-style access keys for the DynamoDB endpoint
(SigV4). The key is made here from the system's CSPRNG, sent to the node (over TLS where the
node port has it), sealed there under the cluster secret, and its secret printed once.
"""

from __future__ import annotations

import base64
import json
import secrets

import click

from dynakv import users as us
from dynakv.cli_user import NODE, credentials, send_change
from dynakv.client import Client
from dynakv.errors import DynakvError
from dynakv.messages import ClientUserChange

KEY_PREFIX = "DKIA"  # as AWS's AKIA: a reader sees what kind of id it is


def new_key_id() -> str:
    """DKIA and 16 base32 characters (80 random bits), AWS's shape of an access key id."""
    return KEY_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()


def new_secret() -> str:
    """40 URL-safe characters (240 random bits), as long as AWS's secret access keys."""
    return secrets.token_urlsafe(30)


@click.group("key")
def key_group() -> None:
    """Access keys of a user, for the DynamoDB endpoint's SigV4 (boto3, the aws CLI).

    A key acts with its user's grants (a table is `--table` in `dynakv user grant`)."""


@key_group.command("create")
@click.argument("name")
@NODE
def key_create(name: str, node: str) -> None:
    """Create an access key for user NAME; its secret is printed once, here only."""
    key_id, secret = new_key_id(), new_secret()
    change = ClientUserChange(0, "key_create", name, key_id=key_id, key_secret=secret.encode())
    send_change(node, change)
    click.echo(f"access key created for {name} (the secret is shown once: keep it secret)")
    click.echo(f"aws_access_key_id = {key_id}")
    click.echo(f"aws_secret_access_key = {secret}")


@key_group.command("delete")
@click.argument("name")
@click.argument("key_id")
@NODE
def key_delete(name: str, key_id: str, node: str) -> None:
    """Delete access key KEY_ID of user NAME: requests it signs are refused from then on."""
    send_change(node, ClientUserChange(0, "key_delete", name, key_id=key_id))
    click.echo(f"access key {key_id} of {name} deleted")


@key_group.command("list")
@click.argument("name")
@NODE
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def key_list(name: str, node: str, as_json: bool) -> None:
    """The access key ids of user NAME (never their secrets)."""
    try:
        with Client(node, **credentials()) as client:
            user = us.find(client.cluster().users, name)
    except DynakvError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    if user is None:
        raise click.ClickException(f"no user {name!r}")
    ids = [k.key_id for k in user.access_keys]
    if as_json:
        click.echo(json.dumps(ids))
        return
    for key_id in ids:
        click.echo(key_id)
