"""Preflight, ``spica check``: what must hold before the daemon claims a stack.

Node checks, shared by the stacks checked in one pass of the daemon:

* **partitions** — each configured partition with a ``min_free`` has at least that much free;
* **applications** — each application binary of the release hashes (sha256) to the
  checksum the ``application`` table holds for it.

Stack checks:

* **stack files** — ``commands.sh`` holds runnable text, ``progress`` and ``attempt`` are
  readable. A failure here is *fatal*: waiting would not help, the daemon rejects the stack
  (pending → failed) with the reason;
* **inputs** — every path of ``stacks/<stack>/inputs`` exists.

Any other failure leaves the stack pending; the daemon looks again later, with a per-stack
backoff (``[daemon].check_backoff``), never in a tight loop.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spica_core.apps.table import (
    ApplicationRow,
    checksum_differs,
    differs_message,
    newest,
    read_applications,
)
from spica_core.apps.versions import resolve_binary
from spica_core.config import DatabaseConfig, NodeConfig, ReleaseConfig, SpicaConfig
from spica_core.errors import ConfigError, DatabaseUnavailable
from spica_core.names import validate_name
from spica_core.node.disk import partition_usage, tree_bytes
from spica_core.node.files import StatCache
from spica_core.node.layout import NodeLayout
from spica_core.node.stack_files import (
    StackFileError,
    clear_check,
    is_noop,
    missing_inputs,
    read_attempt,
    read_commands,
    read_inputs,
    read_stack_progress,
)
from spica_core.units import human_bytes

#: How many missing inputs a reason names before "and N more".
SHOWN_MISSING = 3


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str
    #: The stack cannot run as it is: reject it rather than wait.
    fatal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fatal": self.fatal}


@dataclass(frozen=True)
class CheckResult:
    stack: str
    node: str
    items: tuple[CheckItem, ...]

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def fatal(self) -> bool:
        return any(item.fatal for item in self.items)

    @property
    def reason(self) -> str:
        """The failed checks in one line (what ``spica stacks`` shows after ``check:``)."""
        return "; ".join(item.detail for item in self.items if not item.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "node": self.node,
            "ok": self.ok,
            "reason": self.reason or None,
            "checks": [item.to_json() for item in self.items],
        }


if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Seconds the application table read for preflight is reused.
APPLICATIONS_TTL = 60.0


class ApplicationTable:
    """The application table for the daemon's preflight, read through the replay's engine
    and reused for a minute; the last copy read when dbspica does not answer, None when it
    never did."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self._rows: list[ApplicationRow] | None = None
        self._at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> list[ApplicationRow] | None:
        from spica_core.daemon.replay import transient

        with self._lock:
            if self._rows is not None and time.monotonic() - self._at < APPLICATIONS_TTL:
                return self._rows
            try:
                self._rows = read_applications(self._engine())
                self._at = time.monotonic()
            except Exception as exc:
                if not transient(exc):
                    raise
            return self._rows


def try_read_applications(db: DatabaseConfig) -> list[ApplicationRow] | None:
    """The application table, or None when dbspica does not answer."""
    from spica_core.daemon.replay import transient
    from spica_core.db.engine import make_engine

    try:
        engine = make_engine(db)
    except DatabaseUnavailable:
        return None
    try:
        return read_applications(engine)
    except Exception as exc:
        if transient(exc):
            return None
        raise
    finally:
        engine.dispose()


