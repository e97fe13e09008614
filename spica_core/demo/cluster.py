"""The embedded demo cluster: N SSH nodes on 127.0.0.1, one OS process each.

Why it exists: the README demo, the console and the tests need real SSH nodes — host keys
checked against a known_hosts file, a client key, exec channels running real commands in a
node's spica root — without root, an sshd or other machines. ``up`` generates the keys, the
known_hosts and a SPICA configuration for them, starts one server process per node
(:mod:`spica_core.demo.server`) and returns only when every node has accepted a real,
host-key-verified SSH login. The servers are detached: they outlive the command that started
them until ``down`` stops exactly the pids recorded in ``demo.json``.

Each node can also run its daemon (``spica daemon --node NAME``, a process of its own, pid
in ``demo.json``), so stacks queued on a demo node run: ``up(daemons=True)`` — what ``spica
demo up`` does — starts the dead daemons, ``down`` stops them (SIGTERM: running lines get the
daemon's stop grace) before the servers, and kills the lines a daemon that died left running.

Idempotence: ``up`` on a running cluster starts nothing twice; it restarts only the nodes whose
server is dead, on the same port with the same keys, and the daemons that are dead. The layout
(node count) changes only when nothing runs. ``up``, ``down``, ``start_node`` and
``stop_node`` hold ``D/.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from spica_core.config import (
    ConsoleConfig,
    DaemonConfig,
    DatabaseConfig,
    NodeConfig,
    PartitionConfig,
    RepositoryConfig,
    SpicaConfig,
    SshConfig,
    TransferConfig,
)
from spica_core.demo.layout import (
    CLUSTER_NAME,
    DAEMON_MODULE,
    DEFAULT_DIR,
    DEFAULT_NODES,
    HOST,
    NODE_SUBDIRS,
    SERVER_MODULE,
    STORY_MODULE,
    DemoPaths,
    demo_node_names,
    demo_partitions,
)
from spica_core.demo.release import RELEASE, demo_grid, demo_release
from spica_core.demo.repository import REPOSITORY
from spica_core.errors import SpicaError, UsageError
from spica_core.node.files import atomic_write

STATE_VERSION = 1
#: Seconds ``up`` waits, overall, for every node to accept an SSH login.
READY_TIMEOUT = 20.0
#: Seconds ``down`` waits for the servers to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 20
#: Lowest port given to a demo node (below: where local services tend to live).
_PORT_FLOOR = 20000
_POSIX_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

T = TypeVar("T")


class DemoError(SpicaError):
    """A demo cluster operation failed (exit code 1)."""


class DemoNotFound(DemoError):
    """The directory holds no demo cluster (no ``demo.json``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        super().__init__(
            f"no demo cluster in {directory} (start one: spica demo up --dir {directory})"
        )


class DemoLayoutError(UsageError):
    """A request that does not fit the directory: wrong node count, not a demo directory."""


class DemoStartError(DemoError):
    """A node server did not come up; names the node and carries the end of its log."""

    def __init__(self, node: str, reason: str, log_tail: str) -> None:
        self.node = node
        self.reason = reason
        self.log_tail = log_tail
        message = f"demo node {node} did not start: {reason}"
        if log_tail:
            indented = "\n".join(f"  | {line}" for line in log_tail.splitlines())
            message += f"\nlast lines of its log:\n{indented}"
        super().__init__(message)


@dataclass(frozen=True)
class DemoNodeStatus:
    name: str
    port: int
    pid: int | None
    alive: bool
    root: Path
    log: Path
    #: When its server was last started (ISO 8601, UTC), None once stopped.
    started: str | None
    #: The node's daemon (``spica daemon``): its pid, and whether it runs.
    daemon_pid: int | None = None
    daemon_alive: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": HOST,
            "port": self.port,
            "pid": self.pid,
            "alive": self.alive,
            "root": str(self.root),
            "log": str(self.log),
            "started": self.started,
            "daemon_pid": self.daemon_pid,
            "daemon_alive": self.daemon_alive,
        }


