"""The console's QFin screen with Pilot, over a demo cluster (real SSH nodes, daemons off) and
its SQLite dbspica seeded with images in every QF state and their QFin units: the figures
per runid and the breakdowns are the seeded rows (counted here from the seed), the search by
seeing finds the right images, grading with a comment from the list writes the image and the
audit row, a read-only console offers no grading, and ``t`` shows a unit's log from its node.
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from spica_core.db.engine import make_engine
from spica_core.db.models import Image, OperatorAction
from spica_core.db.setup import prepare_database
from spica_core.demo.cluster import DemoCluster
from spica_core.errors import SpicaError
from spica_core.read_model.qfin import NONE_LABEL, NOT_GRADED
from tests.console_support import (
    console_app,
    fast_config,
    make_stack,
    open_from_palette,
    settled,
    until,
)
from tests.qfin_world import RUNIDS, SeedImage, images, seed

pytestmark = pytest.mark.timeout(600)

NODES = ("mix1", "mix2")
UNIT_LOG = "psfex: PSF model of {image}: 36 stars, FWHM 0.71 arcsec\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("qfin") / "cluster")
    try:
        cluster.up(len(NODES), daemons=False)
        config = fast_config(cluster.config_path)
        prepare_database(config, create=True)
        engine = make_engine(config.db)
        seeded = images(NODES)
        for im in seeded:
            if im.unit_state == "running" and im.node is not None and im.unit is not None:
                # the unit's files on its node, as the daemon leaves a running one
                root = cluster.node_root(im.node)
                make_stack(root, engine, im.unit, im.node, "running")
                log = root / "stacks" / im.unit / "logs" / "002.log"
                log.write_text(UNIT_LOG.format(image=im.name))
        seed(engine, seeded)
        engine.dispose()
        yield cluster, seeded
    finally:
        if cluster.exists():
            cluster.down()


@pytest.fixture
def seeded(world) -> list[SeedImage]:
    return world[1]


@pytest.fixture
def config(world):
    return fast_config(world[0].config_path)


@pytest.fixture
def engine(config):
    made = make_engine(config.db)
    try:
        yield made
    finally:
        made.dispose()


def cells(table, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


def column(table, key: str, title: str) -> str:
    return cells(table, key)[[c.title for c in table.columns].index(title)]


async def open_qfin(pilot, runids: int = len(RUNIDS)):
    from spica_tui.console.screens.dashboard import DashboardScreen
    from spica_tui.console.screens.qfin import QfinScreen

    await until(pilot, lambda: isinstance(pilot.app.screen, DashboardScreen), "the dashboard")
    await pilot.press("f")
    await until(pilot, lambda: isinstance(pilot.app.screen, QfinScreen), "the QFin screen")
    screen = pilot.app.screen
    table = screen.query_one("#runids")
    await until(pilot, lambda: table.row_count == 1 + runids, "the runids")
    return screen


async def search(pilot, screen, **fields: str):
    """Fill the form's inputs (``seeing_min="0.8"``), press enter, wait for the results."""
    from textual.widgets import Input

    before = screen.query_one("#results-title").render()
    for name, value in fields.items():
        field = screen.query_one(f"#{name.replace('_', '-')}", Input)
        field.focus()
        field.value = ""
        await pilot.press(*value)
    await pilot.press("enter")
    await until(
        pilot,
        lambda: (
            "found" in str(screen.query_one("#results-title").render())
            and screen.query_one("#results-title").render() != before
        ),
        "the search results",
    )
    return screen.query_one("#results")


def figures(seeded: list[SeedImage], runid: str | None) -> list[str]:
    """A runid's row as the screen shows it, counted from the seed."""
    mine = [i for i in seeded if runid is None or i.runid == runid]
    counts = (
        len(mine),
        sum(1 for i in mine if i.node is not None),
        sum(1 for i in mine if i.node is None),
        sum(1 for i in mine if i.qf_status == "failed" or i.open_problem),
        sum(1 for i in mine if i.qf_status == "done"),
        sum(1 for i in mine if i.unit_state == "running"),
        sum(1 for i in mine if i.unit_state in ("planned", "pending")),
    )
    return [str(n) for n in counts]


