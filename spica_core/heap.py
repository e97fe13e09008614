"""Keeping freed heap memory for reuse in a process that receives bulk bytes.

A demo node's SSH server joins each SFTP write of a few hundred KiB from the channel
packets it arrives in (scp's come as many small packets), allocating and freeing buffers of
that size by the thousand per GiB. glibc serves blocks that large with ``mmap`` and gives
back the top of the heap as soon as 128 KiB lie free there, so nearly every buffer is
faulted in and zeroed afresh — on a virtual machine whose host takes freed pages back, at
several times the usual cost (``copy_folio_from_iter_atomic`` and page faults led the
kernel's profile of ``bench/transfer.py``). Raising the two thresholds keeps those pages in
the process and reused: on the development machine, scp's median into an untuned demo node
was 319 and 383 MB/s against 540 and 553 MB/s tuned; what the server keeps is bounded by
its peak use. DataTransfer's own client gained nothing measurable from it once its SFTP
writes were one packet each (three runs each way), so only the demo server is tuned.

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
    """Tune this process's allocator for bulk transfers, once; whether it is tuned."""
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