@dataclass(frozen=True)
class DemoStatus:
    directory: Path
    config_path: Path
    created: str
    nodes: tuple[DemoNodeStatus, ...]
    #: The cluster monitor (``spica watch``): its pid, and whether it runs.
    monitor_pid: int | None = None
    monitor_alive: bool = False
    #: The story driver (:mod:`spica_core.demo.story`): its pid, and whether it runs.
    story_pid: int | None = None
    story_alive: bool = False

    @property
    def alive_count(self) -> int:
        return sum(node.alive for node in self.nodes)

    @property
    def all_alive(self) -> bool:
        return self.alive_count == len(self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "config": str(self.config_path),
            "cluster": CLUSTER_NAME,
            "created": self.created,
            "total": len(self.nodes),
            "alive": self.alive_count,
            "nodes": [node.to_json() for node in self.nodes],
            "monitor_pid": self.monitor_pid,
            "monitor_alive": self.monitor_alive,
            "story_pid": self.story_pid,
            "story_alive": self.story_alive,
        }


@dataclass(frozen=True)
class DemoUpResult:
    status: DemoStatus
    #: Nodes whose server this call started (all of them for a new cluster).
    started: tuple[str, ...]
    #: The cluster had at least one live node before this call.
    already_running: bool
    #: This call created the cluster (keys, roots, configuration).
    created: bool
    #: Nodes moved to a new port because their old one was taken by something else.
    new_ports: tuple[str, ...] = ()
    #: Nodes whose daemon this call started.
    daemons_started: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **self.status.to_json(),
            "started": list(self.started),
            "already_running": self.already_running,
            "created": self.created,
            "new_ports": list(self.new_ports),
            "daemons_started": list(self.daemons_started),
        }


@dataclass
class _NodeState:
    name: str
    port: int
    pid: int | None = None
    started: str | None = None
    daemon_pid: int | None = None


@dataclass
class _State:
    created: str
    nodes: list[_NodeState] = field(default_factory=list)
    monitor_pid: int | None = None
    story_pid: int | None = None

    def node(self, name: str) -> _NodeState:
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise UsageError(f"no demo node named {name!r} (nodes: {names})")


#: The servers this process started, by pid, with their (directory, node): polled (reaped)
#: before a liveness check so that a dead child is not mistaken for a live one while it is a
#: zombie, nor a live one for a dead one while it is still exec()ing (empty cmdline).
_SPAWNED: dict[int, tuple[subprocess.Popen[bytes], tuple[Path, str]]] = {}
#: The same for the node daemons this process started.
_SPAWNED_DAEMONS: dict[int, tuple[subprocess.Popen[bytes], tuple[Path, str]]] = {}
#: The name the cluster monitor (``spica watch``) goes by among the spawned daemons.
MONITOR = "watch"
#: The name the story driver goes by among the spawned daemons.
STORY = "story"


