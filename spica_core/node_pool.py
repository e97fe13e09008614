"""NodePool: one persistent SSH connection per node, polled concurrently.

Each node gets one asyncssh connection and one long-lived agent channel (``spica node
serve``), so a refresh of N nodes costs one round trip on N channels at once, not N new SSH
handshakes. Host keys are always checked against the configured known_hosts file; there is
no switch to turn that off. A node that fails is retried with capped exponential backoff;
while it waits, polls report it down at once instead of waiting on it.

A node where SSH works but the agent does not start (spica not installed) is still polled
with plain POSIX commands (``df -P``, ``/proc/loadavg``) and reported ``agent-missing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from spica_core.backoff import Backoff
from spica_core.cluster_snapshot import (
    ClusterSnapshot,
    Liveness,
    NodeSnapshot,
    PartitionStatus,
)
from spica_core.config import NodeConfig, SpicaConfig, SshConfig
from spica_core.errors import ConfigError, NodeAnswerLost, NodeUnreachable
from spica_core.node import protocol as proto
from spica_core.node.protocol import (
    Args,
    Hello,
    PartitionArg,
    PartitionUsage,
    QueueEntry,
    StatusArgs,
    StatusResult,
)
from spica_core.states import StackState

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)
R = TypeVar("R")

#: AES-GCM first: one cryptography call per packet, where asyncssh's chacha20-poly1305 makes
#: several; it more than triples the polls a 2-core console can drive (bench/poll.py).
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
#: Entries a poll asks for; completed stacks pile up by thousands and are only counted.
POLLED_STATES = ("pending", "running", "failed")

#: Seconds before a failed agent start is retried on a live connection.
AGENT_RETRY_SECONDS = 60.0
BACKOFF_BASE = 0.5


class HostKeyMismatch(NodeUnreachable):
    """The node's host key is not the one in known_hosts: never connected, loudly reported."""


