"""`dynakv bench`'s front-end and security options: the combinations that cannot work are
refused with a message saying why, before any node is started or any request sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dynakv.cli import main
from dynakv.load_generator import BenchSpec


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--secure"], "--secure starts a secure --local cluster"),
        (["--local", "1", "--api", "dynamodb", "--secure"], "runs with security off"),
        (["--api", "dynamodb", "--user", "ann"], "runs with security off"),
        (["--consistent-read"], "--consistent-read applies to --api dynamodb only"),
        (["--local", "1", "--secure", "--user", "ann"], "makes its own admin user"),
        (["--api", "grpc"], "Invalid value for '--api'"),
    ],
)
def test_bench_refuses_options_that_do_not_go_together(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        main, ["bench", *args, "--records", "10", "--duration", "1", "--no-progress"],
        env={"DYNAKV_PASSWORD": "pw"},
    )  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output


def test_bench_spec_refuses_an_unknown_api() -> None:
    with pytest.raises(ValueError, match="unknown api 'grpc'"):
        BenchSpec(nodes=("127.0.0.1:1",), api="grpc")


def test_the_global_user_counts_as_a_user_for_bench() -> None:
    result = CliRunner().invoke(
        main, ["--user", "ann", "bench", "--api", "dynamodb", "--records", "10", "--no-progress"],
        env={"DYNAKV_PASSWORD": "pw"},
    )  # fmt: skip
    assert result.exit_code != 0
    assert "runs with security off" in result.output
