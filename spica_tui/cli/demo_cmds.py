"""``spica demo``: the main job; ``spica demo up | down | status``: the cluster alone.

Bare ``spica demo`` starts the demo cluster when it is not running, prepares its dbspica,
starts the story driver (:mod:`spica_core.demo.story`) and opens the console on it.
Thin: parse, call :mod:`spica_core.demo`, render. The engine's errors (``DemoNotFound``,
``DemoLayoutError``, ``DemoStartError``) become messages and exit codes in ``spica_tui.cli``.
``status`` exits 0 when every node is up, 3 when one is down, 1 when there is no cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from spica_core.errors import UsageError
from spica_tui.cli.output import emit_json, note, stdout, table

if TYPE_CHECKING:
    from spica_core.demo.cluster import DemoStatus
    from spica_core.demo.story import StoryState

app = typer.Typer(
    help="The embedded demo cluster (one SSH server per node on 127.0.0.1) and its console.",
    invoke_without_command=True,
)

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        metavar="DIR",
        help="The demo directory (keys, known_hosts, spica.toml, node roots, logs).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
SubDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        metavar="DIR",
        help="The demo directory (default: the one given to spica demo, else .spica-demo).",
        show_default=False,
    ),
]
DEFAULT_DIR = Path(".spica-demo")
T = TypeVar("T")


def _print_status(status: DemoStatus) -> None:
    t = table("node", "port", "pid", "state", "daemon", "started", "root")
    for node in status.nodes:
        t.add_row(
            node.name,
            str(node.port),
            str(node.pid) if node.pid else "-",
            "up" if node.alive else "[red]down[/]",
            f"pid {node.daemon_pid}" if node.daemon_alive else "[yellow]stopped[/]",
            node.started or "-",
            str(node.root),
        )
    stdout.print(t)
    if status.monitor_alive:
        note(f"monitor: spica watch, pid {status.monitor_pid} (log: logs/monitor.log)")


def _print_story(story: StoryState, *, running: bool) -> None:
    """The story's progress on stdout: its steps, the corrupt exposure and its fix, the
    first co-add and its seconds from the cold start."""
    where = "running" if running else ("told" if story.finished else "stopped")
    lines = [f"story ({where}, log: logs/story.log), cold start {story.since}:"]
    lines += [f"  {when}  {step}" for step, when in story.steps.items()]
    if story.corrupt is not None:
        c = story.corrupt
        lines += [
            f"  corrupt exposure: {c.image} on {c.node}, input of {c.stack}",
            f"    {c.path}",
            "  put it right with:",
            f"    {c.fix}",
            "  then requeue the stack (console: r on it; or spica requeue NAME)",
        ]
    if story.first_coadd is not None:
        f = story.first_coadd
        lines.append(
            f"  first co-add: {f.stack} on {f.node}, completed {f.seconds:.0f} s after the "
            "cold start"
        )
    if story.error:
        lines.append(f"  error: {story.error}")
    lines += [f"  note: {problem}" for problem in story.notes]
    for line in lines:
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)


def _given(ctx: typer.Context, name: str, own: T | None) -> T | None:
    """A subcommand's option ``name``, else the one given to ``spica demo`` itself: ``spica
    demo --dir D down`` stops D, never the default directory. Given to both, differently:
    refused."""
    parent = ctx.parent
    group: T | None = None
    source = None if parent is None else parent.get_parameter_source(name)
    if parent is not None and source is not None and source.name != "DEFAULT":
        group = parent.params[name]
    if own is not None and group is not None and own != group:
        flag = "--" + name.replace("directory", "dir")
        raise UsageError(
            f"{flag} given twice: {group} to spica demo, {own} to spica demo {ctx.info_name}"
        )
    return own if own is not None else group


def _directory(ctx: typer.Context, own: Path | None) -> Path:
    """The demo directory a subcommand acts on (:func:`_given`, else the default)."""
    return _given(ctx, "directory", own) or DEFAULT_DIR


@app.callback()
def demo(
    ctx: typer.Context,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes",
            "-n",
            min=1,
            help="Number of nodes of a new cluster (default: the existing cluster's, else 8).",
        ),
    ] = None,
    directory: DirOpt = DEFAULT_DIR,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Open the console read-only.")
    ] = False,
) -> None:
    """Without a subcommand: start the demo cluster if needed, start its story (placement,
    QFin, grades, spica auto, co-adds) in the background, open the console."""
    if ctx.invoked_subcommand is not None:
        # --dir (and --nodes for up) pass down to the subcommand (_given); the rest would be
        # silently lost.
        sub = ctx.invoked_subcommand
        if read_only:
            raise UsageError(f"--read-only opens the console read-only: not for spica demo {sub}")
        if nodes is not None and sub != "up":
            raise UsageError(f"--nodes is for spica demo or spica demo up, not spica demo {sub}")
        return
    from datetime import UTC, datetime

    from spica_core.config import load_config
    from spica_core.db.setup import prepare_database
    from spica_core.demo.cluster import DemoCluster
    from spica_tui.cli.console_cmds import run

    since = datetime.now(UTC)
    cluster = DemoCluster(directory)
    result = cluster.up(nodes, daemons=True)
    config = load_config(result.status.config_path)
    prepare_database(config, create=True)
    cluster.start_monitor()
    if result.started:
        note(f"demo cluster in {result.status.directory}: started {', '.join(result.started)}")
    if cluster.start_story(since=since) is not None:
        note(
            "the story runs in the background (logs/story.log): transfer, QFin, grades, "
            "spica auto, co-adds; 'spica demo status' shows where it is"
        )
    run(config, read_only=read_only, demo=cluster.paths)


@app.command()
def up(
    ctx: typer.Context,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes",
            "-n",
            min=1,
            help="Number of nodes (default: the existing cluster's, else 8).",
        ),
    ] = None,
    directory: SubDirOpt = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for every node to accept SSH.")
    ] = 20.0,
    daemons: Annotated[
        bool,
        typer.Option(
            "--daemons/--no-daemons", help="Run each node's daemon (spica daemon) as well."
        ),
    ] = True,
    monitor: Annotated[
        bool,
        typer.Option(
            "--monitor/--no-monitor", help="Run the cluster monitor (spica watch) as well."
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Start the demo cluster, its node daemons and its monitor (idempotent: restarts only
    what is down)."""
    from spica_core.config import load_config
    from spica_core.db.setup import prepare_database
    from spica_core.demo.cluster import DemoCluster

    cluster = DemoCluster(_directory(ctx, directory))
    result = cluster.up(_given(ctx, "nodes", nodes), timeout=timeout, daemons=daemons)
    db = prepare_database(load_config(result.status.config_path), create=True)
    if monitor:
        cluster.start_monitor()
    status = cluster.status()
    if as_json:
        emit_json({**result.to_json(), **status.to_json(), "db": db.to_json()})
        return
    if result.created:
        note(f"demo cluster created in {status.directory}: {len(status.nodes)} nodes")
    elif result.already_running:
        restarted = ", ".join(result.started) if result.started else "none needed"
        note(f"demo cluster already running in {status.directory} (restarted: {restarted})")
    else:
        note(f"demo cluster started in {status.directory}: {len(status.nodes)} nodes")
    for name in result.new_ports:
        node = next(n for n in status.nodes if n.name == name)
        note(f"{name}: its old port was taken, now on port {node.port} (spica.toml rewritten)")
    _print_status(status)
    note(f"dbspica: {db.url} (revision {db.revision})")
    note(f"configuration: {status.config_path}")
    note(f"try: spica --config {status.config_path} nodes")