class AgentMissing(Exception):
    """SSH works but ``spica node serve`` did not greet us."""


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    import asyncssh

    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"host key verification failed: {exc.reason}"
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"permission denied (client key refused): {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"disconnected: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, proto.ProtocolError):
        return f"agent error {exc.code}: {exc.message}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class NodeLink:
    """The connection to one node, its agent channel, and what was last seen of it."""

    def __init__(self, node: NodeConfig, ssh: SshConfig) -> None:
        self.node = node
        self.ssh = ssh
        self._conn: asyncssh.SSHClientConnection | None = None
        self._agent: asyncssh.SSHClientProcess[bytes] | None = None
        self._agent_failed_at: float | None = None
        #: An agent started but not greeted yet: its process, the greeting, when it started.
        self._greeting: (
            tuple[asyncssh.SSHClientProcess[bytes], asyncio.Future[Hello], float] | None
        ) = None
        self._agent_problem: str | None = None
        #: The queue listing last received from the current agent, and its version.
        self._queue: tuple[str, tuple[QueueEntry, ...]] | None = None
        self._lock = asyncio.Lock()
        self._ids = 0
        #: DataTransfer's SFTP session on this connection (opened on first copy).
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()
        #: Agent sessions beside the main one (DataTransfer's, one per file in flight).
        self._extra_agents: set[AgentSession] = set()
        self.backoff = Backoff(BACKOFF_BASE, ssh.max_backoff)
        self.hello: Hello | None = None
        self.snapshot = NodeSnapshot(name=node.name, host=node.host, port=node.port)

    # -- connection ------------------------------------------------------------------------

    async def _connect(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        known_hosts = Path(self.ssh.known_hosts).expanduser()
        if not known_hosts.is_file():
            raise ConfigError(
                f"known_hosts file {known_hosts} does not exist: host keys are always "
                "verified (add the nodes' keys to it)"
            )
        keys = self.node.client_keys or self.ssh.client_keys or None
        try:
            return await asyncssh.connect(
                self.node.host,
                port=self.node.port,
                username=self.node.user or None,
                known_hosts=str(known_hosts),
                client_keys=keys or (),
                agent_path=None if keys else (),
                connect_timeout=self.ssh.connect_timeout,
                encryption_algs=list(CIPHERS),
                keepalive_interval=max(5.0, self.ssh.call_timeout),
                keepalive_count_max=2,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyMismatch(
                self.node.name,
                f"host key of {self.node.host}:{self.node.port} does not match "
                f"{known_hosts} ({exc.reason}); refusing to connect",
            ) from None

    async def _greet(self, proc: asyncssh.SSHClientProcess[bytes]) -> Hello:
        """The agent's hello, within ``agent_start_timeout``; closes the process otherwise.
        An agent of another protocol version is refused, naming both versions."""
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ssh.agent_start_timeout)
            hello = proto.decode_hello(line) if line else None
        except (proto.ProtocolError, TimeoutError) as exc:
            proc.close()
            raise AgentMissing(f"agent did not greet: {_describe(exc)}") from None
        except BaseException:
            proc.close()
            raise
        if hello is None:
            proc.close()
            status = proc.exit_status
            why = " (command not found)" if status == 127 else ""
            raise AgentMissing(f"agent `{self.node.agent_command}` exited, status {status}{why}")
        return hello

    async def _start_agent(self, wait: float) -> None:
        """Start the agent, or go on waiting for its greeting, at most ``wait`` seconds now.

        A node under load (or a hundred agents starting at once on a small console host) may
        take longer than a call to greet: the greeting goes on in the background, polls use
        plain commands meanwhile, and the agent is taken as soon as it has greeted.
        """
        assert self._conn is not None
        if self._greeting is None:
            command = f"{self.node.agent_command} --root {shlex.quote(self.node.root)}"
            proc = await self._conn.create_process(command, encoding=None)
            self._greeting = (proc, asyncio.ensure_future(self._greet(proc)), time.monotonic())
        proc, task, started = self._greeting
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done:
            raise AgentMissing(
                f"agent started {time.monotonic() - started:.0f} s ago has not greeted yet"
            )
        self._greeting = None
        self.hello = task.result()  # raises AgentMissing
        self._agent, self._agent_problem, self._queue = proc, None, None

    async def _cancel_greeting(self) -> None:
        if self._greeting is not None:
            proc, task, _ = self._greeting
            self._greeting = None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            proc.close()

    async def sftp(self) -> asyncssh.SFTPClient:
        """The SFTP session of DataTransfer on this node's connection (one channel; many
        files in flight share it). NodeUnreachable when it cannot be opened."""
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    async with self._lock:
                        await self._ensure(agent_wait=0)
                        assert self._conn is not None
                        conn = self._conn
                    self._sftp = await asyncio.wait_for(
                        conn.start_sftp_client(), self.ssh.call_timeout
                    )
                except (ConfigError, HostKeyMismatch):
                    raise
                except Exception as exc:
                    await self.close()
                    raise NodeUnreachable(self.node.name, f"SFTP: {_describe(exc)}") from exc
            return self._sftp

    async def extra_agent(self) -> AgentSession:
        """Another agent session on this node's connection, for work that would otherwise
        queue behind the main session's (a file's checksum while polls go on). Raises
        NodeUnreachable, or AgentMissing when the agent does not start."""
        try:
            async with self._lock:
                await self._ensure(agent_wait=0)
                assert self._conn is not None
                conn = self._conn
            command = f"{self.node.agent_command} --root {shlex.quote(self.node.root)}"
            proc = await conn.create_process(command, encoding=None)
        except (ConfigError, HostKeyMismatch):
            raise
        except Exception as exc:
            await self.close()
            raise NodeUnreachable(self.node.name, _describe(exc)) from exc
        await self._greet(proc)
        session = AgentSession(self.node.name, proc, self.ssh.call_timeout)
        self._extra_agents.add(session)
        return session

    def drop_sftp(self) -> None:
        """Forget the SFTP session after it failed: the next copy opens another."""
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None

    async def close(self) -> None:
        self.drop_sftp()
        for session in self._extra_agents:
            session.close()
        self._extra_agents.clear()
        await self._cancel_greeting()
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):  # closing a dead link must not raise
                await asyncio.wait_for(self._conn.wait_closed(), 2)
            self._conn = None

    async def _ensure(self, agent_wait: float | None = None) -> None:
        """Connect if needed, and start the agent (or wait for its greeting) when it is due;
        ``agent_wait`` bounds that wait (default: the call timeout)."""
        if self._conn is None:
            self._conn = await self._connect()
            self._agent_failed_at = None
        if self._agent is None and (
            self._greeting is not None
            or self._agent_failed_at is None
            or time.monotonic() - self._agent_failed_at > AGENT_RETRY_SECONDS
        ):
            try:
                await self._start_agent(self.ssh.call_timeout if agent_wait is None else agent_wait)
            except AgentMissing as exc:
                self._agent_problem = str(exc)
                if self._greeting is None:
                    self._agent_failed_at = time.monotonic()

    # -- requests --------------------------------------------------------------------------

    async def request(self, args: Args[R]) -> R:
        """One agent request; its answer decoded as the verb's result type. Raises
        ProtocolError for agent errors and for an answer that does not fit (naming the verb
        and the field), NodeUnreachable else.

        NodeUnreachable means the request was never sent (nothing changed on the node);
        its subclass NodeAnswerLost means it was sent and no answer came (a lost connection
        or a timeout): the node may have carried it out. A timeout or a broken channel
        closes the link: a late answer must never be taken for the next request's.
        """
        async with self._lock:
            sent = False
            try:
                await self._ensure()
                if self._agent is None:
                    raise AgentMissing(self._agent_problem or "spica agent not available")
                self._ids += 1
                request_id = self._ids
                self._agent.stdin.write(proto.encode_request(request_id, args))
                sent = True
                # No task per call; longer for the verbs that read files whole.
                async with asyncio.timeout(args.timeout(self.ssh.call_timeout)):
                    line = await self._agent.stdout.readline()
                if not line:
                    raise ConnectionError("agent channel closed")
                response = proto.decode_response(line)
                if response.id != request_id:
                    raise ConnectionError(f"answer to request {response.id}, not {request_id}")
            except (proto.ProtocolError, AgentMissing, HostKeyMismatch, ConfigError):
                raise
            except Exception as exc:
                await self.close()
                lost = NodeAnswerLost if sent else NodeUnreachable
                raise lost(self.node.name, _describe(exc)) from exc
        return proto.result_of(response, type(args))

    async def _plain_status(self) -> StatusResult:
        """df -P and loadavg through plain commands, for a node without the agent."""
        assert self._conn is not None
        paths = [f"{self.node.root.rstrip('/')}/{p.name}" for p in self.node.partitions]
        df = await asyncio.wait_for(
            self._conn.run(shlex.join(["df", "-P", "-k", "--", *paths]), check=False),
            self.ssh.call_timeout,
        )
        load = await asyncio.wait_for(
            self._conn.run("cat /proc/loadavg", check=False), self.ssh.call_timeout
        )
        partitions = []
        rows = str(df.stdout or "").splitlines()[1:]
        for part, row in zip(self.node.partitions, rows, strict=False):
            cols = row.split()
            if len(cols) >= 4 and cols[1].isdigit():
                total, used, free = (int(c) * 1024 for c in cols[1:4])
                partitions.append(
                    PartitionUsage(
                        name=part.name,
                        total_bytes=total,
                        free_bytes=free,
                        used_bytes=used,
                        virtual=False,
                        exists=True,
                    )
                )
        try:
            loadavg = [float(x) for x in str(load.stdout or "").split()[:3]]
        except ValueError:
            loadavg = []
        # What plain commands can tell: no queue, no heartbeat, no listing version.
        return StatusResult(
            root=self.node.root,
            host=self.node.host,
            boot_id=None,
            time=_now().isoformat(),
            load=loadavg or None,
            partitions=partitions,
            queue=[],
            queue_version="",
            queue_unchanged=False,
            counts={},
            heartbeat=None,
            qfin_locks=[],
        )

    def _status_args(self) -> StatusArgs:
        return StatusArgs(
            partitions=[
                PartitionArg(name=p.name, capacity=p.capacity) for p in self.node.partitions
            ],
            states=[StackState(s) for s in POLLED_STATES],
            queue_version=self._queue[0] if self._queue else None,
        )

    def _queue_of(self, r: StatusResult) -> tuple[QueueEntry, ...]:
        """The listing of a status answer: the one already held when the agent says so."""
        if r.queue_unchanged and self._queue is not None:
            return self._queue[1]
        queue = tuple(r.queue or ())
        self._queue = (r.queue_version, queue) if r.queue_version else None
        return queue

    async def poll(self) -> NodeSnapshot:
        """Refresh this node's snapshot; never raises for node trouble (it is in the snapshot)."""
        now = _now()
        prev = self.snapshot
        if self.backoff.waiting:
            self.snapshot = replace(prev, polled_at=now, liveness=Liveness.DOWN)
            return self.snapshot
        agent_error: str | None = None
        try:
            try:
                result = await self.request(self._status_args())
                liveness = Liveness.UP
            except AgentMissing as missing:
                async with self._lock:
                    try:
                        await self._ensure(agent_wait=0)
                        result = await self._plain_status()
                    except Exception as exc:
                        await self.close()
                        raise NodeUnreachable(self.node.name, _describe(exc)) from exc
                liveness = Liveness.AGENT_MISSING
                agent_error = str(missing)
        except (NodeUnreachable, ConfigError, proto.ProtocolError) as exc:
            self.backoff.failed()
            reason = exc.reason if isinstance(exc, NodeUnreachable) else str(exc)
            self.snapshot = replace(
                prev,
                liveness=Liveness.DOWN,
                last_error=reason,
                polled_at=now,
                security=reason if isinstance(exc, HostKeyMismatch) else None,
            )
            return self.snapshot
        self.backoff.succeeded()
        self.snapshot = self._snapshot_from(result, liveness, now, agent_error)
        return self.snapshot

    def _snapshot_from(
        self, r: StatusResult, liveness: Liveness, now: datetime, agent_error: str | None = None
    ) -> NodeSnapshot:
        reserved = {p.name: p.reserved for p in self.node.partitions}
        partitions = tuple(
            PartitionStatus(
                name=p.name,
                total_bytes=p.total_bytes or 0,
                free_bytes=p.free_bytes or 0,
                used_bytes=p.used_bytes or 0,
                reserved_bytes=reserved.get(p.name, 0),
                virtual=p.virtual,
            )
            for p in r.partitions
        )
        queue = self._queue_of(r)
        hb = r.heartbeat
        load = r.load
        return NodeSnapshot(
            name=self.node.name,
            host=self.node.host,
            port=self.node.port,
            liveness=liveness,
            last_seen=now,
            last_error=agent_error,
            polled_at=now,
            partitions=partitions,
            queue=queue,
            counts=r.counts if liveness is Liveness.UP else None,
            heartbeat_age=hb.age_seconds if hb else None,
            heartbeat_pid=hb.pid if hb else None,
            load=(load[0], load[1], load[2]) if load and len(load) >= 3 else None,
            agent_version=self.hello.version if self.hello and liveness is Liveness.UP else None,
            boot_id=r.boot_id,
            qfin_locks=tuple(r.qfin_locks),
        )


