"""stop_processes: every child we started ends, paused or stubborn ones included."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from dynakv.processes import stop_processes

SLEEPER = "import time\nwhile True: time.sleep(0.05)"
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_running_paused_and_stubborn_processes_all_end() -> None:
    plain, paused, stubborn = _spawn(SLEEPER), _spawn(SLEEPER), _spawn(STUBBORN)
    done = _spawn("pass")
    done.wait()
    try:
        time.sleep(0.5)  # let the stubborn one install its SIGTERM handler
        paused.send_signal(signal.SIGSTOP)
        stop_processes([plain, paused, None, stubborn, done], timeout=2)
        assert plain.returncode == -signal.SIGTERM
        assert paused.returncode == -signal.SIGTERM  # woken by SIGCONT, then stopped
        assert stubborn.returncode == -signal.SIGKILL  # ignored SIGTERM past the timeout
        assert done.returncode == 0  # already gone: left as it was
    finally:
        for proc in (plain, paused, stubborn):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
