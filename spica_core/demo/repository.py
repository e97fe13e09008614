"""The demo's incoming repository: small synthetic MegaCam exposures, really placed.

``D/repository/<runid>/<odometer>p.fits.fz`` (or ``.fits.gz``) for a handful of runids, each
in two or three filters. Every runid observes one pointing of its own (:func:`pointing`,
0.1 degree apart along a row of the CFHTLS W1 field) eight times with dithers of 10 to 30
arcsec, so the exposures of a filter overlap and stack. An exposure is a compact mosaic of
four CCDs of :data:`CCD_SHAPE` native pixels (2 x 2, :data:`CCD_GAP` apart) about its
pointing, drawn from the one synthetic sky (stars, galaxies, seeing, noise: valid MEF
headers, :mod:`spica_core.synth`) so QFin and the co-adds measure something real; the demo's
tile grid has one tile on each pointing (:mod:`spica_core.demo.release`). What was drawn is
in ``D/truth/<runid>/<odometer>p.truth.fits`` (outside the repository, which ingestion walks).
Written once (the same seed gives the same bytes). The repository is
``[[transfer.repositories]]`` ``incoming`` of the demo's spica.toml; its files are ingested
(``spica ingest``'s core), then every runid but :data:`WAITING_RUNID` is planned and copied to
the demo nodes through the executor (``spica transfer plan`` and ``run``'s core), so the runid
distribution the operator sees is the planner's placement. :data:`WAITING_RUNID` stays in the
repository, unplanned, for the console's "transfer now".

Idempotent: existing files are not rewritten, files dbspica already knows are not read
again, and a runid with nothing waiting plans nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from spica_core.cluster_snapshot import ClusterSnapshot
from spica_core.config import SpicaConfig
from spica_core.errors import UsageError
from spica_core.executor.base import FileCopier
from spica_core.synth.layout import ExposureSpec

if TYPE_CHECKING:
    from spica_core.synth.writer import Container

REPOSITORY = "incoming"
#: The seed's runids, with the MegaCam filters each was observed in.
RUNID_FILTERS: dict[str, tuple[str, ...]] = {
    "03AL01": ("g.MP9401", "r.MP9601", "i.MP9702"),
    "03AL02": ("r.MP9601", "z.MP9801"),
    "03AQ97": ("u.MP9301", "g.MP9401", "r.MP9601"),
    "03AF19": ("g.MP9401", "i.MP9702"),
    "04BL06": ("r.MP9601", "i.MP9702", "z.MP9801"),
}
RUNIDS = tuple(RUNID_FILTERS)
#: Left in the repository, unplanned: the walk-through transfers it from the console.
WAITING_RUNID = "04BL06"
EXPOSURES = 8
#: The demo CCDs: native pixels each, four of them in a 2 x 2 block with gaps of
#: :data:`CCD_GAP` arcsec (a footprint of :data:`EXPOSURE_SIZE` degrees).
CCD_SHAPE = (512, 512)
CCD_GRID = (2, 2)
CCD_GAP = 10.0
#: The runids' pointings: along a row of W1 from its centre, this many degrees apart (their
#: footprints never meet, so each tile's exposures are one runid's, on one node).
FIRST_POINTING = (34.5, -7.0)
POINTING_STEP = 0.1
#: Dithers (arcsec east, north) of a runid's exposures about its pointing, in order.
DITHERS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (14.0, 9.0),
    (-9.0, 14.0),
    (12.0, -12.0),
    (-14.0, -9.0),
    (7.0, 15.0),
    (-15.0, 6.0),
    (10.0, -14.0),
)

#: The nodes' disks as they are now (an executor's poll).
Snapshot = Callable[[], Awaitable[ClusterSnapshot]]


def filter_letters(runid: str) -> tuple[str, ...]:
    """``("g", "r", "i")``: the stacks' short names of a runid's filters."""
    return tuple(f.split(".")[0] for f in RUNID_FILTERS[runid])


@dataclass(frozen=True)
class DemoExposure:
    runid: str
    container: Container
    spec: ExposureSpec

    @property
    def name(self) -> str:
        return f"{self.spec.filename}.{self.container}"


def pointing(runid: str) -> tuple[float, float]:
    """Where ``runid``'s exposures point (deg), before their dithers."""
    index = RUNIDS.index(runid)
    ra0, dec0 = FIRST_POINTING
    return ra0 + index * POINTING_STEP / math.cos(math.radians(dec0)), dec0