async def test_summary_breakdowns_and_units_running(config, seeded) -> None:
    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        runids = screen.query_one("#runids")
        assert runids.row_keys == ("", *sorted(RUNIDS))
        assert cells(runids, "")[1:] == figures(seeded, None)
        for runid in RUNIDS:
            assert cells(runids, runid) == [runid, *figures(seeded, runid)]

        # the selector: the second runid's page
        runids.focus()
        await pilot.press("down", "down")
        runid = sorted(RUNIDS)[1]
        summary = screen.query_one("#summary")
        await until(pilot, lambda: f"Runid {runid}" in str(summary.render()), "its summary")
        received, _, waiting, problems, done, running, _ = figures(seeded, runid)
        assert str(summary.render()).startswith(
            f"Runid {runid}: {received} images from data transfer "
            f"({waiting} still in the repository), {problems} images with problems, "
            f"{done} QF images, {running} in progress"
        )
        mine = [i for i in seeded if i.runid == runid]
        by_filter = screen.query_one("#bd-filter")
        await until(
            pilot,
            lambda: sum(int(cells(by_filter, k)[1]) for k in by_filter.row_keys) == len(mine),
            "the runid's breakdowns",
        )
        for name, want in (
            ("filter", Counter(i.filter for i in mine)),
            ("node", Counter(i.node or NONE_LABEL for i in mine)),
            ("grade", Counter(i.grade or NOT_GRADED for i in mine)),
            ("object", Counter(i.object for i in mine)),
        ):
            table = screen.query_one(f"#bd-{name}")
            assert {k: int(cells(table, k)[1]) for k in table.row_keys} == want, name

        # QF in progress: every runid's units running, with node and partition
        units = screen.query_one("#running")
        want = {i.unit: i for i in seeded if i.unit_state == "running"}
        assert set(units.row_keys) == set(want) and len(want) >= 3
        assert str(screen.query_one("#running-title").render()) == f"QF in progress… ({len(want)})"
        for unit, im in want.items():
            row = cells(units, unit)  # type: ignore[arg-type]
            assert row[:7] == [im.name, im.runid, im.filter, im.object, im.node, im.partition, unit]
        await settled(pilot)


async def test_search_by_seeing_range(config, seeded) -> None:
    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        results = await search(pilot, screen, seeing_min="0.8", seeing_max="1.2")
        want = sorted(
            (i.runid, i.name) for i in seeded if i.seeing is not None and 0.8 <= i.seeing <= 1.2
        )
        assert 3 <= len(want) < len([i for i in seeded if i.seeing is not None])
        assert list(results.row_keys) == [name for _, name in want]
        for _, name in want:
            im = next(i for i in seeded if i.name == name)
            assert column(results, name, "seeing") == f"{im.seeing:.2f}"
        # a bad range: said, the last results kept
        await search_refused(pilot, screen, "seeing-min", "2")
        assert list(results.row_keys) == [name for _, name in want]
        # another runid selected: the (last good) search within it
        runid = sorted(RUNIDS)[0]
        screen.query_one("#runids").focus()
        await pilot.press("down")
        title = screen.query_one("#results-title")
        await until(pilot, lambda: f"found in {runid}" in str(title.render()), "the runid's")
        assert list(results.row_keys) == [name for r, name in want if r == runid]


async def search_refused(pilot, screen, field: str, value: str) -> None:
    from textual.widgets import Input

    notes = len(pilot.app._notifications)
    box = screen.query_one(f"#{field}", Input)
    box.focus()
    box.value = ""
    await pilot.press(*value, "enter")
    await until(pilot, lambda: len(pilot.app._notifications) > notes, "the refusal")
    note = list(pilot.app._notifications)[-1]
    assert "seeing" in note.message and "larger than MAX" in note.message


def graded(engine, names: list[str]) -> dict[str, tuple[str | None, str | None, str | None]]:
    with Session(engine) as s:
        rows = s.execute(
            select(Image.filename, Image.grade, Image.grade_comment, Image.graded_by).where(
                Image.filename.in_(names)
            )
        ).all()
    return {name: (grade, comment, by) for name, grade, comment, by in rows}


async def test_grading_marked_images_with_a_comment_from_the_list(config, engine, seeded) -> None:
    from textual.widgets import Button, Select

    from spica_core.qfin.grading import COMMENTS
    from spica_tui.console.grade_modal import GradeImages

    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        results = await search(pilot, screen, exptime_min="600", exptime_max="600")
        done = [k for k in results.row_keys if column(results, k, "QF") == "done"]
        first, second = done[:2]
        results.focus()
        results.move_to(results.row_keys.index(first))
        await pilot.press("space")
        results.move_to(results.row_keys.index(second))
        await pilot.press("space")
        assert screen.marked == {first, second}
        assert column(results, first, " ") == "●"

        # cancelled: nothing changes
        before = graded(engine, [first, second])
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, GradeImages), "the grade modal")
        assert app.screen.query_one("#confirm", Button).disabled
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the modal closed")
        assert graded(engine, [first, second]) == before

        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, GradeImages), "the grade modal")
        modal = app.screen
        modal.query_one("#grade", Select).value = "C"
        modal.query_one("#comment", Select).value = COMMENTS[0]
        await until(pilot, lambda: not modal.query_one("#confirm", Button).disabled, "Grade on")
        await pilot.click("#confirm")
        await until(
            pilot,
            lambda: (
                graded(engine, [first, second])
                == {n: ("C", COMMENTS[0], "tester") for n in (first, second)}
            ),
            "the grades in dbspica",
        )
        await until(
            pilot,
            lambda: (
                column(results, first, "grade") == "C"
                and column(results, second, "comment") == COMMENTS[0]
            ),
            "the grades on screen",
        )
        assert screen.marked == set()
    with Session(engine) as s:
        audit = s.scalars(select(OperatorAction).order_by(OperatorAction.id.desc())).first()
    assert audit is not None and audit.user == "tester" and audit.result == "applied"
    assert sorted(audit.targets) == sorted([first, second])
    assert audit.detail["grade"] == "C" and audit.detail["comment"] == COMMENTS[0]


