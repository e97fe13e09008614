"""What the daemon tests share: a node on disk, real daemon processes, a real SMTP server,
a TCP proxy standing for a MariaDB server that can be stopped, and polling helpers.

Every daemon process a test starts is registered with :class:`Daemons` and killed (its whole
process group, lines included) in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from spica_core.config import load_config
from spica_core.db.models import DaemonJournal, Problem, Stack, StackRun
from spica_core.db.setup import prepare_database
from spica_core.stack_add import add_stack


def toml_string(value: str) -> str:
    """``value`` as a TOML string, for the config files the tests write line by line."""
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


NODE = "mix1"


def plant_failed(root: Path, name: str) -> None:
    """A stack's files on a node as its daemon leaves them when line 2 of 2 failed."""
    (root / "stacks" / name).mkdir(parents=True)
    (root / "stacks" / name / "commands.sh").write_text("true\nfalse\n")
    (root / "stacks" / name / "progress").write_text("1\n")
    (root / "stacks" / name / "attempt").write_text("1\n")
    (root / "queue" / f"{name}.error").write_text(
        json.dumps({"line": 2, "exit_code": 1, "message": "Failed on false - Code 1 - Line 2"})
    )


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; that value. Fails after
    ``timeout`` seconds (generous: these are not timing assertions)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class NodeEnv:
    """One node (root, config, dbspica) in a test's tmp dir."""

    base: Path
    root: Path
    config_path: Path
    db_url: str

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    def stack_dir(self, stack: str) -> Path:
        return self.root / "stacks" / stack

    def state(self, stack: str) -> str | None:
        """The stack's queue file suffix on the node, None without one.

        One listing of the directory, not one lookup per suffix: a rename by the daemon
        between two lookups would show the stack in two states."""
        for _ in range(20):
            names = set(os.listdir(self.queue))
            found = [
                suffix
                for suffix in ("spica", "processing", "processed", "error")
                if f"{stack}.{suffix}" in names
            ]
            if len(found) <= 1:
                return found[0] if found else None
            time.sleep(0.05)
        raise AssertionError(f"{stack} has several queue files: {found}")

    def config(self):  # type: ignore[no-untyped-def]
        return load_config(self.config_path)

    def engine(self):  # type: ignore[no-untyped-def]
        """A fresh engine with no pool: never keeps the database open between queries."""
        return create_engine(self.db_url, poolclass=NullPool)

    def add(
        self,
        stack: str,
        lines: list[str],
        *,
        launch: bool = True,
        priority: int = 0,
        **columns: Any,
    ) -> None:
        """An ad-hoc stack through the engine's own ``stack add`` (plus dbspica columns)."""
        engine = self.engine()
        try:
            add_stack(
                engine,
                self.config(),
                stack,
                NODE,
                ("\n".join(lines) + "\n").encode(),
                launch=False,
                priority=priority,
            )
            if columns:
                with Session(engine) as session, session.begin():
                    row = session.scalars(select(Stack).where(Stack.name == stack)).one()
                    for key, value in columns.items():
                        setattr(row, key, value)
            if launch:
                from spica_core.stack_add import launch_stack

                launch_stack(engine, self.config(), stack, "test")
        finally:
            engine.dispose()

    def row(self, stack: str) -> Stack | None:
        engine = self.engine()
        try:
            with Session(engine) as session:
                return session.scalars(select(Stack).where(Stack.name == stack)).one_or_none()
        finally:
            engine.dispose()

    def runs(self, stack: str) -> list[tuple[int, int, int | None]]:
        """``(line, attempt, exit_code)`` of every stack_run row, in order."""
        engine = self.engine()
        try:
            with Session(engine) as session:
                rows = session.execute(
                    select(StackRun.line, StackRun.attempt, StackRun.exit_code)
                    .join(Stack)
                    .where(Stack.name == stack)
                    .order_by(StackRun.attempt, StackRun.line)
                ).all()
                return [tuple(r) for r in rows]  # type: ignore[misc]
        finally:
            engine.dispose()

    def problems(self, stack: str | None = None) -> list[Problem]:
        engine = self.engine()
        try:
            with Session(engine) as session:
                stmt = select(Problem).order_by(Problem.id)
                if stack is not None:
                    stmt = stmt.where(Problem.stack == stack)
                return list(session.scalars(stmt))
        finally:
            engine.dispose()

    def applied_seq(self) -> int:
        engine = self.engine()
        try:
            with Session(engine) as session:
                return max(session.scalars(select(DaemonJournal.applied_seq)), default=0)
        finally:
            engine.dispose()


