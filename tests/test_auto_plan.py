"""``spica auto`` planning on dbspica (SQLite and MariaDB): tiles and filters, SCAMP and
SWarp inputs, the node holding most bytes, copies, ``.ahead`` cards, image mode, queries;
and the planner's invariants over random skies (hypothesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spica_core.auto.images import AutoImage
from spica_core.auto.plan import AutoQuery, inputs_digest, plan_auto, plan_units
from spica_core.auto.tiles import TileGrid
from spica_core.config import SpicaConfig, load_config, parse_config
from spica_core.errors import ConfigError, UsageError
from spica_core.stacking.unit import StackInput
from tests.auto_support import GRID, RELEASE, add_release, place

T1 = f"CFHTLS_W_r_004000-010000_{RELEASE}"
T2 = f"CFHTLS_W_r_004200-010000_{RELEASE}"
T3 = f"CFHTLS_W_r_004000-003000_{RELEASE}"
T4 = f"CFHTLS_W_r_004200-003000_{RELEASE}"
U1 = f"CFHTLS_W_u_004000-010000_{RELEASE}"


def make_config(base: Path, db_url: str, **release: Any) -> SpicaConfig:
    settings: dict[str, Any] = {
        "db": {"url": db_url},
        "nodes": [
            {"name": "n1", "host": "localhost", "root": str(base / "n1")},
            {"name": "n2", "host": "localhost", "root": str(base / "n2")},
        ],
    }
    path = base / "spica.toml"
    path.write_text(tomli_w.dumps(add_release(settings, base, **release)))
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> SpicaConfig:
    return make_config(tmp_path, db_url)


def sky(db_engine: Any, config: SpicaConfig) -> None:
    """Exposures on and about the first tile (see the names above)."""
    place(db_engine, config, "a1", "n1", ra=10.0, dec=-1.0)
    place(db_engine, config, "a2", "n2", ra=10.1, dec=-1.0, bytes=5000, phot_c=None,
          runid="03BL02")  # fmt: skip
    place(db_engine, config, "a3", "n1", ra=10.25, dec=-0.75)  # the corner of four tiles
    place(db_engine, config, "c1", "n1", ra=9.7, dec=-1.0, partition="raid2")
    place(db_engine, config, "s1", "n1", ra=9.55, dec=-1.0, phot_c=31.0)  # overlaps c1 only
    place(db_engine, config, "r1", "n1", ra=10.0, dec=-1.0, grade="C")
    place(db_engine, config, "r2", "n1", ra=10.0, dec=-1.0, seeing=1.2)
    place(db_engine, config, "u1", "n2", ra=10.0, dec=-1.0, filter="u.MP9301", seeing=1.3)


def by_name(units: list[Any]) -> dict[str, Any]:
    return {u.name: u for u in units}


def test_units_inputs_nodes_and_copies(db_engine: Any, config: SpicaConfig) -> None:
    sky(db_engine, config)
    plan = plan_auto(db_engine, config, AutoQuery())
    units = by_name(plan.units)
    assert set(units) == {T1, T2, T3, T4, U1}
    assert {(r.image, r.reason.split(" (")[0]) for r in plan.refused} == {
        ("r1", "grade C"),
        ("r2", 'seeing 1.2" not below 1.1"'),
    }
    t1 = units[T1]
    assert [i.image for i in t1.unit.swarp_inputs] == ["a1", "a2", "a3", "c1"]
    assert [i.image for i in t1.unit.scamp_inputs] == ["a1", "a2", "a3", "c1", "s1"]
    assert t1.unit.tile.key == T1.removesuffix(f"_{RELEASE}")
    assert t1.unit.tile.size == (1800, 1800) and t1.unit.tile.pixel_scale == 1.0
    # a2 alone is 5000 bytes of the 9000: the unit runs on n2, the others are copied there.
    assert t1.node == "n2" and t1.partition == "raid1"
    root2 = config.node("n2").root
    assert t1.unit.workdir == f"{root2}/raid1/stacks/{RELEASE}/{T1}"
    copies = {c.image: c for c in t1.copies}
    assert set(copies) == {"a1", "a3", "c1", "s1"}
    assert copies["c1"].source_node == "n1"
    assert copies["c1"].source_path == f"{config.node('n1').root}/raid2/03AL01/c1.fits.fz"
    assert copies["c1"].path == f"{root2}/raid1/inputs/03AL01/c1.fits.fz"
    paths = {i.image: i.path for i in t1.unit.inputs}
    assert paths["c1"] == copies["c1"].path
    assert paths["a2"] == f"{root2}/raid1/03BL02/a2.fits.fz"
    assert t1.unit.reference_catalogue.startswith(f"{root2}/raid1/stacks/{RELEASE}/reference-")
    # a2 lacked PHOT_C: the median of the filter's others, flagged as made up.
    aheads = {i.image: dict(i.ahead) for i in t1.unit.inputs}
    keys = {"FILTER": "r.MP9601", "EXPTIME": 300.0, "AIRMASS": 1.2, "PHOT_K": 0.1}
    assert aheads["a2"] == {**keys, "PHOT_C": 30.0, "PHOTFLAG": False}
    assert aheads["a1"] == {**keys, "PHOT_C": 30.0, "PHOTFLAG": True}
    assert aheads["s1"]["PHOT_C"] == 31.0  # its own
    # The corner exposure is the whole of three tiles, on its own node.
    for name in (T2, T3, T4):
        assert [i.image for i in units[name].unit.inputs] == ["a3"]
        assert units[name].node == "n1" and units[name].copies == ()
    assert units[U1].unit.filter == "u.MP9301"  # u's own seeing limit (1.4")
    assert t1.commands[0].startswith(f"spica stack prepare {T1} ")
    assert t1.digest == inputs_digest(t1.unit.inputs)
    assert {(i, r) for i, r in t1.files} >= {(i, "scamp") for i, _ in t1.files}
    assert sum(1 for _, role in t1.files if role == "swarp") == 4
    assert plan.existing == [] and plan.changed == [] and plan.frozen is False


def test_image_mode_one_unit_per_exposure(db_engine: Any, config: SpicaConfig) -> None:
    sky(db_engine, config)
    plan = plan_auto(db_engine, config, AutoQuery(mode="image", filter="r"))
    assert [u.name for u in plan.units] == [f"{n}_{RELEASE}" for n in ("a1", "a2", "a3", "c1",
                                                                        "s1")]  # fmt: skip
    unit = plan.units[1]
    assert unit.unit.mode == "image" and unit.node == "n2" and unit.runid == "03BL02"
    assert unit.unit.tile.key == "a2" and unit.unit.tile.size == (720, 720)
    assert [(i.scamp, i.swarp) for i in unit.unit.inputs] == [(True, True)]


def test_queries(db_engine: Any, config: SpicaConfig) -> None:
    sky(db_engine, config)
    assert [u.name for u in plan_auto(db_engine, config, AutoQuery(filter="u")).units] == [U1]
    assert len(plan_auto(db_engine, config, AutoQuery(survey="W1")).units) == 5
    assert len(plan_auto(db_engine, config, AutoQuery(survey="W")).units) == 5
    with pytest.raises(UsageError, match="--survey D: grid small is survey W with fields W1"):
        plan_auto(db_engine, config, AutoQuery(survey="D"))
    with pytest.raises(ConfigError, match="no release named 'T0009'"):
        plan_auto(db_engine, config, AutoQuery(release="T0009"))


def test_a_unit_the_tools_cannot_take_is_reported_and_the_others_planned(
    db_engine: Any, config: SpicaConfig
) -> None:
    sky(db_engine, config)
    root = config.node("n1").root
    place(db_engine, config, "b1", "n1", ra=10.5, dec=-0.5, path=f"{root}/raid1/a,b/b1.fits")
    plan = plan_auto(db_engine, config, AutoQuery(filter="r"))
    assert [name for name, _ in plan.unplanned] == [T4]
    assert "a,b/b1.fits" in plan.unplanned[0][1] and "split" in plan.unplanned[0][1]
    assert {u.name for u in plan.units} == {T1, T2, T3} and not plan.ok


def test_min_images(tmp_path: Path, db_url: str, db_engine: Any) -> None:
    config = make_config(tmp_path, db_url, rules={"grades": ["A"], "min_images": 2})
    sky(db_engine, config)
    assert [u.name for u in plan_auto(db_engine, config, AutoQuery()).units] == [T1]


def test_a_release_without_reference_catalogue(tmp_path: Path, db_url: str) -> None:
    config = make_config(tmp_path, db_url)
    bare = config.model_copy(
        update={"releases": [config.releases[0].model_copy(update={"reference_catalogue": None})]}
    )
    with pytest.raises(ConfigError, match="release T0003 has no reference_catalogue"):
        plan_auto(None, bare, AutoQuery())  # type: ignore[arg-type]


def test_inputs_digest_is_of_roles_and_names() -> None:
    def one(image: str, scamp: bool, swarp: bool) -> StackInput:
        return StackInput(image, f"/x/{image}", None, 1.0, scamp, swarp)

    assert inputs_digest([one("a", True, True), one("b", True, False)]) == inputs_digest(
        [one("b", True, False), one("a", True, True)]
    )
    assert inputs_digest([one("a", True, True)]) != inputs_digest([one("a", True, False)])


# --------------------------------------------------------------------------- properties

_PROPS = parse_config(
    tomli_w.dumps(
        {
            "db": {"url": "sqlite://"},
            "nodes": [{"name": f"n{i}", "host": "h", "root": f"/r{i}"} for i in range(3)],
            "grids": [GRID],
            "releases": [{"name": RELEASE, "grid": "small", "rules": {"grades": ["A", "B"]}}],
        }
    ),
    "test",
)

positions = st.tuples(
    st.floats(9.6, 11.4), st.floats(-1.4, -0.1), st.sampled_from(["A", "B", "C"]),
    st.integers(0, 2), st.sampled_from(["r.MP9601", "i.MP9702"]),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(positions, min_size=1, max_size=40))
def test_planner_invariants(rows: list[tuple[float, float, str, int, str]]) -> None:
    images = [
        AutoImage(
            id=i,
            filename=f"{700000 + i}p",
            filter=f,
            ra=ra,
            dec=dec,
            exptime=300.0,
            airmass=1.2,
            seeing=0.8,
            grade=grade,
            qf_status="done",
            node=f"n{node}",
            partition="raid1",
            path=f"/r{node}/raid1/03AL01/{700000 + i}p.fits",
            runid="03AL01",
            bytes=1000 + i,
            checksum=None,
            phot_c=None,
            phot_k=None,
            weight_path=None,
            flag_path=None,
        )
        for i, (ra, dec, grade, node, f) in enumerate(rows)
    ]
    units, refused, unplanned = plan_units(_PROPS, AutoQuery(), images, "xxh128:" + "0" * 32)
    assert unplanned == []
    grid = TileGrid(_PROPS.grid("small"))
    field = _PROPS.grid("small").fields[0]
    accepted = {i.filename: i for i in images if i.grade != "C"}
    assert {r.image for r in refused} == {i.filename for i in images if i.grade == "C"}
    in_swarp: set[str] = set()
    for unit in units:
        swarp = {i.image for i in unit.unit.swarp_inputs}
        scamp = {i.image for i in unit.unit.scamp_inputs}
        assert swarp and swarp <= scamp
        in_swarp |= swarp
        letter = unit.name.split("_")[2]
        assert letter in {"r", "y"}
        for name in swarp:  # each SWarp input touches the unit's tile
            image = accepted[name]
            assert image.ra is not None and image.dec is not None
            keys = {t.key(grid.config, letter) for t in grid.touched_by(image.ra, image.dec)}
            assert unit.unit.tile.key in keys
        # The node holds the most input bytes.
        held: dict[str, int] = {}
        for name in scamp:
            node = accepted[name].node or ""
            held[node] = held.get(node, 0) + accepted[name].bytes
        assert held[unit.node] == max(held.values())
        assert {c.image for c in unit.copies} == {n for n in scamp
                                                   if accepted[n].node != unit.node}  # fmt: skip
    for name, image in accepted.items():
        assert image.ra is not None and image.dec is not None
        if field.ra_min <= image.ra <= field.ra_max and field.dec_min <= image.dec <= field.dec_max:
            assert name in in_swarp


def test_a_frozen_release_refuses_changed_tools_or_catalogue(
    tmp_path: Path, db_url: str, db_engine: Any
) -> None:
    """Frozen with stacks: a tool configuration file or the reference catalogue changed is
    refused by name; with no stack left the release may be frozen afresh."""
    import shutil

    from sqlalchemy.orm import Session

    from spica_core.auto.freeze import ReleaseFrozen, check_frozen, freeze, release_settings
    from spica_core.db.models import Stack
    from spica_core.resources import astromatic_dir

    tools = tmp_path / "tools"
    shutil.copytree(astromatic_dir(), tools)
    config = make_config(tmp_path, db_url, tool_config=str(tools))
    release = config.releases[0]
    first = release_settings(config, release, "xxh128:" + "1" * 32)
    with Session(db_engine) as s, s.begin():
        assert check_frozen(s, first) is False
        freeze(s, first, "operator")
        s.add(Stack(name=f"x_{RELEASE}", step="stack", release=RELEASE))
    with Session(db_engine) as s:
        assert check_frozen(s, first) is True
    (tools / "stack.scamp").write_text((tools / "stack.scamp").read_text() + "\n# tuned\n")
    changed = release_settings(config, release, "xxh128:" + "2" * 32)
    with Session(db_engine) as s, pytest.raises(ReleaseFrozen) as info:
        check_frozen(s, changed)
    assert info.value.changed == ["reference_catalogue", "tool_config.stack.scamp"]
    with Session(db_engine) as s, s.begin():
        s.query(Stack).delete()
    with Session(db_engine) as s, s.begin():
        assert check_frozen(s, changed) is False  # no stack: frozen afresh on the next apply
        freeze(s, changed, "operator")
    with Session(db_engine) as s:
        assert check_frozen(s, changed) is True