class DemoCluster:
    """The demo cluster living in one directory (default ``./.spica-demo``).

    Every method is synchronous and safe to call from inside a running event loop (the SSH
    probes then run on a worker thread's own loop, blocking the caller up to ``timeout``).
    """

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.paths = DemoPaths.at(Path(directory))

    # -- paths -------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self.paths.directory

    @property
    def config_path(self) -> Path:
        return self.paths.config

    @property
    def known_hosts_path(self) -> Path:
        return self.paths.known_hosts

    @property
    def client_key_path(self) -> Path:
        return self.paths.client_key

    def node_root(self, name: str) -> Path:
        return self.paths.root(name)

    def exists(self) -> bool:
        return self.paths.state.is_file()

    # -- operations --------------------------------------------------------------------------

    def up(
        self, nodes: int | None = None, *, timeout: float = READY_TIMEOUT, daemons: bool = False
    ) -> DemoUpResult:
        """Create the cluster if needed, start every dead node, wait until all accept SSH;
        with ``daemons`` (what ``spica demo up`` does), start every dead node daemon too.

        Without, the nodes are passive (tests that stage queue files by hand rely on it);
        daemons already running are left alone either way.

        ``nodes`` None keeps the existing cluster's size (default 8 for a new one). On a
        failure the servers this call started are stopped again and :class:`DemoStartError`
        names the node.
        """
        if nodes is not None:
            demo_node_names(nodes)  # validates the range before anything is written
        self._prepare_directory()
        with self._locked():
            state = self._read_state()
            created = state is None
            layout_changed = created
            if state is None:
                state = _State(created=_now())
                self._set_layout(state, nodes or DEFAULT_NODES)
            elif nodes is not None and nodes != len(state.nodes):
                running = [n.name for n in state.nodes if self._alive(n)]
                if running:
                    raise DemoLayoutError(
                        f"the demo cluster in {self.directory} has {len(state.nodes)} nodes "
                        f"({len(running)} running), not {nodes}: stop it first with "
                        f"'spica demo down --dir {self.directory}'"
                    )
                self._set_layout(state, nodes)
                layout_changed = True
            dead = [n for n in state.nodes if not self._alive(n)]
            already_running = len(dead) < len(state.nodes)
            new_ports = self._free_taken_ports(state, dead)
            stale = layout_changed or bool(new_ports) or self._config_outdated()
            self._write_files(state, config=stale)
            self._write_state(state)
            for node in dead:
                self._spawn(node)
            self._write_state(state)
            try:
                self._wait_ready(state.nodes, timeout)
            except BaseException:
                self._abandon(state, dead)
                raise
            no_daemon = [n for n in state.nodes if not self._daemon_alive(n)] if daemons else []
            for node in no_daemon:
                self._spawn_daemon(node)
            self._write_state(state)
            return DemoUpResult(
                status=self._status(state),
                started=tuple(n.name for n in dead),
                already_running=already_running,
                created=created,
                new_ports=tuple(new_ports),
                daemons_started=tuple(n.name for n in no_daemon),
            )

    def down(self, *, purge: bool = False, timeout: float = STOP_TIMEOUT) -> list[str]:
        """Stop the monitor, the daemons, then the recorded servers (only those still
        running as this cluster's servers).

        Keys, roots, logs and dbspica stay unless ``purge``, which deletes the directory.
        Returns the names of the nodes that were stopped.
        """
        state = self._read_state()
        if state is None:
            raise DemoNotFound(self.directory)
        with self._locked():
            state = self._read_state() or state
            self._stop_story(state, timeout)
            self._stop_monitor(state, timeout)
            self._stop_daemons(state.nodes, timeout)
            self._kill_orphan_lines(state.nodes)
            stopped = self._stop(state.nodes, timeout, signal.SIGTERM)
            for node in state.nodes:
                node.pid = node.started = node.daemon_pid = None
            self._write_state(state)
            if purge:
                shutil.rmtree(self.directory)
        return stopped

    def status(self) -> DemoStatus:
        state = self._read_state()
        if state is None:
            raise DemoNotFound(self.directory)
        return self._status(state)

    def node_pids(self) -> dict[str, int | None]:
        """Each node's server pid, None for a node whose server is not running."""
        return {n.name: n.pid if n.alive else None for n in self.status().nodes}

    def start_node(self, name: str, *, timeout: float = READY_TIMEOUT) -> bool:
        """Start one node's server (same port, same keys) if it is dead; False if it runs."""
        with self._locked():
            state = self._state()
            node = state.node(name)
            if self._alive(node):
                return False
            if self._free_taken_ports(state, [node]):
                self._write_files(state, config=True)
            self._spawn(node)
            self._write_state(state)
            try:
                self._wait_ready([node], timeout)
            except BaseException:
                self._abandon(state, [node])
                raise
            return True

    def stop_node(self, name: str, *, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop one node's server cleanly (SIGTERM); False if it was not running."""
        with self._locked():
            state = self._state()
            node = state.node(name)
            stopped = self._stop([node], timeout, signal.SIGTERM)
            node.pid = node.started = None
            self._write_state(state)
            return bool(stopped)

    def kill_node(self, name: str, *, timeout: float = STOP_TIMEOUT) -> bool:
        """Crash one node (SIGKILL, no cleanup); ``demo.json`` keeps the dead pid, as after a
        real crash. False if it was not running."""
        with self._locked():
            node = self._state().node(name)
            return bool(self._stop([node], timeout, signal.SIGKILL))

    def start_monitor(self) -> int | None:
        """Start the cluster monitor (``spica watch``) beside the nodes if it is not running;
        its pid, None when one was already running. Call once dbspica is prepared: the
        monitor registers itself there first."""
        with self._locked():
            state = self._state()
            if self._monitor_alive(state):
                return None
            argv = [sys.executable, "-m", DAEMON_MODULE, "--config", str(self.paths.config)]
            proc = self._spawn_detached([*argv, MONITOR], self.paths.monitor_log)
            _SPAWNED_DAEMONS[proc.pid] = (proc, (self.paths.config, MONITOR))
            state.monitor_pid = proc.pid
            self._write_state(state)
            return proc.pid

    def start_story(self, *, since: datetime | None = None) -> int | None:
        """Start the story driver (:mod:`spica_core.demo.story`: placement, QFin, grades,
        ``spica auto``, the corrupt exposure) beside the nodes if it is not running; its pid,
        None when one was already running. ``since``: the cold start the first co-add is
        timed from (kept from the first run of the story). Call once dbspica is prepared."""
        with self._locked():
            state = self._state()
            if self._story_alive(state):
                return None
            argv = [sys.executable, "-m", STORY_MODULE, "--dir", str(self.directory)]
            if since is not None:
                argv += ["--since", since.isoformat()]
            proc = self._spawn_detached(argv, self.paths.story_log)
            _SPAWNED_DAEMONS[proc.pid] = (proc, (self.paths.config, STORY))
            state.story_pid = proc.pid
            self._write_state(state)
            return proc.pid

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> _State:
        state = self._read_state()
        if state is None:
            raise DemoNotFound(self.directory)
        return state

    def _read_state(self) -> _State | None:
        try:
            raw = json.loads(self.paths.state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DemoError(f"{self.paths.state}: unreadable demo state: {exc}") from None
        try:
            return _State(
                created=str(raw["created"]),
                nodes=[
                    _NodeState(
                        name=str(n["name"]),
                        port=int(n["port"]),
                        pid=int(n["pid"]) if n.get("pid") else None,
                        started=n.get("started"),
                        daemon_pid=int(n["daemon_pid"]) if n.get("daemon_pid") else None,
                    )
                    for n in raw["nodes"]
                ],
                monitor_pid=int(raw["monitor_pid"]) if raw.get("monitor_pid") else None,
                story_pid=int(raw["story_pid"]) if raw.get("story_pid") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DemoError(f"{self.paths.state}: malformed demo state: {exc!r}") from None

    def _write_state(self, state: _State) -> None:
        data = {
            "version": STATE_VERSION,
            "cluster": CLUSTER_NAME,
            "created": state.created,
            "directory": str(self.directory),
            "config": str(self.paths.config),
            "nodes": [
                {
                    "name": n.name,
                    "host": HOST,
                    "port": n.port,
                    "pid": n.pid,
                    "started": n.started,
                    "daemon_pid": n.daemon_pid,
                    "root": str(self.paths.root(n.name)),
                }
                for n in state.nodes
            ],
            "monitor_pid": state.monitor_pid,
            "story_pid": state.story_pid,
        }
        atomic_write(
            self.paths.state,
            (json.dumps(data, indent=2) + "\n").encode(),
            mode=0o600,
            durable=False,
        )

    def _status(self, state: _State) -> DemoStatus:
        return DemoStatus(
            directory=self.directory,
            config_path=self.paths.config,
            created=state.created,
            nodes=tuple(
                DemoNodeStatus(
                    name=n.name,
                    port=n.port,
                    pid=n.pid,
                    alive=self._alive(n),
                    root=self.paths.root(n.name),
                    log=self.paths.log(n.name),
                    started=n.started,
                    daemon_pid=n.daemon_pid,
                    daemon_alive=self._daemon_alive(n),
                )
                for n in state.nodes
            ),
            monitor_pid=state.monitor_pid,
            monitor_alive=self._monitor_alive(state),
            story_pid=state.story_pid,
            story_alive=self._story_alive(state),
        )

    def _set_layout(self, state: _State, count: int) -> None:
        """Make the state hold ``count`` nodes; kept nodes keep their port (and keys)."""
        names = demo_node_names(count)
        kept = {n.name: n for n in state.nodes if n.name in names}
        taken = {n.port for n in kept.values()}
        fresh = iter(_free_ports(len(names) - len(kept), avoid=taken))
        state.nodes = [kept.get(name) or _NodeState(name, next(fresh)) for name in names]

    def _free_taken_ports(self, state: _State, dead: list[_NodeState]) -> list[str]:
        """Give a dead node a new port when something else took its old one since."""
        moved = []
        for node in dead:
            if not _port_is_free(node.port, wait=3.0):
                used = {n.port for n in state.nodes}
                node.port = _free_ports(1, avoid=used)[0]
                moved.append(node.name)
        return moved

    # -- files -------------------------------------------------------------------------------

    def _config_outdated(self) -> bool:
        """A spica.toml from before the demo had its repository or its stacking release:
        written again."""
        import tomllib

        try:
            data = tomllib.loads(self.paths.config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # missing: written anyway; unreadable: the loader will say so
        repos = data.get("transfer", {}).get("repositories", [])
        releases = data.get("releases", [])
        return not any(
            isinstance(r, dict) and r.get("name") == REPOSITORY for r in repos
        ) or not any(isinstance(r, dict) and r.get("name") == RELEASE for r in releases)

    def _prepare_directory(self) -> None:
        d = self.directory
        if d.exists():
            if not d.is_dir():
                raise DemoLayoutError(f"{d} exists and is not a directory")
            if not self.paths.state.exists() and any(
                p.name != self.paths.lock.name for p in d.iterdir()
            ):
                raise DemoLayoutError(
                    f"{d} is not empty and holds no demo.json: not a demo directory "
                    "(choose another --dir)"
                )
        else:
            d.mkdir(mode=0o700, parents=True)
        d.chmod(0o700)

    def _write_files(self, state: _State, *, config: bool) -> None:
        """Keys (kept once made), known_hosts (always, from the ports), node roots, logs dir,
        and spica.toml when the layout changed or it is missing (so edits survive restarts)."""
        self.paths.keys.mkdir(mode=0o700, exist_ok=True)
        self.paths.logs.mkdir(mode=0o700, exist_ok=True)
        client = self.paths.client_key
        if not client.exists():
            _generate_key(client, f"spica-demo client {_user() or 'user'}@{socket.gethostname()}")
        if not self.paths.client_public_key.exists():
            _write_public_key(client, self.paths.client_public_key)
        lines = []
        for node in state.nodes:
            host_key = self.paths.host_key(node.name)
            if not host_key.exists():
                _generate_key(host_key, f"spica-demo {node.name} host key")
            for sub in NODE_SUBDIRS:
                (self.paths.root(node.name) / sub).mkdir(parents=True, exist_ok=True)
            lines.append(f"[{HOST}]:{node.port} {_public_key_text(host_key)}")
        atomic_write(
            self.paths.known_hosts, ("\n".join(lines) + "\n").encode(), mode=0o644, durable=False
        )
        if config or not self.paths.config.exists():
            text = render_config(self.paths, [(n.name, n.port) for n in state.nodes])
            atomic_write(self.paths.config, text.encode("utf-8"), mode=0o600, durable=False)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        if not self.directory.is_dir():
            raise DemoNotFound(self.directory)
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- processes ---------------------------------------------------------------------------

    def _alive(self, node: _NodeState) -> bool:
        return node.pid is not None and _is_server(node.pid, self.directory, node.name)

    def _spawn(self, node: _NodeState) -> None:
        argv = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--dir",
            str(self.directory),
            "--node",
            node.name,
            "--port",
            str(node.port),
        ]
        with open(self.paths.log(node.name), "ab") as logfile:
            os.fchmod(logfile.fileno(), 0o600)
            logfile.write(f"--- {_now()} starting {node.name} on {HOST}:{node.port}\n".encode())
            logfile.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # detached: outlives `spica demo up`, own signals
                close_fds=True,
            )
        _SPAWNED[proc.pid] = (proc, (self.directory, node.name))
        node.pid = proc.pid
        node.started = _now()

    def _daemon_alive(self, node: _NodeState) -> bool:
        return node.daemon_pid is not None and _is_daemon(
            node.daemon_pid, self.paths.config, node.name
        )

    def _spawn_daemon(self, node: _NodeState) -> None:
        """Start the node's daemon, detached; its output goes to ``logs/<node>.daemon.log``."""
        argv = [
            sys.executable,
            "-m",
            DAEMON_MODULE,
            "--config",
            str(self.paths.config),
            "daemon",
            "--node",
            node.name,
        ]
        proc = self._spawn_detached(argv, self.paths.daemon_log(node.name))
        _SPAWNED_DAEMONS[proc.pid] = (proc, (self.paths.config, node.name))
        node.daemon_pid = proc.pid

    def _spawn_detached(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own (it outlives this command), in the demo
        directory, its output appended to ``log``."""
        with open(log, "ab") as logfile:
            os.fchmod(logfile.fileno(), 0o600)
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                close_fds=True,
            )

    def _monitor_alive(self, state: _State) -> bool:
        return state.monitor_pid is not None and _is_daemon(
            state.monitor_pid, self.paths.config, MONITOR
        )

    def _story_alive(self, state: _State) -> bool:
        return state.story_pid is not None and _is_story(state.story_pid, self.directory)

    def _stop_story(self, state: _State, timeout: float) -> None:
        """SIGTERM the story driver (it stops between steps), SIGKILL after ``timeout``."""
        pid = state.story_pid
        if pid is not None and self._story_alive(state):
            _terminate(pid, lambda: self._story_alive(state), timeout)
        state.story_pid = None

    def _stop_monitor(self, state: _State, timeout: float) -> bool:
        """SIGTERM the monitor, SIGKILL after ``timeout``; False when none was running."""
        pid = state.monitor_pid
        running = pid is not None and self._monitor_alive(state)
        if running:
            assert pid is not None
            _terminate(pid, lambda: self._monitor_alive(state), timeout)
        state.monitor_pid = None
        return running

    def _stop_daemons(self, nodes: list[_NodeState], timeout: float) -> None:
        """SIGTERM the live daemons of ``nodes`` (their running lines get the daemon's stop
        grace, then are killed and their stacks left pending); SIGKILL after ``timeout``."""
        targets = [n for n in nodes if self._daemon_alive(n)]
        for node in targets:
            assert node.daemon_pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._daemon_alive(n) for n in targets):
            time.sleep(0.05)
        for node in targets:
            if self._daemon_alive(node):
                assert node.daemon_pid is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.daemon_pid, signal.SIGKILL)
        for node in nodes:
            node.daemon_pid = None

    def _kill_orphan_lines(self, nodes: list[_NodeState]) -> list[tuple[str, int]]:
        """Kill the lines a dead daemon of ``nodes`` left running (listed in ``running.json``
        under the node's root); ``(stack, pid)`` of each. A line is only killed when it is
        that line of that node's root (:func:`kill_orphan_line` checks its environment and
        start time) and no live daemon claims its stack: what the demo did not start stays."""
        from spica_core.names import is_valid_name
        from spica_core.node.layout import NodeLayout
        from spica_core.node.protocol import ClaimRecord
        from spica_core.node.records import claim_alive, read_record
        from spica_core.node.stack_files import RUNNING_FILE, StackFileError, kill_orphan_line
        from spica_core.states import StackState

        killed: list[tuple[str, int]] = []
        for node in nodes:
            layout = NodeLayout(self.node_root(node.name))
            for running in sorted(self.node_root(node.name).glob(f"stacks/*/{RUNNING_FILE}")):
                stack = running.parent.name
                if not is_valid_name(stack):
                    continue
                try:
                    claim, _ = read_record(
                        layout.queue_file(stack, StackState.RUNNING), ClaimRecord
                    )
                    if claim is not None and claim_alive(claim):
                        continue  # a live daemon runs it (not one the demo started: those stopped)
                    line = kill_orphan_line(layout, stack)
                except (OSError, SpicaError, StackFileError):  # (one that survived SIGKILL too)
                    continue
                if line is not None:
                    killed.append((stack, line.pid))
        return killed

    def _abandon(self, state: _State, started: list[_NodeState]) -> None:
        """Undo a failed start: stop what this call started, record it as stopped. The
        original failure is the one reported, so a stop failure here is not raised."""
        with contextlib.suppress(DemoError, OSError):
            self._stop(started, STOP_TIMEOUT, signal.SIGTERM)
        for node in started:
            node.pid = node.started = None
        self._write_state(state)

    def _stop(self, nodes: list[_NodeState], timeout: float, sig: int) -> list[str]:
        """Signal the live servers of ``nodes``; wait, SIGKILL what is left. Never touches a
        pid that is not (any more) this cluster's server for that node."""
        targets = [n for n in nodes if self._alive(n)]
        for node in targets:
            assert node.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, sig)
        for grace, again in ((timeout, signal.SIGKILL), (5.0, None)):
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(self._alive(n) for n in targets):
                time.sleep(0.05)
            left = [n for n in targets if self._alive(n)]
            if not left:
                break
            if again is None:
                names = ", ".join(f"{n.name} (pid {n.pid})" for n in left)
                raise DemoError(f"demo node servers did not stop: {names}")
            for node in left:
                assert node.pid is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, again)
        return [n.name for n in targets]

    def _wait_ready(self, nodes: list[_NodeState], timeout: float) -> None:
        failures = _run_sync(lambda: self._probe_all(nodes, timeout))
        if failures:
            node, reason = failures[0]
            others = [n for n, _ in failures[1:]]
            if others:
                reason += f" (also failed: {', '.join(others)})"
            raise DemoStartError(node, reason, _log_tail(self.paths.log(node)))

    async def _probe_all(self, nodes: list[_NodeState], timeout: float) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        results = await asyncio.gather(*(self._probe(n, deadline) for n in nodes))
        return [(n.name, reason) for n, reason in zip(nodes, results, strict=True) if reason]

    async def _probe(self, node: _NodeState, deadline: float) -> str | None:
        """None once the node accepted a host-key-verified login with the client key, else
        why not: its server died, it refused us, or it did not answer in time."""
        import asyncssh

        last = "no answer"
        while True:
            if not self._alive(node):
                return "its server process exited"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"no SSH login within the timeout ({last})"
            try:
                async with asyncio.timeout(remaining):
                    conn = await asyncssh.connect(
                        HOST,
                        node.port,
                        **client_options(self.paths),
                    )
                    conn.close()
                    await conn.wait_closed()
                return None
            except (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied) as exc:
                return f"SSH login refused: {exc}"
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.1)


