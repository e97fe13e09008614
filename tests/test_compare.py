"""Release comparison: pairing by tile, the seed's figures and their change, one-release
tiles, the scope; ``spica compare`` and ``spica stack show``'s results on both engines."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session

from spica_core.db.models import Stack, StackResult
from spica_core.errors import SpicaError, UsageError
from spica_core.read_model import Scope
from spica_core.read_model.compare import FIGURE_KEYS, compare_releases, tile_key
from tests.conftest import invoke_spica


def spica(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``spica`` in this process: (exit code, stdout, stderr)."""
    done = invoke_spica(*args, env=env)
    return done.returncode, done.stdout, done.stderr


TILE_U = "CFHTLS_W_u_021410-041200"
TILE_G = "CFHTLS_W_g_021410-041200"
TILE_R = "CFHTLS_W_r_022850-041200"
TILE_I = "CFHTLS_D_y_022559-043000"

#: (name, release, tile recorded?, runid, survey, filter, result figures or None)
STACKS = [
    (
        f"{TILE_U}_T0003",
        "T0003",
        True,
        "03BL01",
        "W",
        "u",
        {
            "scamp_inputs": 12,
            "swarp_inputs": 7,
            "exptime": 4200.0,
            "seeing": 0.92,
            "completeness": 25.1,
            "scamp_internal_rms": 0.047,
            "scamp_external_rms": 0.21,
            "background": 101.5,
        },
    ),
    (
        f"{TILE_U}_T0002",
        "T0002",
        True,
        "03BL01",
        "W",
        "u",
        {
            "scamp_inputs": 10,
            "swarp_inputs": 5,
            "exptime": 3000.0,
            "seeing": 1.0,
            "completeness": 24.8,
            "scamp_internal_rms": 0.042,
            "scamp_external_rms": 0.25,
            "background": 100.0,
        },
    ),
    # No stack.tile: paired on the name without its release.
    (f"{TILE_G}_T0003", "T0003", False, "03BL01", "W", "g", {"seeing": 0.8}),
    (f"{TILE_G}_T0002", "T0002", False, "03BL01", "W", "g", None),
    # One release only, each way; another runid.
    (f"{TILE_R}_T0003", "T0003", True, "04AL02", "W", "r", {"seeing": 0.7}),
    (f"{TILE_I}_T0002", "T0002", True, "03BL01", "D", "y", {"seeing": 0.75}),
    # Another release: never in the comparison.
    (f"{TILE_U}_T0001", "T0001", True, "03BL01", "W", "u", {"seeing": 1.3}),
]


@pytest.fixture
def releases(db_engine):
    with Session(db_engine) as s, s.begin():
        for name, release, has_tile, runid, survey, flt, figures in STACKS:
            stack = Stack(
                name=name,
                step="stack",
                release=release,
                tile=name.removesuffix(f"_{release}") if has_tile else None,
                runid=runid,
                survey=survey,
                filter=flt,
                state="completed" if figures else "planned",
            )
            s.add(stack)
            s.flush()
            if figures:
                s.add(
                    StackResult(
                        stack_id=stack.id,
                        coadd_path=f"/data/mix1/stacks/{name}/{name}.fits",
                        thumbnail_path=f"/data/mix1/stacks/{name}/{name}.tif",
                        step_seconds={"scamp": 12.5, "swarp": 80.0},
                        **figures,
                    )
                )
    return db_engine


def test_tile_key_falls_back_to_the_name_without_its_release() -> None:
    assert tile_key("X_T0003", "TILE", "T0003") == "TILE"
    assert tile_key(f"{TILE_U}_T0003", None, "T0003") == TILE_U
    assert tile_key("805282p_V0003", None, None) == "805282p_V0003"
    assert tile_key("_T0003", None, "T0003") == "_T0003"


def test_pairs_tiles_with_figures_and_change(releases) -> None:
    result = compare_releases(releases, "T0003", "T0002")
    by_tile = {t.tile: t for t in result.tiles}
    assert sorted(by_tile) == sorted([TILE_U, TILE_G, TILE_R, TILE_I])
    u = by_tile[TILE_U]
    assert u.presence == "both"
    assert u.release is not None and u.release.name == f"{TILE_U}_T0003"
    assert u.against is not None and u.against.name == f"{TILE_U}_T0002"
    rms = u.change("scamp_internal_rms")
    assert rms is not None
    assert rms.difference == pytest.approx(0.005)
    assert rms.percent == pytest.approx(100 * 0.005 / 0.042)
    exposure = u.change("exptime")
    assert exposure is not None and exposure.percent == pytest.approx(40.0)
    # Paired on the name; the T0002 side has no results yet: no change.
    g = by_tile[TILE_G]
    assert g.presence == "both" and g.against is not None
    assert g.against.state == "planned" and g.against.figures["seeing"] is None
    assert g.change("seeing") is None
    assert by_tile[TILE_R].presence == "release" and by_tile[TILE_R].against is None
    assert by_tile[TILE_I].presence == "against" and by_tile[TILE_I].release is None
    assert result.count("release") == 3 and result.count("against") == 3


