"""One demo node: an SSH server on 127.0.0.1 that runs commands the way sshd does.

Run as ``python -m spica_core.demo.server --dir D --node NAME --port PORT`` by
``spica demo up`` (one OS process per node, so a test can kill one node and start it again).

The SSH contract, as with OpenSSH's sshd: an exec request's command string is run by
``/bin/sh -c COMMAND``; the shell is the point (the client sends a command *line*), so this
server never builds a command of its own from client input. The command runs as the user
that runs the server, in the node's spica root, with a minimal environment (``PATH`` starting
with this Python's bin directory so the venv's ``spica`` resolves, ``HOME`` = the root,
``SPICA_NODE`` = the node's name), in its own session (process group), with stdin, stdout and
stderr connected to the channel as bytes. Its exit status (or the signal that killed it) is
sent back. When the client closes the channel first, the command gets EOF on stdin, then
SIGTERM and SIGKILL if it does not finish; when the server stops (SIGTERM), the commands still
running are killed the same way. As under sshd, what a command leaves running in the
background with its output redirected is not the session's any more and outlives it.

The SFTP subsystem is served as sshd's ``sftp-server`` does (the user's own files, paths
absolute): DataTransfer copies files onto the node through it. Refused: passwords and every
other authentication but the one client key (for the current user only), interactive shells
and other subsystems, pseudo-terminals, port, agent and X11 forwarding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spica_core.demo.layout import HOST, NODE_SUBDIRS, DemoPaths
from spica_core.errors import InvalidName
from spica_core.heap import keep_freed_memory
from spica_core.names import validate_name

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger("spica.demo.server")

#: Seconds a command gets after EOF (client gone) or SIGTERM (server stopping) before the
#: next, harder step.
HANGUP_GRACE = 2.0
_CHUNK = 64 * 1024
#: Channel packets and window offered to clients: 256 KiB packets (the largest SSH packet
#: OpenSSH accepts) make an SFTP upload an eighth as many SSH packets as asyncssh's 32 KiB, each
#: of which costs both Python ends a fixed amount of work; the window holds 32 of them.
#: DataTransfer's client cost per GiB into a demo node drops by about a quarter
#: (bench/transfer.py); scp, sending to the same server, gets the same offer.
CHANNEL_PACKET = 256 * 1024
CHANNEL_WINDOW = 8 * 1024 * 1024


def command_environment(name: str, root: Path) -> dict[str, str]:
    """The environment of a command on the node: minimal, like a fresh sshd session."""
    bindir = str(Path(sys.executable).absolute().parent)
    user = getpass.getuser()
    return {
        "PATH": os.pathsep.join([bindir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(root),
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "SPICA_NODE": name,
    }


class ServerStartError(Exception):
    """The node cannot serve (keys unreadable); logged as one line, exit status 1."""


class NodeServer:
    """The SSH server of one demo node; :meth:`run` serves until :meth:`stop`."""

    def __init__(self, paths: DemoPaths, name: str, port: int) -> None:
        self.paths = paths
        self.name = name
        self.port = port
        self.root = paths.root(name)
        self.user = getpass.getuser()
        self.env = command_environment(name, self.root)
        self._stopping = asyncio.Event()
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._children: set[asyncio.subprocess.Process] = set()
        self._sessions: set[asyncio.Task[Any]] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        import asyncssh

        for sub in NODE_SUBDIRS:  # the root itself must exist: a purged demo stays purged
            (self.root / sub).mkdir(exist_ok=True)
        try:
            host_key = asyncssh.read_private_key(self.paths.host_key(self.name))
            client_key = asyncssh.read_public_key(self.paths.client_public_key)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ServerStartError(f"cannot load the demo keys: {exc}") from None
        server = self

        class _Auth(asyncssh.SSHServer):
            """Public-key authentication of the demo's one client key, for this user only."""

            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self._conn = conn
                server._connections.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                server._connections.discard(self._conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
                ok = username == server.user and key.public_data == client_key.public_data
                if not ok:
                    log.warning("refused key %s for user %r", key.get_fingerprint(), username)
                return ok

        acceptor = await asyncssh.listen(
            HOST,
            self.port,
            server_factory=_Auth,
            server_host_keys=[host_key],
            process_factory=self._session,
            encoding=None,
            allow_pty=False,
            line_editor=False,
            x11_forwarding=False,
            agent_forwarding=False,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_kex=False,
            gss_auth=False,
            sftp_factory=True,
            allow_scp=False,
            reuse_address=True,
            window=CHANNEL_WINDOW,
            max_pktsize=CHANNEL_PACKET,
        )
        log.info("node %s listening on %s:%d (root %s)", self.name, HOST, self.port, self.root)
        try:
            await self._stopping.wait()
        finally:
            log.info("node %s stopping", self.name)
            acceptor.close()
            await self._kill_children()
            # Let each session report its command's end (exit-signal) before hanging up.
            if self._sessions:
                await asyncio.wait(list(self._sessions), timeout=HANGUP_GRACE)
            conns = list(self._connections)
            for conn in conns:
                conn.close()
            if conns:
                await asyncio.wait(
                    [asyncio.ensure_future(c.wait_closed()) for c in conns], timeout=HANGUP_GRACE
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acceptor.wait_closed(), HANGUP_GRACE)
            log.info("node %s stopped", self.name)

    async def _kill_children(self) -> None:
        """SIGTERM then SIGKILL every running command's process group."""
        children = list(self._children)
        for child in children:
            _signal_group(child, signal.SIGTERM)
        if children:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(c.wait()) for c in children], timeout=HANGUP_GRACE
            )
            if pending:
                for child in children:
                    _signal_group(child, signal.SIGKILL)
                await asyncio.wait(pending, timeout=HANGUP_GRACE)

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            await self._exec(process)
        except Exception:  # a bug here must not take the node down: log it, fail the session
            log.exception("session failed")
            with contextlib.suppress(Exception):
                process.exit(255)
        finally:
            if task is not None:
                self._sessions.discard(task)

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command
        if command is None:
            process.stderr.write(
                f"spica demo node {self.name}: interactive shells and subsystems are "
                "not available; give a command\n".encode()
            )
            process.exit(1)
            return
        if self._stopping.is_set():
            process.exit(255)
            return
        log.info("exec %r", command[:200])
        try:
            # The SSH contract: the client's command line is run by the shell, as sshd does.
            child = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                cwd=self.root,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            process.stderr.write(f"spica demo node {self.name}: {exc}\n".encode())
            process.exit(127)
            return
        self._children.add(child)
        try:
            await self._relay(process, child)
        finally:
            self._children.discard(child)
        rc = child.returncode
        if rc is None or process.is_closing():
            return
        if rc >= 0:
            process.exit(rc)
        else:
            try:
                signame = signal.Signals(-rc).name.removeprefix("SIG")
            except ValueError:
                signame = "KILL"
            process.exit_with_signal(signame)

    async def _relay(
        self, process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
    ) -> None:
        """Copy stdin/stdout/stderr until the command is done, or the client is gone."""
        assert child.stdin and child.stdout and child.stderr
        to_child = asyncio.ensure_future(self._copy_stdin(process, child))
        outputs = asyncio.gather(
            _copy_output(child.stdout, process.stdout), _copy_output(child.stderr, process.stderr)
        )
        # Like sshd, the session ends when the command has exited and closed its output.
        finished = asyncio.gather(child.wait(), outputs)
        closed = asyncio.ensure_future(process.channel.wait_closed())
        try:
            either: set[asyncio.Future[Any]] = {finished, closed}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():
                # The client went away first: EOF on stdin, then SIGTERM, then SIGKILL.
                child.stdin.close()
                await _reap(child)
        finally:
            to_child.cancel()
            closed.cancel()
            if not finished.done():
                finished.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await finished
            if not child.stdin.is_closing():
                child.stdin.close()

    async def _copy_stdin(
        self, process: asyncssh.SSHServerProcess[bytes], child: asyncio.subprocess.Process
    ) -> None:
        import asyncssh

        assert child.stdin
        try:
            while True:
                try:
                    data = await process.stdin.read(_CHUNK)
                except asyncssh.SignalReceived as sig:
                    _forward_signal(child, sig.signal)
                    continue
                except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                    continue
                if not data:
                    break
                child.stdin.write(data)
                await child.stdin.drain()
        except (OSError, asyncssh.Error):
            pass  # the command closed its stdin, or the channel broke: nothing more to copy
        finally:
            if not child.stdin.is_closing():
                child.stdin.close()


