"""Real `dynakv serve` processes for the benchmarks that need them (not a benchmark itself).

Every process gets free ports on 127.0.0.1, runs in a session of its own (so a Ctrl-C
reaches only the benchmark, which then stops it) and is stopped by its PID. `Processes` is
a context manager that stops every server it started, whatever ends the block; SIGTERM is
turned into SystemExit so that `finally` blocks run for it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from dynakv.local_cluster import LocalNode, free_port
from dynakv.processes import stop_processes

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (?:node=\S+ )?(\w+)(.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document; raises OSError (including HTTPError) or ValueError."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def get_status(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET, without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def write_config(path: Path, cluster: str, n: int, r: int, w: int, **top: Any) -> Path:
    """A node config TOML: top-level keys, then [defaults] n/r/w."""
    lines = [f'cluster = "{cluster}"']
    for key, value in top.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    lines += ["[defaults]", f"n = {n}", f"r = {r}", f"w = {w}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """One `dynakv serve` process: start, SIGKILL, restart with the same data dir, stop."""

    def __init__(self, name: str, root: Path, config: Path) -> None:
        self.name = name
        self.data_dir = root / name
        self.config = config
        self.node_addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}"
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, join: str | None = None) -> None:
        args = [
            sys.executable, "-m", "dynakv", "serve",
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen", self.node_addr,
            "--http", self.http_addr,
            "--config", str(self.config),
        ]  # fmt: skip
        if join:
            args += ["--join", join]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                get_json(f"{self.url}/v1/status", timeout=2)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def status(self) -> dict[str, Any]:
        return get_json(f"{self.url}/v1/status")

    def cluster(self) -> dict[str, Any]:
        return get_json(f"{self.url}/v1/cluster")

    def kill(self) -> None:
        """SIGKILL, by PID, and reap it."""
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.running:
            stop_processes([self.proc])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (0.0 where unavailable)."""
        node = LocalNode(self.name, self.node_addr, self.http_addr, self.log_path, self.proc)
        return node.cpu_seconds()

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def events(self, name: str) -> list[tuple[float, dict[str, str]]]:
        """(unix time, fields) of every log line of event `name`, oldest first.

        The runtime logs `%(asctime)s %(levelname)s node=NAME event k=v ...` in local time, to the
        millisecond; the fields are returned as the strings logged.
        """
        found = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            match = LOG_LINE.match(line)
            if match is None or match.group(3) != name:
                continue
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((when, dict(FIELD.findall(match.group(4)))))
        return found


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.1) -> float:
    """Poll check() until it is true; the time.time() at which it was seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.time()
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """Holds every server of a run; leaving the block stops them all and removes the data."""

    def __init__(self, keep: Path | None = None, prefix: str = "dynakv-bench-") -> None:
        self.keep = keep
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=keep))
        else:
            self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.servers: list[Server] = []

    def server(self, name: str, config: Path) -> Server:
        server = Server(name, self.root, config)
        self.servers.append(server)
        return server

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        for server in self.servers:
            if server.running:  # stop() failed part-way: make sure, by PID
                assert server.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
        if self.keep is None:
            shutil.rmtree(self.root, ignore_errors=True)


def begin() -> dict[str, Any]:
    """Start of a benchmark's main: SIGTERM raises SystemExit in the main thread (so cleanup
    in `finally` runs for it too); prints and returns which dynakv runs (`source_state`)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    source = source_state()
    print(describe_source(source), flush=True)
    return source


def run_all(count: int, one: Any) -> list[dict[str, Any]]:
    """one(1) .. one(count); a Ctrl-C keeps the runs already finished (every run stops its own
    servers on the way out)."""
    runs: list[dict[str, Any]] = []
    try:
        for index in range(1, count + 1):
            runs.append(one(index))
    except KeyboardInterrupt:
        print("interrupted; every server started has been stopped", file=sys.stderr)
        if not runs:
            raise SystemExit(130) from None
    return runs


def source_state() -> dict[str, Any]:
    """Where the dynakv that runs (here and in the servers, which inherit the environment)
    comes from: its directory; when that is this repository's src/ (the venv's editable
    install), the commit and any uncommitted changes under src/, which run too. To measure a
    clean commit: `git archive HEAD src | tar -x -C DIR; git rev-parse HEAD > DIR/COMMIT`,
    then run the benchmark with `PYTHONPATH=DIR/src`."""
    import dynakv

    package = Path(dynakv.__file__).resolve().parent
    root = Path(__file__).resolve().parent.parent
    state: dict[str, Any] = {"package": str(package), "commit": "", "src_dirty": []}
    if package != root / "src" / "dynakv":
        marker = package.parent.parent / "COMMIT"  # written by the export, if any
        if marker.exists():
            state["commit"] = marker.read_text().strip()
        return state

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    state["commit"] = git("rev-parse", "HEAD")
    state["src_dirty"] = dirty.splitlines() if dirty else []
    return state


def describe_source(state: dict[str, Any]) -> str:
    text = f"dynakv from {state['package']}, commit {state['commit'][:12] or '(unknown)'}"
    if state["src_dirty"]:
        text += f", with uncommitted changes: {' '.join(state['src_dirty'])}"
    return text


def table(runs: list[dict[str, Any]], rows: list[tuple[str, str, str]]) -> list[str]:
    """Markdown lines: one row per (label, key, format) with the median and each run's value
    (None, such as a drain that never finished, shows as n/a and is left out of the median)."""

    def number(value: Any, fmt: str) -> str:
        return "n/a" if value is None else fmt.format(value)

    head = "| figure | median | " + " | ".join(f"run {r['run']}" for r in runs) + " |"
    lines = [head, "|---|---|" + "---|" * len(runs)]
    for label, key, fmt in rows:
        values = [r[key] for r in runs]
        known = [v for v in values if v is not None]
        middle = number(statistics.median(known) if known else None, fmt)
        cells = " | ".join(number(v, fmt) for v in values)
        lines.append(f"| {label} | **{middle}** | {cells} |")
    return lines


def write_report(
    path: Path | None,
    name: str,
    opts: Any,
    source: dict[str, Any],
    runs: list[dict[str, Any]],
    **figures: Any,
) -> None:
    """The JSON of a benchmark: its settings, which dynakv ran, the summary figures, each run."""
    if path is None:
        return
    report = {
        "benchmark": name,
        "argv": sys.argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "cpus": os.cpu_count(),
        "source": {"at_start": source, "at_end": source_state()},
        **figures,
        "runs": runs,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
