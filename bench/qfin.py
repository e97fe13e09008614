"""Benchmark: one QFin unit per synthetic exposure, seconds each, and the share outside the
AstrOmatic binaries.

Renders ``--exposures`` MegaCam-like exposures (``--ccds`` CCDs of ``--shape`` pixels at
MegaCam's 0.187"/px, default 4 full 2048 x 4612 CCDs, as CFHT delivers them: ``.fits.fz``)
drawn from SPICA's synthetic sky, then runs each line of the unit that
:func:`spica_core.qfin.commands.qfin_commands` generates, in order, timing each:

* ``source-extractor`` and ``psfex`` as the real binaries (subprocesses, as ``commands.sh``);
* ``spica qfin maps``: the ``spica`` command (``--spica``, default this virtualenv's) when it
  has that subcommand (a fresh process, its start-up included), else the same engine
  function in-process (said so);
* ``spica qfin record``: the part of it that is QFin's own — reading the tools' outputs
  (``measure_outputs``) and writing the report — in-process; writing dbspica is one
  transaction of a few rows and is not timed here.

Prints seconds per exposure, time in the binaries and outside, and the share outside
(target < 15%).

    .venv/bin/python bench/qfin.py [--exposures 3] [--ccds 4] [--shape 4612x2048]
                                   [--container fits.fz] [--seeing 0.8] [--keep DIR]
                                   [--spica PATH]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spica_core.qfin.commands import QfinUnitPaths, qfin_commands  # noqa: E402
from spica_core.qfin.maps import write_maps  # noqa: E402
from spica_core.qfin.measure import measure_outputs  # noqa: E402
from spica_core.qfin.report import write_report  # noqa: E402
from spica_core.qfin.result import GradeProposal, QfinReport  # noqa: E402
from spica_core.resources import astromatic_dir  # noqa: E402
from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec  # noqa: E402
from spica_core.synth.truth import write_sky_exposure  # noqa: E402

SPICA = Path(sys.executable).parent / "spica"
RELEASE = "T0001"


@dataclass
class Timing:
    """Seconds of one exposure's unit, per line kind."""

    image: str
    binaries: dict[str, float] = field(default_factory=dict)
    outside: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.binaries.values()) + sum(self.outside.values())

    @property
    def inside(self) -> float:
        return sum(self.binaries.values())

    @property
    def out(self) -> float:
        return sum(self.outside.values())


