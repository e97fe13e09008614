"""Example work for the demo cluster, so a newcomer sees every state within a minute.

A few dozen *example* stacks (step ``example``, names ``example_…``) of short, real shell
commands, spread over the nodes and priorities: quick ones that complete in seconds, long
ones (a line every 45 s) that keep the daemons' slots running, low-priority ones that wait
pending behind them, and one that fails at line 3 with a readable error — a missing master
flat — that the README's walk-through creates before requeueing the stack from the console.
The science pipeline replaces these stacks later; ``spica remove --step example`` clears them.

How they get there is the production path: first the demo repository's synthetic exposures
are written, ingested, planned and copied to the nodes (:mod:`spica_core.demo.repository`:
the runid distribution is the planner's placement); then the stacks' dbspica rows, each
stack's inputs being real images of its runid and filter; then each stack's ``commands.sh``
through the node agent's ``stage`` verb, then ``launch`` through the operations API
(audited). The daemons running on the nodes take them from there; without daemons the stacks
simply stay pending.

Idempotent: rows are made only when dbspica holds no example stack; any example stack still
planned (a seed interrupted before its launch) is staged and launched again; the repository
is written, ingested and placed only where something is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from spica_core.config import NodeConfig, SpicaConfig
from spica_core.db import stack_state
from spica_core.db.models import Image, Node, Runid, Stack, StackFile
from spica_core.demo.repository import RUNIDS, PlacementResult, fill_and_place, filter_letters
from spica_core.executor import ProtocolError

if TYPE_CHECKING:
    from spica_core.executor.agents import AgentExecutor

EXAMPLE_STEP = "example"
SEED_USER = "spica-demo"
#: The failing example: on the third node that is not kept busy (mix3 in the 8-node demo),
#: and the file whose absence makes its line 3 fail.
FAILING_INDEX = 2
FLAT = "raid1/calib/03AL01/flat_r.fits"
TILES = (
    "021410-041200",
    "021800-085200",
    "022200-051200",
    "021955-034400",
    "020600-073200",
    "023000-094500",
)
#: Seconds each line of a long example sleeps; ten lines keep a slot busy ~7 minutes.
LONG_LINE_SECONDS = 45
LONG_LINES = 10


@dataclass(frozen=True)
class ExampleStack:
    name: str
    node: str
    kind: str  # quick | long | waiting | failing
    priority: int
    runid: str
    filter: str
    commands: str

    @property
    def lines(self) -> int:
        return self.commands.count("\n")


#: Input images per example stack, at most.
STACK_INPUTS = 6


@dataclass
class SeedResult(PlacementResult):
    """The repository's placement (exposures written, ingested, planned, copied) and the
    example stacks created, staged and launched."""

    created: int = 0
    staged: int = 0
    launched: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _quick(name: str, root: str, runid: str, flt: str) -> str:
    out = shlex.quote(f"{root}/raid1/examples/{name}")
    cat = f"{out}/catalogues.txt"
    title = f"example stack {name}: stand-ins for SExtractor, SCAMP, SWarp on {runid} ({flt})"
    return (
        "\n".join(
            [
                f"echo {shlex.quote(title)}",
                f"mkdir -p {out}",
                f'for i in 1 2 3; do echo "81100${{i}}p.fits: catalogue $i"; sleep 1; done > {cat}',
                f"sort -r {cat} | tee {out}/sorted.txt",
                f"head -c 200000 /dev/zero > {out}/{name}.fits",
                f'echo "co-added: $(wc -c < {out}/{name}.fits) bytes"',
            ]
        )
        + "\n"
    )


def _long(name: str, root: str) -> str:
    out = shlex.quote(f"{root}/raid1/examples/{name}")
    title = f"example stack {name}: a long co-add, one chunk every {LONG_LINE_SECONDS} s"
    lines = [f"echo {shlex.quote(title)}", f"mkdir -p {out}"]
    lines += [
        f'sleep {LONG_LINE_SECONDS} && echo "chunk {k}/{LONG_LINES}" | tee -a {out}/chunks.txt'
        for k in range(1, LONG_LINES + 1)
    ]
    lines.append(f"head -c 500000 /dev/zero > {out}/{name}.fits")
    return "\n".join(lines) + "\n"


def _failing(name: str, root: str) -> str:
    out = shlex.quote(f"{root}/raid1/examples/{name}")
    flat = shlex.quote(f"{root}/{FLAT}")
    calib = shlex.quote(f"{root}/{FLAT.rsplit('/', 1)[0]}")
    message = (
        f"missing master flat {FLAT} on this node: put the flat there "
        "(in the demo any non-empty file will do), then requeue the stack"
    )
    return (
        "\n".join(
            [
                f"echo {shlex.quote(f'example stack {name}: flat-fielding 03AL01 r-band images')}",
                f"mkdir -p {out} {calib}",
                f"test -s {flat} || {{ echo {shlex.quote(message)} >&2; exit 2; }}",
                f'echo "flat-fielded with $(wc -c < {flat}) bytes of master flat"',
                f"head -c 100000 /dev/zero > {out}/{name}.fits",
            ]
        )
        + "\n"
    )


def example_stacks(config: SpicaConfig) -> list[ExampleStack]:
    """The examples for this cluster's nodes (deterministic: same nodes, same stacks)."""
    nodes: list[NodeConfig] = list(config.nodes)
    if not nodes:
        return []
    busy = {n.name for n in nodes[-2:]} if len(nodes) >= 4 else set()
    out: list[ExampleStack] = []
    counter = 0

    def add(node: NodeConfig, kind: str, priority: int) -> None:
        nonlocal counter
        tile = TILES[counter % len(TILES)]
        runid = RUNIDS[(counter + nodes.index(node)) % len(RUNIDS)]
        letters = filter_letters(runid)
        flt = letters[counter % len(letters)]
        survey = "D" if kind == "long" else "W"
        name = f"example_{survey}_{flt}_{tile}_{node.name}_{counter:02d}"
        if kind == "long":
            commands = _long(name, node.root)
        elif kind == "failing":
            name, runid, flt = f"example_W_r_{tile}_{node.name}_flat", "03AL01", "r"
            commands = _failing(name, node.root)
        else:
            commands = _quick(name, node.root, runid, flt)
        out.append(ExampleStack(name, node.name, kind, priority, runid, flt, commands))
        counter += 1

    calm = [n for n in nodes if n.name not in busy]
    failing = calm[min(FAILING_INDEX, len(calm) - 1)]
    for index, node in enumerate(nodes):
        if node.name in busy:
            add(node, "long", 9)
            add(node, "long", 8)
            add(node, "waiting", 1)
            continue
        add(node, "long", 5 + index % 3)
        for k in range(3):
            add(node, "quick", 2 + (index + k) % 5)
        if node is failing:
            add(node, "failing", 4)
    return out


