"""The lines of a QFin unit's ``commands.sh``: argv lists, joined by the caller.

QualityFITS-in on one image: ``spica qfin maps`` (checks the image, writes its weight and flag
maps, unpacks a compressed MEF) → ``source-extractor`` (FITS_LDAC with vignettes) →
``psfex`` (one PSF per CCD; the seeing is its FWHM) → ``spica qfin record`` (reads the
outputs, writes the report and dbspica). Only real binaries and ``spica`` subcommands, no
inline code (DESIGN §11); every file is named by :class:`~spica_core.qfin.outputs.QfinOutputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spica_core.errors import UsageError
from spica_core.names import validate_name
from spica_core.qfin.outputs import QfinOutputs

#: The AstrOmatic configuration files QFin uses, in ``config_dir``.
SEX_CONFIG = "qfin.sex"
SEX_PARAMS = "qfin.param"
SEX_FILTER = "qfin.conv"
SEX_NNW = "qfin.nnw"
PSFEX_CONFIG = "qfin.psfex"
CONFIG_FILES = (SEX_CONFIG, SEX_PARAMS, SEX_FILTER, SEX_NNW, PSFEX_CONFIG)


@dataclass(frozen=True)
class QfinUnitPaths:
    """One QFin unit's image and work directory, absolute paths on the node.

    The work directory is created by the first line (``spica qfin maps``).
    """

    image: str
    image_path: str
    workdir: str

    def outputs(self) -> QfinOutputs:
        return QfinOutputs(
            workdir=Path(self.workdir), image=self.image, image_path=Path(self.image_path)
        )


#: Characters the AstrOmatic tools split their arguments on (``a.fits,b.fits`` is
#: source-extractor's dual-image mode, SWarp's list of inputs): a path holding one cannot be
#: passed to them.
_SPLITTING = frozenset(", \t\n\r\"'#=")


def tool_path(what: str, path: str) -> str:
    """``path`` when it is absolute and the tools can take it whole, else UsageError naming
    ``what`` (``"QFin of image 811001p: image path"``)."""
    if not path or not Path(path).is_absolute():
        raise UsageError(f"{what} {path!r} is not an absolute path")
    bad = sorted(_SPLITTING.intersection(path))
    if bad:
        raise UsageError(
            f"{what} {path!r} holds {', '.join(map(repr, bad))}, "
            "which the AstrOmatic tools split their arguments on"
        )
    return path


def qfin_commands(unit: QfinUnitPaths, *, release: str, config_dir: str) -> list[list[str]]:
    """The unit's argv lists in order: maps, source-extractor, psfex, record.

    Raises :class:`~spica_core.errors.InvalidName` for a bad image or release name and
    :class:`~spica_core.errors.UsageError` for a path the tools cannot take.
    """
    image = validate_name(unit.image, "image")
    release = validate_name(release, "release")
    what = f"QFin of image {image}:"
    image_path = tool_path(f"{what} image path", unit.image_path)
    workdir = tool_path(f"{what} work directory", unit.workdir)
    config = Path(tool_path(f"{what} configuration directory", str(config_dir)))
    out = unit.outputs()
    maps = ["spica", "qfin", "maps", image, "--image-path", image_path, "--workdir", workdir]
    sextractor = [
        "source-extractor",
        str(out.sextractor_input),
        "-c", str(config / SEX_CONFIG),
        "-PARAMETERS_NAME", str(config / SEX_PARAMS),
        "-FILTER_NAME", str(config / SEX_FILTER),
        "-STARNNW_NAME", str(config / SEX_NNW),
        "-CATALOG_NAME", str(out.catalog),
        "-CATALOG_TYPE", "FITS_LDAC",
        "-WEIGHT_TYPE", "MAP_WEIGHT",
        "-WEIGHT_IMAGE", str(out.weight),
        "-FLAG_IMAGE", str(out.flag),
        "-WRITE_XML", "Y",
        "-XML_NAME", str(out.sextractor_xml),
    ]  # fmt: skip
    psfex = [
        "psfex",
        str(out.catalog),
        "-c", str(config / PSFEX_CONFIG),
        "-PSF_DIR", workdir,
        "-WRITE_XML", "Y",
        "-XML_NAME", str(out.psfex_xml),
        "-OUTCAT_TYPE", "FITS_LDAC",
        "-OUTCAT_NAME", str(out.psf_stars),
    ]  # fmt: skip
    record = [
        "spica", "qfin", "record", image,
        "--workdir", workdir,
        "--release", release,
        "--image-path", image_path,
    ]  # fmt: skip
    return [maps, sextractor, psfex, record]
