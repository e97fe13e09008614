"""The real ``spica console`` in a real terminal (tmux): it opens, requeues a failed stack,
quits on ``q`` with status 0, and leaves the terminal as it found it (main screen, cursor
shown, no mouse reporting)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from spica_core.db.engine import make_engine
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from tests.conftest import require
from tests.console_support import WAIT, db_state, fast_config, make_stack, queue_files

pytestmark = pytest.mark.timeout(600)
STACK = "CFHTLS_W_r_021800-085200_T0003"


class Tmux:
    """One private tmux server (its own socket) with one 160x50 window."""

    def __init__(self, socket: Path) -> None:
        self.base = ["tmux", "-S", str(socket)]

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def start(self, command: str, width: int = 160, height: int = 50) -> None:
        """Run ``command`` in the window, sized from the tty; the pane stays after it ends."""
        size = ("-x", str(width), "-y", str(height))
        self("-f", "/dev/null", "new-session", "-d", "-s", "spica", *size)
        self("resize-window", "-t", "spica", *size)
        self("set-option", "-t", "spica", "remain-on-exit", "on")
        self("respawn-pane", "-k", "-t", "spica", command)

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", "spica")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "spica", *keys)

    def flags(self) -> dict[str, str]:
        names = ("alternate_on", "cursor_flag", "mouse_any_flag")
        out = self("display-message", "-p", "-t", "spica", "|".join(f"#{{{n}}}" for n in names))
        return dict(zip(names, out.strip().split("|"), strict=True))


def wait(condition: Callable[[], object], what: str, tmux: Tmux) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            size = tmux("display-message", "-p", "-t", "spica", "#{window_width}x#{window_height}")
            raise AssertionError(f"timed out waiting for {what} ({size.strip()}):\n{tmux.pane()}")
        time.sleep(0.2)


def press(tmux: Tmux, key: str, condition: Callable[[], object], what: str) -> None:
    """Press ``key`` until ``condition`` holds: keys typed while the app starts can be lost,
    and each key used here is harmless to repeat."""
    deadline = time.monotonic() + WAIT
    while True:
        tmux.keys(key)
        until = time.monotonic() + 5
        while time.monotonic() < until:
            if condition():
                return
            time.sleep(0.2)
        if time.monotonic() > deadline:
            raise AssertionError(f"{key!r}: timed out waiting for {what}:\n{tmux.pane()}")


def test_console_in_tmux_requeues_and_quits_cleanly(tmp_path: Path) -> None:
    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux)")
    cluster = DemoCluster(tmp_path / "cluster")
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        cluster.up(2, daemons=False)
        config = fast_config(cluster.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        root = cluster.node_root("mix2")
        make_stack(root, engine, STACK, "mix2", "failed")
        # The size comes from the tty: a shell may have exported its own COLUMNS/LINES.
        # After the console, the shell prints its exit status and keeps the pane (and so the
        # terminal state the console left) alive for inspection.
        command = (
            f"env -u COLUMNS -u LINES {sys.executable} -m spica_tui"
            f" --config {cluster.config_path} console; echo console-exit=$?; exec sleep 600"
        )
        tmux.start(command)
        wait(lambda: "row 1 of 1" in tmux.pane(), "the dashboard", tmux)
        press(tmux, "4", lambda: "Stacks: failed" in tmux.pane(), "the failed view")
        # The footer offers Requeue once the failed stack is loaded and selected.
        wait(lambda: "r Requeue" in tmux.pane(), "the failed stack selected", tmux)
        press(tmux, "r", lambda: "Requeue 1 stack?" in tmux.pane(), "the plan modal")
        assert "failed -> pending" in tmux.pane() and "resumes at line 2" in tmux.pane()
        tmux.keys("Tab")
        tmux.keys("Enter")
        wait(lambda: queue_files(root, STACK) == [f"{STACK}.spica"], "the rename on mix2", tmux)
        press(tmux, "0", lambda: "Stacks: all" in tmux.pane(), "the view of all stacks")
        wait(
            lambda: any(STACK in line and "pending" in line for line in tmux.pane().splitlines()),
            "the row to show pending",
            tmux,
        )
        assert db_state(engine, STACK) == "pending"
        engine.dispose()
        tmux.keys("q")
        wait(lambda: "console-exit=" in tmux.pane(), "the console to exit", tmux)
        assert "console-exit=0" in tmux.pane(), tmux.pane()
        flags = tmux.flags()
        assert (flags["alternate_on"], flags["cursor_flag"], flags["mouse_any_flag"]) == (
            "0",
            "1",
            "0",
        ), f"terminal not restored: {flags}"
    finally:
        subprocess.run([*tmux.base, "kill-server"], capture_output=True, timeout=30)
        if cluster.exists():
            cluster.down()


def test_console_shows_terminal_control_sequences_escaped(tmp_path: Path) -> None:
    """A stack error, its command and a problem message holding an OSC title sequence, a
    clear-screen and rich markup: the console shows them escaped and as they are, and the
    terminal's title stays untouched (tmux records what the program set)."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from spica_core.config import load_config
    from spica_core.db.models import Problem, Stack, StackRun

    require(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux)")
    hostile = "Failed on printf '\x1b]0;pwned\x07' ; clear \x1b[2J [bold]x[/bold] [/oops]"
    config_path = tmp_path / "spica.toml"
    config_path.write_text('[db]\nurl = "sqlite:///dbspica.sqlite"\n')
    config = load_config(config_path)
    prepare_database(config, create=True)
    engine = make_engine(config.db)
    with Session(engine) as s, s.begin():
        stack = Stack(name="evil_T0003", state="failed", lines=1, failed_line=1, error=hostile)
        stack.runs.append(
            StackRun(line=1, command=hostile, started_at=datetime.now(UTC), exit_code=1)
        )
        s.add_all([stack, Problem(kind="software", stack="evil_T0003", message=hostile)])
    engine.dispose()
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        command = (
            f"env -u COLUMNS -u LINES {sys.executable} -m spica_tui"
            f" --config {config_path} console; exec sleep 600"
        )
        tmux.start(command, width=200)
        shown = "\\x1b]0;pwned\\x07' ; clear \\x1b[2J [bold]x[/bold] [/oops]"
        wait(lambda: shown in tmux.pane(), "the problem message, escaped", tmux)
        wait(lambda: "row 1 of 1" in tmux.pane(), "the stacks table", tmux)
        assert "\\x1b]0;pwned\\x07" in next(
            line for line in tmux.pane().splitlines() if "evil_T0003" in line
        )
        title = tmux("display-message", "-p", "-t", "spica", "#{pane_title}")
        assert "pwned" not in title, title
        press(tmux, "Enter", lambda: "Log tail" in tmux.pane(), "the stack detail")
        wait(lambda: tmux.pane().count(shown) >= 2, "the error and the command, escaped", tmux)
        assert "pwned" not in tmux("display-message", "-p", "-t", "spica", "#{pane_title}")
    finally:
        subprocess.run([*tmux.base, "kill-server"], capture_output=True, timeout=30)
