"""allocator.tune: on glibc, a megabyte buffer comes from the heap, not from its own mapping,
and an operator's MALLOC_*_ environment variables are left to rule."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

# mallinfo2 (glibc >= 2.33): hblkhd is the bytes held in mmapped blocks; the probe prints
# what allocating one 2 MiB buffer added to it.
PROBE = """
import ctypes, ctypes.util, json, sys
from dynakv.runtime import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
applied = allocator.tune() if sys.argv[1] == "tune" else {}
before = libc.mallinfo2().hblkhd
buffer = bytearray(2 << 20)
print(json.dumps({"applied": applied, "mapped": libc.mallinfo2().hblkhd - before}))
"""


def _glibc() -> bool:
    path = ctypes.util.find_library("c")
    return path is not None and hasattr(ctypes.CDLL(path), "mallinfo2")


pytestmark = pytest.mark.skipif(not _glibc(), reason="needs glibc >= 2.33 (mallinfo2)")


def _probe(mode: str, **env: str) -> dict[str, object]:
    import json

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def test_without_tuning_a_two_mib_buffer_is_its_own_mapping():
    assert _probe("default")["mapped"] >= 2 << 20


def test_tuned_a_two_mib_buffer_comes_from_the_heap():
    result = _probe("tune")
    assert result["applied"] == {
        "MALLOC_MMAP_THRESHOLD_": 8 << 20,
        "MALLOC_TRIM_THRESHOLD_": 256 << 20,
    }
    assert result["mapped"] == 0


def test_the_environment_wins():
    result = _probe("tune", MALLOC_MMAP_THRESHOLD_="65536")
    assert result["applied"] == {"MALLOC_TRIM_THRESHOLD_": 256 << 20}
    assert result["mapped"] >= 2 << 20
