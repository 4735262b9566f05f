"""Make docs/console.png: a real 3-node cluster on loopback under a light read/write load for
a minute, its console opened in Debian's headless chromium, the page saved as shown.

    PYTHONPATH=src:. python docs/console_screenshot.py [--seconds 60]

Every process it starts (nodes, chromium) is stopped by PID on the way out, even on failure.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

from tests.cluster.browser import Browser, why_no_browser
from tests.cluster.harness import ProcessCluster

from dynakv import Client

OUT = Path(__file__).with_name("console.png")


def load(addrs: list[str], stop: threading.Event) -> None:
    """About 150 requests a second, two reads for each write, some keys deleted."""
    rng = random.Random(18)
    with Client(addrs) as client:
        while not stop.is_set():
            key = f"user-{rng.randrange(2000):04d}"
            roll = rng.random()
            if roll < 0.6:
                client.get("demo", key)
            elif roll < 0.95:
                client.put("demo", key, rng.randbytes(rng.randrange(100, 2000)))
            else:
                client.delete("demo", key)
            time.sleep(1 / 150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load before the picture")
    args = parser.parse_args()
    missing = why_no_browser()
    if missing:
        raise SystemExit(f"no browser: {missing}")
    with tempfile.TemporaryDirectory(prefix="dynakv-console-") as root:
        cluster = ProcessCluster(Path(root), 3)
        stop = threading.Event()
        worker = threading.Thread(target=load, args=(cluster.node_addrs, stop))
        browser = None
        try:
            cluster.start()
            worker.start()
            browser = Browser()
            browser.open(f"{cluster[0].url}/")
            time.sleep(args.seconds)
            browser.wait_for("a sample", lambda: browser.script(
                "return document.querySelectorAll('#chart-p99 path[data-node]').length === 3"
            ))
            browser.screenshot(OUT)
            print(f"wrote {OUT}")
        finally:
            stop.set()
            if worker.is_alive():
                worker.join()
            if browser is not None:
                browser.close()
            cluster.stop()


if __name__ == "__main__":
    main()
