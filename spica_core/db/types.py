"""Column types that behave the same on SQLite and MySQL/MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Result
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def utcnow() -> datetime:
    return datetime.now(UTC)


def affected_rows(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: the compare-and-set check of every conditional
    write. ``Session.execute`` is typed as returning a plain ``Result``; a DML statement's is
    always a ``CursorResult``, which carries the count."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"not a DML result: {type(result).__name__}")
    return result.rowcount


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database.

    MySQL DATETIME has no zone and SQLite has no type at all; storing naive UTC with
    microseconds keeps ordering and round trips identical on both engines.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: dbspica stores aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
