"""Benchmark: one demo-sized stack built through its lines, seconds (target < 60 s).

Renders ``--exposures`` dithered synthetic MegaCam exposures (``--ccds`` CCDs of ``--shape``
pixels at 0.187"/px, ``.fits.fz``, pointing errors of a few arcsec) and the reference
catalogue of the same synthetic sky, then runs every line
:func:`spica_core.stacking.commands.stack_commands` generates for a ``--tile``-pixel tile, as
the node's daemon would: the real ``source-extractor``, ``scamp``, ``SWarp``, ``psfex`` and
``stiff``, and ``spica stack prepare|inject|record`` through this virtualenv's ``spica``
(start-up counted), the record into a dbspica on SQLite. Rendering is not timed.

Prints the seconds of the whole unit and per step, and the recorded figures. Measured on
this 2-core machine, shared: the default (5 exposures of 2 CCDs of 900 x 900, a 900-pixel
tile, 18 lines) 31 s, of which 8 s are the five ``spica stack prepare`` (the command's
start-up, mostly), 7 s ``spica stack inject`` and 5 s ``spica stack record``; SCAMP 1.2 s.

    .venv/bin/python bench/stack_build.py [--exposures 5] [--ccds 2] [--shape 900x900]
                                          [--tile 900] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stack_support import (  # noqa: E402
    DITHERS,
    require_tools,
    run_lines,
    stack_database,
    synthetic_stack,
)


def _arcsec(value: float | None) -> str:
    """A figure in arcsec; SCAMP has no internal RMS for one exposure."""
    return f'{value:.4f}"' if value is not None else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=len(DITHERS))
    parser.add_argument("--ccds", type=int, default=2)
    parser.add_argument("--shape", default="900x900", help="CCD pixels, NYxNX")
    parser.add_argument("--tile", type=int, default=900, help="co-add side (pixels)")
    parser.add_argument("--keep", type=Path, help="build here and keep the files")
    args = parser.parse_args()
    build(args.exposures, args.ccds, args.shape, args.tile, args.keep)


def build(
    exposures: int = len(DITHERS),
    ccds: int = 2,
    shape: str = "900x900",
    tile: int = 900,
    keep: Path | None = None,
) -> float:
    """Build one stack through its lines and print its figures; the unit's seconds."""
    require_tools()
    ny, nx = (int(v) for v in shape.split("x"))
    dithers = tuple(DITHERS[i % len(DITHERS)] for i in range(exposures))
    dithers = tuple((e + 3.0 * (i // len(DITHERS)), n) for i, (e, n) in enumerate(dithers))
    root = keep or Path(tempfile.mkdtemp(prefix="spica-bench-stack-"))
    try:
        stack = synthetic_stack(root, dithers=dithers, ccds=ccds, ccd_shape=(ny, nx),
                                tile_pixels=tile)  # fmt: skip
        engine, config = stack_database(root, stack)
        began = time.monotonic()
        run_lines(stack, env={"SPICA_CONFIG": str(config)})
        total = time.monotonic() - began
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from spica_core.db.models import StackResult

        with Session(engine) as s:
            result = s.scalars(select(StackResult)).one()
        engine.dispose()
        lines = len(stack.unit.inputs) * 2 + 8
        print(
            f"stack {stack.unit.name}: {exposures} exposures of {ccds} CCD(s) "
            f"{nx}x{ny}, tile {tile}^2, {lines} lines: {total:.1f} s (target < 60 s)"
        )
        for step, seconds in sorted(stack.seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {step:18s} {seconds:6.2f} s")
        print(f"  SCAMP internal {_arcsec(result.scamp_internal_rms)}, external "
              f"{_arcsec(result.scamp_external_rms)}, seeing {_arcsec(result.seeing)}, "
              f"exposure {result.exptime} s, completeness {result.completeness}, "
              f"{result.sources} sources")  # fmt: skip
        return total
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
