"""``spica ingest PATH…``: FITS headers of incoming exposures -> dbspica's image rows.

Thin: resolve where the paths live, hand them to :mod:`spica_core.ingest.service`, render
the report. A progress bar goes to stderr only for a person at a terminal (never with
``--json``); data goes to stdout.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from spica_tui.cli.context import state

if TYPE_CHECKING:
    from spica_core.ingest.service import IngestReport, Progress


def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH…", help="FITS files or directories (walked recursively)."),
    ],
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            "-n",
            metavar="NODE",
            help="The files are on NODE (paths relative to its spica root), read by its agent.",
        ),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            metavar="PARTITION",
            help="With --node: the partition holding the files (paths relative to it).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Read the headers of FITS exposures (.fits, .fits.gz, .fits.fz, multi-extension) and
    add or update their image rows, and their runids' totals.

    Files under a [[transfer.repositories]] path are recorded in that repository; others
    need --node. A file that is not FITS, is cut short, lacks a required header key or has an
    unparseable value is reported and skipped; nothing of it is written. Exit codes: 0 all
    ingested; 1 some skipped; 2 usage or configuration error; 3 dbspica or the node
    unreachable.
    """
    from spica_core.errors import UsageError
    from spica_core.ingest.service import ingest_local

    st = state(ctx)
    config = st.config
    if partition is not None and node is None:
        raise UsageError("--partition needs --node")
    if node is not None:
        raise UsageError("--node: reading files through a node's agent is not available yet")
    engine = st.engine()
    try:
        with _progress(enabled=not as_json and sys.stderr.isatty()) as progress:
            report = ingest_local(engine, config, paths, progress=progress)
    finally:
        engine.dispose()
    _render(report, as_json)
    raise typer.Exit(1 if report.skipped else 0)


class _progress:
    """A rich progress bar on stderr, or nothing (a context manager giving the callback)."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: object = None

    def __enter__(self) -> Progress | None:
        if not self._enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from spica_tui.cli.output import stderr

        bar = Progress(
            "ingest",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        bar.start()
        task = bar.add_task("ingest", total=None)
        self._bar = bar

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()  # type: ignore[attr-defined]


def _render(report: IngestReport, as_json: bool) -> None:
    from spica_tui.cli.output import emit_json, note, stdout, table

    if as_json:
        emit_json(report.to_json())
        return
    if report.runids:
        t = table("runid", "images", "bytes")
        for name, totals in sorted(report.runids.items()):
            t.add_row(name, str(totals.images), str(totals.bytes))
        stdout.print(t)
    for skipped in report.skipped:
        key = f" {skipped.key}:" if skipped.key else ""
        note(f"skipped {skipped.path}:{key} {skipped.reason}")
    stdout.print(
        f"{report.count('added')} added, {report.count('updated')} updated, "
        f"{report.count('unchanged')} unchanged, {len(report.skipped)} skipped",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