def spica_has_maps(spica: Path) -> bool:
    """Whether ``spica`` runs ``qfin maps`` (the QFin command line)."""
    if not spica.exists():
        return False
    done = subprocess.run(
        [str(spica), "qfin", "maps", "--help"], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0


def render(directory: Path, count: int, ccds: int, shape: tuple[int, int], container: str,
           seeing: float) -> list[Path]:  # fmt: skip
    paths = []
    for n in range(count):
        spec = ExposureSpec(
            filename=f"{900001 + n}p",
            runid="26BQ01",
            qrunid="26BQ01",
            filter="r.MP9601",
            object="w1.+0+0",
            ra_deg=34.5 + 0.3 * n,  # a field of its own each: their own stars
            dec_deg=-7.0,
            exptime=300.0,
            start=datetime(2026, 8, 3, 8, n, tzinfo=UTC),
            airmass=1.2,
            ccd_shape=shape,
            ccds=ccds,
            pixel_scale=NATIVE_SCALE,
            fwhm=seeing,
        )
        paths.append(
            write_sky_exposure(spec, directory, container, truth_dir=directory / "truth")  # type: ignore[arg-type]
        )
    return paths


def _options(argv: list[str]) -> dict[str, str]:
    rest = argv[4:]
    return dict(zip(rest[0::2], rest[1::2], strict=True))


def run_unit(image_path: Path, workdir: Path, *, spica: Path | None) -> Timing:
    image = image_path.name.split(".")[0]
    unit = QfinUnitPaths(image=image, image_path=str(image_path), workdir=str(workdir))
    timing = Timing(image)
    for argv in qfin_commands(unit, release=RELEASE, config_dir=str(astromatic_dir())):
        start = time.perf_counter()
        if argv[:3] == ["spica", "qfin", "maps"]:
            if spica is not None:
                subprocess.run([str(spica), *argv[1:]], check=True, capture_output=True)
            else:
                opts = _options(argv)
                write_maps(Path(opts["--image-path"]), Path(opts["--workdir"]), image=argv[3])
            timing.outside["maps"] = time.perf_counter() - start
        elif argv[:3] == ["spica", "qfin", "record"]:
            opts = _options(argv)
            workdir_arg = Path(opts["--workdir"])
            figures = measure_outputs(
                workdir_arg, image=argv[3], release=opts["--release"],
                image_path=Path(opts["--image-path"]),
            )  # fmt: skip
            out = unit.outputs()
            report = QfinReport(
                figures=figures,
                proposal=GradeProposal(grade="?", reasons=["not graded by the bench"]),
                image_path=str(image_path),
                weight_path=str(out.weight),
                flag_path=str(out.flag),
                catalog_path=str(out.catalog),
                psf_path=str(out.psf),
            )
            write_report(out.report, report)
            timing.outside["record"] = time.perf_counter() - start
            print(
                f'  {image}: seeing {figures.seeing:.3f}"  sources {figures.sources}  '
                f"PSF stars {figures.psf_stars}  background {figures.background:.1f}",
                flush=True,
            )
        else:
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{argv[0]} failed on {image}: {done.stderr[-2000:]}")
            timing.binaries[argv[0]] = time.perf_counter() - start
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=3)
    parser.add_argument("--ccds", type=int, default=4)
    parser.add_argument("--shape", default="4612x2048", help="CCD pixels, rows x columns")
    parser.add_argument("--container", default="fits.fz", choices=["fits", "fits.gz", "fits.fz"])
    parser.add_argument("--seeing", type=float, default=0.8)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    parser.add_argument(
        "--spica", type=Path, default=SPICA,
        help="the spica command running `qfin maps` (default: this virtualenv's)",
    )  # fmt: skip
    args = parser.parse_args()
    ny, nx = (int(v) for v in args.shape.lower().split("x"))
    for tool in ("source-extractor", "psfex"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (./run setup, or apt-get install {tool})")
    root = args.keep or Path(tempfile.mkdtemp(prefix="spica-bench-qfin-"))
    root.mkdir(parents=True, exist_ok=True)
    spica = args.spica if spica_has_maps(args.spica) else None
    print(
        f"QFin bench: {args.exposures} exposures of {args.ccds} CCDs of {ny}x{nx} px "
        f'({args.container}), seeing {args.seeing}"; `spica qfin maps` '
        + (f"through {spica}" if spica else "in-process (the CLI lacks it)")
        + "; `spica qfin record`'s reading and report in-process",
        flush=True,
    )
    start = time.perf_counter()
    images = render(root / "raw", args.exposures, args.ccds, (ny, nx), args.container,
                    args.seeing)  # fmt: skip
    print(f"rendered in {time.perf_counter() - start:.1f} s", flush=True)
    timings = []
    try:
        for path in images:
            timings.append(run_unit(path, root / "qfin" / path.name.split(".")[0],
                                    spica=spica))  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'image':>10} {'total s':>8} {'sex s':>7} {'psfex s':>8} {'maps s':>7} "
          f"{'record s':>9} {'outside':>8}")  # fmt: skip
    for t in timings:
        print(
            f"{t.image:>10} {t.total:8.2f} {t.binaries['source-extractor']:7.2f} "
            f"{t.binaries['psfex']:8.2f} {t.outside['maps']:7.2f} {t.outside['record']:9.2f} "
            f"{t.out / t.total:8.1%}"
        )
    total = sum(t.total for t in timings)
    inside = sum(t.inside for t in timings)
    outside = sum(t.out for t in timings)
    print(
        f"per exposure: {total / len(timings):.2f} s; in the binaries {inside:.2f} s, "
        f"outside {outside:.2f} s; share outside {outside / total:.1%} (target < 15%)"
    )


if __name__ == "__main__":
    main()
