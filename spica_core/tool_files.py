"""The files source-extractor and PSFEx write about one image, named alike wherever they
run (a QFin unit's exposure, a stack's co-add): ``<name>.cat``, ``.sex.xml``, ``.psf``,
``.psfex.xml`` beside each other in one work directory."""

from __future__ import annotations

from pathlib import Path


class MeasuredImageFiles:
    """Mixin: the catalogue and PSF files of the image :meth:`_file` names files after."""

    def _file(self, suffix: str) -> Path:
        raise NotImplementedError

    @property
    def catalog(self) -> Path:
        """source-extractor's FITS_LDAC catalogue (PSFEx's input, SCAMP's for exposures)."""
        return self._file(".cat")

    @property
    def sextractor_xml(self) -> Path:
        return self._file(".sex.xml")

    @property
    def psf(self) -> Path:
        """PSFEx's model: the catalogue's name with ``.psf`` (PSF_SUFFIX) in PSF_DIR."""
        return self._file(".psf")

    @property
    def psfex_xml(self) -> Path:
        return self._file(".psfex.xml")
