"""The demo's whole story, driven step by step in a detached process beside the console.

``spica demo`` opens the console at once and leaves the waiting to this driver
(``python -m spica_core.demo.story --dir D``, started by
:meth:`~spica_core.demo.cluster.DemoCluster.start_story`, log in ``D/logs/story.log``). It
does what an operator and cron would do, through the same calls as the commands:

1. the repository written, ingested, and every runid but the waiting one planned and copied
   to the nodes (:func:`spica_core.demo.repository.fill_and_place`); the release's
   reference catalogue written from the synthetic sky (:mod:`spica_core.demo.release`);
2. ``spica qfin --runid R --launch`` for the placed runids in waves, as many at a time as
   this machine has cores (:func:`qfin_wave`; ``plan_qfin`` / ``apply_qfin``); after the
   first wave is launched, the waiting runid is written and ingested (it stays in the
   repository for the console's "transfer now": written later so that QFin starts sooner);
3. once a runid's QFin units are over, its QFin proposals become its grades
   (``grade_images``, by the demo user);
4. once a wave is over, ``spica auto``: the co-adds planned on the tiles the graded
   exposures cover, added planned, then launched (while the next wave's QFin runs); when
   the last runid's co-adds are planned, one input exposure of one of them is corrupted on
   its node first (:func:`corrupt_exposure`), so that stack fails at that input's ``spica
   stack prepare`` line with a readable error — the README's walk-through replaces the file
   and requeues it;
5. the daemons build the co-adds; the first completed one is recorded with its seconds from
   the cold start (``spica demo status`` prints them, the console says it);
6. the driver then keeps following, as cron would: once the operator has transferred the
   waiting runid (the console's "transfer now"), steps 2 to 4 run for it too.

Every step is idempotent and its progress is in ``D/story.json``, so a driver stopped (``spica
demo down``) or killed resumes where it was; once the story is told, a new driver only
follows (step 6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db.models import Image, Node, Runid, Stack, StackFile
from spica_core.demo.layout import DemoPaths
from spica_core.demo.release import RELEASE
from spica_core.demo.repository import RUNIDS, WAITING_RUNID, repository_path, stock
from spica_core.errors import SpicaError
from spica_core.node.files import atomic_write

log = logging.getLogger("spica.demo.story")

#: Who the story acts as (audit rows, grades).
STORY_USER = "spica-demo"
#: ``stack.step`` of the co-adds (``spica_core.stacking.unit.STACK_STEP``).
STACK_STEP = "stack"
QFIN_STEP = "qfin"
#: The runids the story places (the waiting one stays in the repository).
PLACED = tuple(r for r in RUNIDS if r != WAITING_RUNID)
#: Seconds between two rounds of the story's loop (each reads dbspica a few times).
POLL = 2.0
#: The story gives up after this many seconds without finishing (the reason is recorded).
DEADLINE = 1800.0
#: Bytes of the corrupt exposure overwritten, in its middle.
CORRUPT_BYTES = 4096


@dataclass
class Corruption:
    """The exposure the story corrupted on its node, and how to put it right."""

    image: str
    stack: str
    node: str
    #: The file on the node, and the good copy in the repository.
    path: str
    source: str
    at: str

    @property
    def fix(self) -> str:
        """The shell command that replaces the corrupt file with the repository's copy."""
        import shlex

        return shlex.join(["cp", self.source, self.path])


@dataclass
class FirstCoadd:
    stack: str
    node: str | None
    finished_at: str
    #: From the cold start (``since``) to the stack's completion.
    seconds: float


