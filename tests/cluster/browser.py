"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver: no browser is
downloaded. `why_no_browser()` says what is missing (tests skip with it); `Browser` starts one
with a fresh profile and stops it, and its chromedriver by PID, even when a test fails.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1200",
]


def why_no_browser() -> str | None:
    """None when the browser can be driven, else what is missing (`.ci/run` installs both)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return None


class Browser:
    """One headless chromium with a profile of its own, for one test."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="dynakv-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        # Given both paths, Selenium runs them as they are and fetches nothing.
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Until `check()` returns something true (its value); AssertionError naming `what`
        and the page's text after `timeout` seconds. No timed assertion: a generous deadline
        on a condition."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.script("return document.body.innerText") or ""
                raise AssertionError(f"page never showed {what} in {timeout:.0f} s:\n{text}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        """The whole page, below the window's height too (Chrome DevTools' capture)."""
        width, height = self.script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        chromedriver = self.driver.service.process  # a Popen: it knows if it was reaped
        try:
            self.driver.quit()  # chromium, then chromedriver
        finally:
            if chromedriver is not None and chromedriver.poll() is None:
                chromedriver.kill()
                chromedriver.wait(timeout=20)
            shutil.rmtree(self.profile, ignore_errors=True)
