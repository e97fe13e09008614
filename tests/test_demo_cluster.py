"""The embedded demo cluster: real SSH servers on loopback, real keys, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from spica_core.config import load_config
from spica_core.demo.cluster import (
    DemoCluster,
    DemoLayoutError,
    DemoNotFound,
    client_options,
)
from spica_core.demo.layout import demo_node_names
from spica_core.errors import UsageError
from tests.conftest import invoke_spica, run_spica
from tests.daemon_support import wait_for


def _three_nodes(directory: Path) -> Iterator[DemoCluster]:
    demo = DemoCluster(directory)
    demo.up(3)
    try:
        yield demo
    finally:
        with contextlib.suppress(DemoNotFound):
            demo.down()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DemoCluster]:
    """A cluster of this test's own: it kills, stops or resizes nodes."""
    yield from _three_nodes(tmp_path / "demo")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    """One cluster for the tests that only connect and read (no node stopped or started)."""
    yield from _three_nodes(tmp_path_factory.mktemp("shared") / "demo")


def _gone(pid: int) -> bool:
    """True once ``pid`` is no process (or only a zombie nobody reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


async def _run(
    demo: DemoCluster, port: int, command: str, **kwargs
) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect("127.0.0.1", port, **client_options(demo.paths)) as conn:
        return await asyncio.wait_for(conn.run(command, **kwargs), 20)


async def _assert_nodes_answer(demo: DemoCluster) -> None:
    status = demo.status()
    results = await asyncio.gather(
        *(_run(demo, n.port, 'echo hello; pwd; echo "$SPICA_NODE"') for n in status.nodes)
    )
    for node, result in zip(status.nodes, results, strict=True):
        assert result.exit_status == 0, result.stderr
        assert result.stdout.splitlines() == ["hello", str(node.root), node.name]


def test_node_names_follow_the_seed() -> None:
    assert demo_node_names(3) == ["mix1", "mix2", "mix3"]
    assert demo_node_names(8) == [f"mix{i}" for i in range(1, 7)] + ["pix1", "pix2"]
    names = demo_node_names(17)
    assert names[14:] == ["pix9", "node16", "node17"] and len(set(names)) == 17
    with pytest.raises(UsageError):
        demo_node_names(0)


async def test_every_node_runs_commands_over_verified_ssh(shared: DemoCluster) -> None:
    await _assert_nodes_answer(shared)
    node = shared.status().nodes[0]
    result = await _run(shared, node.port, "command -v spica; echo $HOME")
    assert result.stdout.splitlines() == [
        str(Path(sys.executable).parent / "spica"),
        str(node.root),
    ]


async def test_stdin_stdout_stderr_and_exit_status(shared: DemoCluster) -> None:
    port = shared.status().nodes[1].port
    payload = bytes(range(256)) * 4096  # 1 MiB of every byte value
    result = await _run(shared, port, "cat; echo oops >&2; exit 7", input=payload, encoding=None)
    assert result.stdout == payload
    assert result.stderr == b"oops\n"
    assert result.exit_status == 7
    killed = await _run(shared, port, "kill -TERM $$")
    assert killed.exit_signal is not None and killed.exit_signal[0] == "TERM"


async def test_closing_the_channel_ends_the_command(shared: DemoCluster) -> None:
    port = shared.status().nodes[0].port
    async with asyncssh.connect("127.0.0.1", port, **client_options(shared.paths)) as conn:
        proc = await conn.create_process("echo $$; exec sleep 60")
        pid = int((await asyncio.wait_for(proc.stdout.readline(), 10)).strip())
        assert not _gone(pid)
        proc.close()
        await asyncio.to_thread(_wait_gone, pid)
    assert _gone(pid)


async def test_interactive_shell_is_refused(shared: DemoCluster) -> None:
    port = shared.status().nodes[0].port
    async with asyncssh.connect("127.0.0.1", port, **client_options(shared.paths)) as conn:
        result = await asyncio.wait_for(conn.run(), 10)  # no command: a shell request
    assert result.exit_status != 0
    assert "shells" in result.stderr


async def test_wrong_host_key_is_refused(shared: DemoCluster, tmp_path: Path) -> None:
    port = shared.status().nodes[0].port
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {impostor}")
    options = {**client_options(shared.paths), "known_hosts": str(known_hosts)}
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect("127.0.0.1", port, **options)


async def test_unknown_client_key_and_other_user_are_refused(
    shared: DemoCluster, tmp_path: Path
) -> None:
    port = shared.status().nodes[0].port
    stranger = tmp_path / "stranger_ed25519"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    options = {**client_options(shared.paths), "client_keys": [str(stranger)]}
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect("127.0.0.1", port, **options)
    options = {**client_options(shared.paths), "username": "somebody-else"}
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect("127.0.0.1", port, **options)


def test_files_modes_and_generated_config(shared: DemoCluster) -> None:
    d = shared.directory
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    private = [shared.client_key_path, shared.config_path]
    private += [d / "keys" / f"{n}_host_ed25519" for n in ("mix1", "mix2", "mix3")]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    status = shared.status()
    lines = (d / "known_hosts").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [f"[127.0.0.1]:{n.port}" for n in status.nodes]
    assert all(line.split()[1] == "ssh-ed25519" for line in lines)

    cfg = load_config(shared.config_path)
    assert cfg.cluster == "spica-demo"
    assert cfg.db.url == f"sqlite:///{d / 'dbspica.sqlite'}"
    assert cfg.ssh.known_hosts == str(d / "known_hosts")
    assert cfg.ssh.client_keys == [str(shared.client_key_path)]
    assert cfg.console.refresh_interval == 2.0
    assert [(n.name, n.host, n.port) for n in cfg.nodes] == [
        (n.name, "127.0.0.1", n.port) for n in status.nodes
    ]
    mix1 = cfg.node("mix1")
    assert mix1.root == str(status.nodes[0].root) and mix1.cpus == 2
    assert mix1.agent_command == f"{Path(sys.executable).parent / 'spica'} node serve"
    assert [(p.name, p.capacity) for p in mix1.partitions] == [
        ("raid1", 652_036_000_000),
        ("raid2", 652_036_000_000),
    ]
    for sub in ("queue", "stacks", "locks", "raid1", "raid2"):
        assert (status.nodes[0].root / sub).is_dir()
    state = json.loads((d / "demo.json").read_text())
    assert [(n["name"], n["port"], n["pid"]) for n in state["nodes"]] == [
        (n.name, n.port, n.pid) for n in status.nodes
    ]


def test_up_twice_starts_nothing_new(shared: DemoCluster) -> None:
    before = shared.node_pids()
    again = shared.up()
    assert again.already_running and again.started == ()
    assert shared.node_pids() == before
    assert shared.up(3).started == ()
    with pytest.raises(DemoLayoutError, match="down"):
        shared.up(4)
    assert shared.node_pids() == before


async def test_a_killed_node_is_restarted_alone_on_its_port(cluster: DemoCluster) -> None:
    before = cluster.status()
    victim = before.nodes[1]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cluster.status().nodes[1].alive and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    status = cluster.status()
    assert not status.nodes[1].alive and not status.all_alive

    result = cluster.up()
    assert result.started == (victim.name,) and result.already_running
    after = cluster.status()
    assert after.all_alive
    assert [n.port for n in after.nodes] == [n.port for n in before.nodes]
    assert after.nodes[1].pid != victim.pid
    assert [after.nodes[i].pid for i in (0, 2)] == [before.nodes[i].pid for i in (0, 2)]
    await _assert_nodes_answer(cluster)


async def test_stopping_a_node_kills_its_running_commands(cluster: DemoCluster) -> None:
    node = cluster.status().nodes[2]
    async with asyncssh.connect("127.0.0.1", node.port, **client_options(cluster.paths)) as conn:
        proc = await conn.create_process("echo $$; exec sleep 60")
        pid = int((await asyncio.wait_for(proc.stdout.readline(), 10)).strip())
        assert await asyncio.to_thread(cluster.stop_node, node.name)
        assert await asyncio.to_thread(_wait_gone, pid)
        await asyncio.wait_for(proc.wait_closed(), 10)
    assert proc.exit_signal is not None and proc.exit_signal[0] == "TERM"


def test_stop_and_start_one_node(cluster: DemoCluster) -> None:
    pid = cluster.node_pids()["mix3"]
    assert pid is not None
    assert cluster.stop_node("mix3") is True
    assert _gone(pid) and cluster.node_pids()["mix3"] is None
    assert cluster.stop_node("mix3") is False
    assert cluster.start_node("mix3") is True
    assert cluster.start_node("mix3") is False
    assert cluster.status().all_alive


def test_down_stops_every_server_and_keeps_the_files(cluster: DemoCluster) -> None:
    pids = [p for p in cluster.node_pids().values() if p]
    assert len(pids) == 3
    assert sorted(cluster.down()) == ["mix1", "mix2", "mix3"]
    assert all(_gone(pid) for pid in pids)
    status = cluster.status()
    assert status.alive_count == 0 and all(n.pid is None for n in status.nodes)
    assert cluster.config_path.exists() and cluster.client_key_path.exists()
    # Now (and only now) the cluster may change size; kept nodes keep their ports.
    ports = {n.name: n.port for n in status.nodes}
    grown = cluster.up(4)
    assert [n.name for n in grown.status.nodes] == ["mix1", "mix2", "mix3", "mix4"]
    assert {n.name: n.port for n in grown.status.nodes[:3]} == ports
    assert len(load_config(cluster.config_path).nodes) == 4
    cluster.down(purge=True)
    assert not cluster.directory.exists()


def test_down_never_signals_a_pid_that_is_not_its_server(tmp_path: Path) -> None:
    demo = DemoCluster(tmp_path / "demo")
    demo.up(1)
    state_path = demo.directory / "demo.json"
    real = json.loads(state_path.read_text())
    try:
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            fake = {**real, "nodes": [{**real["nodes"][0], "pid": bystander.pid}]}
            state_path.write_text(json.dumps(fake))
            assert demo.status().alive_count == 0
            assert demo.down() == []
            assert bystander.poll() is None
        finally:
            bystander.kill()
            bystander.wait()
    finally:
        state_path.write_text(json.dumps(real))
        demo.down()


def test_refuses_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(DemoLayoutError, match="not a demo directory"):
        DemoCluster(d).up(1)
    assert [p.name for p in d.iterdir()] == ["precious.txt"]
    with pytest.raises(DemoNotFound):
        DemoCluster(tmp_path / "nothing").status()


def _monitor_row(demo: DemoCluster, condition: Callable[[Any], bool]) -> Any:
    """The demo monitor's dbspica row once ``condition`` holds for it."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spica_core.db.engine import make_engine
    from spica_core.db.models import Monitor

    engine = make_engine(load_config(demo.config_path).db)
    try:

        def row() -> Any:
            with Session(engine) as session:
                found = session.scalars(select(Monitor)).first()
            return found if found is not None and condition(found) else None

        return wait_for(row, what="the demo monitor's row")
    finally:
        engine.dispose()


