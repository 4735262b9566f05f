"""glibc malloc settings for a node: keep megabyte buffers in the heap instead of mapping and
unmapping them for every large value.

With glibc's defaults, a buffer above the mmap threshold (128 KiB, raised dynamically up to
32 MiB as large blocks are freed) gets fresh pages from the kernel and hands them back when
freed, so every 1 MiB value a node receives, checks and stores page-faults its way through new
memory, and the heap top above the trim threshold is returned at once. With 1 MiB values that
was 0.6 M page faults and about a third of each node's CPU in one 8 s run (benchmarks/README.md,
"1 MiB values in the cluster"); with these thresholds (the same as the environment's
`MALLOC_MMAP_THRESHOLD_=8388608 MALLOC_TRIM_THRESHOLD_=268435456`) median throughput rose 8%
and server CPU per operation fell 11%, for about 50 MB more RSS per node at that load.

Setting a threshold also switches off glibc's dynamic adjustment, which is what makes the
figures steady. An operator's own `MALLOC_*_` environment variables win; other C libraries
(musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("dynakv")

M_TRIM_THRESHOLD = -1  # glibc's malloc.h parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 << 20  # blocks up to 8 MiB come from the heap: a 1 MiB value and its frame
TRIM_THRESHOLD = 256 << 20  # free heap kept before it is given back to the kernel

_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)


def tune() -> dict[str, int]:
    """Apply the thresholds glibc's environment does not already set; what was set, by the
    environment variable's name (empty without glibc)."""
    path = ctypes.util.find_library("c")
    if path is None:
        return {}
    libc = ctypes.CDLL(path)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return {}
    applied: dict[str, int] = {}
    for variable, parameter, value in _SETTINGS:
        if variable in os.environ:
            continue
        if mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            applied[variable] = value
        else:
            log.warning("mallopt(%d, %d) failed: glibc's default kept", parameter, value)
    return applied
