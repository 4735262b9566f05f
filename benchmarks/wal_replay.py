"""How long a WalEngine takes to open after a crash, by how much log it replays (issue 17).

Restarting a node on the wal engine opens its store: the records not yet checkpointed are
replayed into LMDB and committed, synced, before the node serves. This fills one epoch of
the log with `--log-mib` MiB of commits (`--batch` puts of `--value-bytes` each; no
checkpoint starts meanwhile), stops the engine as a SIGKILL would (`crash`: the page cache
keeps the log), reopens it and times the open. With the node's defaults (16 MiB segments) a
checkpoint starts once half a segment is logged, so a crash leaves about 8 MiB to replay,
and at worst, while one checkpoint is still being synced, both segments: 32 MiB.

    .venv/bin/python benchmarks/wal_replay.py [--log-mib 8 16 32] [--runs 3] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from dynakv.storage.wal import WalEngine


def fill_and_crash(path: str, log_mib: int, batch: int, value_bytes: int) -> int:
    """Log `log_mib` MiB of commits in one epoch, then crash; returns the puts logged."""
    log_bytes = log_mib << 20
    # A segment of twice that (and no write count) keeps a checkpoint from starting.
    eng = WalEngine(path, segment_bytes=2 * log_bytes + (1 << 20), checkpoint_writes=1 << 40)
    value = os.urandom(value_bytes)
    puts = 0
    while eng._offset < log_bytes:
        for _ in range(batch):
            eng.put(b"%016d" % puts, value)
            puts += 1
        eng.commit()
    eng.crash()
    return puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-mib", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="puts per commit")
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    opts = parser.parse_args()
    root = tempfile.mkdtemp(prefix="wal-replay-", dir=opts.dir)
    try:
        for log_mib in opts.log_mib:
            seconds: list[float] = []
            for run in range(opts.runs):
                path = os.path.join(root, f"{log_mib}-{run}")
                puts = fill_and_crash(path, log_mib, opts.batch, opts.value_bytes)
                started = time.perf_counter()
                eng = WalEngine(path, segment_bytes=2 * (log_mib << 20) + (1 << 20))
                seconds.append(time.perf_counter() - started)
                records = eng.replayed
                eng.close()
                shutil.rmtree(path)
            runs = " / ".join(f"{s * 1000:.0f}" for s in seconds)
            print(
                f"{log_mib} MiB of log ({records} records, {puts} puts of {opts.value_bytes} B): "
                f"open {runs} ms, median {statistics.median(seconds) * 1000:.0f} ms",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