def make_node(
    base: Path,
    db_url: str,
    *,
    daemon: dict[str, Any] | None = None,
    smtp_port: int | None = None,
    partitions: str = "",
    extra: str = "",
    daemon_url: str | None = None,
) -> NodeEnv:
    """A node root with ``raid1``, its spica.toml, and dbspica at head with the node.

    ``daemon_url`` (default ``db_url``) is the URL written in the config, so a test can
    point the daemons at a proxy while the test itself talks to the database directly.
    """
    root = base / "root"
    for sub in ("queue", "stacks", "raid1"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    settings = {
        "poll_interval": 0.2,
        "heartbeat_interval": 0.5,
        "stop_grace": 5.0,
        "check_backoff": 0.3,
        "check_backoff_max": 1.0,
        **(daemon or {}),
    }
    text = [
        "[db]",
        f"url = {toml_string(daemon_url or db_url)}",
        "connect_timeout = 2",
        "",
        "[release]",
        'name = "T0003"',
        extra,
        "",
        "[daemon]",
        *(
            f"{k} = {v!r}" if not isinstance(v, str) else f"{k} = {toml_string(v)}"
            for k, v in settings.items()
        ),
        "",
        "[[nodes]]",
        f'name = "{NODE}"',
        'host = "127.0.0.1"',
        f"root = {toml_string(str(root))}",
        "cpus = 2",
        partitions or '[[nodes.partitions]]\nname = "raid1"',
    ]
    if smtp_port is not None:
        text += [
            "",
            "[smtp]",
            'host = "127.0.0.1"',
            f"port = {smtp_port}",
            'sender = "spica@mix1.test"',
            'operators = ["teraop@terapix.test"]',
            "timeout = 5",
        ]
    config_path = base / "spica.toml"
    config_path.write_text("\n".join(text) + "\n")
    config = load_config(config_path)
    direct = config.model_copy(update={"db": config.db.model_copy(update={"url": db_url})})
    prepare_database(direct, create=True)
    return NodeEnv(base, root, config_path, db_url)


@dataclass
class Daemons:
    """The daemon processes of a test; all killed (process group and all) at teardown."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, env: NodeEnv, *, log_name: str = "daemon.log") -> subprocess.Popen[bytes]:
        log = open(env.base / log_name, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spica_tui",
                "--config",
                str(env.config_path),
                "daemon",
                "--node",
                NODE,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        wait_for(
            lambda: (env.root / "daemon.heartbeat").exists() and _beats_for(env, proc.pid),
            what=f"daemon pid {proc.pid} to beat (log: {env.base / log_name})",
        )
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _beats_for(env: NodeEnv, pid: int) -> bool:
    import json

    try:
        return json.loads((env.root / "daemon.heartbeat").read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def daemon_processes() -> Iterator[Daemons]:
    """Body of a ``daemons`` fixture: every daemon started is killed at teardown."""
    d = Daemons()
    try:
        yield d
    finally:
        d.kill_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        from email import message_from_bytes

        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def stop(self) -> None:
        self._controller.stop()


def smtp_mailbox() -> Iterator[Mailbox]:
    """Body of a ``mailbox`` fixture: a real SMTP server, stopped at teardown."""
    box = Mailbox()
    try:
        yield box
    finally:
        box.stop()


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port → upstream that can be stopped and started again on
    the same port: to its clients, the database server goes away and comes back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one (as a server that died)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