def client_options(paths: DemoPaths) -> dict[str, Any]:
    """``asyncssh.connect`` options for a demo node: the demo's key and known_hosts only
    (no ssh-agent, no ~/.ssh/config, no other identity), host key checking on."""
    options: dict[str, Any] = {
        "known_hosts": str(paths.known_hosts),
        "client_keys": [str(paths.client_key)],
        "agent_path": None,
        "config": None,
        "password_auth": False,
        "kbdint_auth": False,
        "gss_auth": False,
        "gss_kex": False,
    }
    user = _user()
    if user:
        options["username"] = user
    return options


def demo_config(paths: DemoPaths, nodes: list[tuple[str, int]]) -> SpicaConfig:
    """The demo's configuration: its nodes on this host, short daemon intervals so the demo
    feels live, the demo's tile grid and stacking release (:mod:`spica_core.demo.release`).
    Paths are relative to the demo directory (``spica.toml`` lives there and
    spica_core.config resolves them next to the file)."""
    user = _user()
    agent = agent_command()
    return SpicaConfig(
        cluster=CLUSTER_NAME,
        db=DatabaseConfig(url="sqlite:///dbspica.sqlite"),
        ssh=SshConfig(known_hosts="known_hosts", client_keys=["keys/client_ed25519"]),
        console=ConsoleConfig(refresh_interval=2.0),
        daemon=DaemonConfig(
            poll_interval=0.5, heartbeat_interval=1.0, stop_grace=5.0, check_backoff=5.0
        ),
        nodes=[
            NodeConfig(
                name=name,
                host=HOST,
                port=port,
                **({"user": user} if user else {}),
                root=str(paths.root(name)),
                cpus=2,
                agent_command=agent,
                partitions=[
                    PartitionConfig(
                        name=part.name,
                        capacity=part.capacity,
                        reserved=part.reserved,
                        min_free=part.min_free,
                    )
                    for part in demo_partitions(name)
                ],
            )
            for name, port in nodes
        ],
        transfer=TransferConfig(
            repositories=[RepositoryConfig(name=REPOSITORY, path=str(paths.repository))]
        ),
        grids=[demo_grid()],
        releases=[demo_release(paths.directory)],
    )


