"""``spica stack prepare``: one input of a stack unit made ready for the tools.

The exposure is checked first against the checksum it was ingested with, so a file cut
short or corrupted on the node fails the unit at this line with one readable message (the
image, its path, what is wrong and what to do), before any tool reads it. Then, in the
unit's ``inputs/`` directory (:class:`~spica_core.stacking.outputs.StackOutputs`): the plain
MEF the tools read (the exposure itself, linked, or its unpacked copy), its weight and flag
maps (QFin's, :func:`spica_core.qfin.maps.write_maps`, which also checks every CCD), the
``.ahead`` SCAMP reads beside the catalogue (one header per CCD: the primary header's
filter, queue run, exposure time, airmass, epoch and photometric keys, then the line's
``--ahead`` cards, which win), and its entries in
``scamp.list`` / ``swarp.list``. A requeued line rewrites its own files and entries only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spica_core.errors import SpicaError, UsageError
from spica_core.names import validate_name
from spica_core.node.files import atomic_write
from spica_core.qfin.outputs import is_plain_fits
from spica_core.stacking.outputs import StackOutputs
from spica_core.stacking.unit import CardValue


class StackFailed(SpicaError):
    """A stack line that cannot go on: the message names the stack, the file and what to do."""


#: Primary-header cards an input's ``.ahead`` repeats for SCAMP (its instruments, epoch and
#: photometry), unless the line gives them (``--ahead``).
INHERITED = ("FILTER", "QRUNID", "EXPTIME", "AIRMASS", "MJD-OBS", "PHOT_C", "PHOT_K",
             "PHOTFLAG")  # fmt: skip
#: What the operator does about a broken input.
REPLACE = "replace the file (same path) then requeue the stack"


@dataclass(frozen=True)
class PreparedInput:
    """One input as the tools will read it."""

    image: Path
    weight: Path
    flag: Path
    ahead: Path | None
    ccds: int


def parse_ahead(items: Iterable[str]) -> dict[str, CardValue]:
    """``KEY=VALUE`` options as ``.ahead`` cards: ``T``/``F`` booleans, numbers, else text."""
    cards: dict[str, CardValue] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().upper()
        ok = 0 < len(key) <= 8 and all(c.isupper() or c.isdigit() or c in "-_" for c in key)
        if not sep or not ok:
            raise UsageError(f"--ahead {item!r}: expected KEY=VALUE with a FITS keyword")
        cards[key] = _card_value(text.strip())
    return cards


def _card_value(text: str) -> CardValue:
    if text in ("T", "F"):
        return text == "T"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def prepare_input(
    out: StackOutputs,
    *,
    image: str,
    path: Path,
    checksum: str | None = None,
    ahead: Mapping[str, CardValue] | None = None,
    weight: Path | None = None,
    flag: Path | None = None,
    scamp: bool = True,
    swarp: bool = True,
) -> PreparedInput:
    """Check ``path`` and lay out input ``image`` in ``out``'s work directory.

    Raises :class:`StackFailed` (nothing of the input left in the lists) when the file is
    missing, differs from its checksum or is not a usable exposure.
    """
    from spica_core.qfin.maps import write_maps
    from spica_core.qfin.measure import QfinFailed

    image = validate_name(image, "image")
    where = f"stack {out.stack}: image {image}"
    out.inputs_dir.mkdir(parents=True, exist_ok=True)
    out.resample_dir.mkdir(parents=True, exist_ok=True)
    # Out of the lists first: a failure below leaves no entry naming a half-made input.
    _set_entry(out.scamp_list, out.input_catalog(image), False)
    _set_entry(out.swarp_list, out.input_image(image), False)
    _check_file(where, path, checksum)
    for given, what in ((weight, "weight map"), (flag, "flag map")):
        if given is not None and not given.is_file():
            raise StackFailed(f"{where}: {what} {given} does not exist or is not a file")
    try:
        maps = write_maps(path, out.inputs_dir, image=image)
    except QfinFailed as exc:
        raise StackFailed(f"stack {out.stack}: {exc}; {REPLACE}") from exc
    plain = out.input_image(image)
    if is_plain_fits(path):
        _link(path.resolve(), plain)
    for given, target in ((weight, maps.weight), (flag, maps.flag)):
        if given is not None:
            _link(given.resolve(), target)
    ccds, inherited = _layout(plain)
    cards = {**inherited, **(ahead or {})}
    ahead_path = out.input_ahead(image)
    if cards:
        _write_atomic(ahead_path, ahead_text(cards, ccds))
    else:
        ahead_path.unlink(missing_ok=True)
    out.input_head(image).unlink(missing_ok=True)
    _set_entry(out.scamp_list, out.input_catalog(image), scamp)
    _set_entry(out.swarp_list, plain, swarp)
    return PreparedInput(
        image=plain,
        weight=maps.weight,
        flag=maps.flag,
        ahead=ahead_path if cards else None,
        ccds=ccds,
    )


def _check_file(where: str, path: Path, checksum: str | None) -> None:
    from spica_core.checksum import file_checksum, is_checksum

    if not path.is_file():
        raise StackFailed(f"{where}: {path} does not exist or is not a file; {REPLACE}")
    if checksum is None:
        return
    if not is_checksum(checksum):
        raise UsageError(f"{where}: --checksum {checksum!r} is not a checksum SPICA writes")
    try:
        found, size = file_checksum(path)
    except OSError as exc:
        raise StackFailed(f"{where}: {path} cannot be read ({exc.strerror}); {REPLACE}") from exc
    if found != checksum:
        raise StackFailed(
            f"{where}: {path} is corrupt or truncated ({size} bytes, checksum {found} instead "
            f"of {checksum} as ingested); {REPLACE}"
        )


def _layout(plain: Path) -> tuple[int, dict[str, CardValue]]:
    """Image extensions of the plain MEF (SCAMP wants one ``.ahead`` header per extension),
    and the primary header's cards SCAMP reads: source-extractor's catalogue carries each
    CCD's own header only, where an exposure may not repeat them."""
    import fitsio

    with fitsio.FITS(str(plain)) as mef:
        ccds = sum(
            1
            for n in range(1, len(mef))
            if mef[n].get_exttype() == "IMAGE_HDU" and mef[n].has_data()
        )
        primary = mef[0].read_header()
    inherited: dict[str, CardValue] = {}
    for key in INHERITED:
        value = primary.get(key)
        if isinstance(value, bool | int | float | str) and value != "":
            inherited[key] = value.strip() if isinstance(value, str) else value
    return ccds, inherited


def ahead_text(cards: Mapping[str, CardValue], ccds: int) -> str:
    """An ``.ahead`` file: the cards, then END, once per CCD (as SCAMP reads it)."""
    from spica_core.qfin.maps import fits_card

    block = "".join(fits_card(key, value).decode("ascii") + "\n" for key, value in cards.items())
    return (block + "END".ljust(80) + "\n") * max(ccds, 1)


def _set_entry(listing: Path, entry: Path, present: bool) -> None:
    """``entry`` in (or out of) the list file, one path a line, sorted; atomic."""
    lines = listing.read_text().splitlines() if listing.exists() else []
    kept = sorted({line for line in lines if line and line != str(entry)} | (
        {str(entry)} if present else set()))  # fmt: skip
    if kept != lines:
        _write_atomic(listing, "".join(f"{line}\n" for line in kept))


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text.encode(), mode=0o644)


def _link(source: Path, link: Path) -> None:
    """``link`` -> ``source``, replacing whatever ``link`` was."""
    tmp = link.with_name(f".{link.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(source)
    os.replace(tmp, link)
