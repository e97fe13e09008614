"""Compare-and-set UPDATEs that reach their rows through the key they name, on
MariaDB/MySQL whatever the optimizer's statistics say.

``UPDATE node SET status='up' WHERE name='n5' AND status='down'``: with one node down, the
``status`` index's range looks as selective as the unique name (one row each; the same holds
against a primary key) and InnoDB may read through it, taking next-key locks on the entries
and gaps it meets, where other writers' rows enter their new state (REPEATABLE READ). Two
writers of different rows then wait on each other or deadlock (error 1213, seen with four
processes launching stacks at once). ``FORCE INDEX`` of the key keeps each write to the rows
it names. SQLite has no row locks: no hint there.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Column, UniqueConstraint, Update

_DIALECTS = ("mysql", "mariadb")


def through_key(stmt: Update, column: Column[Any]) -> Update:
    """``stmt`` with its table read through ``column``'s own index: the primary key or a
    unique constraint of that column alone (MariaDB/MySQL)."""
    hint = f"FORCE INDEX ({_key_index(column)})"
    for dialect in _DIALECTS:
        stmt = stmt.with_hint(hint, dialect_name=dialect)
    return stmt


@cache
def _key_index(column: Column[Any]) -> str:
    if list(column.table.primary_key.columns) == [column]:
        return "PRIMARY"
    for constraint in column.table.constraints:
        if isinstance(constraint, UniqueConstraint) and list(constraint.columns) == [column]:
            return str(constraint.name)
    raise ValueError(f"{column.table.name}.{column.name} is not a key of its own")
