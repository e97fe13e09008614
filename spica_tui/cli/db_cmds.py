"""``spica db init | upgrade | status | ddl``."""

from __future__ import annotations

from typing import Annotated

import typer

from spica_tui.cli.context import state
from spica_tui.cli.output import emit_json, note, stdout, table

app = typer.Typer(help="Create, migrate and inspect dbspica.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _migrate(ctx: typer.Context, verb: str, as_json: bool) -> None:
    from spica_core.db.setup import prepare_database

    result = prepare_database(state(ctx).config, create=verb == "init")
    if as_json:
        emit_json(result.to_json())
        return
    if result.revision_before == result.revision:
        note(f"dbspica at {result.url} is already at revision {result.revision}")
    else:
        note(
            f"dbspica at {result.url}: revision {result.revision_before or '(empty)'}"
            f" -> {result.revision}"
        )
    if result.nodes_added or result.nodes_updated:
        note(
            f"nodes registered: {len(result.nodes_added)} added, "
            f"{len(result.nodes_updated)} updated"
        )


@app.command()
def init(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Create dbspica (the SQLite file too) at the current schema revision; idempotent."""
    _migrate(ctx, "init", as_json)


@app.command("upgrade")
def upgrade_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Migrate an existing dbspica to the schema revision of this SPICA."""
    _migrate(ctx, "upgrade", as_json)


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the schema revision and the row count of every table."""
    from spica_core.db.schema import status as schema_status

    st = schema_status(state(ctx).engine(require_schema=False))
    if as_json:
        emit_json(st.to_json())
    else:
        stdout.print(f"dbspica   {st.url}")
        stdout.print(
            f"revision  {st.revision or '(none: run spica db init)'}"
            + ("" if st.up_to_date else f"  (this SPICA expects {st.expected})")
        )
        t = table("table", "rows")
        for name, count in st.counts.items():
            t.add_row(name, str(count))
        stdout.print(t)
    if not st.up_to_date:
        raise typer.Exit(3)


@app.command()
def ddl() -> None:
    """Print the MySQL/MariaDB DDL generated from the models (sql/dbspica.mysql.sql)."""
    from spica_core.db.ddl import mysql_ddl

    typer.echo(mysql_ddl(), nl=False)