def render_config(paths: DemoPaths, nodes: list[tuple[str, int]]) -> str:
    """The demo's spica.toml: :func:`demo_config` as TOML, with the keys it sets (the rest
    keep their defaults) under a header saying where it came from."""
    from pydantic import ValidationError

    try:
        config = demo_config(paths, nodes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DemoError(f"cannot write {paths.config}: {where}: {first['msg']}") from None
    text = CONFIG_HEADER + tomli_w.dumps(config.model_dump(mode="json", exclude_unset=True))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[max(0, exc.start - 20) : exc.end + 20]
        raise DemoError(f"cannot write {paths.config}: {bad!r} is not valid Unicode") from None
    return text


#: The comment at the top of the demo's spica.toml.
CONFIG_HEADER = (
    "# SPICA configuration of the demo cluster, generated by 'spica demo up'.\n"
    "# Regenerated when the cluster's layout or a node's port changes.\n"
)


def agent_command() -> str:
    """The shell command line that starts the agent with this installation's ``spica``."""
    spica = Path(sys.executable).absolute().parent / "spica"
    if os.access(spica, os.X_OK):
        return f"{shlex.quote(str(spica))} node serve"
    return f"{shlex.quote(str(Path(sys.executable).absolute()))} -m spica_tui node serve"


# -- helpers ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _user() -> str | None:
    """The OS user the nodes run as, if SPICA's config accepts its name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return None
    return user if _POSIX_USER_RE.fullmatch(user) else None


def _generate_key(path: Path, comment: str) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    atomic_write(path, key.export_private_key(), mode=0o600, durable=False)


def _read_key(private: Path) -> Any:
    import asyncssh

    try:
        return asyncssh.read_private_key(private)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise DemoError(
            f"{private}: unusable private key: {exc} (delete it and run 'spica demo up' "
            "again to make a new one)"
        ) from None


def _write_public_key(private: Path, public: Path) -> None:
    atomic_write(public, _read_key(private).export_public_key(), mode=0o644, durable=False)


def _public_key_text(private: Path) -> str:
    """``ssh-ed25519 AAAA...`` of a private key file, without the comment."""
    line = _read_key(private).export_public_key().decode()
    return " ".join(line.split()[:2])


def _free_ports(count: int, avoid: set[int]) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, outside the ephemeral range.

    Why outside: the kernel gives ephemeral ports to outgoing connections, so on a busy host
    a port picked there can be taken while its node is down, and the restart would fail.
    Picked at random so that clusters made at the same time (parallel tests) rarely collide.
    """
    pool = _port_pool()
    random.shuffle(pool)
    ports: list[int] = []
    for port in pool:
        if len(ports) == count:
            return ports
        if port not in avoid and _port_is_free(port):
            ports.append(port)
    # No room outside the ephemeral range: let the kernel pick, held open to stay distinct.
    socks: list[socket.socket] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in avoid and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _port_pool() -> list[int]:
    """Unprivileged ports from 20000 up that the kernel never hands out as ephemeral."""
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(v) for v in text.split())
    return [p for p in range(_PORT_FLOOR, 65536) if not low <= p <= high]


