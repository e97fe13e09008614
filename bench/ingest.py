"""Benchmark: ``spica ingest`` of 2,000 compressed 36-extension exposures, on one core.

Writes N (default 2,000) synthetic MegaCam-like ``.fits.gz`` exposures of 36 CCD extensions
(``spica_core.synth``, seeded; cached in the temporary directory so later runs skip it), then
ingests them into a fresh SQLite dbspica in this one process and prints files/s, with the
time split into reading (scan + header values) and writing. For comparison it also reads a
sample with astropy's ``fits.open`` (every HDU's header parsed), the obvious alternative.
Target: at least 300 files/s.

    .venv/bin/python bench/ingest.py [--files 2000] [--ccd 32] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from spica_core.config import parse_config
from spica_core.db.engine import make_engine
from spica_core.db.schema import upgrade
from spica_core.ingest.fitsscan import scan_file
from spica_core.ingest.header_map import shipped_maps
from spica_core.ingest.record import read_record
from spica_core.ingest.service import ingest_local
from spica_core.synth.runid import RunidPlan, write_runid

RUNIDS = ("03AF19", "03AL01", "03AL02", "03AL03", "03AQ97")


def exposures(cache: Path, files: int, ccd: int) -> list[Path]:
    """The cached exposures (written on first use), split among five runids."""
    root = cache / f"repo-{files}-{ccd}"
    done = root / ".complete"
    per_runid = -(-files // len(RUNIDS))
    if not done.exists():
        t0 = time.perf_counter()
        for i, runid in enumerate(RUNIDS):
            count = min(per_runid, files - i * per_runid)
            plan = RunidPlan(
                runid, count, seed=i, first_odometer=811001 + i * 10000, ccd_shape=(ccd, ccd)
            )
            write_runid(plan, root, "fits.gz")
        done.touch()
        print(f"generated {files} files in {time.perf_counter() - t0:.1f} s")
    return sorted(root.rglob("*.fits.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--ccd", type=int, default=32, help="CCD side in pixels")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "spica-bench")
    args = parser.parse_args()
    paths = exposures(args.cache, args.files, args.ccd)
    size = sum(p.stat().st_size for p in paths)
    repo = paths[0].parent.parent
    print(f"{len(paths)} files, 36 extensions of {args.ccd}x{args.ccd}, {size / 1e6:.1f} MB")

    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            f'[db]\nurl = "sqlite:///{tmp}/dbspica.sqlite"\n'
            f'[[transfer.repositories]]\nname = "bench"\npath = "{repo}"\n',
            "bench",
        )
        engine = make_engine(config.db, create=True)
        upgrade(engine)
        maps = shipped_maps()
        t0 = time.perf_counter()
        report = ingest_local(engine, config, [str(repo)], maps=maps)
        elapsed = time.perf_counter() - t0
        assert report.count("added") == len(paths) and not report.skipped, report.skipped[:3]
        t0 = time.perf_counter()
        again = ingest_local(engine, config, [str(repo)], maps=maps)
        again_elapsed = time.perf_counter() - t0
        assert again.count("unchanged") == len(paths)
        engine.dispose()

    t0 = time.perf_counter()
    for p in paths:
        read_record(scan_file(p), str(p), maps)
    reading = time.perf_counter() - t0

    from astropy.io import fits

    sample = paths[:200]
    t0 = time.perf_counter()
    for p in sample:
        with fits.open(p) as hdul:
            _ = (len(hdul), hdul[0].header["RUNID"], hdul[1].header["GAIN"])
    astropy_rate = len(sample) / (time.perf_counter() - t0)

    print(f"ingest (fresh dbspica): {len(paths) / elapsed:.0f} files/s ({elapsed:.2f} s)")
    print(f"re-ingest (unchanged):  {len(paths) / again_elapsed:.0f} files/s")
    print(f"  of which reading:     {len(paths) / reading:.0f} files/s (scan + header values)")
    print(f"astropy fits.open:      {astropy_rate:.0f} files/s (all 37 headers parsed)")
    print(f"target: >= 300 files/s -> {'met' if len(paths) / elapsed >= 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