class AgentSession:
    """One agent process on a node's connection: requests in order, answered one by one,
    as :meth:`NodeLink.request` does on the main session."""

    def __init__(
        self, node: str, proc: asyncssh.SSHClientProcess[bytes], call_timeout: float
    ) -> None:
        self.node = node
        self._proc = proc
        self._timeout = call_timeout
        self._lock = asyncio.Lock()
        self._ids = 0
        self.closed = False

    async def request(self, args: Args[R]) -> R:
        """As :meth:`NodeLink.request`; after a lost answer the session is closed."""
        async with self._lock:
            if self.closed:
                raise NodeUnreachable(self.node, "agent session closed")
            self._ids += 1
            sent = False
            try:
                self._proc.stdin.write(proto.encode_request(self._ids, args))
                sent = True
                async with asyncio.timeout(args.timeout(self._timeout)):
                    line = await self._proc.stdout.readline()
                if not line:
                    raise ConnectionError("agent channel closed")
                response = proto.decode_response(line)
                if response.id != self._ids:
                    raise ConnectionError(f"answer to request {response.id}, not {self._ids}")
            except proto.ProtocolError:
                raise
            except Exception as exc:
                self.close()
                lost = NodeAnswerLost if sent else NodeUnreachable
                raise lost(self.node, _describe(exc)) from exc
        return proto.result_of(response, type(args))

    def close(self) -> None:
        self.closed = True
        self._proc.close()


