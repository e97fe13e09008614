"""Expanding the operator's paths: recursion, links, loops, and the root a node confines to."""

from __future__ import annotations

import os
from pathlib import Path

from spica_core.ingest.walk import walk_paths


def _tree(tmp_path: Path) -> Path:
    top = tmp_path / "repo"
    (top / "03AF19").mkdir(parents=True)
    (top / "03AF19" / "811001p.fits.gz").write_bytes(b"a")
    (top / "03AF19" / "811002p.fits").write_bytes(b"b")
    (top / "03AF19" / "notes.txt").write_text("not taken in a directory")
    (top / "03AL01" / "deep" / "er").mkdir(parents=True)
    (top / "03AL01" / "deep" / "er" / "812001p.fits.fz").write_bytes(b"c")
    return top


def test_recursive_sorted_and_fits_names_only(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    walked = walk_paths([str(top)])
    assert [Path(p).relative_to(top).as_posix() for p in walked.files] == [
        "03AF19/811001p.fits.gz",
        "03AF19/811002p.fits",
        "03AL01/deep/er/812001p.fits.fz",
    ]
    assert walked.problems == []
    # A file named explicitly is taken whatever its name (and judged later).
    assert walk_paths([str(top / "03AF19" / "notes.txt")]).files == [
        str(top / "03AF19" / "notes.txt")
    ]


def test_links_loops_and_missing_paths(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    os.symlink(top, top / "03AL01" / "deep" / "back-to-top")
    os.symlink("a", top / "b")
    os.symlink("b", top / "a")
    os.symlink("nowhere", top / "dangling.fits")
    os.symlink(top / "03AF19" / "811002p.fits", top / "811002p-again.fits")
    walked = walk_paths([str(top), str(tmp_path / "missing")])
    assert len(walked.files) == 3  # the second link to 811002p.fits is the same file
    problems = {Path(p.path).name: p.reason for p in walked.problems}
    assert problems == {
        "back-to-top": f"directory loop: leads back to {top}",
        "a": "symbolic link loop",
        "b": "symbolic link loop",
        "dangling.fits": "broken symbolic link",
        "missing": "no such file or directory",
    }


def test_confined_to_a_root(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "900001p.fits").write_bytes(b"x")
    os.symlink(outside, top / "03AF19" / "elsewhere")
    os.symlink(outside / "900001p.fits", top / "900001p.fits")
    walked = walk_paths([str(top), str(outside)], inside=str(top))
    assert all(p.startswith(str(top)) for p in walked.files) and len(walked.files) == 3
    reasons = {Path(p.path).name: p.reason for p in walked.problems}
    assert reasons == {
        "elsewhere": f"symbolic link leading out of {top}",
        "900001p.fits": f"symbolic link leading out of {top}",
        "outside": f"leads out of {top}",
    }