def exposure_size() -> float:
    """The side (deg) of an exposure's compact mosaic: its footprint about its pointing."""
    from spica_core.synth.layout import NATIVE_SCALE

    columns, rows = CCD_GRID
    ny, nx = CCD_SHAPE
    return max(columns * nx, rows * ny) * NATIVE_SCALE / 3600.0 + CCD_GAP / 3600.0


def demo_exposures() -> Iterator[DemoExposure]:
    """Every exposure of the demo repository, deterministic."""
    from spica_core.synth.layout import NATIVE_SCALE, compact_offsets
    from spica_core.synth.runid import RunidPlan, exposure_specs

    offsets = compact_offsets(*CCD_GRID, CCD_SHAPE, NATIVE_SCALE, CCD_GAP)
    for index, (runid, filters) in enumerate(RUNID_FILTERS.items()):
        plan = RunidPlan(
            runid,
            EXPOSURES,
            seed=index,
            first_odometer=811001 + 1000 * index,
            ccds=len(offsets),
            ccd_shape=CCD_SHAPE,
            pixel_scale=NATIVE_SCALE,
        )
        container: Container = "fits.fz" if index % 2 == 0 else "fits.gz"
        ra, dec = pointing(runid)
        cos_dec = math.cos(math.radians(dec))
        for n, spec in enumerate(exposure_specs(plan)):
            east, north = DITHERS[n % len(DITHERS)]
            dithered = dataclasses.replace(
                spec,
                filter=filters[n % len(filters)],
                object=f"W1-{runid}",
                ra_deg=(ra + east / 3600.0 / cos_dec) % 360.0,
                dec_deg=dec + north / 3600.0,
                ccd_offsets=offsets,
            )
            yield DemoExposure(runid, container, _with_extension_keys(dithered))


def _with_extension_keys(spec: ExposureSpec) -> ExposureSpec:
    """``spec`` whose every CCD extension repeats the primary header's filter, exposure
    time, airmass and photometric keys, as CFHT's processed MEF files do: SCAMP reads each
    extension's header (through source-extractor's catalogue), not the primary."""
    from spica_core.synth.layout import PHOTOMETRY

    phot_c, phot_k = PHOTOMETRY.get(spec.filter, (26.0, 0.1))
    keys: dict[str, str | int | float | bool | None] = {
        "FILTER": spec.filter,
        "EXPTIME": spec.exptime,
        "AIRMASS": round(spec.airmass, 3),
        "PHOT_C": phot_c,
        "PHOT_K": phot_k,
    }
    return dataclasses.replace(spec, ccd_overrides={i: keys for i in range(spec.ccds)})


def repository_path(config: SpicaConfig) -> Path:
    """The demo repository's directory (UsageError when spica.toml names none)."""
    for repo in config.transfer.repositories:
        if repo.name == REPOSITORY and repo.node is None:
            return Path(repo.path)
    raise UsageError(
        f"{config.source}: no [[transfer.repositories]] named {REPOSITORY!r} on this host "
        "(spica demo up writes it; delete spica.toml and run it again)"
    )


def truth_root(root: Path) -> Path:
    """Where the truth of the repository at ``root`` is written: ``truth/`` beside it."""
    return root.parent / "truth"


def write_repository(root: Path, runids: tuple[str, ...] | None = None) -> tuple[list[Path], int]:
    """Every demo exposure's file under ``root`` (those missing written, with their truth
    under :func:`truth_root`), or those of ``runids``; and how many were written."""
    from spica_core.synth.truth import write_sky_exposure

    paths: list[Path] = []
    written = 0
    for exposure in demo_exposures():
        if runids is not None and exposure.runid not in runids:
            continue
        path = root / exposure.runid / exposure.name
        if not path.exists():
            write_sky_exposure(
                exposure.spec,
                path.parent,
                exposure.container,
                truth_dir=truth_root(root) / exposure.runid,
            )
            written += 1
        paths.append(path)
    return paths, written


