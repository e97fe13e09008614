"""QFin's figures, read from the tools' outputs in a unit's work directory.

Per CCD: the seeing is PSFEx's PSF FWHM in arcsec (``FWHM_WCS_Mean`` of the extension in
PSFEx's XML, as QualityFITS did); the PSF stars are those PSFEx accepted, their elongation
the median of SExtractor's A/B over them; the number of sources, the background level and
RMS and the saturation level come from SExtractor's catalogue (``SEXBKGND``, ``SEXBKDEV``,
``SEXSATLV`` in each CCD's ``LDAC_IMHEAD``). The image's figures are medians over its CCDs
and sums of counts. PSFEx's XML declares types its values do not have (DESIGN §8), so it
is read leniently with :mod:`xml.etree` rather than as a VOTable.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from spica_core.errors import SpicaError
from spica_core.node.files import one_line
from spica_core.qfin.outputs import QfinOutputs
from spica_core.qfin.result import CcdFigures, ImageFigures


class QfinFailed(SpicaError):
    """An image QFin cannot measure: broken input or missing/unusable tool outputs.

    The message names the image, and the CCD or the file at fault.
    """


def report_path(workdir: Path, image: str) -> Path:
    """The per-image report (``<image>.qfin.json``) in the unit's work directory."""
    return QfinOutputs(workdir=Path(workdir), image=image, image_path=Path(image)).report


#: A FITS file is whole blocks of this many bytes (36 cards); a primary header longer
#: than MAX_HEADER_BLOCKS of them is not an image's.
FITS_BLOCK = 2880
MAX_HEADER_BLOCKS = 100


@dataclass(frozen=True)
class _CatalogCcd:
    """One CCD of SExtractor's FITS_LDAC catalogue: its header, how many sources, and the
    two columns QFin reads (copied out; the vignettes are never read)."""

    header: Any
    sources: int
    number: Any
    elongation: Any


def measure_outputs(workdir: Path, *, image: str, release: str, image_path: Path) -> ImageFigures:
    """Read the catalogue, PSF model, PSFEx XML and star list of ``image`` in ``workdir``."""
    out = QfinOutputs(workdir=Path(workdir), image=image, image_path=Path(image_path))
    catalog = _read_catalog(out.catalog, image)
    if not out.psf.is_file():
        raise QfinFailed(f"image {image}: PSFEx's model {out.psf} is missing")
    extensions = _psfex_extensions(out.psfex_xml, image)
    accepted = _accepted_stars(out.psf_stars, image)
    primary = _primary_header(out.sextractor_input)
    ccds = [
        _ccd_figures(index, ccd, extensions.get(index, {}), accepted.get(index, ()), image)
        for index, ccd in enumerate(catalog, start=1)
    ]
    expected = _int(primary.get("NEXTEND")) if primary is not None else None
    return ImageFigures(
        image=image,
        release=release,
        ccds=ccds,
        ccds_expected=expected if expected is not None and expected > 0 else len(ccds),
        seeing=_median(c.seeing for c in ccds),
        elongation=_median(c.elongation for c in ccds),
        sources=sum(c.sources for c in ccds),
        psf_stars=sum(c.psf_stars for c in ccds),
        background=_median(c.background for c in ccds) or 0.0,
        background_rms=_median(c.background_rms for c in ccds) or 0.0,
        exptime=_float(primary.get("EXPTIME")) if primary is not None else None,
        filter=_text(primary.get("FILTER")) if primary is not None else None,
    )


def _ccd_figures(
    index: int,
    ccd: _CatalogCcd,
    psfex: dict[str, str],
    accepted: Sequence[int],
    image: str,
) -> CcdFigures:
    header = ccd.header
    where = f"image {image}: CCD {index} of the catalogue"
    background = _float(header.get("SEXBKGND"))
    background_rms = _float(header.get("SEXBKDEV"))
    if background is None or background_rms is None:
        raise QfinFailed(f"{where} has no background (SEXBKGND/SEXBKDEV) in its LDAC_IMHEAD")
    psf_stars = _int(psfex.get("NStars_Accepted_Total")) or 0
    seeing = _float(psfex.get("FWHM_WCS_Mean")) if psf_stars > 0 else None
    return CcdFigures(
        ccd=index,
        extname=_text(header.get("EXTNAME")),
        seeing=seeing if seeing is not None and seeing > 0 else None,
        elongation=_elongation(ccd, accepted),
        sources=ccd.sources,
        psf_stars=psf_stars,
        background=background,
        background_rms=background_rms,
        saturation=_float(header.get("SEXSATLV")),
    )


