"""The cache of rendered synthetic exposures: a copy out of it is the bytes a fresh drawing
gives, it is keyed by everything that changes them, and concurrent writers never leave or
read half an entry."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spica_core.synth.cache import ENV, IMAGE, SynthCache, entry_key, sources_digest
from spica_core.synth.sky import SkyModel
from spica_core.synth.truth import truth_path, write_sky_exposure
from tests.test_synth import SPEC as synth_spec

#: A small exposure of the synthetic sky (two CCDs of 96 x 96 native pixels).
SPEC = dataclasses.replace(synth_spec, ccd_shape=(96, 96), ccds=2, pixel_scale=0.187, fwhm=0.8)


def _drawn(spec, directory: Path, container="fits.fz", **kw) -> tuple[bytes, bytes]:
    path = write_sky_exposure(spec, directory, container, **kw)
    return path.read_bytes(), truth_path(path, kw.get("truth_dir")).read_bytes()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(ENV, str(root))
    return root


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in (root / sources_digest()).iterdir())


def test_a_copy_from_the_cache_is_what_drawing_gives(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = _drawn(SPEC, tmp_path / "first", truth_dir=tmp_path / "truth1")
    (entry,) = _entries(cache)
    copied = _drawn(SPEC, tmp_path / "second", truth_dir=tmp_path / "truth2")
    monkeypatch.delenv(ENV)
    fresh = _drawn(SPEC, tmp_path / "fresh")
    assert stored == copied == fresh
    assert _entries(cache) == [entry]
    # The truth goes where it is asked for, beside the image or not.
    assert (tmp_path / "truth2" / "811001p.truth.fits").is_file()
    assert not list((tmp_path / "second").glob("*.truth.fits"))


def test_a_hit_is_copied_not_drawn_and_a_corrupted_copy_spares_the_cache(
    tmp_path: Path, cache: Path
) -> None:
    image, _ = _drawn(SPEC, tmp_path / "a")
    (entry,) = _entries(cache)
    # The entry is what the next call gets: nothing is drawn again.
    (entry / IMAGE).write_bytes(b"from the cache")
    assert _drawn(SPEC, tmp_path / "b")[0] == b"from the cache"
    (entry / IMAGE).write_bytes(image)
    # A test corrupting the file it was given does not reach the cache (copied, not linked).
    given = tmp_path / "c" / "811001p.fits.fz"
    write_sky_exposure(SPEC, given.parent)
    with given.open("r+b") as f:
        f.write(b"CORRUPT")
    assert (entry / IMAGE).read_bytes() == image
    assert _drawn(SPEC, tmp_path / "d")[0] == image


def test_keyed_by_spec_container_and_sky(tmp_path: Path, cache: Path) -> None:
    base = _drawn(SPEC, tmp_path / "base")
    other_sky = _drawn(SPEC, tmp_path / "sky", sky=SkyModel(seed=7))
    plain = _drawn(SPEC, tmp_path / "plain", "fits")
    seeing = _drawn(dataclasses.replace(SPEC, fwhm=1.2), tmp_path / "seeing")
    assert len({base, other_sky, plain, seeing}) == 4
    assert len(_entries(cache)) == 4
    keys = {
        entry_key(SPEC, "fits.fz", SkyModel()),
        entry_key(SPEC, "fits.fz", SkyModel(seed=7)),
        entry_key(SPEC, "fits", SkyModel()),
        entry_key(dataclasses.replace(SPEC, dead_ccds=frozenset({1})), "fits.fz", SkyModel()),
    }
    assert len(keys) == 4


def test_unset_writes_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert SynthCache.from_env() is None
    monkeypatch.setenv(ENV, "")
    assert SynthCache.from_env() is None
    _drawn(SPEC, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "811001p.fits.fz",
        "811001p.truth.fits",
    ]


def test_other_sources_entries_unused_for_a_day_are_dropped_and_nothing_else(
    tmp_path: Path, cache: Path
) -> None:
    """Another checkout's entries, used within the day, are kept; older ones go; our own
    directory is marked as used however old it was."""
    day = 24 * 3600
    stale = cache / ("0" * 20) / "somekey"
    recent = cache / ("1" * 20) / "somekey"
    own = cache / sources_digest()
    for entry in (stale, recent, own):
        entry.mkdir(parents=True)
    old = time.time() - day - 60
    os.utime(stale.parent, (old, old))
    os.utime(own, (old, old))
    os.utime(recent.parent, (old + 120, old + 120))  # a minute within the day
    kept = cache / "notes"
    kept.mkdir()
    os.utime(kept, (old, old))
    found = SynthCache.from_env()
    assert found is not None and found.generation == own
    assert not stale.parent.exists()
    assert recent.is_dir()
    assert kept.is_dir()
    assert time.time() - own.stat().st_mtime < day


_WRITER = """
import dataclasses, sys
from pathlib import Path
from spica_core.synth.truth import write_sky_exposure
from tests.test_synth_cache import SPEC
write_sky_exposure(SPEC, Path(sys.argv[1]))
"""


def test_concurrent_writers_agree_and_leave_one_whole_entry(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parent.parent
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / f"w{n}")], cwd=root)
        for n in range(3)
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0]
    (entry,) = _entries(cache)  # no staging directory left behind
    assert sorted(p.name for p in entry.iterdir()) == ["image", "truth"]
    monkeypatch.delenv(ENV)
    fresh = _drawn(SPEC, tmp_path / "fresh")
    for n in range(3):
        image = tmp_path / f"w{n}" / "811001p.fits.fz"
        assert (image.read_bytes(), truth_path(image).read_bytes()) == fresh
        assert sorted(p.name for p in image.parent.iterdir()) == [
            "811001p.fits.fz",
            "811001p.truth.fits",
        ]