def _port_is_free(port: int, wait: float = 0.0) -> bool:
    """Whether the server could bind ``port`` (SO_REUSEADDR, as it binds), retrying for up to
    ``wait`` seconds: the kernel may release a just-killed server's port a moment late."""
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
                return True
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _is_server(pid: int, directory: Path, name: str) -> bool:
    """Whether ``pid`` is, right now, the demo server of node ``name`` in ``directory``.

    Guards every signal ``down`` sends: a recorded pid may have died and been reused."""
    spawned = _SPAWNED.get(pid)
    if spawned is not None:
        proc, node = spawned
        if proc.poll() is None:  # our own child, still running: we know what it is
            return node == (directory, name)
        del _SPAWNED[pid]
        return False
    argv = _cmdline(pid)
    if not argv:
        return False
    return (
        SERVER_MODULE in argv
        and _arg(argv, "--node") == name
        and _arg(argv, "--dir") == str(directory)
    )


def _terminate(pid: int, alive: Callable[[], bool], timeout: float) -> None:
    """SIGTERM ``pid``; SIGKILL it when ``alive()`` still holds after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_daemon(pid: int, config: Path, name: str) -> bool:
    """Whether ``pid`` is, right now, the daemon of node ``name`` started with ``config``
    (``name`` :data:`MONITOR`: the cluster monitor, ``spica watch``)."""
    spawned = _SPAWNED_DAEMONS.get(pid)
    if spawned is not None:
        proc, node = spawned
        if proc.poll() is None:
            return node == (config, name)
        del _SPAWNED_DAEMONS[pid]
        return False
    argv = _cmdline(pid)
    if not argv:
        return False
    if name == MONITOR:
        return (
            DAEMON_MODULE in argv and argv[-1] == MONITOR and _arg(argv, "--config") == str(config)
        )
    return (
        DAEMON_MODULE in argv
        and "daemon" in argv
        and _arg(argv, "--node") == name
        and _arg(argv, "--config") == str(config)
    )


def _is_story(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is, right now, the story driver of the demo in ``directory``."""
    spawned = _SPAWNED_DAEMONS.get(pid)
    if spawned is not None:
        proc, (config, name) = spawned
        if proc.poll() is None:
            return name == STORY and config.parent == directory
        del _SPAWNED_DAEMONS[pid]
        return False
    argv = _cmdline(pid)
    if not argv:
        return False
    return STORY_MODULE in argv and _arg(argv, "--dir") == str(directory)


def _arg(argv: list[str], flag: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return None


def _cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, None if there is none (a zombie has an empty one)."""
    if pid <= 0:
        return None
    proc = Path("/proc")
    if proc.is_dir():
        # Empty for a zombie, and for a moment while a process is exec()ing: retry briefly.
        for _ in range(50):
            try:
                raw = (proc / str(pid) / "cmdline").read_bytes()
                if raw or _proc_state(pid) == "Z":
                    break
            except OSError:
                return None
            time.sleep(0.01)
        return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]
    try:  # no /proc (macOS, BSD): ps, split on spaces (good enough for our own argv)
        out = subprocess.run(
            ["ps", "-ww", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    return out.split() if out else None


def _proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, Z...); after the ")" that ends the name."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