def ingest_new(engine: Engine, config: SpicaConfig, paths: list[Path]) -> tuple[int, list[str]]:
    """Ingest the files dbspica does not know yet (as ``spica transfer watch`` does); the
    number added and the problems."""
    from spica_core.ingest.service import ingest_local
    from spica_core.transfer.automatic import known_files

    files = [str(p) for p in paths]
    known = known_files(engine, files)
    new = [f for f in files if f not in known]
    if not new:
        return 0, []
    report = ingest_local(engine, config, new)
    problems = [f"{s.path}: {s.key or ''} {s.reason}".strip() for s in report.skipped]
    return report.count("added"), problems


def stock(config: SpicaConfig, engine: Engine, runids: tuple[str, ...]) -> tuple[int, int]:
    """Write and ingest ``runids`` into the repository, placing nothing (a runid that waits
    for its transfer); files written and ingested. Problems are the ingestion's, raised."""
    from spica_core.errors import SpicaError

    paths, written = write_repository(repository_path(config), runids)
    ingested, problems = ingest_new(engine, config, paths)
    if problems:
        raise SpicaError("; ".join(problems))
    return written, ingested


@dataclass
class PlacementResult:
    written: int = 0
    ingested: int = 0
    planned: int = 0
    transferred: int = 0
    problems: list[str] = field(default_factory=list)


async def place_runids(
    config: SpicaConfig,
    engine: Engine,
    snapshot: Snapshot,
    copier: FileCopier,
    runids: tuple[str, ...],
) -> PlacementResult:
    """Plan every runid over the nodes' disks as a poll reports them now, then copy each
    runid's files, as a ``spica transfer watch`` round does (the calls behind ``spica
    transfer plan`` and ``spica transfer run``). Planning them all first lets each plan see
    the space the earlier ones promised: the runids spread over the nodes."""
    from spica_core.transfer.copy import CopyRun
    from spica_core.transfer.copy_rows import DONE
    from spica_core.transfer.store import plan_runid

    result = PlacementResult()
    cluster = await snapshot()
    for runid in runids:
        plan = await asyncio.to_thread(
            plan_runid, engine, config, cluster, runid, user="spica-demo"
        )
        if plan.plan.shortfall is not None:
            result.problems.append(f"{runid}: {plan.plan.shortfall.message()}")
        result.planned += len(plan.files) if plan.stored else 0
    for runid in runids:
        report = await CopyRun(config, engine, copier).run(runid)
        result.transferred += report.count(DONE)
        result.problems += [
            f"{runid}: {f.filename} -> {f.node}: {f.state}: {f.error}"
            for f in report.files
            if f.state != DONE
        ]
    return result


async def fill_and_place(
    config: SpicaConfig,
    engine: Engine,
    snapshot: Snapshot,
    copier: FileCopier,
    *,
    runids: tuple[str, ...] | None = None,
) -> PlacementResult:
    """Write, ingest, then place ``runids``; by default write and ingest every runid and
    place all but :data:`WAITING_RUNID`."""
    root = repository_path(config)

    def prepare() -> tuple[int, int, list[str]]:
        paths, written = write_repository(root, runids)
        ingested, problems = ingest_new(engine, config, paths)
        return written, ingested, problems

    written, ingested, problems = await asyncio.to_thread(prepare)
    placed = runids if runids is not None else tuple(r for r in RUNIDS if r != WAITING_RUNID)
    result = await place_runids(config, engine, snapshot, copier, placed)
    result.written, result.ingested = written, ingested
    result.problems = problems + result.problems
    return result


__all__ = [
    "CCD_SHAPE",
    "EXPOSURES",
    "REPOSITORY",
    "RUNIDS",
    "RUNID_FILTERS",
    "WAITING_RUNID",
    "PlacementResult",
    "demo_exposures",
    "exposure_size",
    "fill_and_place",
    "filter_letters",
    "place_runids",
    "pointing",
    "repository_path",
    "stock",
    "truth_root",
    "write_repository",
]
