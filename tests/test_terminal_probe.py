"""The console asks the terminal what pictures it draws on a thread while it loads, and takes
the answer before the app owns the terminal: a terminal that answers Sixel gets pictures
drawn with it, one that never answers gets half-block cells, and a start refused while the
terminal is still answering leaves the terminal's modes as they were."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pty")

CHILD = """
import sys
from spica_tui.console import terminal_probe
probe = terminal_probe.start()
import spica_tui.console.app  # the rest loads meanwhile
probe.join()
from spica_tui.console.thumbnail import graphics_protocol
sys.stderr.write(f"{graphics_protocol()}\\n")
"""
#: The device-attributes question, and a VT340-like terminal's answer: 4 is Sixel.
QUESTION = b"\x1b[c"
SIXEL_DA1 = b"\x1b[?63;1;4c"


@dataclass
class Seen:
    code: int
    stderr: str
    #: What the process wrote to the terminal.
    output: bytes
    modes_kept: bool


def at_a_terminal(
    argv: list[str], answer: bytes = b"", *, a_character_at_a_time: bool = False, **env: str
) -> Seen:
    """Run ``argv`` with a pty as stdin and stdout; once it asks :data:`QUESTION`, the
    terminal answers ``answer`` (all at once, or a character per 50 ms at most: each within
    textual-image's 0.1 s wait, keeping the question open)."""
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    try:
        child = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env={**os.environ, **env}
        )
        output, left = b"", answer
        while child.poll() is None:
            if select.select([master], [], [], 0.05)[0]:
                output += os.read(master, 4096)  # drained: the child never blocks on it
            if QUESTION in output and left:
                size = 1 if a_character_at_a_time else len(left)
                os.write(master, left[:size])
                left = left[size:]
        _, err = child.communicate(timeout=60)
        return Seen(child.returncode, err.decode(), output, termios.tcgetattr(slave) == before)
    finally:
        os.close(slave)
        os.close(master)


def test_a_terminal_that_speaks_sixel_gets_pictures() -> None:
    seen = at_a_terminal([sys.executable, "-c", CHILD], SIXEL_DA1)
    assert seen.code == 0, seen.stderr
    assert QUESTION in seen.output  # the question was asked at the terminal
    assert seen.stderr.split()[-1] == "True"


def test_a_terminal_that_never_answers_gets_half_blocks_and_the_wait_ends() -> None:
    seen = at_a_terminal([sys.executable, "-c", CHILD])  # communicate()'s timeout: no hang
    assert seen.code == 0, seen.stderr
    assert QUESTION in seen.output and seen.stderr.split()[-1] == "False"


def test_a_refused_start_leaves_the_terminal_as_it_found_it(tmp_path: Path) -> None:
    """dbspica without SPICA's schema: the console refuses to start (exit 3) while the
    terminal is still answering, slowly; the question is seen to its end, never abandoned
    with the terminal in raw mode."""
    (tmp_path / "empty.sqlite").touch()
    seen = at_a_terminal(
        [sys.executable, "-m", "spica_tui", "console"],
        b"\x1b[?" + b"1;" * 20 + b"c",
        a_character_at_a_time=True,
        SPICA_DB_URL=f"sqlite:///{tmp_path / 'empty.sqlite'}",
    )
    assert seen.code == 3, seen.stderr
    assert seen.modes_kept
