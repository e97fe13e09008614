"""Helpers of the console tests: stacks as a daemon leaves them, and waiting on the screen."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig, load_config
from spica_core.db.models import Node, Stack

SUFFIX = {"pending": "spica", "running": "processing", "completed": "processed", "failed": "error"}
#: Generous: the machine is shared with other suites; a condition usually holds in < 1 s.
WAIT = 60.0


def fast_config(path: Path, refresh: float = 0.5) -> SpicaConfig:
    """A demo's spica.toml with a short refresh and backoff, so changes show quickly."""
    cfg = load_config(path)
    return cfg.model_copy(
        update={
            "ssh": cfg.ssh.model_copy(update={"max_backoff": refresh, "call_timeout": 5.0}),
            "console": cfg.console.model_copy(update={"refresh_interval": refresh}),
        }
    )


def console_app(config: SpicaConfig, *, read_only: bool = False) -> Any:
    """The console over ``config``'s dbspica and nodes, as ``spica console`` builds it."""
    from spica_core.db.engine import make_engine
    from spica_tui.console.app import SpicaConsole
    from spica_tui.console.refresh import ConsoleBackend

    backend = ConsoleBackend(config, make_engine(config.db), read_only=read_only)
    return SpicaConsole(config, backend, operator="tester")


def make_stack(
    root: Path,
    engine: Engine,
    name: str,
    node: str,
    state: str,
    *,
    lines: int = 3,
    failed_line: int = 2,
    error: str = "Failed on spica_copy.pl -m mix4 -n mix3 - Code 2 - Line 2",
) -> None:
    """A stack as the daemon (or an operator) leaves it: commands, logs, queue file, row."""
    stack_dir = root / "stacks" / name
    (stack_dir / "logs").mkdir(parents=True)
    (stack_dir / "commands.sh").write_text("true\n" * lines)
    (stack_dir / "logs" / "001.log").write_text("line one ok\n")
    if state == "failed":
        (stack_dir / "logs" / f"{failed_line:03d}.log").write_text(
            "spica_copy.pl: connect to host mix4 port 22: Connection refused\n"
        )
    if state in ("failed", "running", "completed"):
        done = lines if state == "completed" else failed_line - 1
        (stack_dir / "progress").write_text(f"{done}\n")
    suffix = SUFFIX.get(state)
    record: dict[str, Any] = {}
    if state == "failed":
        record = {"line": failed_line, "exit_code": 2, "message": error}
    elif state == "running":  # a claim whose process is long gone: unlockable
        record = {
            "pid": 4_000_000,
            "host": "elsewhere",
            "boot_id": "old",
            "started_at": "2026-01-01T00:00:00Z",
        }
    if suffix:
        (root / "queue" / f"{name}.{suffix}").write_text(json.dumps(record))
    with Session(engine) as s, s.begin():
        node_row = s.scalars(select(Node).where(Node.name == node)).one()
        s.add(
            Stack(
                name=name,
                node=node_row,
                state=state,
                lines=lines,
                progress=lines if state == "completed" else 0,
                failed_line=failed_line if state == "failed" else None,
                error=error if state == "failed" else None,
                runid="04BL06",
                filter="r",
            )
        )


def queue_files(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in (root / "queue").iterdir() if p.name.startswith(name + "."))


def db_state(engine: Engine, name: str) -> str | None:
    with Session(engine) as s:
        return s.scalars(select(Stack.state).where(Stack.name == name)).one_or_none()


async def until(
    pilot: Any, condition: Callable[[], object], what: str, timeout: float = WAIT
) -> None:
    """Let the app run until ``condition()`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


async def settled(pilot: Any, quiet: float = 0.25, timeout: float = WAIT) -> None:
    """Until the screen is the same twice ``quiet`` seconds apart: on a loaded machine a
    layout or a table may still be catching up with the data when the data is there."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        await pilot.pause(quiet)
        shot = pilot.app.export_screenshot()
        if shot == last:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the screen still changing after {timeout:.0f} s")
        last = shot


async def mounted(pilot: Any, selector: Any) -> Any:
    """The dashboard's widget matching ``selector`` once it is mounted: under load the first
    screen may still be composing when ``run_test`` hands over the pilot."""
    await until(pilot, lambda: pilot.app.screen.query(selector), f"{selector} mounted")
    return pilot.app.screen.query_one(selector)


def table_row(app: Any, name: str) -> Any:
    """The stacks table's row for ``name``, if it is in the loaded window."""
    from spica_tui.console.panels.stacks import StackTable

    table = app.screen.query_one(StackTable)
    return next((row for row in table.rows.values() if row.name == name), None)


async def select_stack(pilot: Any, name: str) -> None:
    """Filter the stacks table down to ``name`` and leave the cursor on it."""
    from spica_tui.console.panels.stacks import StackTable

    table = await mounted(pilot, StackTable)
    await pilot.press("slash", *name, "enter")
    await until(
        pilot,
        lambda: table.selected is not None and table.selected.name == name,
        f"{name} selected in the stacks table",
    )


async def open_from_palette(pilot: Any, title: str, screen_type: type) -> None:
    """From the dashboard, ``ctrl+p``, type ``title``, enter: ``screen_type`` opens."""
    from spica_tui.console.screens.dashboard import DashboardScreen

    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
    await pilot.press("ctrl+p")
    await pilot.press(*title)
    await pilot.pause(0.5)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, screen_type), title)