class NodeCaller(Protocol):
    """What the operations need of the nodes: one agent request at a time. The pool over SSH
    offers it, and so does :class:`spica_core.local_node.LocalNodes` for a root here."""

    config: SpicaConfig

    async def request(self, node: str, args: Args[R]) -> R: ...


class NodePool:
    """All configured nodes; ``refresh()`` polls them concurrently into a ClusterSnapshot.

    Use as ``async with NodePool(config) as pool: snap = await pool.refresh()``.
    """

    def __init__(self, config: SpicaConfig, nodes: Sequence[str] | None = None) -> None:
        chosen = [n for n in config.nodes if nodes is None or n.name in nodes]
        self.config = config
        self.links = {n.name: NodeLink(n, config.ssh) for n in chosen}
        self.snapshot = ClusterSnapshot(
            taken_at=_now(), nodes=tuple(link.snapshot for link in self.links.values())
        )

    async def __aenter__(self) -> NodePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def link(self, name: str) -> NodeLink:
        try:
            return self.links[name]
        except KeyError:
            raise ConfigError(f"{self.config.source}: no node named {name!r}") from None

    def remember_last_seen(self, seen: Mapping[str, datetime]) -> None:
        """Take ``seen`` (dbspica's record) as the last good answer of the nodes this pool
        has not heard from yet: a node down now shows when it last answered, not "never"."""
        for name, when in seen.items():
            link = self.links.get(name)
            if link is not None and link.snapshot.last_seen is None:
                link.snapshot = replace(link.snapshot, last_seen=when)

    async def refresh(self) -> ClusterSnapshot:
        """Poll every node at once; one slow node costs at most its call timeout."""
        snaps = await asyncio.gather(*(link.poll() for link in self.links.values()))
        self.snapshot = ClusterSnapshot(taken_at=_now(), nodes=tuple(snaps))
        return self.snapshot

    async def request(self, node: str, args: Args[R]) -> R:
        """One typed request to ``node``'s agent (see :meth:`NodeLink.request`)."""
        return await self.link(node).request(args)

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links.values()))
