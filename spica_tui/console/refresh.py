"""The console's model: the core calls it makes, and the poller that keeps its snapshot.

Polling follows Dolphie: a one-shot timer is armed when a poll *finishes*, so a slow node or
a slow dbspica can never stack polls up; ``ctrl+r`` cancels the timer and polls at once (or,
during a poll, asks for another right after it). Node polls are asyncio (asyncssh) on the
app's loop; every dbspica call runs in a thread, so the UI never waits on either. A source
that fails keeps its last good data, with the time it was taken and the error: the panels
show it as stale, never as fresh. While a cluster monitor (``spica watch``) runs, a poll reads
its figures from dbspica instead of polling the nodes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.console_data import (
    ConsoleSnapshot,
    DbState,
    LogTail,
    fetch_log_tail,
    read_db_state,
)
from spica_core.errors import SpicaError
from spica_core.executor.agents import AgentExecutor
from spica_core.liveness import LivenessRecorder, record_quietly, recorded_last_seen
from spica_core.monitor.figures import MonitorStatus, MonitorView, read_monitor_view
from spica_core.node_pool import NodePool
from spica_core.operations import ItemResult, OperationRequest, Operations, Plan
from spica_core.read_model import (
    EVERYTHING,
    Scope,
    StackPage,
    StackSelection,
    count_stacks,
    page_stacks,
    stack_detail,
    state_counts,
)
from spica_core.reports import StackDetail

if TYPE_CHECKING:
    from textual.app import App
    from textual.timer import Timer

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


def describe_failure(exc: BaseException) -> str:
    """One line for the header: a driver error without its SQL, else the exception."""
    from spica_core.db.engine import describe_db_error

    text = describe_db_error(exc)
    return " ".join(text.split())[:200] or type(exc).__name__


def view_total(query: StackSelection, per_state: dict[str, int]) -> int:
    """How many stacks ``query`` shows, from its per-state counts."""
    return per_state.get(query.state.value, 0) if query.state else sum(per_state.values())


class NodeLoop:
    """A thread with its own asyncio loop, where the NodePool lives.

    SSH handshakes, packet decryption and the operations API (which reads and writes dbspica
    synchronously between its agent calls) run there, so none of it ever holds up the UI's
    loop; the UI awaits their results.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="spica-nodes", daemon=True
        )
        self._thread.start()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class ConsoleBackend:
    """Every core call the console makes, over one configuration, engine and NodePool.

    The pool belongs to the console and lives on its :class:`NodeLoop`, behind the console's
    executor: polls and operations share its connections (the operations API plans over the
    same links the dashboard polls). While a monitor (``spica watch``) runs, the console shows
    its figures from dbspica and polls no node: the pool connects only for an action.

    A ``read_only`` backend holds no operations API at all (:attr:`ops` is None): a read-only
    console cannot change a stack even through a bug in its key gating. Every dbspica read
    goes through the read model within :attr:`scope`.
    """

    def __init__(
        self,
        config: SpicaConfig,
        engine: Engine,
        pool: NodePool | None = None,
        *,
        clock: Clock = utc_now,
        problems: int = 100,
        read_only: bool = False,
        scope: Scope = EVERYTHING,
    ) -> None:
        self.config = config
        self.engine = engine
        self.scope = scope
        self.pool = pool if pool is not None else NodePool(config)
        self.executor = AgentExecutor(self.pool)
        self.ops: Operations | None = (
            None if read_only else Operations(config, engine, self.executor)
        )
        self.recorder = LivenessRecorder(engine)
        self.clock = clock
        self.problems = problems
        self.nodes = NodeLoop()
        self._seen_recorded = False

    # -- polls (the poller calls these, one at a time)

    async def poll_cluster(self) -> ClusterSnapshot:
        if not self._seen_recorded:
            # A node down from the start shows when dbspica last saw it, not "never".
            self._seen_recorded = True
            try:
                seen = await asyncio.to_thread(recorded_last_seen, self.engine)
            except Exception as exc:  # dbspica down: the header says so; nodes poll on
                log.info("last_seen not read from dbspica: %s", exc)
                seen = {}
            return await self.nodes.run(self._refresh_remembering(seen))
        return await self.nodes.run(self.executor.snapshot())

    async def monitor_view(self) -> MonitorView | None:
        """The running monitor's figures; None when none runs, or when dbspica cannot say
        (the console then polls the nodes itself)."""
        try:
            return await asyncio.to_thread(
                read_monitor_view, self.engine, self.config, self.clock()
            )
        except Exception as exc:  # dbspica down: the db read says so; nodes poll on
            log.info("monitor figures not read from dbspica: %s", exc)
            return None

    async def _refresh_remembering(self, seen: dict[str, datetime]) -> ClusterSnapshot:
        self.pool.remember_last_seen(seen)  # on the node loop, where the pool lives
        return await self.executor.snapshot()

    def read_db(self) -> DbState:
        """Runs in a thread; raises when dbspica does not answer."""
        state = read_db_state(
            self.engine, self.problems, self.scope, self.config.transfer.space_factor
        )
        return replace(state, read_at=self.clock())

    def record_liveness(self, cluster: ClusterSnapshot) -> str | None:
        """Runs in a thread: transitions and hardware problems go to dbspica."""
        return record_quietly(self.recorder, cluster)

    # -- what the screens ask for (each in a thread or on the node loop)

    @property
    def read_only(self) -> bool:
        return self.ops is None

    async def page(
        self, query: StackSelection, offset: int, limit: int, *, with_total: bool
    ) -> StackPage:
        return await asyncio.to_thread(
            partial(page_stacks, with_total=with_total, scope=self.scope),
            self.engine,
            query,
            offset,
            limit,
        )

    async def counts(self, query: StackSelection) -> tuple[int, dict[str, int]]:
        def both() -> tuple[int, dict[str, int]]:
            per_state = state_counts(self.engine, query, self.scope)
            return view_total(query, per_state), per_state

        return await asyncio.to_thread(both)

    async def visible_count(self, query: StackSelection, names: frozenset[str]) -> int:
        """How many of ``names`` the view ``query`` shows (marks hidden by the filter)."""
        if not names:
            return 0
        return await asyncio.to_thread(
            count_stacks, self.engine, query.with_names(names), self.scope
        )

    async def detail(self, name: str) -> StackDetail:
        return await asyncio.to_thread(stack_detail, self.engine, name, self.scope)

    async def log_tail(self, node: str | None, stack: str, line: int | None = None) -> LogTail:
        return await self.nodes.run(fetch_log_tail(self.executor, node, stack, line))

    def _operations(self) -> Operations:
        if self.ops is None:
            raise SpicaError("this console is read-only: it has no operations")
        return self.ops

    async def plan(self, request: OperationRequest) -> Plan:
        return await self.nodes.run(self._operations().plan(request))

    async def apply(self, plan: Plan, on_result: Callable[[ItemResult], None]) -> list[ItemResult]:
        """Apply on the node loop; each result is handed to ``on_result`` on the caller's."""
        ui = asyncio.get_running_loop()

        def report(result: ItemResult) -> None:
            ui.call_soon_threadsafe(on_result, result)

        results = await self.nodes.run(self._operations().apply(plan, report))
        await asyncio.sleep(0)  # let the last reports run before the caller goes on
        return results

    async def close(self) -> None:
        try:
            await self.nodes.run(self.executor.close())
        finally:
            self.nodes.close()
            self.engine.dispose()


