"""A synthetic stack unit, and its lines run here as the node's daemon would run them.

Dithered synthetic MegaCam exposures (:mod:`spica_core.synth`, real pixel scale, a few small
CCDs, pointing errors of a few arcsec), the reference catalogue of the same synthetic sky,
and a tile centred on the first CCD: what :class:`~spica_core.stacking.unit.StackUnit`
``spica auto`` would hand the lines. :func:`run_lines` runs every generated argv as a
subprocess in the work directory, the ``spica`` lines through the installed CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from spica_core.checksum import file_checksum
from spica_core.resources import astromatic_dir
from spica_core.stacking.commands import stack_commands
from spica_core.stacking.unit import StackInput, StackUnit, TileSpec
from spica_core.synth.layout import NATIVE_SCALE, ExposureSpec, ccd_geometry
from spica_core.synth.refcat import write_reference_catalogue
from spica_core.synth.truth import truth_path, write_sky_exposure

if TYPE_CHECKING:
    from sqlalchemy import Engine

TOOLS = ("source-extractor", "scamp", "SWarp", "psfex", "stiff")
#: Dithers (east, north, arcsec) of the exposures about the first pointing.
DITHERS = ((0.0, 0.0), (18.0, 11.0), (-14.0, 20.0), (24.0, -16.0), (-21.0, -12.0))
#: The tile's pixel scale (CFHTLS's) and the co-add's size (pixels).
TILE_SCALE = 0.186
STACK = "CFHTLS_W_r_021800-070000_T0003"


def require_tools() -> None:
    """Skip (fail in CI) unless the real AstrOmatic binaries of a stack are installed."""
    from tests.conftest import require

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    require(
        not missing,
        f"{', '.join(missing)} not installed (./run setup installs them as root; or apt-get "
        "install source-extractor scamp swarp psfex stiff)",
    )


@dataclass
class SyntheticStack:
    """The unit, the exposures' specs and where their truths are."""

    unit: StackUnit
    specs: list[ExposureSpec]
    truths: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)


def synthetic_stack(
    root: Path,
    *,
    dithers: tuple[tuple[float, float], ...] = DITHERS,
    ccds: int = 2,
    ccd_shape: tuple[int, int] = (900, 900),
    tile_pixels: int = 900,
    container: str = "fits.fz",
    fwhm: float = 0.8,
    name: str = STACK,
) -> SyntheticStack:
    """Exposures, reference catalogue and unit under ``root`` (see the module's docstring)."""
    ra0, dec0 = 34.5, -7.0
    raid = root / "raid"
    specs, inputs, truths = [], [], []
    start = datetime(2003, 10, 20, 9, tzinfo=UTC)
    for n, (east, north) in enumerate(dithers):
        dec = dec0 + north / 3600.0
        ra = ra0 + east / 3600.0 / _cos(dec)
        spec = ExposureSpec(
            filename=f"{805282 + n}p", runid="03BQ02", qrunid="03BQ02", filter="r.MP9601",
            object="w1.+0+0", ra_deg=ra, dec_deg=dec, exptime=300.0 + 60.0 * (n % 2),
            start=start + timedelta(minutes=7 * n), airmass=1.1 + 0.05 * n, ccd_shape=ccd_shape,
            ccds=ccds, pixel_scale=NATIVE_SCALE, fwhm=fwhm,
        )  # fmt: skip
        path = write_sky_exposure(spec, raid, container, truth_dir=root / "truth")  # type: ignore[arg-type]
        inputs.append(
            StackInput(
                image=spec.filename,
                path=str(path),
                checksum=file_checksum(path)[0],
                exptime=spec.exptime,
                scamp=True,
                swarp=True,
                # The primary header's PHOT_C, EXPTIME, FILTER… reach the .ahead by
                # themselves; a photometric night is the planner's to say.
                ahead={"PHOTFLAG": True},
            )
        )
        specs.append(spec)
        truths.append(truth_path(path, root / "truth"))
    # The tile: centred on the first CCD of the first pointing.
    geom = ccd_geometry(0, ccd_shape, NATIVE_SCALE)
    dec_t = dec0 + geom.y_offset / 3600.0
    ra_t = ra0 - geom.x_offset / 3600.0 / _cos(dec_t)
    refcat = write_reference_catalogue(root / "refcat" / "T0003.ldac", (ra_t, dec_t), 0.15)
    unit = StackUnit(
        name=name, release="T0003", mode="stack", survey="W", filter="r.MP9601",
        workdir=str(root / "stacks" / name), tile=TileSpec(
            key=name.rsplit("_", 1)[0], ra=ra_t, dec=dec_t, size=(tile_pixels, tile_pixels),
            pixel_scale=TILE_SCALE),
        inputs=tuple(inputs), reference_catalogue=str(refcat), config_dir=str(astromatic_dir()),
    )  # fmt: skip
    return SyntheticStack(unit=unit, specs=specs, truths=truths)


def _cos(dec: float) -> float:
    import math

    return math.cos(math.radians(dec))


def spica_argv(argv: list[str]) -> list[str]:
    """A ``spica`` line as the node runs it: spica's venv first on PATH."""
    if argv[0] != "spica":
        return argv
    return [str(Path(sys.executable).with_name("spica")), *argv[1:]]


def run_lines(
    stack: SyntheticStack,
    *,
    skip: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    until: str | None = None,
) -> None:
    """Each line in order in the work directory (created as the daemon does); a failed line
    raises with its stderr. ``skip``: ``spica stack`` subcommands not run; ``until``: stop
    before the first line of that subcommand or tool."""
    workdir = Path(stack.unit.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    for argv in stack_commands(stack.unit):
        step = argv[2] if argv[0] == "spica" else argv[0]
        if step == until:
            return
        if argv[0] == "spica" and argv[2] in skip:
            continue
        began = time.monotonic()
        done = subprocess.run(spica_argv(argv), cwd=workdir, capture_output=True, text=True,
                              timeout=600, env=full_env)  # fmt: skip
        stack.seconds[step] = stack.seconds.get(step, 0.0) + time.monotonic() - began
        if done.returncode:
            raise AssertionError(f"{argv[0]} {argv[1:3]} exited {done.returncode}: "
                                 f"{done.stderr[-3000:]}{done.stdout[-2000:]}")  # fmt: skip


def stack_database(root: Path, stack: SyntheticStack) -> tuple[Engine, Path]:
    """A dbspica on SQLite in ``root`` holding the unit's stack row (running, as the daemon
    leaves it), and a configuration file naming it (``SPICA_CONFIG`` for the lines)."""
    from sqlalchemy.orm import Session

    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.models import Stack
    from spica_core.db.schema import upgrade

    url = f"sqlite:///{root / 'dbspica.sqlite'}"
    engine = make_engine(DatabaseConfig(url=url), create=True)
    upgrade(engine)
    with Session(engine) as s, s.begin():
        s.add(Stack(name=stack.unit.name, release=stack.unit.release, state="running"))
    config = root / "spica.toml"
    config.write_text(f'[db]\nurl = "{url}"\n')
    return engine, config
