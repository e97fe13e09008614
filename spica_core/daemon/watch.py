"""Waking the daemon when ``queue/`` changes: inotify on Linux, a short poll elsewhere.

The daemon never trusts an event to say *what* changed (events can be lost or merged, and
the queue may change while it scans): any event only means "scan now". The wake pipe lets
the runner threads and the signal handler wake the same ``select``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
from pathlib import Path

log = logging.getLogger("spica.daemon")

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_MASK = _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE


class QueueWatch:
    """``wait(timeout)`` returns early when the queue changes or :meth:`wake` is called."""

    def __init__(self, queue_dir: Path, *, use_inotify: bool = True) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._inotify = _inotify_fd(queue_dir) if use_inotify else None

    @property
    def inotify(self) -> bool:
        """Whether queue changes wake the daemon at once (else it relies on its poll)."""
        return self._inotify is not None

    def wake(self) -> None:
        """Safe from any thread and from a signal handler."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if woken by a change or :meth:`wake`."""
        fds = [self._wake_r] + ([self._inotify] if self._inotify is not None else [])
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        for fd in ready:
            _drain(fd)
        return bool(ready)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w, self._inotify):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._inotify = None


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 65536):
            pass


def _inotify_fd(directory: Path) -> int | None:
    """An inotify descriptor watching ``directory``, or None where inotify is unavailable."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
        init.argtypes = [ctypes.c_int]
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        log.info("inotify unavailable: polling %s", directory)
        return None
    fd: int = init(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        log.info("inotify_init1 failed (%s): polling", os.strerror(ctypes.get_errno()))
        return None
    if add(fd, os.fsencode(directory), _MASK) < 0:
        log.info("inotify on %s failed (%s): polling", directory, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return fd
