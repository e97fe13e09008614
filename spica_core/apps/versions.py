"""What version a binary here is: its version flag run with an argv list and a timeout.

The AstrOmatic tools (``source-extractor``, ``psfex``, ``scamp``, ``SWarp``, ``stiff``) print
``<Tool> version X.Y.Z (date)`` for ``-v``. Standard library only: the node agent answers its
``versions`` verb with it (through :class:`VersionCache`, so polling runs nothing again until
a binary changes), and ``spica qfin record`` notes the versions a unit ran with
(:func:`local_versions`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Protocol

#: The flag every AstrOmatic tool answers with its version.
VERSION_FLAG = "-v"
#: Seconds all the binaries asked at once get to answer together.
VERSION_TIMEOUT = 5.0
#: A version longer than this is not one (dbspica's column holds 64 characters).
MAX_VERSION_CHARS = 64
#: Seconds a binary still gets once the deadline has passed: enough to read one that ended.
_READ_GRACE = 0.1

_AFTER_WORD = re.compile(r"\bversion\b\s*:?\s*v?(\d+(?:\.\d+)+(?:[-+~]?[0-9A-Za-z]+)*)", re.I)
_DOTTED = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*)(?![\w.])")


class HasBinary(Protocol):
    """An application of the release (``ApplicationConfig``): its name and binary."""

    @property
    def name(self) -> str: ...

    @property
    def binary(self) -> str: ...


def parse_version(text: str) -> str | None:
    """``2.25.0`` of ``Source Extractor version 2.25.0 (2018-02-08)``; else the first dotted
    number of the first line that holds text (``tool 1.4``); None when there is neither."""
    found = _AFTER_WORD.search(text)
    if found is None:
        first = next((line for line in text.splitlines() if line.strip()), "")
        found = _DOTTED.search(first)
    if found is None or len(found.group(1)) > MAX_VERSION_CHARS:
        return None
    return found.group(1)


def major(version: str) -> int | None:
    """X of X.Y.Z: what ``spica apps register`` guards (None when it is not a number)."""
    found = re.match(r"v?(\d+)", version.strip())
    return int(found.group(1)) if found else None


def binary_problem(binary: str) -> str | None:
    """Why ``binary`` cannot name an application's binary on every node, None when it can:
    an absolute path, or a bare command name looked up on the node's ``PATH``."""
    if not binary or "\x00" in binary:
        return "must be a path or a command name (not empty, no NUL)"
    if "/" in binary and not os.path.isabs(binary):
        return "must be an absolute path or a bare command name"
    return None


def resolve_binary(binary: str) -> str | None:
    """The file a configured binary (absolute path or bare command name) names here."""
    return binary if os.path.isabs(binary) else shutil.which(binary)


def read_versions(paths: Sequence[str], timeout: float = VERSION_TIMEOUT) -> list[str | None]:
    """Each binary's version, all run at once within ``timeout`` seconds together: one that
    hangs is killed (with what it started) and has none, and never holds up the others."""
    env = {**os.environ, "LC_ALL": "C"}
    procs: list[subprocess.Popen[bytes] | None] = []
    for path in paths:
        try:
            procs.append(
                subprocess.Popen(
                    [path, VERSION_FLAG],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        except OSError:  # not executable, gone since it was found
            procs.append(None)
    deadline = time.monotonic() + timeout
    found: list[str | None] = []
    for proc in procs:
        if proc is None:
            found.append(None)
            continue
        try:
            # Past the deadline (an earlier one hung) a finished one is still read.
            out, _ = proc.communicate(timeout=max(_READ_GRACE, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            found.append(None)
            continue
        found.append(parse_version(out[: 64 * 1024].decode("utf-8", errors="replace")))
    return found


def local_versions(
    applications: Sequence[HasBinary], cache: VersionCache | None = None
) -> dict[str, str]:
    """Application name -> the version its binary here reports; an application whose binary
    is missing or reports no version has no entry. With ``cache``, unchanged binaries are
    not run again."""
    located = [(app.name, resolve_binary(app.binary)) for app in applications]
    present = [(name, path) for name, path in located if path is not None]
    paths = [path for _, path in present]
    versions = cache.versions(paths) if cache is not None else read_versions(paths)
    return {name: v for (name, _), v in zip(present, versions, strict=True) if v is not None}


class VersionCache:
    """Versions of binaries by what the file is (device, inode, size, mtime): asked again for
    an unchanged binary, nothing runs; a reinstalled one is run again."""

    def __init__(self, max_entries: int = 256) -> None:
        self._memo: dict[str, tuple[tuple[int, int, int, int], str | None]] = {}
        self._max = max_entries

    def versions(self, paths: Sequence[str]) -> list[str | None]:
        """The version of each of ``paths`` (resolved files), running only the changed ones."""
        keys: list[tuple[int, int, int, int] | None] = []
        for path in paths:
            try:
                st = os.stat(path)
                keys.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                keys.append(None)
        out: list[str | None] = []
        misses: list[int] = []
        for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
            hit = self._memo.get(path)
            if key is not None and hit is not None and hit[0] == key:
                out.append(hit[1])
            else:
                out.append(None)
                misses.append(i)
        if misses:
            fresh = read_versions([paths[i] for i in misses])
            if len(self._memo) + len(misses) > self._max:
                self._memo.clear()
            for i, version in zip(misses, fresh, strict=True):
                out[i] = version
                key = keys[i]
                if key is not None:
                    self._memo[paths[i]] = (key, version)
        return out