@dataclass
class StoryState:
    """``D/story.json``."""

    #: The cold start: when ``spica demo`` first ran on this directory.
    since: str
    steps: dict[str, str] = field(default_factory=dict)
    graded: dict[str, str] = field(default_factory=dict)
    #: Runids whose graded exposures ``spica auto`` has planned.
    planned: list[str] = field(default_factory=list)
    corrupt: Corruption | None = None
    first_coadd: FirstCoadd | None = None
    finished: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> StoryState | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable story state: {exc}") from None
        try:
            corrupt = raw.get("corrupt")
            first = raw.get("first_coadd")
            return cls(
                since=str(raw["since"]),
                steps=dict(raw.get("steps") or {}),
                graded=dict(raw.get("graded") or {}),
                planned=list(raw.get("planned") or []),
                corrupt=Corruption(**{k: v for k, v in corrupt.items() if k != "fix"})
                if corrupt
                else None,
                first_coadd=FirstCoadd(**first) if first else None,
                finished=raw.get("finished"),
                error=raw.get("error"),
                notes=list(raw.get("notes") or []),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: malformed story state: {exc!r}") from None

    def save(self, path: Path) -> None:
        data = asdict(self)
        if self.corrupt is not None:
            data["corrupt"]["fix"] = self.corrupt.fix
        atomic_write(path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600, durable=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.corrupt is not None:
            data["corrupt"]["fix"] = self.corrupt.fix
        return data


def read_story(paths: DemoPaths) -> StoryState | None:
    """The story's progress, None before it started (or when its file is unreadable)."""
    try:
        return StoryState.load(paths.story)
    except ValueError:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _utc(when: datetime) -> datetime:
    """dbspica's times are UTC, naive on SQLite."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -- the steps -------------------------------------------------------------------------------


def place(config: SpicaConfig, engine: Engine, runids: Sequence[str]) -> list[str]:
    """Write, ingest and place the repository's runids (step 1); the problems."""
    from spica_core.demo.repository import fill_and_place
    from spica_core.executor.agents import AgentExecutor

    async def run() -> list[str]:
        async with AgentExecutor.over_ssh(config) as executor:
            result = await fill_and_place(
                config, engine, executor.snapshot, executor, runids=tuple(runids)
            )
        log.info(
            "repository: %d written, %d ingested, %d planned, %d copied",
            result.written,
            result.ingested,
            result.planned,
            result.transferred,
        )
        return result.problems

    return asyncio.run(run())


def launch_qfin(config: SpicaConfig, engine: Engine, runid: str) -> tuple[int, list[str]]:
    """``spica qfin --runid RUNID --launch`` (step 2): units for the runid's placed images
    that have none; how many were added, and the problems."""
    from spica_core.qfin.plan import QfinQuery, apply_qfin, plan_qfin

    plan = plan_qfin(engine, config, QfinQuery(runid=runid))
    if not plan.units:
        return 0, []
    done = apply_qfin(engine, config, plan, launch=True, by=STORY_USER)
    problems = [f"{u.unit}: {u.error}" for u in done.units if u.error]
    problems += [f"{unit}: {why}" for unit, why in done.not_launched]
    return sum(u.error is None for u in done.units), problems


def transferred(engine: Engine, runid: str) -> bool:
    """Whether every image of ``runid`` is on a node (none left in the repository)."""
    with Session(engine) as session:
        placed = session.execute(
            select(Image.node_id.is_not(None))
            .join(Runid, Runid.id == Image.runid_id)
            .where(Runid.name == runid)
        ).scalars()
        flags = list(placed)
    return bool(flags) and all(flags)


def qfin_wave(runids: Sequence[str], over: Callable[[str], bool]) -> list[str]:
    """The next runids whose QFin is to run: the first :func:`os.cpu_count` (at least one)
    whose QFin is not over. A runid's units run one at a time (its node's partition lock)
    and the demo's nodes share this machine's cores: so many runids at a time keep every
    core busy, and the first ones' co-adds start sooner than if all ran at once."""
    import os

    width = max(1, os.cpu_count() or 1)
    return [r for r in runids if not over(r)][:width]


def qfin_over(engine: Engine, runid: str) -> bool:
    """Whether every image of ``runid`` on a node has its QFin over: measured, or refused,
    or its unit failed (an operator's case; the story grades the others)."""
    with Session(engine) as session:
        images = session.execute(
            select(Image.id, Image.qf_status)
            .join(Runid, Runid.id == Image.runid_id)
            .where(Runid.name == runid, Image.node_id.is_not(None))
        ).all()
        if not images:
            return False
        open_ids = [i for i, status in images if status not in ("done", "failed")]
        if not open_ids:
            return True
        failed_units = set(
            session.scalars(
                select(StackFile.image_id)
                .join(Stack, Stack.id == StackFile.stack_id)
                .where(
                    StackFile.image_id.in_(open_ids),
                    Stack.step == QFIN_STEP,
                    Stack.state == "failed",
                )
            )
        )
    return set(open_ids) <= failed_units


def grade_runid(engine: Engine, runid: str) -> dict[str, int]:
    """Step 3: the QFin proposal of each measured image of ``runid`` that no operator graded
    becomes its grade (audited, by :data:`STORY_USER`); images per grade."""
    from spica_core.qfin.grading import grade_images

    with Session(engine) as session:
        rows = session.execute(
            select(Image.filename, Image.grade_proposal)
            .join(Runid, Runid.id == Image.runid_id)
            .where(
                Runid.name == runid,
                Image.qf_status == "done",
                Image.graded_by.is_(None),
                Image.grade_proposal.is_not(None),
            )
            .order_by(Image.filename)
        ).all()
    by_grade: dict[str, list[str]] = {}
    for name, proposal in rows:
        by_grade.setdefault(str(proposal), []).append(name)
    for grade, names in sorted(by_grade.items()):
        grade_images(engine, names, grade, comment=None, user=STORY_USER)
    return {grade: len(names) for grade, names in sorted(by_grade.items())}


def plan_stacks(config: SpicaConfig, engine: Engine) -> tuple[int, list[str]]:
    """Step 4: ``spica auto`` over the release: the new units added, planned (the story
    launches them after the corruption); how many, and the problems (a unit not added, a
    unit whose input set changed)."""
    from spica_core.auto.apply import apply_auto
    from spica_core.auto.plan import AutoQuery, plan_auto

    plan = plan_auto(engine, config, AutoQuery(release=None, survey=None, filter=None, mode=None))
    problems = [f"{c.stack}: {c.message}" for c in plan.changed]
    if not plan.units:
        return 0, problems
    applied = apply_auto(engine, config, plan, launch=False, by=STORY_USER)
    problems += [f"{u.name}: {u.error}" for u in applied.units if u.error]
    return sum(u.error is None for u in applied.units), problems


def planned_stacks(engine: Engine) -> list[str]:
    """The release's co-adds still planned, by name."""
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Stack.name)
                .where(Stack.step == STACK_STEP, Stack.release == RELEASE, Stack.state == "planned")
                .order_by(Stack.name)
            )
        )


