"""Keeping freed heap memory for reuse in processes that move bulk bytes.

A verified copy allocates and frees megabyte buffers by the thousand per GiB (the block read,
then asyncssh's SFTP request, channel and packet copies of it). glibc serves blocks that
large with ``mmap`` and gives back the top of the heap as soon as 128 KiB lie free there, so
nearly every buffer is faulted in and zeroed afresh — on a virtual machine whose host takes
freed pages back, at several times the usual cost (``copy_folio_from_iter_atomic`` and page
faults led the kernel's profile of ``bench/transfer.py``). Raising the two thresholds keeps
those pages in the process and reused. On the development machine the DataTransfer client
used about a tenth less CPU per GiB, and its median in ``bench/transfer.py`` rose from about
330 to 420 MB/s; what it keeps is bounded by its peak use (about 50 MiB more resident after a
1 GiB copy).

Only glibc on Linux is tuned (musl's ``mallopt`` refuses, other systems have none).
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks below this come from the heap (glibc's ceiling for the setting is 32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory kept at the top of the heap before any is returned to the kernel.
TRIM_THRESHOLD = 128 * 1024 * 1024

_tuned = False


def keep_freed_memory() -> bool:
    """Tune this process's allocator for bulk copies, once; whether it is tuned."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _tuned = bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    return _tuned
