"""What the operations console reads, as plain data any script could use too.

The queries are the read model's (:mod:`spica_core.read_model`: stack windows, counts,
problems, the runid distribution, all within a :class:`~spica_core.read_model.Scope`); here
is what the console puts together from them:

* :class:`DbState` / :func:`read_db_state` and :class:`ConsoleSnapshot` — one poll of dbspica
  and of the nodes, each with the time of its last good data, so nothing stale looks fresh.
* :func:`command_lines` and :func:`fetch_log_tail` — a stack's commands with per-line status,
  and the failed line's log from its node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine

from spica_core.cluster_snapshot import ClusterSnapshot, NodeSnapshot
from spica_core.config import DEFAULT_SPACE_FACTOR
from spica_core.db.types import utcnow
from spica_core.monitor.figures import MonitorStatus
from spica_core.read_model import (
    EVERYTHING,
    RunidDistribution,
    Scope,
    list_problems,
    runid_distribution,
    state_counts,
)
from spica_core.read_model.apps import binary_drift
from spica_core.read_model.transfer import SpaceClaims, space_claims
from spica_core.reports import StackDetail
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.executor import Executor

# ------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class DbState:
    """One read of what the dashboard shows from dbspica."""

    read_at: datetime
    counts: dict[str, int]
    problems: tuple[dict[str, Any], ...]
    distribution: RunidDistribution
    #: What transfers and unstarted stacks promise on the disks (None in a runid scope):
    #: the DataTransfer panel shows the planner's virtual free, not just free - reserve.
    claims: SpaceClaims | None = None
    #: Node -> applications whose binary there differs from the registered one, as
    #: ``spica apps`` or the monitor last found (the nodes panel marks them).
    binary_drift: dict[str, tuple[str, ...]] = field(default_factory=dict)


def read_db_state(
    engine: Engine,
    problems: int = 100,
    scope: Scope = EVERYTHING,
    space_factor: float = DEFAULT_SPACE_FACTOR,
) -> DbState:
    """Counts per state, the newest problems, the runid distribution, the claims on the
    disks and the nodes whose binaries differ, within ``scope``. Raises SQLAlchemyError
    when dbspica does not answer (the caller keeps its last good state)."""
    return DbState(
        read_at=utcnow(),
        counts=state_counts(engine, scope=scope),
        problems=tuple(list_problems(engine, limit=problems, scope=scope)),
        distribution=runid_distribution(engine, scope),
        claims=None if scope.hides_node_internals else space_claims(engine, space_factor),
        binary_drift=binary_drift(engine, scope),
    )


@dataclass(frozen=True)
class ConsoleSnapshot:
    """The nodes and dbspica as last seen, each with the time of its last good data.

    ``db`` is the last *good* read; when the latest read failed, ``db_error`` says why and
    ``db`` is older than ``taken_at``: show it as stale. Nodes carry their own ``last_seen``
    and ``last_error`` (see :class:`~spica_core.cluster_snapshot.NodeSnapshot`).
    """

    cluster_name: str
    db_url: str
    taken_at: datetime
    cluster: ClusterSnapshot | None = None
    db: DbState | None = None
    db_error: str | None = None
    db_error_since: datetime | None = None
    #: The monitor whose figures ``cluster`` holds; None when the console polled the nodes.
    monitor: MonitorStatus | None = None

    @property
    def db_stale(self) -> bool:
        return self.db is None or self.db_error is not None

    @property
    def nodes(self) -> tuple[NodeSnapshot, ...]:
        return self.cluster.nodes if self.cluster else ()

    def node(self, name: str | None) -> NodeSnapshot | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def reachable(self, node: str | None) -> bool:
        """Whether actions on a stack of ``node`` can reach it (unknown counts as yes:
        the operations API checks for real and refuses per stack)."""
        snap = self.node(node)
        return snap is None or snap.liveness.value == "unknown" or snap.liveness.reachable

    def oldest_data(self) -> datetime | None:
        """The time of the oldest piece of data on screen (the header's age)."""
        times = [n.last_seen for n in self.nodes if n.last_seen is not None]
        if self.db is not None:
            times.append(self.db.read_at)
        return min(times) if times else None


# ------------------------------------------------------------------------- stack detail


LineStatus = Literal["done", "failed", "running", "not run"]


@dataclass(frozen=True)
class CommandLine:
    number: int
    command: str | None
    status: LineStatus
    exit_code: int | None = None
    attempt: int | None = None
    started_at: str | None = None
    ended_at: str | None = None


def command_lines(detail: StackDetail) -> list[CommandLine]:
    """Every command line of a stack with its status, from dbspica's runs and progress.

    The latest attempt of a line decides; a line without a run is done when it is at or
    before ``progress`` (the node's resume point), failed when it is the failed line of a
    failed stack, running when it is the next line of a running stack, else not run.
    """
    stack = detail.stack
    latest: dict[int, dict[str, Any]] = {}
    for seen in detail.runs:
        current = latest.get(seen["line"])
        if current is None or (seen["attempt"], seen["started_at"] or "") >= (
            current["attempt"],
            current["started_at"] or "",
        ):
            latest[seen["line"]] = seen
    count = max([stack.lines, *latest.keys()], default=0)
    out: list[CommandLine] = []
    for number in range(1, count + 1):
        run = latest.get(number)
        status: LineStatus
        if run is not None and run["exit_code"] is not None:
            status = "done" if run["exit_code"] == 0 else "failed"
        elif run is not None and stack.state == StackState.RUNNING:
            status = "running"
        elif stack.state == StackState.FAILED and number == stack.failed_line:
            status = "failed"
        elif number <= stack.progress:
            status = "done"
        elif stack.state == StackState.RUNNING and number == stack.progress + 1:
            status = "running"
        elif stack.state == StackState.COMPLETED:
            status = "done"
        else:
            status = "not run"
        out.append(
            CommandLine(
                number,
                run["command"] if run else None,
                status,
                run["exit_code"] if run else None,
                run["attempt"] if run else None,
                run["started_at"] if run else None,
                run["ended_at"] if run else None,
            )
        )
    return out


@dataclass(frozen=True)
class LogTail:
    """The end of one command line's log as the node returned it, or why not."""

    stack: str
    node: str | None
    line: int | None = None
    path: str | None = None
    text: str = ""
    truncated: bool = False
    error: str | None = None
    fetched_at: datetime = field(default_factory=utcnow)


async def fetch_log_tail(
    executor: Executor, node: str | None, stack: str, line: int | None = None, lines: int = 40
) -> LogTail:
    """The log tail of ``stack``'s line ``line`` (default: the failed line, else the latest)
    from its node; node trouble is returned in ``error``, never raised."""
    from spica_core.errors import SpicaError
    from spica_core.executor import ProtocolError

    if node is None:
        return LogTail(stack, node, error="the stack has no node in dbspica")
    try:
        result = await executor.tail(node, stack, line, lines)
    except ProtocolError as exc:
        return LogTail(stack, node, line, error=f"node {node}: {exc.message}")
    except (SpicaError, OSError) as exc:
        return LogTail(stack, node, line, error=str(exc))
    except Exception as exc:  # AgentMissing and other node trouble: shown, never raised
        return LogTail(stack, node, line, error=f"node {node}: {exc}")
    return LogTail(stack, node, result.line, result.path, result.text, result.truncated)
