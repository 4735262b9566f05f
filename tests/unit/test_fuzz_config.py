"""Fuzzing config loading (tests/fuzz/targets.py): any TOML file loads or is a ValueError
naming the file. Fixed inputs: the regression corpus, with what the fuzzer found."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import config_load, short_run

test_config_load = short_run("config_load")


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100_000 + "\n",  # found: tomllib's RecursionError escaped load
        "a = " + "{b = " * 50_000 + "\n",
        "request_timeout = nan\n",  # found: nan and inf were taken as durations
        "idle_timeout = inf\n",
        "phi_threshold = -inf\n",
        "[defaults]\nn = 9223372036854775807\n",
        '[buckets.""]\nn = 1\n',
        "[buckets.default]\nn = 1\n",
        "[defaults]\ndatacenters = {dc1 = 0}\n",
        'resp_bucket = "a\\u0000b"\n',  # found with this corpus: its error named no file
        "ring_size = 0\n",
        "max_connections = 0\n",
        b'name = "\xc2"\n',  # found: a file of bad UTF-8 let tomllib's UnicodeDecodeError out
        b"\xff\xfe",
    ],
)
def test_config_regressions(text: str | bytes) -> None:
    config_load(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("a = " + "[" * 100_000 + "\n", "nested too deep"),
        ("request_timeout = nan\n", "request_timeout must be a number, got NaN"),
        ("idle_timeout = inf\n", "idle_timeout must be a number, got Infinity"),
        ('resp_bucket = "a\\u0000b"\n', "resp_bucket: bucket must not contain NUL"),
        (b'name = "\xc2"\n', "not UTF-8: invalid continuation byte at byte 8"),
    ],
)
def test_what_the_fuzzer_found_is_refused_clearly(tmp_path, text: str | bytes, said: str) -> None:
    from dynakv import config

    path = tmp_path / "node.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match="node") as caught:
        config.load(path)
    assert said in str(caught.value)