class Poller:
    """Keeps :attr:`snapshot` fresh: one poll at a time, re-armed when each one ends."""

    def __init__(
        self,
        app: App[Any],
        backend: ConsoleBackend,
        interval: float,
        on_snapshot: Callable[[ConsoleSnapshot], None],
    ) -> None:
        self.app = app
        self.backend = backend
        self.interval = interval
        self.on_snapshot = on_snapshot
        self.snapshot = ConsoleSnapshot(
            cluster_name=backend.config.cluster,
            db_url=backend.config.db.masked_url,
            taken_at=backend.clock(),
        )
        self.polls = 0
        #: Polls asked for (``ctrl+r``, after an operation): their data must be fetched anew.
        self.asked = 0
        self._timer: Timer | None = None
        self._polling = False
        self._again = False
        self._stopped = False

    @property
    def polling(self) -> bool:
        return self._polling

    def start(self) -> None:
        """The first poll starts at once: its dbspica reads run in threads while Textual
        draws the empty screen, not after it."""
        self._launch()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def poll_now(self) -> None:
        """``ctrl+r``: poll at once, or right after the poll under way."""
        self.asked += 1
        if self._polling:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._launch()

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if delay <= 0:
            self.app.call_later(self._launch)
        else:
            self._timer = self.app.set_timer(delay, self._launch, name="spica-poll")

    def _launch(self) -> None:
        self._timer = None
        if self._polling or self._stopped:
            return
        self._polling = True
        # Textual's WorkType union: mypy solves its ResultType as Never (not a wrong call).
        self.app.run_worker(self._poll, name="spica-poll", group="spica-poll")  # type: ignore[arg-type]

    async def _poll(self) -> None:
        try:
            self.snapshot = await self._collect(self.snapshot)
            self.polls += 1
            self.on_snapshot(self.snapshot)
        except Exception:  # a bug must not stop the polling: log it, keep the last data
            log.exception("console poll failed")
        finally:
            self._polling = False
            delay = 0.0 if self._again else self.interval
            self._again = False
            self._schedule(delay)

    async def _collect(self, previous: ConsoleSnapshot) -> ConsoleSnapshot:
        backend = self.backend
        # dbspica's reads and the monitor's figures in two threads at once.
        db_read = asyncio.ensure_future(asyncio.to_thread(backend.read_db))
        view = await backend.monitor_view()
        nodes = None if view is not None else asyncio.ensure_future(backend.poll_cluster())
        db, db_error = previous.db, None
        try:
            db = await db_read
        except Exception as exc:  # SQLAlchemyError, DatabaseUnavailable, OSError: stale, shown
            db_error = describe_failure(exc)
        if nodes is None:
            assert view is not None
            return self._snapshot(previous, view.cluster, db, db_error, view.monitor)
        done, _ = await asyncio.wait({nodes}, timeout=0 if previous.cluster is None else 1.0)
        if not done:
            # The nodes are slow (the first connections, or a node timing out): show dbspica's
            # fresh data now, with the nodes as last seen (never polled: "unknown"). A
            # stopped monitor's figures are not passed off as the console's own.
            own = previous.cluster if previous.monitor is None else None
            interim = own or backend.pool.snapshot
            self.snapshot = self._snapshot(previous, interim, db, db_error)
            self.on_snapshot(self.snapshot)
        cluster = previous.cluster if previous.monitor is None else None
        try:
            cluster = await nodes
        except Exception:  # the pool reports node trouble in the snapshot; this is a bug
            log.exception("node poll failed")
        if db_error is None and cluster is not None:
            await asyncio.to_thread(backend.record_liveness, cluster)
        return self._snapshot(previous, cluster, db, db_error)

    def _snapshot(
        self,
        previous: ConsoleSnapshot,
        cluster: ClusterSnapshot | None,
        db: DbState | None,
        db_error: str | None,
        monitor: MonitorStatus | None = None,
    ) -> ConsoleSnapshot:
        now = self.backend.clock()
        return ConsoleSnapshot(
            cluster_name=previous.cluster_name,
            db_url=previous.db_url,
            taken_at=now,
            cluster=cluster,
            db=db,
            db_error=db_error,
            db_error_since=(previous.db_error_since or now) if db_error else None,
            monitor=monitor,
        )