def _elongation(ccd: _CatalogCcd, accepted: Sequence[int]) -> float | None:
    """Median SExtractor ELONGATION (A/B) of the sources PSFEx accepted as PSF stars."""
    if not accepted or ccd.sources == 0:
        return None
    import numpy as np

    values = ccd.elongation[np.isin(ccd.number, np.asarray(accepted))]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def _read_catalog(path: Path, image: str) -> list[_CatalogCcd]:
    """The catalogue's CCDs: each an ``LDAC_IMHEAD`` (the image header) and its objects.

    Read through cfitsio (``fitsio``, as the maps are), two columns of the objects only:
    a catalogue is mostly vignettes (5 kB a source) QFin never reads, and the unit's last
    line does not pay astropy's import."""
    import fitsio
    import numpy as np

    if not path.is_file():
        raise QfinFailed(f"image {image}: source-extractor's catalogue {path} is missing")
    try:
        with fitsio.FITS(str(path)) as hdus:
            if len(hdus) % 2 != 1:
                raise ValueError(f"{len(hdus) - 1} extensions, not LDAC_IMHEAD/LDAC_OBJECTS pairs")
            ccds: list[_CatalogCcd] = []
            for n in range(1, len(hdus), 2):
                head, objects = hdus[n], hdus[n + 1]
                names = (head.get_extname(), objects.get_extname())
                if names != ("LDAC_IMHEAD", "LDAC_OBJECTS"):
                    raise ValueError(f"found {names[0]}/{names[1]}, not LDAC_IMHEAD/LDAC_OBJECTS")
                rows = objects.get_nrows()
                data = objects.read(columns=["NUMBER", "ELONGATION"]) if rows else None
                ccds.append(
                    _CatalogCcd(
                        header=_ldac_header(head.read_column("Field Header Card")),
                        sources=rows,
                        number=np.array(data["NUMBER"]) if data is not None else np.array([]),
                        elongation=(
                            np.array(data["ELONGATION"]) if data is not None else np.array([])
                        ),
                    )
                )
    except QfinFailed:
        raise
    except Exception as exc:
        raise QfinFailed(
            f"image {image}: source-extractor's catalogue {path} is not a FITS_LDAC "
            f"catalogue ({one_line(exc)})"
        ) from exc
    if not ccds:
        raise QfinFailed(f"image {image}: source-extractor's catalogue {path} holds no CCD")
    return ccds


def _ldac_header(column: Any) -> dict[str, object]:
    """The image header SExtractor stored as 80-character cards in ``LDAC_IMHEAD``."""
    cards = column[0]
    if isinstance(cards, bytes | str):
        cards = [cards[i : i + 80] for i in range(0, len(cards), 80)]
    return _header_values(
        c.decode("ascii", "replace") if isinstance(c, bytes) else str(c) for c in cards
    )


def _header_values(cards: Iterable[str]) -> dict[str, object]:
    """Keyword -> value of the valued cards (FITS 4.0 §4.2: strings, logicals, numbers);
    a card that is none of these is left out, as QFin reads a few known keywords only."""
    values: dict[str, object] = {}
    for card in cards:
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] != "= " or key in values:
            continue
        text = card[10:].strip()
        if text.startswith("'"):
            end = text.find("'", 1)
            while end != -1 and text[end + 1 : end + 2] == "'":
                end = text.find("'", end + 2)
            if end != -1:
                values[key] = text[1:end].replace("''", "'").rstrip()
            continue
        text = text.split("/", 1)[0].strip()
        if text in ("T", "F"):
            values[key] = text == "T"
            continue
        with contextlib.suppress(ValueError):
            values[key] = (
                int(text) if text.lstrip("+-").isdigit() else float(text.replace("D", "E"))
            )
    return values


