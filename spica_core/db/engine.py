"""Engines and sessions for dbspica, with unreachable databases turned into typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from spica_core.config import DatabaseConfig, mask_url
from spica_core.errors import DatabaseUnavailable


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL (None for other engines and in-memory databases)."""
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        return None
    return Path(url.database)


def _sqlite_pragmas(dbapi_connection: Any, _record: object = None) -> None:
    # WAL lets the console read while a daemon writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _tls_pointless(url: URL) -> bool:
    """Whether a PyMySQL connection should not offer TLS: to a server on this host, with no
    TLS option in the URL.

    PyMySQL offers TLS whenever it may and builds a certificate store for every connection
    to do so (about 20 ms of CPU each, measured on the server's own host); over loopback or
    a socket there is nobody to encrypt against. Any ``ssl_*`` option in the URL is the
    operator's choice and is left as given.
    """
    if url.get_driver_name() != "pymysql" or any(key.startswith("ssl") for key in url.query):
        return False
    return "unix_socket" in url.query or (url.host or "localhost") in _LOOPBACK


def make_engine(db: DatabaseConfig, *, create: bool = False) -> Engine:
    """An engine for dbspica. A missing SQLite file is created only when ``create``.

    Raises DatabaseUnavailable (URL masked) when the URL is unusable.
    """
    masked = mask_url(db.url)
    try:
        url = make_url(db.url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the raw URL in it
        raise DatabaseUnavailable(masked, f"not a database URL ({type(exc).__name__})") from None
    backend = url.get_backend_name()
    connect_args: dict[str, object] = {}
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            if not path.exists() and not create:
                raise DatabaseUnavailable(
                    masked, f"no dbspica file at {path} (run `spica db init`)"
                )
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": 30, "check_same_thread": False}
    elif backend in ("mysql", "mariadb"):
        connect_args = {"connect_timeout": max(1, int(db.connect_timeout))}
        if "charset" not in url.query:
            connect_args["charset"] = "utf8mb4"
        if _tls_pointless(url):
            connect_args["ssl_disabled"] = True
    try:
        engine = create_engine(
            url, echo=db.echo, connect_args=connect_args, pool_pre_ping=backend != "sqlite"
        )
    except Exception as exc:  # a missing driver or an unknown dialect
        raise DatabaseUnavailable(masked, f"{type(exc).__name__}: {exc}") from None
    if backend == "sqlite":
        from spica_core.read_model.regex import register_sqlite_regexp

        event.listen(engine, "connect", _sqlite_pragmas)
        # REGEXP on RE2 (linear time), replacing SQLAlchemy's backtracking Python ``re``.
        event.listen(engine, "connect", register_sqlite_regexp)
    return engine


def describe_db_error(exc: BaseException) -> str:
    """A one-line reason from a driver error, without the SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[object, ...] = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__


def masked_url(engine: Engine) -> str:
    """The engine's URL with its password masked, the only form SPICA shows."""
    return mask_url(engine.url.render_as_string(hide_password=False))


def db_unavailable(engine: Engine, exc: BaseException) -> DatabaseUnavailable:
    """The one error every face reports when dbspica fails under a command: the masked URL
    and a one-line reason (no SQL, no parameters), exit code 3."""
    return DatabaseUnavailable(masked_url(engine), describe_db_error(exc))


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says dbspica cannot serve: gone, away, read-only, refusing this user,
    missing its tables. A constraint or a bad value (IntegrityError, DataError) is not."""
    from sqlalchemy.exc import DisconnectionError, InterfaceError, ProgrammingError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(
        exc, OperationalError | InterfaceError | ProgrammingError | DisconnectionError | PoolTimeout
    ):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@contextmanager
def unavailable_raised(engine: Engine) -> Iterator[None]:
    """Inside: a driver error that means dbspica cannot serve (see :func:`is_unavailable`)
    is raised as :func:`db_unavailable`; any other error as it is."""
    try:
        yield
    except SQLAlchemyError as exc:
        if not is_unavailable(exc):
            raise
        raise db_unavailable(engine, exc) from None


def check_reachable(engine: Engine) -> None:
    """Open one connection, or raise DatabaseUnavailable with a masked URL."""
    try:
        with engine.connect():
            pass
    except (OperationalError, DBAPIError, OSError) as exc:
        raise db_unavailable(engine, exc) from None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
