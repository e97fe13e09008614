"""Where things are under a node's spica root (DESIGN §3), and the confinement to it.

Everything a node process touches lives under its spica root::

    queue/<stack>.<suffix>          the stack's state (spica_core.states.SUFFIX)
    stacks/<stack>/commands.sh      one shell command per line
    stacks/<stack>/progress         the last line that succeeded (resume point)
    stacks/<stack>/attempt          the daemon's claim counter of the stack
    stacks/<stack>/unit.json        its step, partition (QFin lock) and work directory
    stacks/<stack>/logs/NNN.log     output of command line NNN (1-based, at least 3 digits)
    locks/<partition>.qfin.lock     the QFin lock of a raid partition
    removed/<stack>.json            who removed the stack and when (until it is staged again)
    daemon.heartbeat                rewritten by the daemon to prove it alive
    raid*/                          data partitions

Names reach this module from the network, so every path is built through
:func:`resolve_inside`, which refuses anything (``..``, absolute parts, symlinks) that would
lead out of the root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from spica_core.errors import UsageError
from spica_core.names import validate_name
from spica_core.states import SUFFIX, StackState

QUEUE_DIR = "queue"
STACKS_DIR = "stacks"
LOCKS_DIR = "locks"
REMOVED_DIR = "removed"
#: ``queue/.<stack>.<suffix>.<pid>.moving``: a queue file an operator action is moving (its
#: record is rewritten there between the exclusive rename and the final one).
MOVING_SUFFIX = ".moving"
LOGS_DIR = "logs"
COMMANDS_FILE = "commands.sh"
PROGRESS_FILE = "progress"
ATTEMPT_FILE = "attempt"
UNIT_FILE = "unit.json"
HEARTBEAT_FILE = "daemon.heartbeat"
QFIN_LOCK_SUFFIX = ".qfin.lock"
#: The step of QFin units (and the role of their image's ``stack_file`` row): such a unit
#: runs only while its daemon holds its partition's QFin lock.
QFIN_STEP = "qfin"
#: Directories directly under the root whose name starts with this are data partitions.
PARTITION_PREFIX = "raid"
#: The one size limit of a stack's ``commands.sh``, wherever it comes from (``stack add``
#: here or over SSH, the agent's ``stage``) and when the daemon reads it: SPICA's generated
#: stacks are a few hundred lines, so 1 MiB leaves room while bounding every reader.
MAX_COMMANDS_BYTES = 1024 * 1024


#: A spica root in (or at) these trees would put the system under the agent's confinement and
#: the operator's ``remove``: refused, as is every root directly at one of ``_SYSTEM_DIRS``.
_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
    "/proc", "/run", "/sbin", "/sys", "/usr",
)  # fmt: skip
_SYSTEM_DIRS = ("/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var")


def root_problem(root: str) -> str | None:
    """Why ``root`` cannot be a node's spica root, or None.

    Everything the agent and the daemon touch is confined to the root, so the root itself
    must be a plain, absolute, normalized path (a trailing ``/`` aside) that is neither ``/``
    nor a system directory. Both the configuration and ``spica node serve --root`` ask here.
    """
    if not root:
        return "empty: expected an absolute directory such as /data/spica"
    if not root.isprintable():
        return "holds a control character"
    if not root.startswith("/"):
        return f"{root!r} is not absolute: expected an absolute directory such as /data/spica"
    trimmed = root.rstrip("/") or "/"
    normal = os.path.normpath(trimmed)
    if normal != trimmed or trimmed.startswith("//"):
        return f"{root!r} is not normalized (no '..', '.' or '//' components)"
    if trimmed == "/":
        return "'/' is the whole filesystem: expected a directory of its own such as /data/spica"
    if trimmed in _SYSTEM_DIRS or any(
        trimmed == tree or trimmed.startswith(tree + "/") for tree in _SYSTEM_TREES
    ):
        return (
            f"{trimmed} is a system directory: expected a directory of its own such as /data/spica"
        )
    return None


class OutsideRoot(UsageError):
    """A path that would leave the spica root (``..``, absolute, or through a symlink)."""

    def __init__(self, root: str, path: str, reason: str) -> None:
        self.root = root
        self.path = path
        self.reason = reason
        super().__init__(f"path {path!r} is outside the spica root {root}: {reason}")


# --------------------------------------------------------------------------- paths


def unit_workdir_problem(workdir: str, stack: str) -> str | None:
    """Why ``workdir`` cannot be ``stack``'s own work directory (None when it can): removing
    a stack deletes it, so it must be a relative, plain path below some ``stacks``
    directory of a partition and named after the stack (``raid1/stacks/T0003/<stack>``)."""
    parts = workdir.split("/")
    if workdir.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return f"work directory {workdir!r} is not a plain path relative to the node root"
    if len(parts) < 3 or parts[-1] != stack or STACKS_DIR not in parts[1:-1]:
        return (
            f"work directory {workdir!r} of stack {stack} must be "
            f"<partition>/.../{STACKS_DIR}/.../{stack}"
        )
    return None


def resolve_inside(root: Path | str, *parts: str) -> Path:
    """The real path of ``root/parts…``, or :class:`OutsideRoot` when it is not under root.

    Parts may hold ``/`` separators; each component is checked before touching the disk, then
    the joined path's realpath (symlinks resolved; missing tails allowed) must stay under the
    root's realpath. Callers open the returned real path, so a symlink checked here is not
    followed again later.
    """
    root_real = _real_root(os.fspath(root))
    shown = "/".join(str(p) for p in parts)
    components: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise OutsideRoot(str(root_real), repr(part), "not a string")
        if "\x00" in part:
            raise OutsideRoot(str(root_real), shown, "contains a NUL byte")
        if os.path.isabs(part):
            raise OutsideRoot(str(root_real), shown, "absolute path")
        for comp in part.split("/"):
            if comp == "..":
                raise OutsideRoot(str(root_real), shown, "'..' component")
            if comp not in ("", "."):
                components.append(comp)
    base = str(root_real)
    real = _realpath_under(base, components)
    if real != base and not real.startswith(base.rstrip("/") + "/"):
        raise OutsideRoot(base, shown, f"resolves to {real}")
    return Path(real)


def _realpath_under(base: str, components: list[str]) -> str:
    """``os.path.realpath(base/components…)`` for a real ``base`` and components without
    ``..``: one lstat per component below ``base`` instead of one per component from ``/``
    (every status resolves a dozen paths), and the full resolution as soon as a symlink or
    anything unusual is met."""
    path = base
    for i, comp in enumerate(components):
        path = os.path.join(path, comp)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            # Nothing to resolve below a missing component (no ``..`` among the rest).
            return os.path.join(path, *components[i + 1 :])
        except OSError:
            break
        if stat.S_ISLNK(mode):
            break
    else:
        return path
    return os.path.realpath(os.path.join(base, *components))


@lru_cache(maxsize=64)
def _real_root(root: str) -> Path:
    """The root's realpath, once per process: a node's root does not move while its agent or
    daemon runs, and every status resolves a dozen paths under it. Were it re-pointed, the
    stale answer only refuses paths under the new target: it never lets one out."""
    return Path(os.path.realpath(root))


def log_file_name(line: int) -> str:
    """``NNN.log``: zero-padded to 3 digits so listings sort, wider past line 999."""
    if line < 1:
        raise ValueError(f"command lines are numbered from 1, got {line}")
    return f"{line:03d}.log"


def parse_log_file_name(name: str) -> int | None:
    """The line number of a ``NNN.log`` file name, None for anything else."""
    stem, dot, ext = name.partition(".")
    if dot and ext == "log" and stem.isascii() and stem.isdigit() and int(stem) >= 1:
        return int(stem)
    return None


@dataclass(frozen=True)
class NodeLayout:
    """Where things are under one spica root; every method validates names and confines."""

    root: Path

    def resolve(self, *parts: str) -> Path:
        return resolve_inside(self.root, *parts)

    def queue_dir(self) -> Path:
        return self.resolve(QUEUE_DIR)

    def queue_file(self, stack: str, state: StackState) -> Path:
        return self.resolve(QUEUE_DIR, f"{validate_name(stack)}.{SUFFIX[state]}")

    def stack_dir(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack))

    def commands_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), COMMANDS_FILE)

    def unit_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), UNIT_FILE)

    def progress_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), PROGRESS_FILE)

    def attempt_file(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), ATTEMPT_FILE)

    def logs_dir(self, stack: str) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), LOGS_DIR)

    def log_file(self, stack: str, line: int) -> Path:
        return self.resolve(STACKS_DIR, validate_name(stack), LOGS_DIR, log_file_name(line))

    def locks_dir(self) -> Path:
        return self.resolve(LOCKS_DIR)

    def qfin_lock(self, partition: str) -> Path:
        return self.resolve(LOCKS_DIR, validate_name(partition, "partition") + QFIN_LOCK_SUFFIX)

    def removed_file(self, stack: str) -> Path:
        return self.resolve(REMOVED_DIR, f"{validate_name(stack)}.json")

    def heartbeat_file(self) -> Path:
        return self.resolve(HEARTBEAT_FILE)

    def partition_dir(self, partition: str) -> Path:
        return self.resolve(validate_name(partition, "partition"))

    def relative(self, path: Path) -> str:
        """``path`` relative to the root's realpath, for messages and the wire."""
        return str(path.relative_to(os.path.realpath(self.root)))
