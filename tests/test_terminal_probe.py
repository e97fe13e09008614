"""The console asks the terminal what pictures it draws on a thread while it loads, and takes
the answer before the app owns the terminal: a terminal that answers Sixel gets pictures
drawn with it, one that never answers gets half-block cells, and the wait is bounded."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

CHILD = """
import sys, time
from spica_tui.console import terminal_probe
started = time.monotonic()
probe = terminal_probe.start()
import spica_tui.console.app  # the rest loads meanwhile
terminal_probe.finish(probe)
from spica_tui.console.thumbnail import graphics_protocol
sys.stderr.write(f"{graphics_protocol()} {time.monotonic() - started:.2f}\\n")
"""
#: The primary device attributes of a VT340-like terminal: 4 is Sixel.
SIXEL_DA1 = b"\x1b[?63;1;4c"


def run_at_a_terminal(answer: bytes | None) -> tuple[bool, float, bytes]:
    """The probe in a process whose terminal answers the device-attributes question with
    ``answer`` (None: never answers); (graphics, seconds, what the process wrote)."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=slave, stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 60
    try:
        while child.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            seen += chunk
            if answer is not None and b"\x1b[c" in chunk:
                os.write(master, answer)
        _, err = child.communicate(timeout=60)
    finally:
        os.close(master)
    assert child.returncode == 0, err.decode()
    graphics, seconds = err.decode().split()[-2:]
    return graphics == "True", float(seconds), seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")
def test_a_terminal_that_speaks_sixel_gets_pictures() -> None:
    graphics, _, seen = run_at_a_terminal(SIXEL_DA1)
    assert b"\x1b[c" in seen  # the question was asked at the terminal
    assert graphics


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")
def test_a_terminal_that_never_answers_gets_half_blocks_and_the_wait_ends() -> None:
    graphics, _, seen = run_at_a_terminal(None)  # communicate()'s timeout: never hangs
    assert b"\x1b[c" in seen and not graphics


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")
def test_a_refused_start_leaves_the_terminal_as_it_found_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """dbspica without SPICA's schema: the console refuses to start (exit 3) while the
    terminal is still answering (slowly, a character at a time), and the terminal's modes
    are the ones it had before: the question is seen to its end, never abandoned in raw
    mode."""
    import termios

    (tmp_path / "empty.sqlite").touch()
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "spica_tui", "console"],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env={**os.environ, "SPICA_DB_URL": f"sqlite:///{tmp_path / 'empty.sqlite'}"},
        )
        seen, answer = b"", list(b"\x1b[?" + b"1;" * 20 + b"c")
        while child.poll() is None:
            if select.select([master], [], [], 0.05)[0]:
                seen += os.read(master, 4096)  # drained: the child never blocks on it
            if b"\x1b[c" in seen and answer:
                os.write(master, bytes([answer.pop(0)]))  # within textual-image's 0.1 s
        err = child.stderr.read().decode() if child.stderr else ""
        assert child.returncode == 3, err
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(slave)
        os.close(master)
