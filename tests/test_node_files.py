"""The one atomic write of node files (spica_core.node.files.atomic_write), with real processes.

Exclusive creation is how a launch commits (two operators launching one stack: one wins, the
other is told); replacement is how every record, ``progress`` and ``commands.sh`` change while
daemons and agents read them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spica_core.node.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 40
WRITERS = 4
#: Big enough that a write is several syscalls: a reader could see it half-done if it were
#: written in place.
PAYLOAD = 256 * 1024

_EXCLUSIVE_WORKER = """
import json, os, sys, time
from pathlib import Path
from spica_core.node.files import atomic_write
directory, rounds, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = float(sys.argv[4])
while time.time() < start:
    time.sleep(0.001)
won = []
for r in range(rounds):
    data = (f"{os.getpid()}:".encode() * size)[:size]
    try:
        atomic_write(directory / f"round{r}", data, exclusive=True)
    except FileExistsError:
        continue
    won.append(r)
print(json.dumps({"pid": os.getpid(), "won": won}))
"""


def _dir(tmp_path: Path) -> Path:
    """A directory of the test's own (the suite's fixtures put home/ and work/ in tmp_path)."""
    directory = tmp_path / "files"
    directory.mkdir()
    return directory


def test_exclusive_write_has_exactly_one_winner_among_processes(tmp_path: Path) -> None:
    tmp_path = _dir(tmp_path)
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _EXCLUSIVE_WORKER,
                str(tmp_path),
                str(ROUNDS),
                "4096",
                f"{start}",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(WRITERS)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    winners: dict[int, list[int]] = {}
    for result in results:
        for r in result["won"]:
            winners.setdefault(r, []).append(result["pid"])
    assert sorted(winners) == list(range(ROUNDS))
    assert all(len(pids) == 1 for pids in winners.values()), winners
    for r, (pid,) in winners.items():
        # The file is the winner's, whole: a loser never replaced it, even partly.
        assert (tmp_path / f"round{r}").read_bytes() == (f"{pid}:".encode() * 4096)[:4096]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"round{r}" for r in winners)


_REPLACE_WORKER = """
import sys
from pathlib import Path
from spica_core.node.files import atomic_write
path, rounds, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    atomic_write(path, bytes([65 + r % 26]) * size, durable=r % 2 == 0)
"""


def test_replacing_write_is_never_seen_half_done(tmp_path: Path) -> None:
    tmp_path = _dir(tmp_path)
    path = tmp_path / "record"
    atomic_write(path, b"@" * PAYLOAD)
    writer = subprocess.Popen(
        [sys.executable, "-c", _REPLACE_WORKER, str(path), "300", str(PAYLOAD)], cwd=ROOT
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        data = path.read_bytes()
        assert len(data) == PAYLOAD and data == data[:1] * PAYLOAD
        seen.add(data[0])
    assert writer.wait(timeout=60) == 0
    assert path.read_bytes() == bytes([65 + 299 % 26]) * PAYLOAD
    assert len(seen) > 1  # the reader really overlapped the writer
    assert [p.name for p in tmp_path.iterdir()] == ["record"]


def test_mode_is_the_files_from_creation_and_replace_overwrites(tmp_path: Path) -> None:
    tmp_path = _dir(tmp_path)
    private, shared = tmp_path / "private", tmp_path / "shared"
    atomic_write(private, b"one\n")
    atomic_write(shared, b"one\n", mode=0o644)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    atomic_write(shared, b"two\n", mode=0o644)
    assert shared.read_bytes() == b"two\n"


def test_exclusive_write_never_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    tmp_path = _dir(tmp_path)
    path = tmp_path / "stack.spica"
    atomic_write(path, b"first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, b"second\n", exclusive=True)
    assert path.read_bytes() == b"first\n"
    assert os.listdir(tmp_path) == ["stack.spica"]


def test_failed_write_leaves_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    tmp_path = _dir(tmp_path)
    path = tmp_path / "progress"
    atomic_write(path, b"3\n")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir", b"4\n")  # rename(2) onto a directory fails
    assert path.read_bytes() == b"3\n"
    assert sorted(os.listdir(tmp_path)) == ["dir", "progress"]
