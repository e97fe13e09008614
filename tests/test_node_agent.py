"""The node agent: the real ``spica node serve`` over pipes, and ``serve()`` in-process.

The tree under test is a real spica root on disk; every refusal is followed by another
request to prove the agent is still serving.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spica_core import __version__
from spica_core.node import agent as node_agent
from spica_core.node import protocol as proto
from spica_core.node.host import boot_id, hostname, iso_utc

ROOT_FILES = {"raid1/a.fits": 1234, "raid1/sub/deeper/b.fits": 5678, "raid1/c.head": 90}


# --------------------------------------------------------------------------- fixtures


def _dead_pid() -> int:
    """A pid that existed and is now gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A spica root with a queue file in every state and the records the daemon leaves."""
    root = tmp_path / "spica"
    queue = root / "queue"
    queue.mkdir(parents=True)
    _write_json(
        queue / "P1.spica",
        {"stack": "P1", "priority": 5, "launched_at": "2024-01-01T00:00:00Z", "by": "ops"},
    )
    (queue / "LEGACY.spica").write_bytes(b"")
    claim = {"host": hostname(), "boot_id": boot_id(), "started_at": "2024-01-01T01:00:00Z"}
    _write_json(queue / "RUN_LIVE.processing", {**claim, "pid": os.getpid(), "daemon_pid": 1})
    _write_json(queue / "RUN_DEAD.processing", {**claim, "pid": _dead_pid()})
    _write_json(queue / "RUN_REBOOTED.processing", {**claim, "pid": os.getpid(), "boot_id": "x"})
    (queue / "DONE.processed").write_text("")
    _write_json(
        queue / "FAILED.error",
        {"line": 3, "exit_code": 2, "message": "swarp failed", "log_tail": "oops"},
    )
    (queue / "GARBLED.error").write_text("{not json")
    (queue / "README.txt").write_text("not a queue file")
    (queue / "bad name;x.spica").write_text("")

    stacks = root / "stacks"
    live = stacks / "RUN_LIVE"
    (live / "logs").mkdir(parents=True)
    (live / "commands.sh").write_text("echo 1\necho 2\n\necho 4\necho 5")  # 5 physical lines
    (live / "progress").write_text("2\n")
    (live / "logs" / "001.log").write_text("one\n")
    (live / "logs" / "002.log").write_text("two\n")
    failed = stacks / "FAILED" / "logs"
    failed.mkdir(parents=True)
    for n in (1, 2, 3, 4):
        (failed / f"{n:03d}.log").write_text(f"log of line {n}\n")

    for rel, size in ROOT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    big_outside = tmp_path / "outside" / "big.bin"
    big_outside.parent.mkdir()
    big_outside.write_bytes(b"y" * 100_000)
    (root / "raid1" / "link-to-big").symlink_to(big_outside)  # neither followed nor counted
    (root / "raid2").mkdir()

    heartbeat = root / "daemon.heartbeat"
    _write_json(heartbeat, {"pid": 4242, "host": hostname(), "time": "2024-01-01T00:00:00Z"})
    old = time.time() - 30
    os.utime(heartbeat, (old, old))

    _write_json(
        root / "locks" / "raid1.qfin.lock",
        {"pid": os.getpid(), "host": hostname(), "boot_id": boot_id(), "stack": "Q1"},
    )
    (root / "locks" / "raid2.qfin.lock").write_text("")
    return root


def run_inprocess(root: Path, *lines: bytes | dict[str, Any]) -> list[dict[str, Any]]:
    """Feed request lines to serve() and return [hello, response…]."""
    raw = b"".join(
        line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines
    )
    out = io.BytesIO()
    assert node_agent.serve(root, io.BytesIO(raw), out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def call(root: Path, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request in-process; the response message."""
    request: dict[str, Any] = {"id": 1, "verb": verb}
    if args is not None:
        request["args"] = args
    _hello, response = run_inprocess(root, request)
    assert response["id"] == 1
    return response