async def test_cli_up_status_down(tmp_path: Path) -> None:
    """``spica demo up`` and ``down`` as processes of their own; the questions between them
    (status, up again) in this one."""
    d = tmp_path / "cli-demo"
    up = await asyncio.to_thread(run_spica, "demo", "up", "--nodes", "3", "--dir", str(d))
    demo = DemoCluster(d)
    try:
        assert up.returncode == 0, up.stderr
        assert "mix3" in up.stdout
        await _assert_nodes_answer(demo)

        status = await asyncio.to_thread(invoke_spica, "demo", "status", "--dir", str(d), "--json")
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["alive"] == data["total"] == 3
        assert [n["name"] for n in data["nodes"]] == ["mix1", "mix2", "mix3"]
        assert data["monitor_alive"] is True  # spica watch runs beside the nodes
        monitor_pid = data["monitor_pid"]
        watched = await asyncio.to_thread(_monitor_row, demo, lambda row: row.polls >= 1)
        assert watched.pid == monitor_pid

        again = await asyncio.to_thread(invoke_spica, "demo", "up", "--dir", str(d))
        assert again.returncode == 0 and "already running" in again.stderr
        assert demo.node_pids() == {n["name"]: n["pid"] for n in data["nodes"]}
        wrong = await asyncio.to_thread(invoke_spica, "demo", "up", "--nodes", "5", "--dir", str(d))
        assert wrong.returncode == 2 and "down" in wrong.stderr

        pid = data["nodes"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(_wait_gone, pid)
        gone = await asyncio.to_thread(invoke_spica, "demo", "status", "--dir", str(d))
        assert gone.returncode == 3, gone.stderr

        down = run_spica("demo", "down", "--dir", str(d), "--json")
        assert down.returncode == 0, down.stderr
        assert sorted(json.loads(down.stdout)["stopped"]) == ["mix2", "mix3"]
        assert all(_wait_gone(n["pid"], 5) for n in data["nodes"])
        assert _wait_gone(monitor_pid, 5)
        stopped = _monitor_row(demo, lambda row: row.stopped_at is not None)
        assert stopped.pid == monitor_pid  # SIGTERM: a clean stop, recorded
        gone = await asyncio.to_thread(invoke_spica, "demo", "status", "--dir", str(d))
        assert gone.returncode == 3, gone.stderr

        purge = run_spica("demo", "down", "--purge", "--dir", str(d))
        assert purge.returncode == 0 and not d.exists()
        missing = await asyncio.to_thread(invoke_spica, "demo", "status", "--dir", str(d))
        assert missing.returncode == 1 and "no demo cluster" in missing.stderr
    finally:
        with contextlib.suppress(DemoNotFound):
            demo.down()


def test_options_given_to_spica_demo_reach_its_subcommand_or_are_refused(tmp_path: Path) -> None:
    """``spica demo --dir D down`` acts on D, never on the default directory (it used to:
    a ``--purge`` there would have deleted the wrong demo); an option a subcommand would
    silently lose is refused."""
    d = tmp_path / "elsewhere"
    for sub in ("status", "down"):
        done = invoke_spica("demo", "--dir", str(d), sub, cwd=tmp_path)
        assert done.returncode == 1 and f"no demo cluster in {d}" in done.stderr, done.stderr
    same = invoke_spica("demo", "--dir", str(d), "status", "--dir", str(d), cwd=tmp_path)
    assert same.returncode == 1 and f"no demo cluster in {d}" in same.stderr
    twice = invoke_spica("demo", "--dir", str(d), "down", "--dir", str(tmp_path / "b"))
    assert twice.returncode == 2 and "--dir given twice" in twice.stderr
    for args in (("--nodes", "3", "status"), ("--read-only", "down")):
        refused = invoke_spica("demo", *args, cwd=tmp_path)
        assert refused.returncode == 2 and f"spica demo {args[-1]}" in refused.stderr
    assert not (tmp_path / ".spica-demo").exists()
