"""Where a QFin unit's files live in its work directory: one name per output, one owner.

The generated commands (:mod:`spica_core.qfin.commands`), the maps
(:mod:`spica_core.qfin.maps`) and the reading of the tools' outputs
(:mod:`spica_core.qfin.measure`) all name the files through :class:`QfinOutputs`, so the
lines of ``commands.sh`` and the reader never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spica_core.tool_files import MeasuredImageFiles

#: Endings of a plain FITS file: source-extractor reads these in place. Any other container
#: (``.fits.fz`` tile-compressed, ``.fits.gz``) is unpacked into the work directory first.
PLAIN_FITS_SUFFIXES = (".fits", ".fit", ".fts")


def is_plain_fits(image_path: str | Path) -> bool:
    """True when source-extractor can read ``image_path`` as it is (an uncompressed MEF)."""
    return str(image_path).lower().endswith(PLAIN_FITS_SUFFIXES)


@dataclass(frozen=True)
class QfinOutputs(MeasuredImageFiles):
    """The files of image ``image``'s QFin in ``workdir`` (paths as on the node)."""

    workdir: Path
    image: str
    image_path: Path

    def _file(self, suffix: str) -> Path:
        return self.workdir / f"{self.image}{suffix}"

    @property
    def sextractor_input(self) -> Path:
        """The MEF source-extractor reads: the image itself, or its unpacked copy."""
        if is_plain_fits(self.image_path):
            return self.image_path
        return self._file(".fits")

    @property
    def unpacked(self) -> bool:
        return self.sextractor_input != self.image_path

    @property
    def weight(self) -> Path:
        return self._file(".weight.fits")

    @property
    def flag(self) -> Path:
        return self._file(".flag.fits")

    @property
    def psf_stars(self) -> Path:
        """PSFEx's OUTCAT: the stars it loaded per CCD, FLAGS_PSF 0 for those it accepted."""
        return self._file(".psfstars.cat")

    @property
    def report(self) -> Path:
        """The QualityFITS-like report (JSON), written last: its presence means done."""
        return self._file(".qfin.json")
