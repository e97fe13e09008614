"""The allocator tuning for bulk copies: megabyte blocks come from the heap and stay there."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

# A fresh interpreter reports where a 4 MiB block came from (mallinfo2: bytes in mmapped
# blocks) and how much free memory its heap kept once the block was freed.
PROBE = """
import ctypes, sys
from spica_core.heap import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
block = bytearray(4 << 20)
mmapped = libc.mallinfo2().hblkhd
del block
print(mmapped, libc.mallinfo2().fordblks)
"""


def _probe(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="the tuning applies to glibc >= 2.33 on Linux only",
)


@glibc
def test_megabyte_blocks_come_from_the_heap_and_stay_once_tuned() -> None:
    untuned_mmapped, _ = _probe("plain")
    tuned_mmapped, tuned_free = _probe("tuned")
    assert untuned_mmapped >= 4 << 20  # glibc's default: a block this size is its own mmap
    assert tuned_mmapped < 4 << 20
    assert tuned_free >= 4 << 20  # freed, and kept in the process for the next block