async def _copy_output(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    """Forward a pipe to the channel; once the channel is gone, keep draining the pipe so the
    command never blocks on a full pipe while it is being stopped."""
    import asyncssh

    forwarding = True
    while chunk := await reader.read(_CHUNK):
        if not forwarding:
            continue
        try:
            writer.write(chunk)
            await writer.drain()
        except (OSError, asyncssh.Error):
            forwarding = False


async def _reap(child: asyncio.subprocess.Process) -> None:
    waiter = asyncio.ensure_future(child.wait())
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            _signal_group(child, sig)
        done, _ = await asyncio.wait({waiter}, timeout=HANGUP_GRACE)
        if done:
            return
    waiter.cancel()


def _signal_group(child: asyncio.subprocess.Process, sig: int) -> None:
    # start_new_session made the shell the leader of its own process group: the whole
    # command (pipelines, subshells) gets the signal, nothing outside it does.
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)


def _forward_signal(child: asyncio.subprocess.Process, name: str) -> None:
    """A "signal" channel request (RFC 4254 §6.9): deliver it to the command's group."""
    try:
        sig = signal.Signals[f"SIG{name}"]
    except KeyError:
        log.warning("ignored unknown signal %r", name)
        return
    _signal_group(child, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{Path(sys.executable).name} -m spica_core.demo.server",
        description="One node of the SPICA demo cluster (started by 'spica demo up').",
    )
    parser.add_argument("--dir", required=True, help="the demo directory")
    parser.add_argument("--node", required=True, help="the node's name")
    parser.add_argument("--port", required=True, type=int, help="the port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s {args.node}[%(process)d] %(levelname)s %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        name = validate_name(args.node, "node")
    except InvalidName as exc:
        log.error("%s", exc)
        return 2
    server = NodeServer(DemoPaths.at(args.dir), name, args.port)
    keep_freed_memory()  # its SFTP server receives DataTransfer's bulk bytes

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, server.stop)
        await server.run()

    try:
        asyncio.run(serve())
    except ServerStartError as exc:
        log.error("node %s: %s", name, exc)
        return 1
    except OSError as exc:
        log.error("cannot serve node %s on %s:%d: %s", name, HOST, args.port, exc)
        return 1
    except Exception:
        log.exception("node %s failed", name)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
