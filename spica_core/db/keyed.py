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
from typing import cast

from sqlalchemy import Table, UniqueConstraint, Update

_DIALECTS = ("mysql", "mariadb")


def through_key(stmt: Update, column: str) -> Update:
    """``stmt`` with its table read through the index of its ``column``: the primary key or
    a unique constraint of that column alone (MariaDB/MySQL)."""
    hint = f"FORCE INDEX ({_key_index(cast(Table, stmt.table), column)})"
    for dialect in _DIALECTS:
        stmt = stmt.with_hint(hint, dialect_name=dialect)
    return stmt


@cache
def _key_index(table: Table, column: str) -> str:
    if [c.name for c in table.primary_key.columns] == [column]:
        return "PRIMARY"
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and constraint.columns.keys() == [column]:
            return str(constraint.name)
    raise ValueError(f"{table.name}.{column} is not a key of its own")
