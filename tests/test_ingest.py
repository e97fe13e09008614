"""``spica ingest`` into a real dbspica (SQLite and MariaDB): generated MegaCam-like MEF
exposures and broken ones; rows checked against astropy's own reading of each file."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import SpicaConfig, parse_config
from spica_core.db.models import Image, Runid
from spica_core.errors import UsageError
from spica_core.ingest.service import ingest_local
from spica_core.synth.layout import ExposureSpec
from spica_core.synth.runid import RunidPlan, exposure_specs, write_runid
from spica_core.synth.writer import write_exposure
from tests.conftest import invoke_spica, run_spica_at_a_terminal


def _rel(db_url: str) -> float:
    """Relative precision of dbspica's float columns: DOUBLE on both engines, so an MJD-OBS
    comes back to well under a millisecond (MariaDB's FLOAT kept an hour)."""
    return 1e-12


def _config(repo: Path, db_url: str) -> SpicaConfig:
    return parse_config(
        f'[db]\nurl = "{db_url}"\n[[transfer.repositories]]\nname = "cadc1"\npath = "{repo}"\n',
        "test",
    )


@pytest.fixture(scope="module")
def drawn_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runids, one per container: 4 + 3 + 2 exposures of 36 CCDs, written once."""
    root = tmp_path_factory.mktemp("drawn") / "headervalid"
    write_runid(RunidPlan("03AF19", 4, seed=1), root, "fits")
    write_runid(RunidPlan("03AL01", 3, seed=2, first_odometer=812001), root, "fits.gz")
    write_runid(RunidPlan("03AQ97", 2, seed=3, first_odometer=813001), root, "fits.fz")
    return root


@pytest.fixture
def repo(drawn_repo: Path, tmp_path: Path) -> Path:
    """A copy of the drawn runids of this test's own (tests change and break files)."""
    root = tmp_path / "from_CADC" / "headervalid"
    shutil.copytree(drawn_repo, root)
    return root


def _rows(engine: Engine) -> dict[str, dict[str, object]]:
    with Session(engine) as s:
        images = s.scalars(select(Image).order_by(Image.filename)).all()
        runids = {r.id: r.name for r in s.scalars(select(Runid))}
        return {
            i.filename: {
                **{c.key: getattr(i, c.key) for c in Image.__table__.columns},
                "runid": runids.get(i.runid_id),  # type: ignore[arg-type]
            }
            for i in images
        }


def _totals(engine: Engine) -> dict[str, tuple[int, int]]:
    with Session(engine) as s:
        return {r.name: (r.images, r.bytes) for r in s.scalars(select(Runid))}


def _expected(path: Path) -> dict[str, object]:
    """The row as astropy reads the file (an independent reading)."""
    with fits.open(path) as hdul:
        h, ext = hdul[0].header, hdul[1].header
        n = len(hdul) - 1
    coord = SkyCoord(h["RA"], h["DEC"], unit=(u.hourangle, u.deg))
    begin = Time(f"{h['DATE-OBS']}T{h['UTC-OBS']}", scale="utc")
    return {
        "runid": h["RUNID"], "qrunid": h["QRUNID"], "filter": h["FILTER"],
        "object": h["OBJECT"], "exptime": h["EXPTIME"], "airmass": h["AIRMASS"],
        "phot_c": h["PHOT_C"], "phot_k": h["PHOT_K"], "gain": ext["GAIN"],
        "saturate": ext["SATURATE"], "extensions": n, "mjd_obs": begin.mjd,
        "date_obs": begin.to_datetime().replace(tzinfo=UTC),
        "ra": coord.ra.deg, "dec": coord.dec.deg,
    }  # fmt: skip


def test_rows_match_the_files(repo: Path, db_engine: Engine, db_url: str) -> None:
    report = ingest_local(db_engine, _config(repo, db_url), [str(repo)])
    assert not report.skipped
    assert report.count("added") == 9
    rel = _rel(db_url)
    rows = _rows(db_engine)
    files = sorted(p for p in repo.rglob("*") if p.is_file())
    assert len(rows) == len(files) == 9
    for path in files:
        row = rows[path.name.split(".")[0]]
        for key, value in _expected(path).items():
            if key in ("ra", "dec"):  # from RA_DEG/DEC_DEG; the sexagesimal is to 0.01 s
                assert row[key] == pytest.approx(value, abs=max(0.3 / 3600, rel * 360)), key
            elif key == "mjd_obs":  # 1e-8 day in the header
                assert row[key] == pytest.approx(value, rel=max(rel, 1e-12), abs=2e-8), key
            elif isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=rel), key
            elif key == "date_obs":
                assert abs((row[key] - value).total_seconds()) < 1e-3  # type: ignore[operator]
            else:
                assert row[key] == value, key
        checksum, size = file_checksum(path)
        assert (row["checksum"], row["bytes"]) == (checksum, size)
        assert row["instrument"] == "megaprime"
        assert (row["repository"], row["node_id"], row["partition"]) == ("cadc1", None, None)
        assert row["path"] == str(path)
        assert row["qf_status"] == "new" and row["raw"] is True
        assert isinstance(row["ingested_at"], datetime)
    sizes: dict[str, list[int]] = {}
    for path in files:
        sizes.setdefault(path.parent.name, []).append(path.stat().st_size)
    assert _totals(db_engine) == {k: (len(v), sum(v)) for k, v in sizes.items()}
    assert {t.name: (t.images, t.bytes) for t in report.runids.values()} == _totals(db_engine)


