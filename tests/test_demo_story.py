"""The demo's story end to end on a demo cluster (real SSH nodes, real daemons, the real
AstrOmatic tools): one runid placed, QFin run, its proposals graded, ``spica auto`` plans the
runid's co-adds, one input exposure is corrupted on its node before the stacks launch. That
stack fails at the input's prepare line with a readable error and a problem row; the file is
replaced with the exact command the story gives, the stack is requeued as the console
requeues it, it resumes at the failed line (the lines before it are not run again) and
completes with its results recorded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig, load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Problem, Stack, StackResult, StackRun
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.demo.story import StoryState, run_story
from tests.conftest import require, run_spica
from tests.daemon_support import wait_for

pytestmark = pytest.mark.timeout(900)
TOOLS = ("source-extractor", "scamp", "SWarp", "psfex", "stiff")
RUNID = "03AL01"
#: Generous for a loaded machine (not a timing assertion).
WAIT = 600.0


@dataclass
class Told:
    cluster: DemoCluster
    config: SpicaConfig
    engine: Engine
    story: StoryState


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Told]:
    for tool in TOOLS:
        require(shutil.which(tool) is not None, f"{tool} is not installed (./run setup)")
    require(
        importlib.util.find_spec("spica_core.auto") is not None,
        "spica auto (spica_core.auto) is not in this installation",
    )
    cluster = DemoCluster(tmp_path_factory.mktemp("story") / "demo")
    try:
        cluster.up(2, daemons=True)
        config = load_config(cluster.config_path)
        prepare_database(config, create=True)
        story = run_story(cluster.directory, runids=(RUNID,), deadline=WAIT)
        engine = make_engine(config.db)
        yield Told(cluster, config, engine, story)
        engine.dispose()
    finally:
        cluster.down()


def _stack(engine: Engine, name: str) -> Stack:
    with Session(engine) as s:
        row = s.scalars(select(Stack).where(Stack.name == name)).one()
        s.expunge(row)
        return row


def _runs(engine: Engine, name: str) -> list[tuple[int, int, int | None]]:
    with Session(engine) as s:
        return [
            (r.line, r.attempt, r.exit_code)
            for r in s.scalars(
                select(StackRun)
                .join(Stack, Stack.id == StackRun.stack_id)
                .where(Stack.name == name)
                .order_by(StackRun.line, StackRun.attempt)
            )
        ]


def _prepare_line(told: Told, stack: str, image: str) -> int:
    """The 1-based line of ``commands.sh`` preparing ``image``, read on the node."""
    node = _stack(told.engine, stack)
    assert node.node_id is not None
    roots = [told.cluster.node_root(n.name) for n in told.config.nodes]
    commands = next(
        r / "stacks" / stack / "commands.sh" for r in roots if (r / "stacks" / stack).is_dir()
    )
    for number, line in enumerate(commands.read_text().splitlines(), 1):
        argv = shlex.split(line)
        if argv[1:3] == ["stack", "prepare"] and image in argv:
            return number
    raise AssertionError(f"no prepare line of {image} in {commands}")


def test_the_corrupt_exposure_fails_its_stack_at_its_prepare_line(told: Told) -> None:
    corrupt = told.story.corrupt
    assert corrupt is not None and told.story.error is None
    failed = wait_for(
        lambda: (st := _stack(told.engine, corrupt.stack)).state == "failed" and st,
        WAIT,
        f"{corrupt.stack} to fail",
    )
    line = _prepare_line(told, corrupt.stack, corrupt.image)
    assert failed.failed_line == line and failed.exit_code not in (None, 0)
    assert corrupt.image in (failed.error or "") and "checksum" in (failed.error or "").lower()
    with Session(told.engine) as s:
        problems = s.scalars(select(Problem).where(Problem.stack == corrupt.stack)).all()
    assert problems and any(corrupt.image in p.message for p in problems)
    runs = _runs(told.engine, corrupt.stack)
    assert [r for r in runs if r[0] < line] == [(n, 1, 0) for n in range(1, line)]


def test_replaced_and_requeued_it_resumes_at_the_failed_line_and_completes(told: Told) -> None:
    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import OpAction, OperationRequest, Operations, Outcome, Selection

    corrupt = told.story.corrupt
    assert corrupt is not None
    wait_for(lambda: _stack(told.engine, corrupt.stack).state == "failed", WAIT, "the failure")
    line = _prepare_line(told, corrupt.stack, corrupt.image)
    subprocess.run(shlex.split(corrupt.fix), check=True)  # the story's (and README's) fix

    async def requeue() -> list[Outcome]:
        async with AgentExecutor.over_ssh(told.config) as executor:
            ops = Operations(told.config, told.engine, executor)
            request = OperationRequest(
                OpAction.REQUEUE, Selection(names=(corrupt.stack,)), user="operator"
            )
            return [r.outcome for r in await ops.apply(await ops.plan(request))]

    assert asyncio.run(requeue()) == [Outcome.APPLIED]
    done = wait_for(
        lambda: (st := _stack(told.engine, corrupt.stack)).state in ("completed", "failed") and st,
        WAIT,
        f"{corrupt.stack} to end",
    )
    assert done.state == "completed", done.error
    runs = _runs(told.engine, corrupt.stack)
    assert [r for r in runs if r[0] < line] == [(n, 1, 0) for n in range(1, line)]
    at_line = [r for r in runs if r[0] == line]
    assert len(at_line) == 2 and at_line[0][2] not in (None, 0) and at_line[1] == (line, 2, 0)
    assert max(r[0] for r in runs) == done.lines
    with Session(told.engine) as s:
        result = s.scalars(select(StackResult).join(Stack).where(Stack.name == corrupt.stack)).one()
        assert result.coadd_path and Path(result.coadd_path).is_file()
        assert result.swarp_inputs and result.swarp_inputs >= 2
        assert result.exptime and result.exptime > 0


def test_the_first_coadd_is_timed_from_the_cold_start(told: Told) -> None:
    first = told.story.first_coadd
    assert first is not None and first.seconds > 0
    assert told.story.corrupt is None or first.stack != told.story.corrupt.stack
    with Session(told.engine) as s:
        stack = s.scalars(select(Stack).where(Stack.name == first.stack)).one()
        assert stack.state == "completed" and stack.step == "stack"
        assert s.scalars(select(StackResult).where(StackResult.stack_id == stack.id)).one()


def test_the_driver_follows_a_runid_the_operator_transfers(told: Told) -> None:
    """After the story is told, the driver goes on as cron would: the waiting runid, once
    the operator transfers it (``spica transfer plan`` and ``run``, the console's "transfer
    now"), gets its QFin units launched like the others'."""
    import threading

    from spica_core.demo import story as driver
    from spica_core.demo.repository import WAITING_RUNID
    from spica_core.demo.story import read_story, transferred

    assert told.story.finished and not transferred(told.engine, WAITING_RUNID)
    base = ("--config", str(told.cluster.config_path), "transfer")
    for step in ("plan", "run"):
        done = run_spica(*base, step, WAITING_RUNID)
        assert done.returncode == 0, done.stderr
    assert transferred(told.engine, WAITING_RUNID)

    follower = threading.Thread(
        target=run_story,
        args=(told.cluster.directory,),
        kwargs={"runids": (RUNID,), "follow": True, "poll": 0.5},
    )
    follower.start()
    try:
        wait_for(
            lambda: f"qfin {WAITING_RUNID}" in getattr(read_story(told.cluster.paths), "steps", {}),
            120.0,
            f"QFin of {WAITING_RUNID} launched by the following driver",
        )
    finally:
        driver._Stop.requested = True
        follower.join(60)
        driver._Stop.requested = False
    assert not follower.is_alive()
    with Session(told.engine) as s:
        units = s.scalars(
            select(Stack.name).where(Stack.step == "qfin", Stack.runid == WAITING_RUNID)
        ).all()
    assert len(units) == 8  # one per exposure of the runid


async def test_the_demo_console_tells_the_story_once(tmp_path: Path) -> None:
    """The console ``spica demo`` opens reads ``story.json``: a notification for the corrupt
    exposure (naming the image, node and stack) and one for the first co-add (its seconds),
    each once, whatever the number of reads."""
    from spica_core.demo.story import Corruption, FirstCoadd
    from spica_tui.console.demo_story import DemoConsole
    from spica_tui.console.refresh import ConsoleBackend
    from tests.console_support import fast_config

    cluster = DemoCluster(tmp_path / "demo")
    cluster.up(1)
    try:
        config = fast_config(cluster.config_path)
        prepare_database(config, create=True)
        story = StoryState(since="2026-12-03T08:00:00+00:00")
        story.corrupt = Corruption(
            "811003p", "CFHTLS_W_y_021800-070000_T0003", "mix1", "/n/811003p.fits.fz",
            "/r/811003p.fits.fz", "2026-12-03T08:01:00+00:00",
        )  # fmt: skip
        story.save(cluster.paths.story)
        engine = make_engine(config.db)
        app = DemoConsole(
            config, ConsoleBackend(config, engine), paths=cluster.paths, operator="tester"
        )
        messages: list[str] = []
        notify = app.notify

        def noting(message: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
            messages.append(message)
            notify(message, **kwargs)

        app.notify = noting  # type: ignore[method-assign]
        async with app.run_test(notifications=True) as pilot:
            await pilot.pause(0.3)
            story.first_coadd = FirstCoadd(
                "CFHTLS_W_g_021800-070000_T0003", "mix1", "2026-12-03T08:02:30+00:00", 150.0
            )
            story.save(cluster.paths.story)
            app._story_tick()
            app._story_tick()
            await pilot.pause(0.3)
        engine.dispose()
    finally:
        cluster.down()
    corrupt = [m for m in messages if "811003p was corrupted on mix1" in m]
    first = [m for m in messages if "first co-add completed" in m]
    assert len(corrupt) == 1 and "CFHTLS_W_y_021800-070000_T0003" in corrupt[0], messages
    assert len(first) == 1 and "150 s after the cold start" in first[0]