@app.command()
def down(
    ctx: typer.Context,
    directory: SubDirOpt = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the demo directory (keys, roots, db).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop the demo cluster's monitor, daemons and servers; keys, node roots and dbspica
    stay unless --purge."""
    from spica_core.demo.cluster import DemoCluster

    cluster = DemoCluster(_directory(ctx, directory))
    stopped = cluster.down(purge=purge)
    if as_json:
        emit_json({"directory": str(cluster.directory), "stopped": stopped, "purged": purge})
        return
    what = f"stopped {len(stopped)} node server(s)" if stopped else "no node server was running"
    note(f"demo cluster in {cluster.directory}: {what}" + ("; directory deleted" if purge else ""))


@app.command()
def status(ctx: typer.Context, directory: SubDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show each node's port, pid and liveness; exit 3 if a node is down."""
    from spica_core.demo.cluster import DemoCluster
    from spica_core.demo.story import read_story

    cluster = DemoCluster(_directory(ctx, directory))
    st = cluster.status()
    story = read_story(cluster.paths)
    if as_json:
        emit_json({**st.to_json(), "story": story.to_json() if story else None})
    else:
        _print_status(st)
        note(f"{st.alive_count}/{len(st.nodes)} nodes up; configuration: {st.config_path}")
        if story is not None:
            _print_story(story, running=st.story_alive)
    if not st.all_alive:
        raise typer.Exit(3)
