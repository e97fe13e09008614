"""The operator's PATHs -> the FITS files to ingest, and what could not be walked.

Directories are walked recursively, following symbolic links (incoming repositories are
often assembled from links to disks) but never twice into the same directory: a link back
to an ancestor is reported as a loop and the walk goes on. Each file is taken once, however
many links lead to it. In directories only names with a FITS suffix are taken; a file named
explicitly is taken whatever its name (and refused later if it is not FITS).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from spica_core.ingest.fitsscan import image_filename


@dataclass(frozen=True)
class WalkProblem:
    path: str
    reason: str


@dataclass
class WalkResult:
    files: list[str]
    problems: list[WalkProblem]


def walk_paths(paths: Iterable[str]) -> WalkResult:
    """Every FITS file under ``paths`` (absolute, in a stable order) and the walk's problems."""
    result = WalkResult([], [])
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: dict[tuple[int, int], str] = {}
    for given in paths:
        path = os.path.abspath(given)
        try:
            st = os.stat(path)
        except OSError as exc:
            result.problems.append(WalkProblem(path, _reason(exc, path)))
            continue
        if stat.S_ISDIR(st.st_mode):
            for entry, problem in _walk_dir(path, st, seen_dirs):
                _take(entry, problem, seen_files, result)
        elif stat.S_ISREG(st.st_mode):
            _take((path, st), None, seen_files, result)
        else:
            result.problems.append(WalkProblem(path, "not a regular file or directory"))
    return result


def _take(
    entry: tuple[str, os.stat_result] | None,
    problem: WalkProblem | None,
    seen: set[tuple[int, int]],
    result: WalkResult,
) -> None:
    if problem is not None:
        result.problems.append(problem)
    if entry is not None:
        path, st = entry
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            result.files.append(path)


def _walk_dir(
    root: str, root_st: os.stat_result, seen_dirs: dict[tuple[int, int], str]
) -> Iterator[tuple[tuple[str, os.stat_result] | None, WalkProblem | None]]:
    """Depth-first walk; each directory (by device and inode) entered once."""
    stack = [(root, root_st)]
    while stack:
        directory, st = stack.pop()
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            first = seen_dirs[key]
            if os.path.realpath(first) in _ancestors(directory):
                yield None, WalkProblem(directory, f"directory loop: leads back to {first}")
            continue  # a second way into a walked directory: its files are taken already
        seen_dirs[key] = directory
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield None, WalkProblem(directory, _reason(exc, directory))
            continue
        subdirs = []
        for entry in entries:
            try:
                est = entry.stat()  # follows links
            except OSError as exc:
                if entry.is_symlink():
                    yield None, WalkProblem(entry.path, "broken symbolic link")
                else:
                    yield None, WalkProblem(entry.path, _reason(exc, entry.path))
                continue
            if stat.S_ISDIR(est.st_mode):
                subdirs.append((entry.path, est))
            elif stat.S_ISREG(est.st_mode) and image_filename(entry.name) is not None:
                yield (entry.path, est), None
        stack.extend(reversed(subdirs))


def _ancestors(path: str) -> set[str]:
    """The real paths of ``path``'s parent directories (a loop's target is among them)."""
    out = set()
    parent = os.path.dirname(path)
    while True:
        out.add(os.path.realpath(parent))
        up = os.path.dirname(parent)
        if up == parent:
            return out
        parent = up


def _reason(exc: OSError, path: str) -> str:
    if exc.errno is not None and exc.strerror:
        if os.path.islink(path) and not os.path.exists(path):
            return "broken symbolic link"
        return exc.strerror.lower() if exc.strerror else str(exc)
    return str(exc)