def test_reingest_changes_nothing(repo: Path, db_engine: Engine, db_url: str) -> None:
    config = _config(repo, db_url)
    ingest_local(db_engine, config, [str(repo)])
    before, totals = _rows(db_engine), _totals(db_engine)
    again = ingest_local(db_engine, config, [str(repo / "03AL01"), str(repo)])
    assert again.count("unchanged") == 9 and again.count("added") == again.count("updated") == 0
    assert _rows(db_engine) == before  # ingested_at included
    assert _totals(db_engine) == totals


def test_changed_file_updates_its_row_and_both_runids(
    repo: Path, db_engine: Engine, db_url: str
) -> None:
    config = _config(repo, db_url)
    ingest_local(db_engine, config, [str(repo)])
    with Session(db_engine) as s, s.begin():
        s.scalars(select(Image).where(Image.filename == "811001p")).one().seeing = 0.71
    # 811001p is re-delivered: another runid, another filter, now gzipped.
    (spec,) = [s for s in exposure_specs(RunidPlan("03AF19", 4, seed=1)) if s.filename == "811001p"]
    moved = ExposureSpec(**{**spec.__dict__, "runid": "03AL01", "filter": "z.MP9801"})
    (repo / "03AF19" / "811001p.fits").unlink()
    new = write_exposure(moved, repo / "03AL01", "fits.gz")
    report = ingest_local(db_engine, config, [str(repo)])
    assert [(i.filename, i.outcome) for i in report.ingested if i.outcome != "unchanged"] == [
        ("811001p", "updated")
    ]
    row = _rows(db_engine)["811001p"]
    assert (row["runid"], row["filter"], row["path"]) == ("03AL01", "z.MP9801", str(new))
    assert row["seeing"] == pytest.approx(0.71)  # QFin results are kept
    totals = _totals(db_engine)
    assert totals["03AF19"][0] == 3 and totals["03AL01"][0] == 4
    for runid in ("03AF19", "03AL01"):
        files = list((repo / runid).iterdir())
        assert totals[runid] == (len(files), sum(f.stat().st_size for f in files))


