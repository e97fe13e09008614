"""The shapes of an operator action: request, plan, per-stack result.

A plan is computed once and shown the same way everywhere — ``--dry-run``, the CLI's
confirmation prompt and the console's modal all print :meth:`Plan.render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spica_core.executor import StackChange
from spica_core.read_model import StackSelection
from spica_core.units import human_bytes


class OpAction(StrEnum):
    LAUNCH = "launch"
    REQUEUE = "requeue"
    UNLOCK = "unlock"
    REMOVE = "remove"


#: What each action turns a stack into (unlock: failed unless ``requeue``).
TARGET_STATE = {
    OpAction.LAUNCH: "pending",
    OpAction.REQUEUE: "pending",
    OpAction.UNLOCK: "failed",
    OpAction.REMOVE: "removed",
}


class Outcome(StrEnum):
    APPLIED = "applied"  # node and dbspica changed
    PARTIAL = "partial"  # the node changed, dbspica did not (yet): reconcile finishes it
    REFUSED = "refused"  # not allowed (state, liveness, another operator first)
    FAILED = "failed"  # could not be carried out (node or dbspica unreachable)
    UNKNOWN = "unknown"  # sent, but the node's answer was lost: reconcile decides
    PLANNED = "planned"  # dry run: what would happen


@dataclass(frozen=True)
class Selection:
    """Stacks named one by one, or every stack a filter matches (never both empty)."""

    names: tuple[str, ...] = ()
    filter: StackSelection | None = None

    @property
    def empty(self) -> bool:
        return not self.names and self.filter is None


@dataclass(frozen=True)
class OperationRequest:
    action: OpAction
    selection: Selection
    user: str
    #: requeue: run from line 1 (progress reset) instead of from the failed line.
    from_start: bool = False
    #: unlock: to pending (resumable) instead of failed.
    requeue: bool = False
    #: remove: also delete the stack's non-raw input files.
    purge_inputs: bool = False

    @property
    def target_state(self) -> str:
        if self.action is OpAction.UNLOCK and self.requeue:
            return "pending"
        return TARGET_STATE[self.action]


def change_json(change: StackChange | None) -> dict[str, Any]:
    """A change as ``--json`` prints it: the fields the move uses (None ones left out)."""
    if change is None:
        return {}
    import msgspec

    return {k: v for k, v in msgspec.to_builtins(change).items() if v is not None}


@dataclass(frozen=True)
class PlanItem:
    """One stack: what will change on its node and in dbspica, or why it will not."""

    stack: str
    node: str | None
    state: str
    target: str
    #: The executor's dry-run answer (renames, files and bytes to delete, resume line).
    node_change: StackChange | None = None
    db_change: str = ""
    refused: str | None = None
    #: Why it was refused because something did not answer (exit code 3, not 1).
    unreachable: bool = False
    #: Carried from selection to apply: the stack's priority (written into its launch
    #: record) and the input files a remove --purge-inputs deletes.
    priority: int = 0
    purge: tuple[str, ...] = ()
    #: The stack's dbspica id (None for a name dbspica does not know).
    stack_id: int | None = None

    def describe(self) -> str:
        if self.refused:
            return self.refused
        parts = []
        change = self.node_change
        if change is not None:
            if change.rename:
                parts.append(f"{change.rename[0]} -> {change.rename[1]}")
            if change.create:
                parts.append(f"create {change.create}")
            if change.orphan:
                orphan = change.orphan
                command = orphan.command or "?"
                if len(command) > 120:
                    command = command[:117] + "..."
                parts.append(
                    f"kill orphan line {orphan.line} (process group {orphan.pgid}, "
                    f"attempt {orphan.attempt}): {command}"
                )
            if change.resume_line:
                parts.append(f"resumes at line {change.resume_line}")
            for d in change.delete or []:
                parts.append(f"delete {d.path} ({d.files} files, {human_bytes(d.bytes)})")
        if self.db_change:
            parts.append(f"dbspica: {self.db_change}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "node": self.node,
            "state": self.state,
            "target": self.target,
            "node_change": change_json(self.node_change),
            "db_change": self.db_change,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class Plan:
    request: OperationRequest
    items: tuple[PlanItem, ...]

    @property
    def doable(self) -> list[PlanItem]:
        return [i for i in self.items if not i.refused]

    @property
    def refused(self) -> list[PlanItem]:
        return [i for i in self.items if i.refused]

    @property
    def bytes_deleted(self) -> int:
        return sum((i.node_change.bytes or 0) if i.node_change else 0 for i in self.doable)

    def summary(self) -> str:
        action = self.request.action.value
        n = len(self.doable)
        text = f"{action} {n} stack{'s' if n != 1 else ''}"
        if self.request.action is OpAction.REMOVE and n:
            text += f", deleting {human_bytes(self.bytes_deleted)}"
        if self.refused:
            text += f"; {len(self.refused)} refused"
        return text

    def render(self) -> str:
        """The plan as operators read it, identical in dry-run, prompt and console modal."""
        lines = [f"{self.summary()} (as {self.request.user}):"]
        width = max((len(i.stack) for i in self.items), default=0)
        for item in self.doable:
            lines.append(
                f"  {item.stack:<{width}}  {item.node or '-':<8} {item.state} -> {item.target}"
                f"  {item.describe()}"
            )
        if self.refused:
            lines.append("refused:")
            for item in self.refused:
                lines.append(f"  {item.stack:<{width}}  {item.node or '-':<8} {item.refused}")
        if not self.items:
            lines.append("  (no stack matches)")
        return "\n".join(lines)

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self.items]


@dataclass(frozen=True)
class ItemResult:
    stack: str
    node: str | None
    outcome: Outcome
    message: str
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.APPLIED, Outcome.PLANNED)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "node": self.node,
            "outcome": self.outcome.value,
            "ok": self.ok,
            "message": self.message,
        }


def exit_code(results: list[ItemResult]) -> int:
    """0 all done; 3 something did not answer; 1 anything else failed or was refused."""
    if all(r.ok for r in results):
        return 0
    if any(r.unreachable for r in results):
        return 3
    return 1
