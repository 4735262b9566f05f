"""The [security] settings as a node reads them: the secret file (or the environment variable
naming it), its checks, and which TLS files go together."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dynakv import config
from dynakv.config import SECRET_FILE_ENV, SecurityConfig
from dynakv.runtime.logs import NodeLog
from dynakv.runtime.peer_gate import load_secrets
from dynakv.tls import SecurityFilesError

SECRET = "0123456789abcdef0123456789abcdef"


def _secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_environment_names_the_secret_file_when_the_config_names_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_FILE_ENV, "/from/env")
    assert config.load().security.cluster_secret_file == "/from/env"
    named = tmp_path / "node.toml"
    named.write_text('[security]\ncluster_secret_file = "/from/file"\n')
    assert config.load(named).security.cluster_secret_file == "/from/file"
    monkeypatch.delenv(SECRET_FILE_ENV)
    assert config.load().security.cluster_secret_file is None


def test_a_certificate_needs_its_key_and_the_cluster_ca() -> None:
    with pytest.raises(ValueError, match="go together"):
        SecurityConfig(tls_cert="node.pem", tls_key="node.key")
    with pytest.raises(ValueError, match="go together"):
        SecurityConfig(tls_key="node.key", tls_ca="ca.pem")
    SecurityConfig(tls_cert="node.pem", tls_key="node.key", tls_ca="ca.pem")
    SecurityConfig(tls_ca="ca.pem")  # turns nothing on


def test_a_secret_file_others_may_read_is_used_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _secret_file(tmp_path, f"{SECRET}\n", 0o644)
    with caplog.at_level(logging.WARNING, logger="dynakv"):
        assert load_secrets(str(path), NodeLog("n1")) == (SECRET.encode(),)
    warnings = [r for r in caplog.records if r.getMessage() == "cluster_secret_file_open"]
    assert len(warnings) == 1
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="dynakv"):
        load_secrets(str(path), NodeLog("n1"))
    assert not caplog.records


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "holds no cluster secret"), ("short\n", "shorter than 16 bytes")],
)
def test_an_unusable_secret_file_is_refused_with_its_name(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _secret_file(tmp_path, text)
    with pytest.raises(SecurityFilesError, match=message):
        load_secrets(str(path), NodeLog("n1"))
    with pytest.raises(SecurityFilesError, match="No such file"):
        load_secrets(str(tmp_path / "missing"), NodeLog("n1"))