def _has_examples(session: Session) -> bool:
    count = session.scalar(
        select(func.count()).select_from(Stack).where(Stack.step == EXAMPLE_STEP)
    )
    return bool(count)


def _inputs(session: Session) -> dict[tuple[str, str], list[Image]]:
    """The demo's images per (runid, filter letter), by file name."""
    rows = session.execute(
        select(Image, Runid.name).join(Runid, Image.runid_id == Runid.id).order_by(Image.filename)
    )
    found: dict[tuple[str, str], list[Image]] = {}
    for image, runid in rows:
        letter = (image.filter or "").split(".")[0]
        found.setdefault((runid, letter), []).append(image)
    return found


def _create_rows(engine: Engine, examples: list[ExampleStack]) -> int:
    """Stacks (planned) with the ingested images of their runid and filter as inputs, in
    one transaction; 0 if seeded."""
    with Session(engine) as session, session.begin():
        if _has_examples(session):
            return 0
        nodes = {n.name: n for n in session.scalars(select(Node))}
        inputs = _inputs(session)
        for i, example in enumerate(examples):
            node = nodes.get(example.node)
            stack = stack_state.create_planned(
                session,
                name=example.name,
                step=EXAMPLE_STEP,
                survey="example",
                filter=example.filter,
                release="T0003",
                runid=example.runid,
                node=node,
                priority=example.priority,
                lines=example.lines,
            )
            images = inputs.get((example.runid, example.filter), [])
            for image in images[i % 2 :][:STACK_INPUTS]:
                stack.files.append(StackFile(image=image, role="swarp"))
    return len(examples)


def _planned(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Stack.name)
                .where(Stack.step == EXAMPLE_STEP, Stack.state == "planned")
                .order_by(Stack.priority.desc(), Stack.name)
            )
        )


async def seed_examples(
    config: SpicaConfig, engine: Engine, executor: AgentExecutor, *, user: str = SEED_USER
) -> SeedResult:
    """Fill and place the demo repository, create the example stacks once, stage their
    commands and launch them."""
    from spica_core.operations import OpAction, OperationRequest, Operations, Selection

    placed = await fill_and_place(config, engine, executor.snapshot, executor)
    result = SeedResult(**dataclasses.asdict(placed))
    examples = example_stacks(config)
    result.created = await asyncio.to_thread(_create_rows, engine, examples)
    planned = await asyncio.to_thread(_planned, engine)
    if not planned:
        return result
    by_name = {e.name: e for e in examples}
    ready: list[str] = []
    for name in planned:
        example = by_name.get(name)
        if example is None:
            continue
        try:
            await executor.stage(example.node, name, example.commands.encode("utf-8"))
        except ProtocolError as exc:
            result.problems.append(f"{name}: node {example.node}: {exc.message}")
            continue
        except Exception as exc:  # node down: the stack stays planned, a later seed retries
            result.problems.append(f"{name}: node {example.node}: {exc}")
            continue
        result.staged += 1
        ready.append(name)
    if ready:
        ops = Operations(config, engine, executor)
        request = OperationRequest(OpAction.LAUNCH, Selection(names=tuple(ready)), user=user)
        plan = await ops.plan(request)
        for item in await ops.apply(plan):
            if item.ok:
                result.launched += 1
            else:
                result.problems.append(f"{item.stack}: {item.message}")
    return result


def seed_demo(config: SpicaConfig, *, user: str = SEED_USER) -> SeedResult:
    """:func:`seed_examples` for a command line: its own engine, pool and event loop."""
    from spica_core.db.engine import make_engine
    from spica_core.executor.agents import AgentExecutor

    engine = make_engine(config.db)

    async def run() -> SeedResult:
        async with AgentExecutor.over_ssh(config) as executor:
            return await seed_examples(config, engine, executor, user=user)

    try:
        return asyncio.run(run())
    finally:
        engine.dispose()