def result(root: Path, verb: str, args: dict[str, Any] | None = None) -> Any:
    response = call(root, verb, args)
    assert response["ok"], response
    return response["result"]


def error_code(root: Path, verb: str, args: dict[str, Any] | None = None) -> str:
    response = call(root, verb, args)
    assert not response["ok"], response
    return response["error"]["code"]


class AgentProcess:
    """The real ``spica node serve`` in a subprocess, spoken to over its pipes."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spica_tui", "node", "serve", "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._next_id = 0
        self.hello = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.endswith(b"\n"), f"agent closed its stdout: {line!r}"
        return json.loads(line)

    def send_raw(self, data: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return self.read()

    def request(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "verb": verb, "args": args or {}}
        response = self.send_raw(json.dumps(message).encode() + b"\n")
        assert response["id"] == self._next_id
        return response

    def close(self) -> tuple[int, bytes]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        err = self.proc.stderr.read()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()
        return code, err


@pytest.fixture
def agent(root: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(root)
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


# --------------------------------------------------------------------------- the wire


def test_subprocess_hello_then_ping_then_clean_exit_on_eof(agent: AgentProcess, root: Path):
    hello = proto.decode_hello(json.dumps(agent.hello).encode())
    assert hello.protocol == proto.PROTOCOL_VERSION == 2
    assert hello.version == __version__
    assert hello.root == str(root)
    assert hello.host == hostname() and hello.boot_id == boot_id()
    assert hello.pid == agent.proc.pid
    pong = agent.request("ping")
    assert pong["ok"] and pong["result"]["time"].endswith("Z")
    code, err = agent.close()
    assert code == 0
    assert b"Traceback" not in err


def test_inprocess_hello_is_first_and_responses_keep_request_order(root: Path):
    hello, *responses = run_inprocess(
        root,
        {"id": "a", "verb": "ping"},
        {"id": 2, "verb": "nope"},
        {"id": 3, "verb": "ping"},
    )
    assert hello["hello"] == proto.HELLO and hello["protocol"] == proto.PROTOCOL_VERSION
    assert [r["id"] for r in responses] == ["a", 2, 3]
    assert [r["ok"] for r in responses] == [True, False, True]


def test_serve_reports_missing_root_as_usage_error(tmp_path: Path):
    cmd = [sys.executable, "-m", "spica_tui", "node", "serve", "--root"]
    missing = subprocess.run([*cmd, str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and missing.stdout == ""
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_dir = subprocess.run([*cmd, str(a_file)], capture_output=True, text=True)
    assert not_dir.returncode == 2 and "not a directory" in not_dir.stderr


# --------------------------------------------------------------------------- status


def test_status_matches_the_disk(root: Path):
    status = result(
        root,
        "status",
        {"partitions": [{"name": "raid1", "capacity": 100_000}, {"name": "raid2"}]},
    )
    assert status["root"] == str(root)
    assert status["host"] == hostname() and status["boot_id"] == boot_id()
    assert status["time"].endswith("Z") and len(status["load"]) == 3

    raid1, raid2 = status["partitions"]
    used = sum(ROOT_FILES.values())
    assert raid1 == {
        "name": "raid1",
        "total_bytes": 100_000,
        "free_bytes": 100_000 - used,
        "used_bytes": used,
        "virtual": True,
        "exists": True,
        "error": None,
    }
    vfs = os.statvfs(root / "raid2")
    assert raid2["virtual"] is False and raid2["exists"] is True
    assert raid2["total_bytes"] == vfs.f_blocks * vfs.f_frsize
    assert abs(raid2["free_bytes"] - vfs.f_bavail * vfs.f_frsize) < 64 * 1024**2

    queue = {(e["stack"], e["state"]): e for e in status["queue"]}
    assert set(queue) == {
        ("DONE", "completed"),
        ("FAILED", "failed"),
        ("GARBLED", "failed"),
        ("LEGACY", "pending"),
        ("P1", "pending"),
        ("RUN_DEAD", "running"),
        ("RUN_LIVE", "running"),
        ("RUN_REBOOTED", "running"),
    }
    assert queue[("P1", "pending")]["launch"]["priority"] == 5
    assert queue[("LEGACY", "pending")]["launch"] is None
    assert queue[("LEGACY", "pending")]["malformed"] is None

    live = queue[("RUN_LIVE", "running")]
    assert live["claim"]["pid"] == os.getpid() and live["claim"]["alive"] is True
    assert live["progress"] == 2 and live["lines"] == 5 and live["malformed"] is None
    dead = queue[("RUN_DEAD", "running")]
    assert dead["claim"]["alive"] is False
    assert dead["malformed"] == "commands.sh missing" and dead["progress"] is None
    assert queue[("RUN_REBOOTED", "running")]["claim"]["alive"] is False

    failed = queue[("FAILED", "failed")]
    assert failed["error"] == {
        "line": 3,
        "exit_code": 2,
        "message": "swarp failed",
        "log_tail": "oops",
    }
    garbled = queue[("GARBLED", "failed")]
    assert garbled["error"] is None and garbled["malformed"] == "not JSON"
    mtime = os.stat(root / "queue" / "DONE.processed").st_mtime
    assert queue[("DONE", "completed")]["mtime"] == iso_utc(mtime)

    heartbeat = status["heartbeat"]
    assert heartbeat["pid"] == 4242 and heartbeat["host"] == hostname()
    assert 29 <= heartbeat["age_seconds"] < 120

    locks = {lock["partition"]: lock for lock in status["qfin_locks"]}
    assert locks["raid1"]["alive"] is True and locks["raid1"]["holder"]["stack"] == "Q1"
    assert locks["raid2"]["alive"] is False and locks["raid2"]["holder"] is None


def test_status_default_partitions_are_the_raid_directories(root: Path, tmp_path: Path):
    (root / "raidfile").write_text("a file, not a partition")
    (root / "raid9").symlink_to(tmp_path / "outside")  # a partition leading out of the root
    status = result(root, "status")
    parts = {p["name"]: p for p in status["partitions"]}
    assert set(parts) == {"raid1", "raid2", "raid9"}
    assert parts["raid9"]["exists"] is False and parts["raid9"]["error"].startswith("outside_root")
    assert parts["raid1"]["virtual"] is False


def test_status_of_an_empty_root_and_missing_partition(tmp_path: Path):
    status = result(tmp_path, "status", {"partitions": [{"name": "raid7", "capacity": 10}]})
    assert status["queue"] == [] and status["heartbeat"] is None and status["qfin_locks"] == []
    assert status["partitions"][0]["exists"] is False
    assert status["partitions"][0]["used_bytes"] is None


def test_status_states_filter(root: Path):
    status = result(root, "status", {"states": ["running"], "partitions": []})
    assert {e["state"] for e in status["queue"]} == {"running"}
    # The counts cover every queue file, whatever the filter kept.
    everything = result(root, "status", {"partitions": []})["queue"]
    expected = {
        s: sum(e["state"] == s for e in everything)
        for s in ("pending", "running", "completed", "failed")
    }
    assert status["counts"] == expected
    assert sum(expected.values()) == len(everything) > len(status["queue"])


def test_status_in_the_real_agent_tracks_the_disk(agent: AgentProcess, root: Path):
    first = agent.request("status")["result"]
    assert len(first["queue"]) == 8
    (root / "queue" / "P1.spica").rename(root / "queue" / "P1.processing")
    second = agent.request("status", {"states": ["pending"]})["result"]
    assert [e["stack"] for e in second["queue"]] == ["LEGACY"]


def test_status_queue_version_sends_the_listing_only_when_it_changed(root: Path):
    """A client holding the current version gets ``queue: null``; any change on disk, a
    version of another session or none at all gets the whole listing."""
    agent = node_agent.Agent(root)
    args: dict[str, Any] = {"partitions": []}

    def status(version: str | None) -> dict[str, Any]:
        response = json.loads(
            agent.respond(
                json.dumps(
                    {"id": 1, "verb": "status", "args": {**args, "queue_version": version}}
                ).encode()
            )
        )
        assert response["ok"], response
        return response["result"]

    first = status(None)
    v1 = first["queue_version"]
    assert len(first["queue"]) == 8 and first["queue_unchanged"] is False
    same = status(v1)
    assert same["queue"] is None and same["queue_unchanged"] is True
    assert same["queue_version"] == v1 and same["counts"] == first["counts"]

    # A new pending stack, a record rewritten in place, a requeue: each a new version.
    _write_json(
        root / "queue" / "P2.spica",
        {"stack": "P2", "priority": 1, "launched_at": "2024-01-02T00:00:00Z", "by": "ops"},
    )
    added = status(v1)
    assert added["queue_version"] != v1 and added["queue_unchanged"] is False
    assert {e["stack"] for e in added["queue"]} >= {"P1", "P2"}
    v2 = added["queue_version"]
    assert status(v2)["queue"] is None

    with open(root / "queue" / "FAILED.error", "w") as f:  # in place, same inode
        json.dump({"line": 4, "exit_code": 1, "message": "scamp failed"}, f)
    rewritten = status(v2)
    error = next(e for e in rewritten["queue"] if e["stack"] == "FAILED")["error"]
    assert error["line"] == 4 and error["message"] == "scamp failed"

    (root / "queue" / "FAILED.error").rename(root / "queue" / "FAILED.spica")
    requeued = status(rewritten["queue_version"])
    states = {e["stack"]: e["state"] for e in requeued["queue"]}
    assert states["FAILED"] == "pending"

    # A claim whose pid dies is the same file: liveness is read at every poll.
    dying = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claim = {"host": hostname(), "boot_id": boot_id(), "started_at": "2024-01-01T01:00:00Z"}
    _write_json(root / "queue" / "RUN_SOON_DEAD.processing", {**claim, "pid": dying.pid})
    before = status(None)
    entry = next(e for e in before["queue"] if e["stack"] == "RUN_SOON_DEAD")
    assert entry["claim"]["alive"] is True
    dying.kill()
    dying.wait()
    after = status(before["queue_version"])
    assert after["queue_unchanged"] is False
    entry = next(e for e in after["queue"] if e["stack"] == "RUN_SOON_DEAD")
    assert entry["claim"]["alive"] is False

    # Another agent session never takes this session's version for its own.
    other = node_agent.Agent(root)
    response = json.loads(
        other.respond(
            json.dumps(
                {
                    "id": 2,
                    "verb": "status",
                    "args": {**args, "queue_version": after["queue_version"]},
                }
            ).encode()
        )
    )
    assert response["result"]["queue"] is not None
    assert response["result"]["queue_version"] != after["queue_version"]


def test_status_queue_version_must_be_a_string(root: Path):
    assert error_code(root, "status", {"queue_version": 7}) == "bad_args"


# --------------------------------------------------------------------------- tail


@pytest.fixture
def big_log(root: Path) -> tuple[Path, int]:
    """A 64 GiB (sparse) log: reading it whole would take minutes, its tail is instant."""
    log = root / "stacks" / "RUN_LIVE" / "logs" / "003.log"
    tail = b"".join(f"line {n}\n".encode() for n in range(1, 10_001))
    with open(log, "wb") as f:
        f.truncate(64 * 1024**3)
        f.seek(0, os.SEEK_END)
        f.write(tail)
    return log, 64 * 1024**3 + len(tail)


def test_tail_returns_the_last_lines_of_a_huge_log_quickly(root: Path, big_log, monkeypatch):
    _, size = big_log
    read_sizes: list[int] = []
    real_fdopen = os.fdopen

    class CountingFile(io.BufferedReader):
        def read(self, n: int | None = -1) -> bytes:
            data = super().read(n)
            read_sizes.append(len(data))
            return data

    def counting_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "rb":
            return CountingFile(io.FileIO(fd, "rb"))
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(node_agent.os, "fdopen", counting_fdopen)
    started = time.monotonic()
    tail = result(root, "tail", {"stack": "RUN_LIVE", "line": 3, "lines": 5})
    assert time.monotonic() - started < 5
    assert tail["text"] == "line 9996\nline 9997\nline 9998\nline 9999\nline 10000\n"
    assert tail["size"] == size and tail["truncated"] is True
    assert tail["line"] == 3 and tail["path"] == "stacks/RUN_LIVE/logs/003.log"
    assert read_sizes, "the log was read through os.fdopen"
    assert sum(read_sizes) <= proto.MAX_TAIL_BYTES


def test_tail_bytes_and_line_cap(root: Path, big_log):
    _, size = big_log
    tail = result(root, "tail", {"stack": "RUN_LIVE", "line": 3, "bytes": 12})
    assert tail["text"] == "\nline 10000\n" and tail["truncated"] is True
    assert tail["size"] == size
    many = result(root, "tail", {"stack": "RUN_LIVE", "line": 3, "lines": proto.MAX_TAIL_LINES})
    assert many["text"].endswith("line 10000\n")
    assert many["text"].count("\n") == proto.MAX_TAIL_LINES


def test_tail_whole_small_log_is_not_truncated(root: Path):
    tail = result(root, "tail", {"stack": "RUN_LIVE", "line": 1})
    assert tail["text"] == "one\n" and tail["truncated"] is False and tail["size"] == 4


def test_tail_default_line_is_the_failed_line_else_the_latest_log(root: Path):
    assert result(root, "tail", {"stack": "FAILED"})["line"] == 3
    assert result(root, "tail", {"stack": "RUN_LIVE"})["line"] == 2
    (root / "stacks" / "FAILED" / "logs" / "003.log").unlink()
    assert result(root, "tail", {"stack": "FAILED"})["line"] == 4


def test_tail_decodes_invalid_utf8_with_replacement(root: Path):
    (root / "stacks" / "RUN_LIVE" / "logs" / "009.log").write_bytes(b"caf\xe9 \xff\n")
    assert result(root, "tail", {"stack": "RUN_LIVE", "line": 9})["text"] == "caf\ufffd \ufffd\n"


def test_tail_not_found(root: Path):
    assert error_code(root, "tail", {"stack": "NOSUCH"}) == "not_found"
    assert error_code(root, "tail", {"stack": "RUN_LIVE", "line": 77}) == "not_found"
    (root / "stacks" / "EMPTY").mkdir()
    assert error_code(root, "tail", {"stack": "EMPTY"}) == "not_found"


# --------------------------------------------------------------------------- versions


def test_versions_hashes_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    swarp = bindir / "SWarp"
    content = os.urandom(3 * 1024 * 1024 + 17)  # several hash chunks
    swarp.write_bytes(content)
    swarp.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    apps = [
        {"name": "swarp", "binary": "SWarp"},
        {"name": "swarp-abs", "binary": str(swarp)},
        {"name": "scamp", "binary": "scamp-not-installed"},
        {"name": "dir", "binary": str(tmp_path)},
    ]
    answer = result(tmp_path, "versions", {"applications": apps})
    by_name = {v["name"]: v for v in answer["binaries"]}
    digest = hashlib.sha256(content).hexdigest()
    for name in ("swarp", "swarp-abs"):
        assert by_name[name]["path"] == str(swarp)
        assert by_name[name]["exists"] is True
        assert by_name[name]["size"] == len(content)
        assert by_name[name]["sha256"] == digest
    assert by_name["scamp"] == {
        "name": "scamp",
        "binary": "scamp-not-installed",
        "path": None,
        "exists": False,
        "size": None,
        "sha256": None,
    }
    assert by_name["dir"]["exists"] is False and by_name["dir"]["sha256"] is None


def test_versions_refusals(tmp_path: Path):
    assert error_code(tmp_path, "versions", {}) == "bad_args"
    assert error_code(tmp_path, "versions", {"applications": ["x"]}) == "bad_args"
    bad_binary = {"applications": [{"name": "a", "binary": "rel/path"}]}
    assert error_code(tmp_path, "versions", bad_binary) == "bad_args"
    bad_name = {"applications": [{"name": "$(id)", "binary": "id"}]}
    assert error_code(tmp_path, "versions", bad_name) == "bad_name"


# --------------------------------------------------------------------------- refusals


def _request(verb: str, args: Any, rid: int = 99) -> bytes:
    return json.dumps({"id": rid, "verb": verb, "args": args}).encode() + b"\n"


def refusals(root: Path, tmp_path: Path) -> list[tuple[str, bytes, str]]:
    """(what, request line, expected error code); builds the symlinks the cases need."""
    outside = tmp_path / "outside"
    (outside / "logs").mkdir(parents=True, exist_ok=True)
    (outside / "logs" / "001.log").write_text("secret\n")
    (root / "stacks" / "EVIL").symlink_to(outside)
    (root / "stacks" / "RUN_LIVE" / "logs" / "005.log").symlink_to("/etc/passwd")
    pwned = tmp_path / "pwned"
    return [
        ("traversal", _request("tail", {"stack": "../x"}), "bad_name"),
        ("absolute", _request("tail", {"stack": "/etc/passwd"}), "bad_name"),
        ("symlinked stack", _request("tail", {"stack": "EVIL", "line": 1}), "outside_root"),
        ("symlinked stack, default", _request("tail", {"stack": "EVIL"}), "outside_root"),
        ("symlinked log", _request("tail", {"stack": "RUN_LIVE", "line": 5}), "outside_root"),
        ("shell", _request("tail", {"stack": f"x;touch {pwned}"}), "bad_name"),
        ("subst", _request("tail", {"stack": "$(id)"}), "bad_name"),
        ("long", _request("tail", {"stack": "a" * 200}), "bad_name"),
        ("non-ascii", _request("tail", {"stack": "été"}), "bad_name"),
        ("empty", _request("tail", {"stack": ""}), "bad_name"),
        ("partition", _request("status", {"partitions": [{"name": "../etc"}]}), "bad_name"),
        ("stack type", _request("tail", {"stack": 7}), "bad_args"),
        ("lines type", _request("tail", {"stack": "RUN_LIVE", "lines": "9"}), "bad_args"),
        ("lines bound", _request("tail", {"stack": "RUN_LIVE", "lines": 10**6}), "bad_args"),
        (
            "lines+bytes",
            _request("tail", {"stack": "RUN_LIVE", "lines": 1, "bytes": 1}),
            "bad_args",
        ),
        (
            "capacity",
            _request("status", {"partitions": [{"name": "r", "capacity": -1}]}),
            "bad_args",
        ),
        ("states", _request("status", {"states": ["sleeping"]}), "bad_args"),
        ("args type", _request("ping", [1]), "bad_args"),
        (
            "oversized",
            b'{"id":1,"verb":"ping","pad":"' + b"x" * proto.MAX_REQUEST_BYTES + b'"}\n',
            "too_large",
        ),
        ("not json", b"{nope\n", "bad_request"),
        ("not utf-8", b'{"id":1,"verb":"\xff"}\n', "bad_request"),
        ("not an object", b"[1,2,3]\n", "bad_request"),
        ("no id", b'{"verb":"ping"}\n', "bad_request"),
        ("bool id", b'{"id":true,"verb":"ping"}\n', "bad_request"),
        ("no verb", b'{"id":4}\n', "bad_request"),
        ("empty line", b"\n", "bad_request"),
        ("unknown verb", _request("format_disk", {}), "unknown_verb"),
    ]


def test_refusals_in_the_real_agent_each_followed_by_service(
    agent: AgentProcess, root: Path, tmp_path: Path
):
    for what, line, code in refusals(root, tmp_path):
        response = agent.send_raw(line)
        assert response["ok"] is False, what
        assert response["error"]["code"] == code, (what, response)
        assert "\n" not in response["error"]["message"]
        assert agent.request("ping")["ok"], f"agent stopped serving after {what}"
    assert not (tmp_path / "pwned").exists()
    code, err = agent.close()
    assert code == 0 and b"Traceback" not in err


def test_refusals_in_process_echo_the_id_when_there_is_one(root: Path, tmp_path: Path):
    cases = refusals(root, tmp_path)
    _hello, *responses = run_inprocess(root, *(line for _, line, _ in cases))
    assert len(responses) == len(cases)
    for (what, line, code), response in zip(cases, responses, strict=True):
        assert response["error"]["code"] == code, (what, response)
        if line.startswith(b'{"id": 99'):
            assert response["id"] == 99, what
    assert "secret" not in json.dumps(responses)


def test_request_size_limit_is_exact_and_reading_is_bounded(root: Path):
    head = b'{"id":1,"verb":"ping"'
    at_limit = head + b" " * (proto.MAX_REQUEST_BYTES - len(head) - 1) + b"}"
    over = head + b" " * (proto.MAX_REQUEST_BYTES - len(head)) + b"}"
    assert len(at_limit) == proto.MAX_REQUEST_BYTES

    class BoundedReader(io.BytesIO):
        def readline(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 < size <= proto.MAX_REQUEST_BYTES + 1
            return super().readline(size)

    payload = b"\n".join([at_limit, over, b"z" * 5_000_000, b'{"id":2,"verb":"ping"}'])
    out = io.BytesIO()
    assert node_agent.serve(root, BoundedReader(payload), out) == 0  # last line has no newline
    _hello, *responses = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r.get("ok") for r in responses] == [True, False, False, True]
    assert [r["error"]["code"] for r in responses[1:3]] == ["too_large", "too_large"]


def test_unexpected_failure_is_one_line_internal_error(root: Path, monkeypatch, capsys):
    def boom(self: node_agent.Agent, args: dict[str, Any]) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(node_agent.Agent, "status", boom)
    _hello, failed, pong = run_inprocess(
        root, {"id": 1, "verb": "status"}, {"id": 2, "verb": "ping"}
    )
    assert failed["error"] == {
        "code": "internal",
        "message": "RuntimeError: disk on fire second line",
    }
    assert pong["ok"]
    assert "Traceback" in capsys.readouterr().err  # for the node's log, never on the wire


def test_client_hanging_up_ends_the_agent_quietly(root: Path):
    class ClosedPipe(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError

    requests = io.BytesIO(b'{"id":1,"verb":"ping"}\n')
    assert node_agent.serve(root, requests, ClosedPipe()) == 0


# ------------------------------------------------------------- moves resolve once per batch


def _tricky_root(base: Path) -> Path:
    """Failed stacks whose paths a ``moves`` batch resolves below ``queue/`` and ``stacks/``
    resolved once: plain ones, and symlinks that stay inside the root or lead out of it."""
    root = base / "spica"
    queue, stacks = root / "queue", root / "stacks"
    queue.mkdir(parents=True)
    (root / "removed").mkdir()
    outside = base / "outside"
    outside.mkdir()
    record = {"line": 2, "exit_code": 1, "message": "false failed"}
    for stack in ("PLAIN", "ATTEMPT_OUT", "ATTEMPT_IN", "STACKDIR_OUT"):
        _write_json(queue / f"{stack}.error", record)
    for stack in ("PLAIN", "ATTEMPT_OUT", "ATTEMPT_IN", "QUEUE_IN"):
        (stacks / stack).mkdir(parents=True)
        (stacks / stack / "progress").write_text("1\n")
    (stacks / "PLAIN" / "attempt").write_text("3\n")
    (outside / "attempt").write_text("99\n")
    (stacks / "ATTEMPT_OUT" / "attempt").symlink_to(outside / "attempt")
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "attempt").write_text("7\n")
    (stacks / "ATTEMPT_IN" / "attempt").symlink_to("../../elsewhere/attempt")
    (outside / "STACKDIR_OUT").mkdir()
    (outside / "STACKDIR_OUT" / "attempt").write_text("42\n")
    (stacks / "STACKDIR_OUT").symlink_to(outside / "STACKDIR_OUT")
    _write_json(root / "elsewhere" / "QUEUE_IN.error", record)
    (queue / "QUEUE_IN.error").symlink_to("../elsewhere/QUEUE_IN.error")
    _write_json(outside / "QUEUE_OUT.error", record)
    (queue / "QUEUE_OUT.error").symlink_to(outside / "QUEUE_OUT.error")
    return root


_TRICKY = ["PLAIN", "ATTEMPT_OUT", "ATTEMPT_IN", "STACKDIR_OUT", "QUEUE_IN", "QUEUE_OUT", "NONE"]


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` (and where each symlink leads, ``BASE`` for its parent)."""
    return sorted(
        f"{p.relative_to(root)}"
        + (" -> " + os.readlink(p).replace(str(root.parent), "BASE") if p.is_symlink() else "")
        for p in root.rglob("*")
    )


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry run", "applied"])
def test_moves_answer_and_change_what_each_verb_alone_would(tmp_path: Path, dry_run: bool):
    """A ``moves`` batch resolves ``queue/`` and ``stacks/`` once and each stack's own
    components below them: the answers (symlinks inside the root followed, those leading
    out refused) and the tree afterwards are those of the same verbs sent one by one."""
    alone, batched = _tricky_root(tmp_path / "alone"), _tricky_root(tmp_path / "batched")
    args = [{"stack": s, "by": "ops", "priority": 1, "dry_run": dry_run} for s in _TRICKY]
    singles = [call(alone, "requeue", a) for a in args]
    many = result(batched, "moves", {"items": [{"verb": "requeue", **a} for a in args]})
    answers = [
        {"ok": True, "result": r["change"]} if "change" in r else {"ok": False, "error": r["error"]}
        for r in many["results"]
    ]
    expected = [{k: v for k, v in s.items() if k != "id"} for s in singles]
    shown = json.dumps(answers).replace(str(tmp_path / "batched"), "BASE")
    assert shown == json.dumps(expected).replace(str(tmp_path / "alone"), "BASE")
    by_stack = dict(zip(_TRICKY, singles, strict=True))
    assert by_stack["PLAIN"]["result"]["attempt"] == 3
    assert by_stack["ATTEMPT_IN"]["result"]["attempt"] == 7
    assert by_stack["ATTEMPT_OUT"]["result"]["attempt"] is None  # not read through the link
    assert by_stack["STACKDIR_OUT"]["result"]["attempt"] is None
    assert by_stack["QUEUE_IN"]["ok"], by_stack["QUEUE_IN"]
    assert by_stack["QUEUE_OUT"]["error"]["code"] == "outside_root"
    assert by_stack["NONE"]["error"]["code"] == "wrong_state"
    assert _tree(batched) == _tree(alone)
    if not dry_run:
        assert (batched / "queue" / "PLAIN.spica").is_file()
        assert not (batched / "queue" / "PLAIN.error").exists()


def test_moves_under_a_queue_leading_out_of_the_root_answer_each_on_its_own(tmp_path: Path):
    """``queue/`` a symlink out of the root: the batch is still answered item by item, each
    refused as ``outside_root`` as the verb alone is, and nothing outside is touched."""
    root = tmp_path / "spica"
    (root / "stacks" / "S1").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    _write_json(outside / "S1.error", {"line": 1, "exit_code": 1, "message": "x"})
    (root / "queue").symlink_to(outside)
    args = {"stack": "S1", "by": "ops", "priority": 0, "dry_run": False}
    alone = call(root, "requeue", args)
    many = result(root, "moves", {"items": [{"verb": "requeue", **args}] * 2})
    assert alone["error"]["code"] == "outside_root"
    assert [r["error"] for r in many["results"]] == [alone["error"]] * 2
    assert sorted(p.name for p in outside.iterdir()) == ["S1.error"]