async def test_a_hostile_comment_is_refused_and_nothing_changes(config, engine) -> None:
    from textual.widgets import Input, Select

    from spica_tui.console.grade_modal import GradeImages

    app = console_app(config)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        results = await search(pilot, screen, seeing_min="0.5")
        results.focus()
        name = results.row_keys[results.cursor]
        before = graded(engine, [name])
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, GradeImages), "the grade modal")
        modal = app.screen
        modal.query_one("#grade", Select).value = "A"
        modal.query_one("#free", Input).value = "fine\x1b[2J\x1b]0;owned\x07"
        notes = len(app._notifications)
        await pilot.click("#confirm")
        await until(pilot, lambda: len(app._notifications) > notes, "the refusal")
        note = list(app._notifications)[-1]
        assert note.title == "Grade: refused" and "comment" in note.message
        assert "\x1b" not in note.message
        assert graded(engine, [name]) == before


async def test_read_only_console_offers_no_grading(config, engine) -> None:
    from spica_tui.console.actions import scoped
    from spica_tui.console.grade_modal import GradeImages

    assert "grade" not in {a.name for a in scoped("qfin", read_only=True)}
    assert "grade" in {a.name for a in scoped("qfin", read_only=False)}
    app = console_app(config, read_only=True)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        results = await search(pilot, screen, seeing_min="0.1")
        assert results.row_count
        assert screen.check_action("grade", ()) is False
        results.focus()
        await pilot.pause()
        offered = [b.binding.action for b in screen.active_bindings.values() if b.enabled]
        assert "grade" not in offered and "unit_log" in offered
        await pilot.press("g")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, GradeImages)
    with pytest.raises(SpicaError, match="read-only"):
        await app.qfin.grade([results.row_keys[0]], "A", comment=None, user="tester")


async def test_a_runid_scope_console_shows_its_runid_and_no_nodes(config, seeded) -> None:
    from spica_core.read_model import Scope
    from spica_tui.console.app import SpicaConsole
    from spica_tui.console.refresh import ConsoleBackend

    runid = RUNIDS[0]
    backend = ConsoleBackend(config, make_engine(config.db), scope=Scope.of_runids({runid}))
    app = SpicaConsole(config, backend, operator="tester")
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot, runids=1)
        runids = screen.query_one("#runids")
        assert cells(runids, runid) == [runid, *figures(seeded, runid)]
        assert not screen.query_one("#bd-node").display
        units = screen.query_one("#running")
        mine = {i.unit for i in seeded if i.runid == runid and i.unit_state == "running"}
        assert set(units.row_keys) == mine
        assert all(cells(units, u)[4:6] == ["-", "-"] for u in mine)  # type: ignore[arg-type]
        results = await search(pilot, screen, seeing_min="0")
        assert {column(results, k, "runid") for k in results.row_keys} == {runid}
        assert {column(results, k, "node") for k in results.row_keys} == {"-"}
        assert screen.check_action("grade", ()) is False
        text = app.export_screenshot()
        assert not [n for n in NODES if n in text] and "raid" not in text


async def test_unit_log_from_its_node(config, seeded) -> None:
    from textual.widgets import Static

    from spica_tui.console.screens.qfin import QfinScreen
    from spica_tui.console.screens.stack_detail import StackDetailScreen

    app = console_app(config, read_only=True)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await open_qfin(pilot)
        units = screen.query_one("#running")
        await until(pilot, lambda: units.row_count > 0, "the units running")
        units.focus()
        unit = units.row_keys[units.cursor]
        image = cells(units, unit)[0]
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, StackDetailScreen), "the unit's detail")
        assert app.screen.stack == unit
        log = app.screen.query_one("#log", Static)
        await until(
            pilot, lambda: UNIT_LOG.format(image=image).strip() in str(log.render()), "its log"
        )
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, QfinScreen), "back to QFin")

        # from a search result: its unit found in dbspica
        results = await search(pilot, screen, seeing_max="5")
        results.focus()
        results.move_to(0)
        name = results.row_keys[0]
        want = next(i.unit for i in seeded if i.name == name)
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, StackDetailScreen), "a unit's detail")
        assert app.screen.stack == want


async def test_palette_opens_qfin(config) -> None:
    from spica_tui.console.screens.qfin import QfinScreen

    app = console_app(config, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await open_from_palette(pilot, "QFin", QfinScreen)
