"""``spica transfer run|watch|history``: verified copies of planned files, and their record.

Thin: parse, hand :mod:`spica_core.transfer` the configuration, dbspica and an executor over
the nodes' SSH connections, render. Progress goes to stderr (a bar on a terminal, one line
per file otherwise); the files' outcomes go to stdout (a table, or ``--json``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note, service_logging, table, when

if TYPE_CHECKING:
    from spica_core.transfer.copy import FileEvent, RunReport

StaleAfter = Annotated[
    float,
    typer.Option(
        "--stale-after",
        min=0.0,
        metavar="SECONDS",
        help="Take back files another run left running this long without a heartbeat "
        "(a run that was killed).",
    ),
]
DEFAULT_STALE = 60.0


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Lines:
    """One stderr line per finished (or retried) file: logs and pipes read it."""

    def __init__(self) -> None:
        self.started = False

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def event(self, event: FileEvent) -> None:
        where = f"{event.filename} -> {event.node}"
        if event.kind == "start" and event.resumed_from:
            note(f"resume {where} from byte {event.resumed_from}")
        elif event.kind == "done":
            note(f"done {where} ({_size(event.bytes)}, attempt {event.attempt})")
        elif event.kind in ("retry", "failed", "interrupted", "lost"):
            note(f"{event.kind} {where}: {event.message}")


class _Bar(_Lines):
    """A rich progress bar of the bytes copied, with the per-file lines above it."""

    def __init__(self) -> None:
        super().__init__()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        from spica_tui.cli.output import stderr

        self.progress = Progress(
            TextColumn("copying"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=stderr,
            transient=True,
        )
        self.task = self.progress.add_task("copy", total=0)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, event: FileEvent) -> None:
        if event.kind == "start":
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=total + event.bytes - event.resumed_from)
        elif event.kind == "bytes":
            self.progress.advance(self.task, event.bytes)
        else:
            super().event(event)


def _render(report: RunReport, as_json: bool) -> None:
    from spica_core.transfer import copy_rows

    if as_json:
        emit_json(report.to_json())
        return
    if report.files:
        t = table("file", "node", "path", "state", "attempts", "bytes", "error")
        for f in report.files:
            t.add_row(
                f.filename,
                f.node,
                f.path or "-",
                f.state,
                str(f.attempts),
                str(f.bytes),
                f.error or "",
            )
        from spica_tui.cli.output import stdout

        stdout.print(t)
    seconds = max(report.seconds, 1e-9)
    note(
        f"{report.runid or 'every runid'}: {report.count(copy_rows.DONE)} done, "
        f"{report.count(copy_rows.FAILED)} failed, {report.count(copy_rows.INTERRUPTED)} "
        f"interrupted; {_size(report.bytes)} in {report.seconds:.1f} s "
        f"({_size(report.bytes / seconds)}/s)"
    )


def run(
    ctx: typer.Context,
    runid: Annotated[str, typer.Argument(help="The runid whose planned files to copy.")],
    filter: Annotated[
        str | None, typer.Option("--filter", "-f", help="Only the files of this filter.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The outcome as JSON.")] = False,
    stale_after: StaleAfter = DEFAULT_STALE,
) -> None:
    """Copy the planned (and interrupted or failed) files of RUNID to their nodes over SSH
    (SFTP), each checksummed at the source and on the node, placed only when both match.

    Exit codes: 0 every file transferred; 1 some failed or were interrupted, or RUNID has no
    plan; 2 configuration error; 3 dbspica unreachable.
    """
    import asyncio
    import signal

    from spica_core.executor.agents import AgentExecutor
    from spica_core.transfer.copy import CopyRun, NoPlan
    from spica_core.transfer.copy_rows import has_rows

    st = state(ctx)
    config = st.config
    engine = st.engine()
    view = _Bar() if sys.stderr.isatty() and not as_json else _Lines()
    try:
        if not has_rows(engine, runid, filter):
            raise NoPlan(runid, filter)

        async def main() -> RunReport:
            async with AgentExecutor.over_ssh(config) as executor:
                copy = CopyRun(config, engine, executor, stale_after=stale_after,
                               on_event=view.event)  # fmt: skip
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, copy.stop)
                return await copy.run(runid, filter=filter)

        with view:
            report = asyncio.run(main())
    finally:
        engine.dispose()
    if not report.files and not as_json:
        note(f"nothing to copy: every planned file of {runid} is transferred")
    _render(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def watch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Run one round, then exit.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            "-i",
            min=0.1,
            metavar="SECONDS",
            help="Seconds between rounds (default: [transfer].interval).",
        ),
    ] = None,
    stale_after: StaleAfter = DEFAULT_STALE,
) -> None:
    """Each round, ingest the files new in the repositories, plan the runids waiting there
    (as `spica transfer plan`, unless in `manual` transfer mode), and copy every runid's
    planned and interrupted files (runids in `immediate` transfer mode first). Runs in the
    foreground until SIGTERM or Ctrl-C, logging to stderr;
    files under way are left interrupted, to resume. Exit codes: 0 stopped cleanly; 2
    configuration error; 3 dbspica unreachable at start.
    """
    import asyncio

    from spica_core.executor.agents import AgentExecutor
    from spica_core.transfer.watch import TransferWatch

    st = state(ctx)
    config = st.config
    engine = st.engine()
    service_logging("spica-transfer")
    lines = _Lines()

    async def main() -> int:
        from spica_core.transfer.automatic import plan_step, scan_step

        async with AgentExecutor.over_ssh(config) as executor:
            rounds = TransferWatch(
                config,
                engine,
                executor,
                scan=scan_step(config, engine, executor),
                plan=plan_step(config, engine, executor),
                interval=interval,
                stale_after=stale_after,
                on_event=lines.event,
            )
            return await rounds.run(once=once, handle_signals=True)

    try:
        code = asyncio.run(main())
    finally:
        engine.dispose()
    raise typer.Exit(code)


def history(
    ctx: typer.Context,
    runid: Annotated[str | None, typer.Option("--runid", "-r", help="Only this runid.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="At most this many rows.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The rows as JSON.")] = False,
) -> None:
    """Every file's transfer, newest first: source, destination node and path, bytes,
    checksums (source and node), state, attempts, times and the last error."""
    from spica_core.transfer.history import transfer_history

    st = state(ctx)
    engine = st.engine()
    try:
        rows = transfer_history(engine, runid=runid, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        emit_json([r.to_json() for r in rows])
        return
    t = table("id", "runid", "file", "node", "path", "state", "attempts", "bytes", "finished",
              "error")  # fmt: skip
    for r in rows:
        t.add_row(
            str(r.id),
            r.runid or "-",
            r.filename,
            r.node,
            r.path or "-",
            r.state,
            str(r.attempts),
            str(r.bytes),
            when(r.finished_at),
            r.error or "",
        )
    from spica_tui.cli.output import stdout

    stdout.print(t)
    if not rows:
        note("no transfers" + (f" of {runid}" if runid else ""))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("watch")(watch)
    app.command("history")(history)
