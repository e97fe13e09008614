"""Shared fixtures: an isolated environment and real databases (SQLite and MariaDB).

MariaDB tests use ``$SPICA_TEST_MYSQL_URL`` (a server URL without a database, e.g.
``mysql+pymysql://root@127.0.0.1:3306``); each test gets a database of its own, dropped
afterwards. Outside CI they skip when it is unset or unreachable; with ``CI=true`` they fail.

``db_url`` hands each test a database already at the Alembic head and without rows: the
migrations run once per test process (really, through Alembic) and every test gets a copy of
the result (MariaDB: the tables' ``SHOW CREATE TABLE`` replayed, about 0.2 s against 1.9 s for
the migrations' DDL; SQLite: the file copied). A test of the migrations themselves is marked
``empty_db`` and gets a database with no schema; ``mysql_url`` and ``sqlite_url`` are always
empty.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MYSQL_ENV = "SPICA_TEST_MYSQL_URL"
_db_counter = itertools.count()

# pytest's capture plugin imports readline before this file, and GNU readline writes LINES
# and COLUMNS (80x24 off a terminal) into the C environment: os.environ never shows them,
# but every subprocess started without env= inherits them, so a `spica` under test would
# fold its tables at 80 columns. Give the process back the environment os.environ holds.
for _name in ("COLUMNS", "LINES"):
    if _name not in os.environ:
        os.unsetenv(_name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "empty_db: db_url gives a database with no schema (tests of the migrations)"
    )


def require(condition: bool, reason: str) -> None:
    """Skip outside CI, fail in CI: a real part the suite needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the developer's own config, data dir and environment out of every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    # COLUMNS/LINES: a pytest-xdist worker has them (80x24), and the CLI's tables would fold
    # at 80; a test wanting a width sets it itself.
    for var in ("SPICA_CONFIG", "SPICA_DB_URL", "COLUMNS", "LINES"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _mysql_server_url() -> str:
    url = os.environ.get(MYSQL_ENV)
    require(
        bool(url),
        f"MariaDB tests need {MYSQL_ENV}=mysql+pymysql://root@127.0.0.1:3306 "
        "(the README's test command sets it)",
    )
    return url  # type: ignore[return-value]


class _MysqlDatabases:
    """This process's own MariaDB databases, made and dropped over one admin engine.

    One engine for the whole session: a new engine per database would connect and inspect
    the server again each time (measured: 69 ms of this process's CPU per database, 7 ms
    over the one engine), on each of the few hundred MariaDB tests.
    """

    def __init__(self, server_url: str) -> None:
        from sqlalchemy import create_engine, make_url

        self.server = make_url(server_url).set(database=None)
        self.admin = create_engine(self.server, connect_args={"connect_timeout": 5})

    def make(self, statements: list[str]) -> str:
        """A new database, ``statements`` run in it; its URL."""
        name = f"spica_test_{os.getpid()}_{next(_db_counter)}"
        try:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        except Exception as exc:
            require(
                False,
                f"MariaDB at {self.server.render_as_string()} unreachable "
                f"({exc.__class__.__name__}: {exc})",
            )
        if statements:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f"USE `{name}`")
                try:
                    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
                    for statement in statements:
                        conn.exec_driver_sql(statement)
                    conn.commit()
                finally:
                    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
                    conn.exec_driver_sql("USE mysql")  # the pooled connection in no test's
        return self.server.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy import make_url

        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{make_url(url).database}`")


@pytest.fixture(scope="session")
def _mysql_databases() -> Iterator[_MysqlDatabases]:
    """Databases of this process's own (each dropped when its test ends)."""
    databases = _MysqlDatabases(_mysql_server_url())
    yield databases
    databases.admin.dispose()


@pytest.fixture(scope="session")
def _mysql_schema(_mysql_databases: _MysqlDatabases) -> list[str]:
    """The statements that rebuild dbspica at head: read once per process from a database
    the real Alembic migrations built (then dropped)."""
    from sqlalchemy import text

    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.schema import upgrade

    url = _mysql_databases.make([])
    engine = make_engine(DatabaseConfig(url=url))
    try:
        upgrade(engine)
        with engine.connect() as conn:
            tables = [row[0] for row in conn.execute(text("SHOW TABLES"))]
            # The database's own default as the migrations left it (tables made later take it).
            collation = conn.execute(text("SELECT @@collation_database")).scalar()
            statements = [f"ALTER DATABASE CHARACTER SET utf8mb4 COLLATE {collation}"]
            statements += [
                conn.execute(text(f"SHOW CREATE TABLE `{table}`")).one()[1] for table in tables
            ]
            statements += [
                f"INSERT INTO alembic_version (version_num) VALUES ('{version}')"
                for version in conn.execute(text("SELECT version_num FROM alembic_version"))
                .scalars()
                .all()
            ]
    finally:
        engine.dispose()
        _mysql_databases.drop(url)
    return statements


@pytest.fixture
def mysql_url(_mysql_databases: _MysqlDatabases) -> Iterator[str]:
    """A fresh, empty MariaDB database of this test's own; dropped afterwards."""
    url = _mysql_databases.make([])
    try:
        yield url
    finally:
        _mysql_databases.drop(url)


@pytest.fixture
def mysql_migrated_url(
    _mysql_databases: _MysqlDatabases, _mysql_schema: list[str]
) -> Iterator[str]:
    """A MariaDB database of this test's own, at the Alembic head, without rows."""
    url = _mysql_databases.make(_mysql_schema)
    try:
        yield url
    finally:
        _mysql_databases.drop(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dbspica.sqlite'}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite dbspica the real Alembic migrations brought to head, once per process."""
    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.schema import upgrade

    path = tmp_path_factory.mktemp("template") / "dbspica.sqlite"
    engine = make_engine(DatabaseConfig(url=f"sqlite:///{path}"), create=True)
    try:
        upgrade(engine)
        with engine.connect() as conn:  # everything into the file itself, nothing in -wal
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


@pytest.fixture
def sqlite_migrated_url(sqlite_url: str, _sqlite_template: Path) -> str:
    """A SQLite dbspica of this test's own, at the Alembic head, without rows."""
    from sqlalchemy import make_url

    shutil.copyfile(_sqlite_template, str(make_url(sqlite_url).database))
    return sqlite_url


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each dbspica test runs on both engines, on a database at head (``empty_db``: none)."""
    migrated = request.node.get_closest_marker("empty_db") is None
    name = {"sqlite": "sqlite_url", "mariadb": "mysql_url"}[request.param]
    if migrated:
        name = name.replace("_url", "_migrated_url")
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine_factory():
    """Make engines through SPICA's own factory and dispose of them afterwards."""
    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine

    made = []

    def make(url: str, create: bool = True):
        engine = make_engine(DatabaseConfig(url=url), create=create)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def db_engine(db_url: str, engine_factory):
    """An engine on an initialised dbspica (via the Alembic migrations)."""
    from spica_core.db.schema import upgrade

    engine = engine_factory(db_url)
    upgrade(engine)
    return engine


def run_spica_at_a_terminal(
    *args: str, env: dict[str, str] | None = None, answer: str | None = None
) -> tuple[int, str, bytes]:
    """The real ``spica`` with a terminal (a pty) as stderr, and as stdin when the operator
    types ``answer``; (exit code, stdout, what the terminal showed)."""
    import pty

    master, slave = pty.openpty()
    if answer is not None:
        os.write(master, f"{answer}\n".encode())
    done = subprocess.run(
        [sys.executable, "-m", "spica_tui", *args],
        stdin=slave if answer is not None else None,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", **(env or {})},
        timeout=120,
    )
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 65536):
            seen += chunk
    except OSError:  # the terminal's other end is closed: all was read
        pass
    os.close(master)
    return done.returncode, done.stdout.decode(), seen


def run_spica(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``spica`` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "spica_tui", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        input=input,
        timeout=timeout,
    )


def invoke_spica(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``spica`` run in this process, as :func:`run_spica` would see it in a subprocess.

    Through the entry point itself (:func:`spica_tui.cli.main`: its exit codes, its errors
    on stderr), with stdin, stdout and stderr piped, ``env`` added to the environment, the
    output consoles set up for them as at a process's start (width 200, or ``$COLUMNS``),
    click's help at its own width and prompts read as ``input()`` reads them (CliRunner's
    echo of the answer off), log records with no handler of the command's own on stderr (as
    Python's last resort shows them), warnings on stderr under Python's default filters
    (pytest's are for the test's own code; a warning raised once at an import shows only at
    the first), and an uncaught exception as Python reports it: traceback on stderr, exit 1.
    Text as ``subprocess.run(text=True)`` gives it (newlines translated). Engines the command
    opened are disposed of. For a command whose process is what a test is about (a service,
    signals, a fault point that ends it, a terminal), use :func:`run_spica`.
    """
    import builtins
    import contextlib
    import logging
    import traceback
    import warnings

    from click import formatting, termui
    from click.testing import CliRunner

    import spica_core.db.engine as db_engine
    from spica_tui.cli import main
    from spica_tui.cli.output import renew_consoles

    opened = []
    make_engine = db_engine.make_engine

    def recorded(*a, **kw):  # type: ignore[no-untyped-def]
        engine = make_engine(*a, **kw)
        opened.append(engine)
        return engine

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with (
        CliRunner().isolation(input=input, env=env) as (out, err, _),
        contextlib.chdir(cwd or Path.cwd()),
        pytest.MonkeyPatch.context() as mp,
        warnings.catch_warnings(),
    ):
        formatting.FORCED_WIDTH = None
        mp.setattr(termui, "visible_prompt_func", builtins.input)
        mp.setattr(db_engine, "make_engine", recorded)
        root.handlers[:] = []
        root.setLevel(logging.WARNING)
        warnings.resetwarnings()  # then Python's defaults, without -W or PYTHONWARNINGS
        for ignored in (ResourceWarning, ImportWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", ignored)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        mp.setattr(warnings, "showwarning", _warning_on_stderr)
        renew_consoles()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            for engine in opened:
                engine.dispose()
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue(), err.getvalue()
    renew_consoles()

    def text(data: bytes) -> str:
        return data.decode().replace("\r\n", "\n").replace("\r", "\n")

    return subprocess.CompletedProcess(
        ["spica", *args], code, stdout=text(stdout), stderr=text(stderr)
    )


def _warning_on_stderr(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """How Python shows a warning: formatted, on the stderr of the moment."""
    import warnings

    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
