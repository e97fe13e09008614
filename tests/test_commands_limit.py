"""One size limit for a stack's commands, enforced while reading: ``spica stack add`` here
(the CLI, a real subprocess), the daemon reading ``commands.sh``; over SSH see
tests/test_stack_add_ssh.py. Non-regular files are refused, CRLF is made LF, a stray CR is
refused naming the file and line."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from spica_core.node.layout import MAX_COMMANDS_BYTES, NodeLayout
from spica_core.node.stack_files import StackFileError, read_commands
from tests.daemon_support import NodeEnv, make_node

#: The address space a `stack add` may use here: /dev/zero read to its end would exceed it.
MEMORY_CAP = 1536 * 1024 * 1024


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _add(env: NodeEnv, name: str, commands: str, *, stdin: bytes | None = None):
    """``spica stack add`` in a subprocess whose memory is capped."""
    return subprocess.run(
        [
            sys.executable, "-m", "spica_tui", "--config", str(env.config_path),
            "stack", "add", name, "--node", "mix1", "--commands", commands,
        ],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        preexec_fn=_cap_memory,
        timeout=120,
    )  # fmt: skip


def _refused(result: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err and "MemoryError" not in err, err
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str) -> NodeEnv:
    return make_node(tmp_path, sqlite_url)


def _nothing_added(env: NodeEnv, name: str) -> None:
    assert env.row(name) is None and not env.stack_dir(name).exists()


def test_dev_zero_is_refused_without_reading_it_all(env: NodeEnv) -> None:
    err = _refused(_add(env, "zero_T0001", "/dev/zero"), "--commands /dev/zero")
    assert "a character device, not a regular file" in err
    _nothing_added(env, "zero_T0001")


def test_stdin_is_read_no_further_than_the_limit(env: NodeEnv) -> None:
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run(
            [
                sys.executable, "-m", "spica_tui", "--config", str(env.config_path),
                "stack", "add", "zin_T0001", "--node", "mix1", "--commands", "-",
            ],
            stdin=zero, capture_output=True, preexec_fn=_cap_memory, timeout=120,
        )  # fmt: skip
    _refused(result, "--commands -", f"larger than {MAX_COMMANDS_BYTES} bytes")
    _nothing_added(env, "zin_T0001")


def test_a_fifo_and_a_directory_are_refused_by_name(env: NodeEnv, tmp_path: Path) -> None:
    fifo = tmp_path / "commands.fifo"
    os.mkfifo(fifo)  # no writer: reading it would block for ever
    _refused(_add(env, "fifo_T0001", str(fifo)), f"--commands {fifo}", "a FIFO, not a regular")
    _refused(_add(env, "dir_T0001", str(tmp_path)), f"--commands {tmp_path}", "a directory")
    _nothing_added(env, "fifo_T0001")


def test_the_limit_is_exact(env: NodeEnv, tmp_path: Path) -> None:
    line = "echo 'une ligne \"\\ é\t\x01'\n".encode()  # JSON escapes, UTF-8: no matter
    body = line * (MAX_COMMANDS_BYTES // len(line))
    at_limit = tmp_path / "at_limit.sh"
    at_limit.write_bytes(body + b"#" * (MAX_COMMANDS_BYTES - len(body)))
    over = tmp_path / "over.sh"
    over.write_bytes(at_limit.read_bytes() + b"\n")
    assert os.path.getsize(at_limit) == MAX_COMMANDS_BYTES

    err = _refused(_add(env, "over_T0001", str(over)), f"--commands {over}", "larger than")
    assert f"{MAX_COMMANDS_BYTES} bytes" in err
    _nothing_added(env, "over_T0001")
    ok = _add(env, "limit_T0001", str(at_limit))
    assert ok.returncode == 0, ok.stderr.decode()
    commands = env.stack_dir("limit_T0001") / "commands.sh"
    assert commands.read_bytes() == at_limit.read_bytes()

    # The daemon reads with the same limit: it takes the one file, not one byte more.
    layout = NodeLayout(env.root)
    assert len(read_commands(layout, "limit_T0001")) == MAX_COMMANDS_BYTES // len(line) + 1
    commands.write_bytes(over.read_bytes())
    with pytest.raises(StackFileError, match=f"over {MAX_COMMANDS_BYTES} bytes"):
        read_commands(layout, "limit_T0001")


def test_crlf_is_made_lf_and_a_stray_cr_is_refused(env: NodeEnv, tmp_path: Path) -> None:
    dos = tmp_path / "dos.sh"
    dos.write_bytes(b"echo one\r\necho two\r\n")
    ok = _add(env, "dos_T0001", str(dos))
    assert ok.returncode == 0, ok.stderr.decode()
    assert (env.stack_dir("dos_T0001") / "commands.sh").read_bytes() == b"echo one\necho two\n"

    mac = tmp_path / "mac.sh"
    mac.write_bytes(b"echo one\necho two\recho three\n")
    _refused(_add(env, "mac_T0001", str(mac)), f"--commands {mac}", "carriage return", "line 2")
    _nothing_added(env, "mac_T0001")
    piped = _add(env, "pipe_T0001", "-", stdin=b"true\r\nfalse\rtrue\n")
    _refused(piped, "--commands -", "line 2")