def corrupt_exposure(
    config: SpicaConfig, engine: Engine, stacks: Sequence[str], runid: str
) -> Corruption | None:
    """Corrupt the last input exposure of ``runid`` (by name) of the last of ``stacks``
    (planned co-adds) holding one on its own node, as a failing disk would: bytes in its
    middle overwritten, its size kept. The stack's ``spica stack prepare`` line of that
    input checks the ingested checksum and fails there, after the lines preparing the
    inputs before it. None when no such stack is planned (yet)."""
    from spica_core.db.models import StackFile
    from spica_core.stacking.unit import SWARP

    root = repository_path(config)
    with Session(engine) as session:
        for name in reversed(sorted(stacks)):
            rows = session.execute(
                select(Image.filename, Image.path, Node.name, Runid.name)
                .join(StackFile, StackFile.image_id == Image.id)
                .join(Stack, Stack.id == StackFile.stack_id)
                .join(Node, Node.id == Stack.node_id)
                .join(Runid, Runid.id == Image.runid_id)
                .where(
                    Stack.name == name,
                    StackFile.role == SWARP,
                    Image.node_id == Node.id,
                    Runid.name == runid,
                )
                .order_by(Image.filename.desc())
            ).all()
            for image, path, node, runid in rows:
                if not path:
                    continue
                source = root / runid / Path(path).name
                if Path(path).is_file() and source.is_file():
                    _damage(Path(path))
                    return Corruption(image, name, node, path, str(source), _iso(_now()))
    return None


