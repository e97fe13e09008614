"""Shared fixtures: an isolated environment and real databases (SQLite and MariaDB).

MariaDB tests use ``$SPICA_TEST_MYSQL_URL`` (a server URL without a database, e.g.
``mysql+pymysql://root@127.0.0.1:3306``); each test gets a database of its own, dropped
afterwards. Outside CI they skip when it is unset or unreachable; with ``CI=true`` they fail.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MYSQL_ENV = "SPICA_TEST_MYSQL_URL"
_db_counter = itertools.count()


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


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MariaDB database of this test's own; dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    server = make_url(_mysql_server_url())
    name = f"spica_test_{os.getpid()}_{next(_db_counter)}"
    admin = create_engine(server.set(database=None), connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        admin.dispose()
        require(
            False,
            f"MariaDB at {server.render_as_string()} unreachable ({exc.__class__.__name__}: {exc})",
        )
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dbspica.sqlite'}"


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each dbspica test runs on both engines."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("mysql_url")


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
