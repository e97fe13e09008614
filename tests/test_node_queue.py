"""The on-node layout: root confinement, tolerant record readers, liveness of recorded pids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spica_core.errors import InvalidName
from spica_core.node.disk import partition_usage
from spica_core.node.files import StatCache, count_lines
from spica_core.node.heartbeat import write_heartbeat
from spica_core.node.host import boot_id, hostname, pid_alive
from spica_core.node.layout import (
    NodeLayout,
    OutsideRoot,
    log_file_name,
    parse_log_file_name,
    resolve_inside,
)
from spica_core.node.protocol import ClaimRecord, ErrorRecord, LaunchRecord
from spica_core.node.queue import list_queue
from spica_core.node.records import read_record, write_record
from spica_core.states import StackState


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "spica"
    (root / "stacks" / "S1" / "logs").mkdir(parents=True)
    (root / "queue").mkdir()
    return root


def test_resolve_inside_accepts_paths_under_the_root(root: Path):
    real = Path(os.path.realpath(root))
    assert resolve_inside(root) == real
    assert resolve_inside(root, "stacks", "S1/logs", "001.log") == real / "stacks/S1/logs/001.log"
    assert resolve_inside(root, "./stacks//S1") == real / "stacks" / "S1"
    (root / "stacks" / "alias").symlink_to(root / "stacks" / "S1")  # a symlink kept inside
    assert resolve_inside(root, "stacks", "alias") == real / "stacks" / "S1"


@pytest.mark.parametrize(
    "parts",
    [("..",), ("stacks", "../../x"), ("/etc/passwd",), ("stacks", "/etc"), ("a\x00b",)],
)
def test_resolve_inside_refuses_escapes(root: Path, parts: tuple[str, ...]):
    with pytest.raises(OutsideRoot):
        resolve_inside(root, *parts)


def test_resolve_inside_refuses_symlinks_out_of_the_root(root: Path, tmp_path: Path):
    (tmp_path / "outside").mkdir()
    (root / "stacks" / "EVIL").symlink_to(tmp_path / "outside")
    (root / "stacks" / "S1" / "logs" / "001.log").symlink_to("/etc/passwd")
    with pytest.raises(OutsideRoot, match="resolves to"):
        resolve_inside(root, "stacks", "EVIL", "logs")
    with pytest.raises(OutsideRoot):
        NodeLayout(root).log_file("S1", 1)


def test_resolution_below_the_root_equals_realpath(root: Path, tmp_path: Path):
    """The short walk under the root gives what os.path.realpath gives, symlinks included."""
    (tmp_path / "outside").mkdir()
    (root / "stacks" / "S1" / "logs" / "001.log").write_text("x")
    (root / "stacks" / "rel").symlink_to("S1/logs")
    (root / "stacks" / "abs_in").symlink_to(root / "stacks" / "S1")
    (root / "stacks" / "out").symlink_to(tmp_path / "outside")
    (root / "stacks" / "dangling").symlink_to("nowhere")
    (root / "stacks" / "loop").symlink_to("loop")
    cases = [
        ("stacks",),
        ("stacks", "S1", "logs", "001.log"),
        ("stacks", "rel", "001.log"),
        ("stacks", "abs_in", "logs"),
        ("stacks", "dangling"),
        ("stacks", "dangling", "deeper"),
        ("stacks", "missing", "a", "b"),
        ("stacks", "S1", "logs", "001.log", "not-a-dir"),
        ("stacks", "loop"),
    ]
    real_root = os.path.realpath(root)
    for parts in cases:
        expected = os.path.realpath(os.path.join(real_root, *parts))
        assert str(resolve_inside(root, *parts)) == expected, parts
    for parts in [("stacks", "out"), ("stacks", "out", "x")]:
        with pytest.raises(OutsideRoot):
            resolve_inside(root, *parts)


def test_layout_validates_names(root: Path):
    layout = NodeLayout(root)
    for bad in ("../x", "/etc/passwd", "$(id)", "a" * 200, "été", ""):
        with pytest.raises(InvalidName):
            layout.stack_dir(bad)
    with pytest.raises(InvalidName):
        layout.qfin_lock("raid1/../x")
    assert layout.queue_file("S1", StackState.RUNNING).name == "S1.processing"
    assert layout.qfin_lock("raid1").name == "raid1.qfin.lock"


def test_log_file_names():
    assert log_file_name(7) == "007.log" and log_file_name(1234) == "1234.log"
    assert parse_log_file_name("007.log") == 7 and parse_log_file_name("1234.log") == 1234
    for other in ("000.log", "x.log", "007.txt", "007", "٣.log"):
        assert parse_log_file_name(other) is None
    with pytest.raises(ValueError):
        log_file_name(0)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty file"),
        (b"{oops", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"pid": "12", "host": "h", "boot_id": "b", "started_at": "t"}', "'pid' has the wrong"),
        (b'{"pid": true, "host": "h", "boot_id": "b", "started_at": "t"}', "'pid' has the wrong"),
        (b'{"host": "h", "boot_id": "b", "started_at": "t"}', "missing 'pid'"),
    ],
)
def test_read_record_reports_malformed_claims(tmp_path: Path, content: bytes, why: str):
    path = tmp_path / "S.processing"
    path.write_bytes(content)
    record, reason = read_record(path, ClaimRecord)
    assert record is None and reason is not None and reason.startswith(why)


def test_read_record_round_trip_and_oddities(tmp_path: Path):
    path = tmp_path / "S.error"
    write_record(path, ErrorRecord(line=4, exit_code=1, message="boom", log_tail=None))
    assert read_record(path, ErrorRecord) == (
        ErrorRecord(line=4, exit_code=1, message="boom", log_tail=None),
        None,
    )
    assert json.loads(path.read_text())["line"] == 4
    empty = tmp_path / "S.spica"
    empty.write_text("  \n")
    assert read_record(empty, LaunchRecord, empty_ok=True) == (None, None)
    assert read_record(tmp_path / "missing", LaunchRecord) == (None, "missing")
    big = tmp_path / "big.error"
    big.write_bytes(b" " * (1024 * 1024))
    assert read_record(big, ErrorRecord)[1].startswith("over")
    fifo = tmp_path / "fifo.error"
    os.mkfifo(fifo)
    assert read_record(fifo, ErrorRecord) == (None, "not a regular file")  # never blocks
    link = tmp_path / "link.error"
    link.symlink_to(path)
    assert read_record(link, ErrorRecord)[0] is None  # a final symlink is not followed


def test_pid_alive():
    me = os.getpid()
    assert pid_alive(me, hostname(), boot_id())
    assert not pid_alive(me, hostname() + "-other", boot_id())
    assert not pid_alive(me, hostname(), "another-boot")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid, hostname(), boot_id())
    for bad in (0, -1, True, "12", None, 2**80):
        assert not pid_alive(bad, hostname(), boot_id())
    if os.getuid() != 0:
        assert pid_alive(1, hostname(), boot_id())  # EPERM: alive, someone else's


def test_boot_id_is_this_boots():
    if Path("/proc/sys/kernel/random/boot_id").exists():
        assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_count_lines_and_cache(tmp_path: Path):
    path = tmp_path / "commands.sh"
    path.write_text("a\nb\n")
    assert count_lines(path) == 2
    path.write_text("a\nb\nc")
    assert count_lines(path) == 3
    cache = StatCache()
    calls: list[Path] = []

    def counting(p: Path) -> int:
        calls.append(p)
        return count_lines(p)

    assert cache.get(path, counting) == 3 and cache.get(path, counting) == 3
    assert len(calls) == 1
    path.write_text("a\n" * 10)
    assert cache.get(path, counting) == 10 and len(calls) == 2


def test_list_queue_skips_foreign_files_and_flags_non_regular(root: Path):
    queue = root / "queue"
    (queue / "A.spica").write_text("")
    (queue / "notes.txt").write_text("")
    (queue / ".hidden.spica").write_text("")
    (queue / "B.error").mkdir()
    entries = list_queue(root)
    assert [(e.stack, e.state) for e in entries] == [
        ("A", StackState.PENDING),
        ("B", StackState.FAILED),
    ]
    assert entries[1].malformed == "not a regular file"
    assert list_queue(root / "nowhere") == []


def test_partition_usage_virtual_and_real(root: Path):
    (root / "raid1" / "d").mkdir(parents=True)
    (root / "raid1" / "d" / "f").write_bytes(b"z" * 300)
    (root / "raid1" / "g").write_bytes(b"z" * 200)
    virtual = partition_usage(root, "raid1", 1000)
    assert (virtual.total_bytes, virtual.used_bytes, virtual.free_bytes) == (1000, 500, 500)
    full = partition_usage(root, "raid1", 100)
    assert full.free_bytes == 0 and full.used_bytes == 500
    real = partition_usage(root, "raid1")
    assert not real.virtual and real.total_bytes and real.total_bytes > 0
    assert not partition_usage(root, "raid8").exists
    with pytest.raises(InvalidName):
        partition_usage(root, "../raid1")


def test_heartbeat_written_atomically(root: Path):
    write_heartbeat(root, pid=77)
    data = json.loads((root / "daemon.heartbeat").read_text())
    assert data["pid"] == 77 and data["host"] == hostname() and data["time"].endswith("Z")
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