def _damage(path: Path) -> None:
    """Overwrite :data:`CORRUPT_BYTES` in the middle of ``path`` with their complement."""
    size = path.stat().st_size
    offset = max(0, size // 2 - CORRUPT_BYTES // 2)
    with open(path, "r+b") as f:
        f.seek(offset)
        chunk = f.read(CORRUPT_BYTES)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in chunk))


def launch_stacks(config: SpicaConfig, engine: Engine, names: Sequence[str]) -> list[str]:
    """``spica launch NAME… --yes`` as the demo user; the problems."""
    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import OpAction, OperationRequest, Operations, Outcome, Selection

    async def run() -> list[str]:
        async with AgentExecutor.over_ssh(config) as executor:
            ops = Operations(config, engine, executor)
            request = OperationRequest(
                OpAction.LAUNCH, Selection(names=tuple(names)), user=STORY_USER
            )
            plan = await ops.plan(request)
            results = await ops.apply(plan)
        return [f"{r.stack}: {r.message}" for r in results if r.outcome is not Outcome.APPLIED]

    return asyncio.run(run())


def first_coadd(engine: Engine, since: datetime) -> FirstCoadd | None:
    """The release's first completed co-add, timed from ``since``."""
    with Session(engine) as session:
        row = session.execute(
            select(Stack.name, Node.name, Stack.finished_at)
            .outerjoin(Node, Node.id == Stack.node_id)
            .where(
                Stack.step == STACK_STEP,
                Stack.release == RELEASE,
                Stack.state == "completed",
                Stack.finished_at.is_not(None),
            )
            .order_by(Stack.finished_at, Stack.name)
            .limit(1)
        ).first()
    if row is None:
        return None
    name, node, finished = row
    if finished is None:
        return None
    done = _utc(finished)
    return FirstCoadd(name, node, _iso(done), round((done - since).total_seconds(), 1))


# -- the driver ------------------------------------------------------------------------------


