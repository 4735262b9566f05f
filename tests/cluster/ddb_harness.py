"""A real 3-node cluster with the DynamoDB endpoint on every node, and boto3 clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cluster.harness import ProcessCluster, free_port


@contextmanager
def dynamo_cluster(root: Path, size: int = 3) -> Iterator[ProcessCluster]:
    """Nodes with `--dynamodb` on a free port each; stopped by PID even on failure."""
    procs = ProcessCluster(root, size)
    for node in procs.nodes:
        node.extra_args += ["--dynamodb", f"127.0.0.1:{free_port()}"]
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()


def endpoint(procs: ProcessCluster, index: int) -> str:
    args = procs[index].extra_args
    return "http://" + args[args.index("--dynamodb") + 1]


def client(procs: ProcessCluster, index: int = 0, retries: int = 0) -> Any:
    """boto3's DynamoDB client for node `index`, as a user makes it (SigV4 signed)."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint(procs, index),
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": retries + 1, "mode": "standard"},
                      read_timeout=60, connect_timeout=10),
    )  # fmt: skip


def make_table(ddb: Any, name: str, range_type: str | None = "S", hash_type: str = "S") -> None:
    """An on-demand table with key pk (and sort key sk when range_type is given)."""
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    defs = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if range_type:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        defs.append({"AttributeName": "sk", "AttributeType": range_type})
    ddb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=defs, BillingMode="PAY_PER_REQUEST"
    )


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    """(Code, Message) of the DynamoDB error a boto3 call must raise."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]