def _broken(repo: Path) -> dict[str, tuple[str | None, str]]:
    """Broken files beside the good ones: name -> (key, reason fragment) expected."""
    bad = repo / "broken"
    bad.mkdir()
    good = next((repo / "03AF19").iterdir()).read_bytes()
    (bad / "900001p.fits").write_bytes(good[: len(good) // 2])
    (bad / "900002p.fits").write_text("SIMPLE? no, a README\n" * 200)
    (bad / "900003p.fits").write_bytes(b"")
    base = next(exposure_specs(RunidPlan("04BL06", 1)))
    for name, overrides in {
        "900004p": {"RUNID": None},
        "900005p": {"RA_DEG": None, "DEC_DEG": None, "RA": "02:6x:00.0"},
        "900006p": {"FILTER": "r.MP9999"},
        "900007p": {"MJD-OBS": "yesterday"},
    }.items():
        spec = ExposureSpec(**{**base.__dict__, "filename": name, "overrides": overrides})
        write_exposure(spec, bad, "fits.gz")
    os.symlink("..", bad / "loop")
    return {
        "900001p.fits": (None, "truncated: the file ends inside the data of HDU"),
        "900002p.fits": (None, "not FITS"),
        "900003p.fits": (None, "empty file"),
        "900004p.fits.gz": ("RUNID", "missing"),
        "900005p.fits.gz": ("RA", "'02:6x:00.0' is not sexagesimal"),
        "900006p.fits.gz": ("FILTER", "'r.MP9999' is not one of u.MP9301"),
        "900007p.fits.gz": ("MJD-OBS", "expected a number, got 'yesterday'"),
        "loop": (None, f"directory loop: leads back to {repo}"),
    }


def test_broken_files_are_reported_and_nothing_of_them_written(
    repo: Path, db_engine: Engine, db_url: str
) -> None:
    expected = _broken(repo)
    report = ingest_local(db_engine, _config(repo, db_url), [str(repo)])
    got = {Path(s.path).name: (s.key, s.reason) for s in report.skipped}
    assert got.keys() == expected.keys()
    for name, (key, fragment) in expected.items():
        assert got[name][0] == key, name
        assert fragment in got[name][1], (name, got[name])
    assert report.count("added") == 9
    rows = _rows(db_engine)
    assert len(rows) == 9 and not any(name.startswith("9000") for name in rows)
    assert "04BL06" not in _totals(db_engine)


def test_paths_outside_repositories_are_a_usage_error(
    repo: Path, tmp_path: Path, db_engine: Engine, db_url: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UsageError, match=re.escape("under no [[transfer.repositories]] path")):
        ingest_local(db_engine, _config(repo, db_url), [str(repo), str(elsewhere)])
    assert _rows(db_engine) == {}


def _cli(repo: Path, db_url: str, *args: str) -> tuple[int, str, str]:
    config = repo.parent / "spica.toml"
    config.write_text(
        f'[[transfer.repositories]]\nname = "cadc1"\npath = "{repo}"\n', encoding="utf-8"
    )
    done = invoke_spica("--config", str(config), "ingest", *args, env={"SPICA_DB_URL": db_url})
    return done.returncode, done.stdout, done.stderr


def test_cli_text_json_and_exit_codes(repo: Path, db_engine: Engine, db_url: str) -> None:
    code, out, err = _cli(repo, db_url, str(repo))
    assert code == 0, err
    assert "9 added, 0 updated, 0 unchanged, 0 skipped" in out
    assert "03AL01" in out and err == ""
    expected = _broken(repo)
    code, out, err = _cli(repo, db_url, "--json", str(repo))
    assert code == 1
    data = json.loads(out)
    assert (data["added"], data["updated"], data["unchanged"]) == (0, 0, 9)
    assert {Path(s["path"]).name for s in data["skipped"]} == expected.keys()
    assert {s["key"] for s in data["skipped"]} >= {"RUNID", "RA", "FILTER", "MJD-OBS", None}
    assert data["runids"] == [] and len(data["files"]) == 9
    assert set(data["files"][0]) == {"path", "filename", "runid", "filter", "outcome"}
    assert err == ""  # no progress bar without a terminal, nothing else on stderr
    code, out, err = _cli(repo, db_url, str(repo / "broken"))
    assert code == 1
    assert "skipped" in err and "RA: '02:6x:00.0' is not sexagesimal" in err
    code, _, err = _cli(repo, db_url, "/nonexistent-dir")
    assert code == 2 and "under no [[transfer.repositories]] path" in err
    code, _, err = _cli(repo, db_url, "--partition", "raid1", str(repo))
    assert code == 2 and "--partition needs --node" in err


def test_progress_bar_only_at_a_terminal(repo: Path, sqlite_url: str, engine_factory) -> None:
    """A rich progress bar on stderr when stderr is a terminal; none with --json."""
    from spica_core.db.schema import upgrade

    upgrade(engine_factory(sqlite_url))
    config = repo.parent / "spica.toml"
    config.write_text(f'[[transfer.repositories]]\nname = "cadc1"\npath = "{repo}"\n')

    def run(*args: str) -> tuple[int, str, bytes]:
        return run_spica_at_a_terminal(
            "--config", str(config), "ingest", *args, env={"SPICA_DB_URL": sqlite_url}
        )

    code, out, terminal = run(str(repo))
    assert code == 0 and "9 added" in out
    assert b"ingest" in terminal and b"9/9" in terminal
    code, out, terminal = run("--json", str(repo))
    assert code == 0 and json.loads(out)["unchanged"] == 9
    assert terminal == b""
