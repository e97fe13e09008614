"""Asking the terminal what pictures it draws, while the console loads.

``textual-image`` asks the terminal when it is imported (Sixel, then Kitty's graphics
protocol), waiting up to 0.1 s for each answer; a terminal that speaks neither never answers
the second. The question must be asked before Textual owns the terminal (Textual's reader
thread would take the answer), and costs nothing to ask early: :func:`start` imports it on
a thread as the console command begins, and the command joins that thread before the app
runs, or before it exits refusing to start. Imports nothing heavy itself, so the question
goes out first.
"""

from __future__ import annotations

import importlib
import threading

#: The module whose import asks the terminal.
PROBED = "textual_image.renderable"


def start() -> threading.Thread:
    """Ask on a thread; the thread ends once the terminal answered or the waits ran out."""
    probe = threading.Thread(
        target=importlib.import_module, args=(PROBED,), name="terminal-probe", daemon=True
    )
    probe.start()
    return probe
