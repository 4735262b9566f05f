"""Make the console's screenshots from a real 3-node cluster on loopback under a light
read/write load, its console opened in Debian's headless chromium:

    PYTHONPATH=src:. python docs/console_screenshot.py [--scene healthy|failure|join]

healthy (docs/console.png): a minute of load. failure (docs/console-failure.png): then node3
SIGKILLed, its writes held as hints. join (docs/console-join.png): then node4 joining, caught
while it pulls its partitions (one key per batch, so the pull lasts). Every process it starts
(nodes, chromium) is stopped by PID on the way out, even on failure.
"""

from __future__ import annotations

import argparse
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

from tests.cluster.browser import Browser, why_no_browser
from tests.cluster.harness import ProcessCluster, local_node, put_many

from dynakv import Client
from dynakv.errors import DynakvError

DOCS = Path(__file__).parent
OUT = {
    "healthy": DOCS / "console.png",
    "failure": DOCS / "console-failure.png",
    "join": DOCS / "console-join.png",
}


def load(addrs: list[str], stop: threading.Event) -> None:
    """About 150 requests a second, two reads for each write, some keys deleted."""
    rng = random.Random(18)
    with Client(addrs) as client:
        while not stop.is_set():
            key = f"user-{rng.randrange(2000):04d}"
            roll = rng.random()
            try:
                if roll < 0.6:
                    client.get("demo", key)
                elif roll < 0.95:
                    client.put("demo", key, rng.randbytes(rng.randrange(100, 2000)))
                else:
                    client.delete("demo", key)
            except (DynakvError, OSError):
                pass  # a node killed on purpose: the load goes on
            time.sleep(1 / 150)


def shows(browser: Browser, selector: str) -> bool:
    return bool(browser.script(f"return !!document.querySelector({selector!r})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", choices=sorted(OUT), default="healthy")
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
            if args.scene == "failure":
                cluster[2].kill(signal.SIGKILL)
                browser.wait_for("node3 down", lambda: shows(browser, "tr[data-status=down]"))
                time.sleep(10)  # hints pile up for node3
            elif args.scene == "join":
                keys = [f"bulk-{i:05d}" for i in range(40_000)]
                put_many(cluster.node_addrs, "bulk", keys, b"v" * 100)  # a pull that lasts
                config = Path(root) / "node4.toml"
                config.write_text("transfer_batch = 1\ntransfer_concurrency = 2\n")
                joiner = local_node(Path(root), "node4", ["--config", str(config)])
                cluster.nodes.append(joiner)
                joiner.start(join=cluster[0].node_addr)
                browser.wait_for("a transfer", lambda: shows(browser, "#transfers progress"))
                time.sleep(4)
            browser.wait_for("a sample", lambda: shows(browser, "#chart-p99 path[data-node]"))
            browser.screenshot(OUT[args.scene])
            print(f"wrote {OUT[args.scene]}")
        finally:
            stop.set()
            if worker.is_alive():
                worker.join()
            if browser is not None:
                browser.close()
            cluster.stop()


if __name__ == "__main__":
    main()
