"""Who is reading: everything (an operator), or some runids with node internals hidden.

A :class:`Scope` is the one place that says what "node internals" are. In a runid scope
(the seed's PI accounts, :class:`~spica_core.db.models` ``viewer``), every read-model query

* returns only stacks, problems and distribution rows of those runids;
* never returns a node name, host, port, user, path, pid or disk: the nodes report is empty,
  stack rows and runs carry no node, the runid distribution has totals but no node columns;
* never returns text written by a node or a command line: a stack's ``error`` and its runs'
  ``command`` (they hold paths and host names), a problem's ``message``, the paths of a
  stack's results (its figures are shown); hardware and security
  problems are not shown at all (they are about nodes, not about a runid's data);
* refuses a ``node`` filter, and searches the operator's text in the name, runid and filter
  only, so that which rows a filter keeps never reveals hidden text either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from spica_core.errors import UsageError
from spica_core.read_model.results import hide_paths
from spica_core.reports import StackDetail, StackRow

#: Problem kinds a runid scope may see (the others are about nodes).
SCOPED_PROBLEM_KINDS = ("software",)


@dataclass(frozen=True)
class Scope:
    """``runids`` None: everything, node internals included; a set: those runids only."""

    runids: frozenset[str] | None = None

    @classmethod
    def of_runids(cls, runids: Iterable[str]) -> Scope:
        """A restricted scope over ``runids`` (may be empty: then it sees nothing)."""
        if isinstance(runids, str):
            raise TypeError("Scope.of_runids takes a collection of runids, not one string")
        return cls(frozenset(runids))

    @property
    def everything(self) -> bool:
        return self.runids is None

    @property
    def hides_node_internals(self) -> bool:
        return self.runids is not None

    def sees_runid(self, runid: str | None) -> bool:
        return self.runids is None or (runid is not None and runid in self.runids)

    def refuse_node_filter(self, node: str | None, what: str = "--node") -> None:
        if node is not None and self.hides_node_internals:
            raise UsageError(f"{what} {node!r}: node names are not shown in this scope")

    def stack_row(self, row: StackRow) -> StackRow:
        if not self.hides_node_internals:
            return row
        return replace(row, node=None, error=None)

    def stack_detail(self, detail: StackDetail) -> StackDetail:
        if not self.hides_node_internals:
            return detail
        runs = [{**r, "node": None, "command": None} for r in detail.runs]
        return replace(
            detail,
            stack=self.stack_row(detail.stack),
            runs=runs,
            result=hide_paths(detail.result),
        )

    def problem(self, problem: dict[str, Any]) -> dict[str, Any]:
        if not self.hides_node_internals:
            return problem
        return {**problem, "node": None, "message": None}


#: The operators' scope: every row, node internals included.
EVERYTHING = Scope()
