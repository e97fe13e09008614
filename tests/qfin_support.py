"""Running a QFin unit's lines here, as the node's daemon would run its ``commands.sh``.

The real ``source-extractor`` and ``psfex`` run as subprocesses with the argv
:func:`~spica_core.qfin.commands.qfin_commands` generates; the two ``spica qfin`` lines call
the engine functions behind them in-process (``maps`` -> ``write_maps``, ``record`` ->
``measure_outputs``, the part of ``record`` that reads the outputs; writing dbspica is the
QFin units' own tests' business), with the arguments taken from the generated line itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from spica_core.qfin.commands import QfinUnitPaths, qfin_commands
from spica_core.qfin.maps import write_maps
from spica_core.qfin.measure import measure_outputs
from spica_core.qfin.result import ImageFigures
from spica_core.resources import astromatic_dir
from tests.conftest import require

TOOLS = ("source-extractor", "psfex")


def require_tools() -> None:
    """Skip (fail in CI) unless the real AstrOmatic binaries QFin runs are installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    require(
        not missing,
        f"{' and '.join(missing)} not installed (./run setup installs them as root; "
        "or apt-get install source-extractor psfex)",
    )


def _options(argv: list[str], start: int) -> dict[str, str]:
    rest = argv[start:]
    return dict(zip(rest[0::2], rest[1::2], strict=True))


def run_qfin(image_path: Path, workdir: Path, image: str, release: str = "T0001") -> ImageFigures:
    """Run the unit's lines in order; the figures the record line reads."""
    unit = QfinUnitPaths(image=image, image_path=str(image_path), workdir=str(workdir))
    figures: ImageFigures | None = None
    for argv in qfin_commands(unit, release=release, config_dir=str(astromatic_dir())):
        if argv[:3] == ["spica", "qfin", "maps"]:
            opts = _options(argv, 4)
            write_maps(Path(opts["--image-path"]), Path(opts["--workdir"]), image=argv[3])
        elif argv[:3] == ["spica", "qfin", "record"]:
            opts = _options(argv, 4)
            figures = measure_outputs(
                Path(opts["--workdir"]),
                image=argv[3],
                release=opts["--release"],
                image_path=Path(opts["--image-path"]),
            )
        else:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}): {done.stderr}"
    assert figures is not None, "the generated lines hold no `spica qfin record`"
    return figures


def _moffat_radius(fraction: float, beta: float) -> float:
    """Radius enclosing ``fraction`` of a Moffat profile's flux, in units of its alpha."""
    return float(np.sqrt((1.0 - fraction) ** (1.0 / (1.0 - beta)) - 1.0))


def _moffat_beta(ratio: float, low_fraction: float, high_fraction: float) -> float:
    """The beta whose r(high_fraction)/r(low_fraction) is ``ratio`` (bisection: the ratio
    falls as beta grows)."""
    low, high = 1.2, 50.0
    for _ in range(80):
        mid = (low + high) / 2
        if _moffat_radius(high_fraction, mid) / _moffat_radius(low_fraction, mid) > ratio:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def independent_seeing(data: np.ndarray, scale: float, saturate: float) -> tuple[float, float, int]:
    """Seeing (arcsec) of bright isolated unsaturated stars that ``sep`` finds, from their
    half- and 90%-light radii (``sep.flux_radius``) through the Moffat profile's relations
    (beta from r90/r50, alpha from r50, FWHM = 2 alpha sqrt(2^(1/beta) - 1), corrected for
    the light outside the aperture): a measure owing nothing to SExtractor's catalogue or
    PSFEx's model. Returns (FWHM, beta, stars used)."""
    import sep

    pixels = np.ascontiguousarray(data, dtype=np.float64)
    background = sep.Background(pixels)
    flat = pixels - background.back()
    found = sep.extract(flat, 30.0, err=background.globalrms, minarea=9)
    bright = found[np.argsort(-found["flux"])][:50]
    rmax = float(np.clip(4 * 2.35 * np.median(bright["a"]), 10.0, 40.0))
    ny, nx = flat.shape
    x, y = found["x"], found["y"]
    ok = (found["flag"] == 0) & (found["peak"] + background.globalback < 0.5 * saturate)
    ok &= (x > rmax) & (x < nx - 1 - rmax) & (y > rmax) & (y < ny - 1 - rmax)
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(near, np.inf)
    ok &= near.min(axis=1) > 2 * rmax
    ok &= found["b"] / found["a"] > 0.8  # round: stars, not the galaxies
    chosen = np.flatnonzero(ok)
    chosen = chosen[np.argsort(-found["flux"][chosen])][:40]
    if len(chosen) < 3:
        return float("nan"), float("nan"), len(chosen)
    radii, _ = sep.flux_radius(
        flat, x[chosen], y[chosen], np.full(len(chosen), rmax), [0.5, 0.9], subpix=5
    )
    r50, r90 = float(np.median(radii[:, 0])), float(np.median(radii[:, 1]))
    inside = 1.0  # fraction of the star's light within rmax, refined below
    for _ in range(5):
        beta = _moffat_beta(r90 / r50, 0.5 * inside, 0.9 * inside)
        alpha = r50 / _moffat_radius(0.5 * inside, beta)
        inside = 1.0 - (1.0 + (rmax / alpha) ** 2) ** (1.0 - beta)
    fwhm = 2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)
    return float(fwhm * scale), beta, len(chosen)
