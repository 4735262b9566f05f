"""The `dynakv` command as a new user meets it: help text, defaults and one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import click
from click.testing import CliRunner

from dynakv.cli import main
from tests.cluster.harness import free_port


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


def test_every_option_of_every_command_has_help_text():
    missing = [
        f"{name} {option.opts[0]}"
        for name, command in _commands(main)
        for option in command.params
        if isinstance(option, click.Option) and not option.help
    ]
    assert not missing


def test_serve_help_shows_every_default():
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for default in ("node1", "./data/node1", "127.0.0.1:7000", "127.0.0.1:8000", "dynakv", "64"):
        assert f"[default: {default}]" in result.output


def test_the_cluster_group_says_it_changes_membership():
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert "membership" in result.output


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [
            sys.executable, "-m", "dynakv", "serve", "--data-dir", str(tmp_path),
            "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{free_port()}",
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port}, the node port (--listen): "
        "Address already in use"
    )


def test_a_cli_request_nothing_answers_names_the_address_and_make_run():
    address = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["get", "b", "k", "--node", address, "--timeout", "2"])
    assert result.exit_code == 1
    assert f"no node reachable at {address}" in result.output
    assert "make run" in result.output
