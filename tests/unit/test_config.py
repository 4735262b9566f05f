"""A node's config file: a wrong value, key or syntax stops the node at start, naming the
key, the type expected and the file; a good file loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dynakv import config
from dynakv.cli import main


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('request_timeout = "5s"', 'request_timeout must be a number, got "5s"'),
        ("ring_size = 64.5", "ring_size must be an integer, got 64.5"),
        ("anti_entropy = 1", "anti_entropy must be true or false, got 1"),
        ("max_value_bytes = true", "max_value_bytes must be an integer, got true"),
        ('read_fanout = "all"', 'read_fanout must be one of "r", "n", got "all"'),
        ("name = 7", "name must be a string, got 7"),
        ('[defaults]\nn = "3"', '[defaults] n must be an integer, got "3"'),
        ("[buckets.carts]\nreplicas = 3", "[buckets.carts]: unknown keys replicas"),
        ("[buckets.carts]\nr = 1.5", "[buckets.carts] r must be an integer or a string, got 1.5"),
        ("[buckets.carts]\nn = 0", "[buckets.carts]: n must be at least 1"),
        ('[buckets.carts]\ndatacenters = {dc1 = "3"}', "[buckets.carts] datacenters must be"),
        ("buckets = 3", "buckets must be tables"),
        ('colour = "blue"', "unknown config keys: colour"),
        ("request_timeout = ", "not valid TOML"),
        ("[security]\nauthentication = 1", "[security] authentication must be true or false"),
        ('[security]\nsecret = "x"', "[security]: unknown keys secret"),
        ("security = 3", "[security] must be a table"),
        (
            'dynamodb_addr = "127.0.0.1:8100"\n[security]\nauthentication = true',
            "the DynamoDB endpoint (dynamodb_addr, --dynamodb) with [security] authentication "
            "needs cluster_secret_file",
        ),
        ("[security]\nfailed_login_burst = 0", "failed_login_burst must be at least 1"),
    ],
)
def test_a_bad_config_value_is_refused_naming_key_type_and_file(tmp_path, text, expected):
    path = _file(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_good_config_loads_with_ints_where_numbers_are_asked(tmp_path):
    text = """
request_timeout = 5
read_fanout = "n"
[defaults]
r = "quorum"
[buckets.orders]
datacenters = {dc1 = 2, dc2 = 1}
"""
    loaded = config.load(_file(tmp_path, text), name="node2")
    assert loaded.request_timeout == 5
    assert loaded.name == "node2"
    assert loaded.buckets["orders"].n == 3
    assert loaded.buckets["orders"].r == "local_quorum"
    assert loaded.security == config.SecurityConfig()


def test_the_security_table_loads(tmp_path):
    text = '[security]\nauthentication = true\ntls_ca = "ca.pem"\n'
    loaded = config.load(_file(tmp_path, text))
    assert loaded.security.authentication
    assert loaded.security.tls_ca == "ca.pem"
    assert loaded.security.cluster_secret_file is None


def test_the_dynamodb_endpoint_with_users_loads_with_a_cluster_secret(tmp_path, monkeypatch):
    text = 'dynamodb_addr = "127.0.0.1:8100"\n[security]\nauthentication = true\n'
    monkeypatch.delenv(config.SECRET_FILE_ENV, raising=False)
    with_file = config.load(_file(tmp_path, text + 'cluster_secret_file = "s"\n'))
    assert with_file.security.cluster_secret_file == "s"
    monkeypatch.setenv(config.SECRET_FILE_ENV, "from-env")
    assert config.load(_file(tmp_path, text)).security.cluster_secret_file == "from-env"


def test_serve_with_a_bad_config_exits_with_one_line_and_no_traceback(tmp_path):
    path = _file(tmp_path, 'request_timeout = "5s"')
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert f"{path}: request_timeout must be a number" in result.output
