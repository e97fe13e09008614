"""Benchmark: one QFin unit per synthetic exposure, seconds each, and the share outside the
AstrOmatic binaries.

Renders ``--exposures`` MegaCam-like exposures (``--ccds`` CCDs of ``--shape`` pixels at
MegaCam's 0.187"/px, default the 36 full 2048 x 4612 CCDs, as CFHT delivers them: ``.fits.fz``)
drawn from SPICA's synthetic sky, then runs each line of the unit that
:func:`spica_core.qfin.commands.qfin_commands` generates, in order, timing each:

* ``source-extractor`` and ``psfex`` as the real binaries (subprocesses, as ``commands.sh``);
* ``spica qfin maps``: the ``spica`` command (``--spica``, default this virtualenv's) when it
  has that subcommand, else the engine function behind it (``write_maps``) in a fresh
  Python process (this file's ``--line`` mode: start-up and imports counted, as a command
  line's would be);
* ``spica qfin record``: the part of it that is QFin's own — reading the tools' outputs
  (``measure_outputs``) and writing the report — in a fresh Python process likewise;
  writing dbspica (one transaction of a few rows) is not timed here.

``--in-process`` runs both ``spica`` lines' functions in the bench's own process instead
(no start-up, astropy already imported): the engine's own cost.

Prints seconds per exposure, time in the binaries and outside, and the share outside
(target < 15%). The default is one whole MegaCam exposure (36 CCDs), the unit QFin works on.
Measured on this 2-core machine, quiet, ``spica qfin maps`` through the installed command:
36 CCDs ``.fits.fz`` 65 s per exposure, maps 8.2 s, record 0.4 s, 13.3% outside (17.1% when
the maps held the whole exposure through astropy); plain ``.fits`` 3.9%; 4 CCDs
``.fits.fz`` 21.8%, where Python's start and imports weigh most.

    .venv/bin/python bench/qfin.py [--exposures 1] [--ccds 36] [--shape 4612x2048]
                                   [--container fits.fz] [--seeing 0.8] [--keep DIR]
                                   [--spica PATH] [--in-process]
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
from spica_core.resources import astromatic_dir  # noqa: E402

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
    from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec
    from spica_core.synth.truth import write_sky_exposure

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


def maps_line(argv: list[str]) -> None:
    """``spica qfin maps IMAGE --image-path P --workdir W``: the engine function behind it."""
    from spica_core.qfin.maps import write_maps

    opts = _options(argv)
    write_maps(Path(opts["--image-path"]), Path(opts["--workdir"]), image=argv[3])


def record_line(argv: list[str]) -> str:
    """``spica qfin record``'s own part: read the tools' outputs, write the report."""
    from spica_core.qfin.measure import measure_outputs
    from spica_core.qfin.report import write_report
    from spica_core.qfin.result import GradeProposal, QfinReport

    opts = _options(argv)
    unit = QfinUnitPaths(image=argv[3], image_path=opts["--image-path"], workdir=opts["--workdir"])
    figures = measure_outputs(
        Path(unit.workdir), image=unit.image, release=opts["--release"],
        image_path=Path(unit.image_path),
    )  # fmt: skip
    out = unit.outputs()
    report = QfinReport(
        figures=figures,
        proposal=GradeProposal(grade="?", reasons=["not graded by the bench"]),
        image_path=unit.image_path,
        weight_path=str(out.weight),
        flag_path=str(out.flag),
        catalog_path=str(out.catalog),
        psf_path=str(out.psf),
    )
    write_report(out.report, report)
    seeing = f"{figures.seeing:.3f}" if figures.seeing is not None else "-"
    return (
        f'  {unit.image}: seeing {seeing}"  sources {figures.sources}  '
        f"PSF stars {figures.psf_stars}  background {figures.background:.1f}"
    )


def run_unit(image_path: Path, workdir: Path, *, spica: Path | None, in_process: bool) -> Timing:
    """Each line of the unit in order: binaries as subprocesses; ``spica`` lines through
    ``spica`` (maps, when given), in a fresh Python process running this file's line
    runner (as a command line would, its imports included), or in this process."""
    image = image_path.name.split(".")[0]
    unit = QfinUnitPaths(image=image, image_path=str(image_path), workdir=str(workdir))
    timing = Timing(image)
    for argv in qfin_commands(unit, release=RELEASE, config_dir=str(astromatic_dir())):
        start = time.perf_counter()
        if argv[0] == "spica":
            kind = argv[2]
            if kind == "maps" and spica is not None:
                subprocess.run([str(spica), *argv[1:]], check=True, capture_output=True)
            elif in_process:
                said = maps_line(argv) if kind == "maps" else record_line(argv)
                if said:
                    print(said, flush=True)
            else:
                done = subprocess.run(
                    [sys.executable, __file__, "--line", *argv],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                if done.stdout.strip():
                    print(done.stdout.rstrip(), flush=True)
            timing.outside[kind] = time.perf_counter() - start
        else:
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{argv[0]} failed on {image}: {done.stderr[-2000:]}")
            timing.binaries[argv[0]] = time.perf_counter() - start
    return timing


def main() -> None:
    if sys.argv[1:2] == ["--line"]:  # one `spica qfin` line, in this fresh process
        argv = sys.argv[2:]
        said = maps_line(argv) if argv[2] == "maps" else record_line(argv)
        if said:
            print(said)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=1)
    parser.add_argument("--ccds", type=int, default=36)
    parser.add_argument("--shape", default="4612x2048", help="CCD pixels, rows x columns")
    parser.add_argument("--container", default="fits.fz", choices=["fits", "fits.gz", "fits.fz"])
    parser.add_argument("--seeing", type=float, default=0.8)
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    parser.add_argument(
        "--in-process", action="store_true",
        help="run the spica lines' engine functions in this process (no start-up, no imports)",
    )  # fmt: skip
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
    how = "in-process" if args.in_process else "in a fresh Python process each"
    print(
        f"QFin bench: {args.exposures} exposures of {args.ccds} CCDs of {ny}x{nx} px "
        f'({args.container}), seeing {args.seeing}"; `spica qfin maps` '
        + (f"through {spica}" if spica else f"(the CLI lacks it) {how}")
        + f"; `spica qfin record`'s reading and report {how}",
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
                                    spica=spica, in_process=args.in_process))  # fmt: skip
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
