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
