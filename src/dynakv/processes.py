"""Stopping child processes this program started: by PID, politely first, then for sure."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterable
from typing import Any


def stop_processes(procs: Iterable[subprocess.Popen[Any] | None], timeout: float = 15.0) -> None:
    """Ask every process still running to stop (SIGCONT first, for one paused by SIGSTOP,
    then SIGTERM), all at once so they shut down in parallel, then wait for each; one still
    running after `timeout` seconds is SIGKILLed. Every process is reaped on return."""
    started = [proc for proc in procs if proc is not None]
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