def test_json_keys_are_stable(releases) -> None:
    data = compare_releases(releases, "T0003", "T0002").to_json()
    assert set(data) == {
        "release",
        "against",
        "survey",
        "filter",
        "figures",
        "stacks",
        "only_in_release",
        "only_in_against",
        "tiles",
    }
    assert data["figures"] == list(FIGURE_KEYS)
    assert data["stacks"] == {"release": 3, "against": 3}
    assert data["only_in_release"] == 1 and data["only_in_against"] == 1
    tile = next(t for t in data["tiles"] if t["tile"] == TILE_U)
    assert set(tile) == {"tile", "survey", "filter", "in", "release", "against", "change"}
    assert set(tile["release"]) == {"stack", "state", *FIGURE_KEYS}
    assert set(tile["change"]) == set(FIGURE_KEYS)
    assert tile["change"]["scamp_inputs"] == {"difference": 2.0, "percent": 20.0}
    only = next(t for t in data["tiles"] if t["tile"] == TILE_R)
    assert only["in"] == "release" and only["against"] is None
    assert all(v is None for v in only["change"].values())


def test_survey_and_filter_narrow(releases) -> None:
    deep = compare_releases(releases, "T0003", "T0002", survey="W", require_stacks=False)
    assert TILE_I not in {t.tile for t in deep.tiles}
    u = compare_releases(releases, "T0003", "T0002", filter="u")
    assert [t.tile for t in u.tiles] == [TILE_U]


def test_a_release_without_stacks_is_named(releases) -> None:
    with pytest.raises(SpicaError, match="release T0009: no stacks"):
        compare_releases(releases, "T0009", "T0002")
    with pytest.raises(SpicaError, match="release T0002: no stacks in filter r"):
        compare_releases(releases, "T0003", "T0002", filter="r")
    with pytest.raises(UsageError, match="compared with itself"):
        compare_releases(releases, "T0003", "T0003")


def test_scope_sees_its_runids_only(releases) -> None:
    scoped = compare_releases(
        releases, "T0003", "T0002", scope=Scope.of_runids({"04AL02"}), require_stacks=False
    )
    assert [t.tile for t in scoped.tiles] == [TILE_R]
    with pytest.raises(SpicaError, match="release T0002: no stacks"):
        compare_releases(releases, "T0003", "T0002", scope=Scope.of_runids({"04AL02"}))


def test_stack_detail_result_and_scope_hides_paths(releases) -> None:
    from spica_core.read_model import stack_detail

    detail = stack_detail(releases, f"{TILE_U}_T0003")
    assert detail.result is not None
    assert detail.result["scamp_internal_rms"] == pytest.approx(0.047)
    assert detail.result["coadd_path"].endswith(f"{TILE_U}_T0003.fits")
    assert detail.result["step_seconds"] == {"scamp": 12.5, "swarp": 80.0}
    assert detail.to_json()["result"]["swarp_inputs"] == 7
    scoped = stack_detail(releases, f"{TILE_U}_T0003", Scope.of_runids({"03BL01"}))
    assert scoped.result is not None
    assert scoped.result["coadd_path"] is None and scoped.result["thumbnail_path"] is None
    assert scoped.result["seeing"] == pytest.approx(0.92)
    assert stack_detail(releases, f"{TILE_G}_T0002").result is None


def test_cli_compare(releases, db_url) -> None:
    env = {"SPICA_DB_URL": db_url}
    code, out, err = spica("compare", "--release", "T0003", "--against", "T0002", env=env)
    assert code == 0, err
    assert TILE_U in out and "SCAMP internal RMS" in out
    assert '0.047"' in out and '0.042"' in out and "(+12 %)" in out
    assert "only in T0003" in out and "only in T0002" in out
    code, out, err = spica("compare", "--release", "T0003", "--against", "T0002", "--json", env=env)
    assert code == 0, err
    data = json.loads(out)
    assert data["release"] == "T0003" and len(data["tiles"]) == 4
    code, out, err = spica("compare", "--release", "T0003", "--against", "T0009", env=env)
    assert code == 1
    assert "release T0009: no stacks" in err and out == ""
    code, _, err = spica("compare", "--release", "$(id)", "--against", "T0002", env=env)
    assert code == 2 and "release" in err


def test_cli_stack_show_results(releases, db_url) -> None:
    env = {"SPICA_DB_URL": db_url}
    code, out, err = spica("stack", "show", f"{TILE_U}_T0003", env=env)
    assert code == 0, err
    assert "results" in out and "SCAMP internal RMS" in out and '0.047"' in out
    assert "4200 s" in out and "25.10 mag" in out
    assert f"{TILE_U}_T0003.tif" in out and "1 min 20 s" in out
    code, out, err = spica("stack", "show", f"{TILE_U}_T0003", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["result"]["completeness"] == pytest.approx(25.1)
    code, out, _ = spica("stack", "show", f"{TILE_G}_T0002", "--json", env=env)
    assert code == 0 and json.loads(out)["result"] is None