def _psfex_extensions(path: Path, image: str) -> dict[int, dict[str, str]]:
    return psfex_extensions(path, f"image {image}")


def psfex_extensions(path: Path, owner: str) -> dict[int, dict[str, str]]:
    """PSFEx XML's ``PSF_Extensions`` rows by extension number (1-based), values as text;
    QfinFailed's message starts with ``owner`` (``image 811001p``, ``stack S``)."""
    rows: dict[int, dict[str, str]] = {}
    for row in votable_rows(path, "PSF_Extensions", owner, what="PSFEx's XML"):
        number = _int(row.get("Extension"))
        if number is not None:
            rows[number] = row
    return rows


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _accepted_stars(path: Path, image: str) -> dict[int, list[int]]:
    """SExtractor NUMBERs of the stars PSFEx accepted (FLAGS_PSF 0), by extension."""
    import fitsio

    if not path.is_file():
        raise QfinFailed(f"image {image}: PSFEx's star list {path} is missing")
    accepted: dict[int, list[int]] = {}
    try:
        with fitsio.FITS(str(path)) as hdus:
            for n in range(len(hdus)):
                hdu = hdus[n]
                if hdu.get_extname() != "LDAC_OBJECTS" or not hdu.get_nrows():
                    continue
                data = hdu.read(columns=["FLAGS_PSF", "EXTENSION", "SOURCE_NUMBER"])
                keep = data["FLAGS_PSF"] == 0
                for ext, number in zip(
                    data["EXTENSION"][keep], data["SOURCE_NUMBER"][keep], strict=True
                ):
                    accepted.setdefault(int(ext), []).append(int(number))
    except Exception as exc:
        raise QfinFailed(
            f"image {image}: PSFEx's star list {path} is unreadable ({one_line(exc)})"
        ) from exc
    return accepted


def _primary_header(path: Path) -> dict[str, object] | None:
    """The image's primary header (NEXTEND, EXPTIME, FILTER), None when it cannot be read.

    ``path`` is the plain MEF source-extractor read (the image or its unpacked copy, whose
    primary header is the image's): its first blocks, up to END, are all that is read."""
    cards: list[str] = []
    try:
        with path.open("rb") as f:
            for _ in range(MAX_HEADER_BLOCKS):
                block = f.read(FITS_BLOCK)
                if len(block) < FITS_BLOCK:
                    return None
                text = block.decode("ascii", "replace")
                new = [text[i : i + 80] for i in range(0, FITS_BLOCK, 80)]
                cards += new
                if any(c[:8].strip() == "END" for c in new):
                    break
            else:
                return None
    except OSError:
        return None
    if not cards or not cards[0].startswith("SIMPLE  ="):
        return None
    return _header_values(cards)


def votable_rows(path: Path, table: str, owner: str, *, what: str = "XML") -> list[dict[str, str]]:
    """The rows of VOTable ``table`` in an AstrOmatic tool's XML, values as text.

    Read with ElementTree, not a VOTable parser: the tools declare some fields with a
    datatype their values do not have (SWarp's ``Weight_Type`` is "boolean"), which strict
    parsers refuse. QfinFailed's message starts with ``owner`` (``stack S``) and names the
    file as ``what`` (``PSFEx's XML``)."""
    if not path.is_file():
        raise QfinFailed(f"{owner}: {what} {path} is missing")
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise QfinFailed(f"{owner}: {what} {path} is unreadable ({one_line(exc)})") from exc
    found = [t for t in root.iter() if _local(t.tag) == "TABLE" and t.get("name") == table]
    if not found:
        raise QfinFailed(f"{owner}: {what} {path} has no {table} table")
    fields = [f.get("name", "") for f in found[0] if _local(f.tag) == "FIELD"]
    return [
        dict(zip(fields, [(td.text or "").strip() for td in tr if _local(td.tag) == "TD"],
                 strict=False))
        for tr in found[0].iter() if _local(tr.tag) == "TR"
    ]  # fmt: skip


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None