class _Stop:
    """Set by SIGTERM: the driver stops between two steps."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: object) -> None:
            cls.requested = True

        signal.signal(signal.SIGTERM, handler)


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _Stop.requested and time.monotonic() < deadline:
        time.sleep(min(0.1, seconds))


def _round(
    config: SpicaConfig,
    engine: Engine,
    state: StoryState,
    runids: Sequence[str],
    corrupt: bool,
    mark: Callable[[str, str], None],
    note: Callable[[list[str]], None],
) -> bool:
    """One round of steps 2 to 4, each doing only what is new; True when ``spica auto`` is
    not in this installation (the story then ends with the grades).

    QFin runs in waves (:func:`qfin_wave`) and ``spica auto`` only between two waves, when
    no runid is half measured: QFin grades as it measures, and a tile planned while its
    runid's QFin runs would miss the exposures measured later (``spica auto`` would then
    report its input set changed, and rightly never rewrite it)."""
    for runid in runids:
        if runid not in state.graded and qfin_over(engine, runid):
            grades = grade_runid(engine, runid)
            state.graded[runid] = _iso(_now())
            shown = ", ".join(f"{g}: {n}" for g, n in grades.items()) or "none"
            mark(f"graded {runid}", f"{runid}: QFin over, proposals graded ({shown})")
    measuring = [r for r in runids if f"qfin {r}" in state.steps and r not in state.graded]
    if measuring:
        return False
    due = [r for r in runids if r in state.graded and r not in state.planned]
    if due:
        try:
            planned, problems = plan_stacks(config, engine)
        except ImportError as exc:
            note([f"spica auto is not in this installation ({exc}): no co-adds"])
            return True
        note(problems)
        state.planned += due
        mark("auto", f"spica auto ({', '.join(due)} graded): {planned} co-add(s) planned")
    waiting = planned_stacks(engine)
    if waiting and corrupt and state.corrupt is None:
        state.corrupt = corrupt_exposure(config, engine, waiting, runids[-1])
        if state.corrupt is not None:
            c = state.corrupt
            mark("corrupt", f"{c.image} corrupted on {c.node} ({c.path}), in {c.stack}")
    if waiting:
        note(launch_stacks(config, engine, waiting))
        mark("launched", f"{len(waiting)} co-add(s) launched")
    for runid in qfin_wave(runids, lambda r: r in state.graded):
        added, problems = launch_qfin(config, engine, runid)
        note(problems)
        if not problems:  # else the next round plans what is missing
            mark(f"qfin {runid}", f"QFin of {runid}: {added} unit(s) added and launched")
    if "waiting" not in state.steps:
        written, _ = stock(config, engine, (WAITING_RUNID,))
        mark("waiting", f"{WAITING_RUNID}: {written} exposure(s) wait in the repository")
    return False


def run_story(
    directory: Path,
    *,
    since: datetime | None = None,
    runids: Sequence[str] = PLACED,
    corrupt: bool = True,
    poll: float = POLL,
    deadline: float = DEADLINE,
    follow: bool = False,
) -> StoryState:
    """Run (or resume) the story of the demo in ``directory`` until the release's co-adds
    are launched and the first one completed; the story's state, also in ``story.json``.
    With ``follow`` (the driver's way), go on until stopped: the waiting runid, once an
    operator has transferred it, is measured, graded and stacked like the others."""
    from spica_core.config import load_config
    from spica_core.db.engine import make_engine
    from spica_core.demo.release import write_reference

    paths = DemoPaths.at(directory)
    state = StoryState.load(paths.story) or StoryState(since=_iso(since or _now()))
    if state.finished and not follow:
        log.info("the story is over (%s); nothing to do", state.finished)
        return state
    config = load_config(paths.config)
    engine = make_engine(config.db)
    started = time.monotonic()

    def mark(step: str, message: str) -> None:
        state.steps[step] = _iso(_now())
        log.info("%s", message)
        state.save(paths.story)

    def note(problems: list[str]) -> None:
        for problem in problems:
            log.warning("%s", problem)
            if problem not in state.notes:
                state.notes.append(problem)

    try:
        if "placed" not in state.steps:
            note(place(config, engine, runids))
            mark("placed", f"runids {', '.join(runids)} placed on the nodes")
        if "reference" not in state.steps:
            path = write_reference(paths.directory)
            mark("reference", f"reference catalogue {path}")
        auto_missing = False
        while not _Stop.requested:
            if not state.finished and time.monotonic() - started > deadline:
                state.error = f"the story did not finish within {deadline:.0f} s"
                log.error("%s", state.error)
                break
            told = tuple(runids)
            if WAITING_RUNID not in told and transferred(engine, WAITING_RUNID):
                told += (WAITING_RUNID,)  # the operator's "transfer now"
            try:
                auto_missing |= _round(config, engine, state, told, corrupt, mark, note)
            except SpicaError as exc:  # a node or dbspica away: the next round tries again
                note([f"{type(exc).__name__}: {exc} (tried again)"])
            if state.first_coadd is None:
                state.first_coadd = first_coadd(engine, datetime.fromisoformat(state.since))
                if state.first_coadd is not None:
                    f = state.first_coadd
                    mark(
                        "first co-add",
                        f"first co-add completed: {f.stack} on {f.node}, "
                        f"{f.seconds:.0f} s from the cold start",
                    )
            all_planned = set(runids) <= set(state.planned)
            told_all = auto_missing or (
                all_planned and state.first_coadd and not planned_stacks(engine)
            )
            if told_all and not state.finished:
                state.finished = _iso(_now())
                mark("finished", "the story is told")
            if state.finished and (not follow or auto_missing):
                break
            _sleep(poll)
    finally:
        state.save(paths.story)
        engine.dispose()
    return state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spica_core.demo.story")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--since", type=datetime.fromisoformat, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    _Stop.install()
    try:
        state = run_story(args.dir, since=args.since, follow=True)
    except Exception:
        log.exception("the story stopped")
        return 1
    return 1 if state.error else 0


if __name__ == "__main__":
    sys.exit(main())