class Preflight:
    """The checks of one node; caches binary hashes and partition walks between calls."""

    def __init__(
        self,
        root: Path,
        node: NodeConfig,
        release: ReleaseConfig,
        applications: Callable[[], list[ApplicationRow] | None],
    ) -> None:
        self.root = root
        self.layout = NodeLayout(root)
        self.node = node
        self.release = release
        self._applications = applications
        self._hashes = StatCache(max_entries=256)
        self._node_items: list[CheckItem] | None = None

    def new_pass(self) -> None:
        """Measure the node again at the next check (the daemon calls it once per pass, so a
        pass checking many stacks walks the partitions once, and never on stale figures)."""
        self._node_items = None

    def check(self, stack: str) -> CheckResult:
        items = self.stack_items(stack)
        if not any(item.fatal for item in items):
            items = [*self.node_items(), *items]
        return CheckResult(stack, self.node.name, tuple(items))

    # ------------------------------------------------------------------- node

    def node_items(self) -> list[CheckItem]:
        if self._node_items is None:
            self._node_items = [self._partitions(), self._applications_item()]
        return self._node_items

    def _partitions(self) -> CheckItem:
        problems: list[str] = []
        shown: list[str] = []
        for part in self.node.partitions:
            if part.min_free <= 0:
                continue
            usage = partition_usage(self.root, part.name, part.capacity, used_of=tree_bytes)
            if not usage.exists:
                problems.append(f"partition {part.name} missing under {self.root}")
            elif usage.free_bytes is None:
                problems.append(f"partition {part.name} cannot be measured ({usage.error})")
            elif usage.free_bytes < part.min_free:
                problems.append(
                    f"partition {part.name} has {human_bytes(usage.free_bytes)} free, "
                    f"needs {human_bytes(part.min_free)}"
                )
            else:
                shown.append(f"{part.name} {human_bytes(usage.free_bytes)} free")
        if problems:
            return CheckItem("partitions", False, "; ".join(problems))
        return CheckItem("partitions", True, ", ".join(shown) or "no minimum free space set")

    def _applications_item(self) -> CheckItem:
        rows = self._applications()
        if rows is None:
            return CheckItem(
                "applications", True, "not checked: the application table was never read"
            )
        wanted = self._wanted(rows)
        problems: list[str] = []
        checked: list[str] = []
        for name, binary, row in wanted:
            if row is None or not row.checksum:
                continue
            found = resolve_binary(binary)
            if found is None or not os.path.isfile(found):
                problems.append(f"{name}: binary {binary} missing")
                continue
            try:
                digest = self._hashes.get(Path(os.path.realpath(found)), _sha256)
            except (OSError, ValueError) as exc:
                problems.append(f"{name}: cannot read {found} ({exc})")
                continue
            if checksum_differs(digest, row):
                problems.append(differs_message(name, found, digest, row))
            else:
                checked.append(f"{name} {row.version}")
        if problems:
            return CheckItem("applications", False, "; ".join(problems))
        return CheckItem("applications", True, ", ".join(checked) or "nothing to check")

    def _wanted(self, rows: list[ApplicationRow]) -> list[tuple[str, str, ApplicationRow | None]]:
        """(name, binary on this node, table row) of each application the release uses: those
        of ``[release].applications``, else the latest row of each application name."""
        names = [app.name for app in self.release.applications]
        if not names:
            names = sorted({row.name for row in rows})
            return [(n, row.binary, row) for n in names if (row := newest(rows, n)) is not None]
        out: list[tuple[str, str, ApplicationRow | None]] = []
        for app in self.release.applications:
            row = newest(rows, app.name, app.version)
            out.append((app.name, app.binary or (row.binary if row else ""), row))
        return out

    # ------------------------------------------------------------------- stack

    def stack_items(self, stack: str) -> list[CheckItem]:
        try:
            lines = read_commands(self.layout, stack)
            progress = read_stack_progress(self.layout, stack)
            read_attempt(self.layout, stack)
            inputs = read_inputs(self.layout, stack)
        except StackFileError as exc:
            return [CheckItem("stack files", False, exc.reason, fatal=True)]
        commands = sum(1 for line in lines if not is_noop(line))
        where = f"resumes at line {progress + 1}" if progress < len(lines) else "every line done"
        items = [
            CheckItem("stack files", True, f"{len(lines)} lines ({commands} commands), {where}")
        ]
        missing = missing_inputs(self.root, inputs)
        if missing:
            extra = len(missing) - SHOWN_MISSING
            more = f" and {extra} more" if extra > 0 else ""
            items.append(
                CheckItem(
                    "inputs",
                    False,
                    f"missing input{'s' if len(missing) > 1 else ''}: "
                    f"{', '.join(missing[:SHOWN_MISSING])}{more}",
                )
            )
        else:
            items.append(CheckItem("inputs", True, f"{len(inputs)} present"))
        return items


def check_stack(config: SpicaConfig, node: NodeConfig, stack: str) -> CheckResult:
    """``spica check``: the preflight of ``stack`` on this node, as the daemon runs it.

    When every check passes, a failed check the daemon noted is forgotten: the stack is
    claimed at the daemon's next scan instead of after its backoff.
    """
    validate_name(stack)
    root = Path(os.path.expanduser(node.root))
    if not root.is_dir():
        raise ConfigError(
            f"node {node.name}: its spica root {root} is not on this machine (run it there)"
        )
    preflight = Preflight(root, node, config.release, lambda: try_read_applications(config.db))
    result = preflight.check(stack)
    if result.ok:
        clear_check(preflight.layout, stack)
    return result


def _sha256(path: Path) -> str:
    from spica_core.node.agent import sha256_file

    return sha256_file(path)
