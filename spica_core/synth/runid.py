"""A runid's worth of exposures: what CADC would deliver for one observing run.

Exposures of one runid share its semester and queue run; they sweep a field's pointing grid
in the five MegaCam filters over a few nights, one directory per runid as the incoming
repositories hold them (``<root>/<runid>/<odometer>p.fits.gz``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from spica_core.synth.layout import CCDS, FILTERS, ExposureSpec, pointing_centre, pointing_name
from spica_core.synth.sky import SKY, SkyModel
from spica_core.synth.truth import write_sky_exposure
from spica_core.synth.writer import Container, PixelSource, noise_pixels, write_exposure

#: CFHTLS Wide fields: number -> centre (deg).
WIDE_FIELDS = {1: (34.5, -7.0), 2: (134.0, -3.0), 3: (214.0, 54.0), 4: (333.0, 1.0)}
#: Observing time in a night (nights start at 06:00 UTC, 20:00 in Hawaii).
NIGHT = timedelta(hours=9, minutes=30)


@dataclass(frozen=True)
class RunidPlan:
    """Which exposures a runid holds; everything follows from these and the seed."""

    runid: str
    exposures: int
    seed: int = 0
    #: First odometer number; exposures count up from it.
    first_odometer: int = 811001
    field: int = 1
    ccds: int = CCDS
    ccd_shape: tuple[int, int] = (32, 32)
    #: Pixel scale of the CCDs (arcsec / pixel); None stretches each CCD over ccd_shape.
    pixel_scale: float | None = None


def semester_start(runid: str) -> datetime:
    """The first night of a runid's semester (``03A`` -> 2003-02-01, ``03B`` -> 2003-08-01)."""
    year = 2000 + int(runid[:2])
    month = 2 if runid[2] == "A" else 8
    return datetime(year, month, 1, 6, 0, tzinfo=UTC)


def exposure_specs(plan: RunidPlan) -> Iterator[ExposureSpec]:
    """The runid's exposures in observing order (seeded)."""
    rng = random.Random(f"{plan.runid}/{plan.seed}")
    field_ra, field_dec = WIDE_FIELDS[plan.field]
    night = semester_start(plan.runid) + timedelta(days=rng.randrange(0, 150))
    when = night
    qrunid = plan.runid[:3] + "Q" + f"{rng.randrange(1, 100):02d}"
    gains = tuple(round(rng.uniform(1.4, 1.9), 3) for _ in range(plan.ccds))
    for n in range(plan.exposures):
        x, y = rng.randrange(-2, 3), rng.randrange(-2, 3)
        ra, dec = pointing_centre(field_ra, field_dec, x, y)
        ra = (ra + rng.uniform(-0.01, 0.01)) % 360.0  # dithers
        dec += rng.uniform(-0.01, 0.01)
        exptime = rng.choice((60.0, 120.0, 170.0, 600.0))
        if when - night > NIGHT:  # dawn on Mauna Kea: go on the next night
            night += timedelta(days=1)
            when = night
        yield ExposureSpec(
            filename=f"{plan.first_odometer + n}p",
            runid=plan.runid,
            qrunid=qrunid,
            filter=rng.choice(FILTERS),
            object=pointing_name(plan.field, x, y),
            ra_deg=ra,
            dec_deg=dec,
            exptime=exptime,
            start=when.replace(microsecond=rng.randrange(0, 100) * 10000),
            airmass=round(rng.uniform(1.0, 1.6), 3),
            ccd_shape=plan.ccd_shape,
            ccds=plan.ccds,
            gains=gains,
            pixel_scale=plan.pixel_scale,
        )
        when += timedelta(seconds=exptime + 40)


def write_runid(
    plan: RunidPlan,
    root: str | os.PathLike[str],
    container: Container = "fits.gz",
    pixels: PixelSource = noise_pixels,
) -> list[Path]:
    """Write the runid's exposures under ``<root>/<runid>/`` and return their paths."""
    directory = Path(root) / plan.runid
    return [write_exposure(spec, directory, container, pixels) for spec in exposure_specs(plan)]


def write_sky_runid(
    plan: RunidPlan,
    root: str | os.PathLike[str],
    container: Container = "fits.fz",
    *,
    sky: SkyModel = SKY,
    truth_root: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the runid's exposures drawn from ``sky`` under ``<root>/<runid>/``, each with
    its truth beside it (or under ``<truth_root>/<runid>/``); the exposures' paths. The
    plan needs a ``pixel_scale``."""
    directory = Path(root) / plan.runid
    truth_dir = Path(truth_root) / plan.runid if truth_root is not None else None
    return [
        write_sky_exposure(spec, directory, container, sky=sky, truth_dir=truth_dir)
        for spec in exposure_specs(plan)
    ]
