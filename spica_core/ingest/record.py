"""A scanned file's headers -> a validated image record, or the reason it is refused.

Keys are looked up in the primary header, then in the first extension (a CCD's GAIN lives
there only). Only the cards a map names are parsed, each by astropy's card parser (FITS value
syntax: quoted strings, ``D`` exponents, logicals). A record is built whole or not at all:
the first missing required key or bad value raises :class:`HeaderRejected`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from spica_core.ingest.fitsscan import CARD, SUFFIXES, ScannedFits, image_filename
from spica_core.ingest.header_map import HeaderMap, Source
from spica_core.ingest.values import BadValue, convert, date_time


class HeaderRejected(ValueError):
    """The file cannot become an image row: which key (or None for the file) and why."""

    def __init__(self, key: str | None, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class ImageRecord:
    """An ``image`` row's header metadata and where the file lives."""

    filename: str
    instrument: str
    runid: str
    qrunid: str | None
    filter: str
    object: str | None
    ra: float | None
    dec: float | None
    exptime: float | None
    date_obs: datetime
    mjd_obs: float | None
    airmass: float | None
    gain: float | None
    saturate: float | None
    phot_c: float | None
    phot_k: float | None
    extensions: int
    bytes: int
    checksum: str
    path: str
    node: str | None = None
    partition: str | None = None
    repository: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["date_obs"] = self.date_obs.isoformat()
        return data


class _Cards:
    """The cards of the kept headers by keyword (first occurrence), parsed on demand."""

    def __init__(self, headers: Sequence[str]) -> None:
        self._text: dict[str, str] = {}
        for header in headers:
            seen: dict[str, str] = {}
            for i in range(0, len(header), CARD):
                card = header[i : i + CARD]
                keyword = card[:8].rstrip()
                if keyword == "END":
                    break
                if card[8:10] == "= ":
                    seen.setdefault(keyword, card)
            for keyword, card in seen.items():
                self._text.setdefault(keyword, card)  # the primary header wins

    def __contains__(self, key: str) -> bool:
        return key in self._text

    def value(self, key: str) -> object:
        card = self._text[key]
        fast = _simple_value(card[10:])
        if fast is not _NOT_SIMPLE:
            return fast
        return _astropy_value(key, card)


#: The value forms nearly every card has (FITS 4.0 §4.2): a string, a logical, an integer
#: or a real, then an optional comment. Read by these expressions they cost a microsecond;
#: anything else goes to astropy's card parser (a hundred times slower, and the authority).
_STRING = re.compile(r"^ *'((?:[^']|'')*)' *(?:/.*)?$")
_LOGICAL = re.compile(r"^ *([TF]) *(?:/.*)?$")
_INTEGER = re.compile(r"^ *([+-]?\d+) *(?:/.*)?$")
_REAL = re.compile(r"^ *([+-]?(?:\d+\.?\d*|\.\d+)(?:[EDed][+-]?\d+)?) *(?:/.*)?$")
_NOT_SIMPLE = object()


def _simple_value(field: str) -> object:
    if m := _STRING.match(field):
        return m[1].replace("''", "'").rstrip()
    if m := _INTEGER.match(field):
        return int(m[1])
    if m := _REAL.match(field):
        return float(m[1].replace("D", "E").replace("d", "e"))
    if m := _LOGICAL.match(field):
        return m[1] == "T"
    return _NOT_SIMPLE


def _astropy_value(key: str, card: str) -> object:
    """The card's value by astropy's parser: free-format oddities, complex values, errors."""
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = fits.Card.fromstring(card).value
        except Exception as exc:  # astropy's VerifyError and its parsers' errors alike
            raise HeaderRejected(key, f"unparseable card: {exc}") from None
    if isinstance(value, fits.card.Undefined):
        raise HeaderRejected(key, "the card has no value")
    return value


def _column(cards: _Cards, sources: Sequence[Source]) -> tuple[Source, object] | None:
    for source in sources:
        if source.key in cards:
            return source, cards.value(source.key)
    return None


def detect_map(scanned: ScannedFits, maps: Sequence[HeaderMap]) -> HeaderMap:
    """The map whose instrument wrote the file."""
    cards = _Cards([scanned.primary])
    keys = sorted({m.detect.key for m in maps})
    for key in keys:
        if key in cards:
            value = cards.value(key)
            for header_map in maps:
                if header_map.detect.key == key and header_map.matches(value):
                    return header_map
            known = ", ".join(v for m in maps for v in m.detect.values)
            raise HeaderRejected(key, f"no header map for {value!r} (known: {known})")
    raise HeaderRejected(keys[0] if keys else None, "missing: the instrument is not named")


def read_record(
    scanned: ScannedFits,
    path: str,
    maps: Sequence[HeaderMap],
    *,
    node: str | None = None,
    partition: str | None = None,
    repository: str | None = None,
) -> ImageRecord:
    """The record of a scanned file, or :class:`HeaderRejected` naming the key and why."""
    filename = image_filename(path.rsplit("/", 1)[-1])
    if filename is None:
        raise HeaderRejected(None, f"not a {', '.join(SUFFIXES)} file name")
    header_map = detect_map(scanned, maps)
    headers = [scanned.primary]
    if scanned.first_extension is not None:
        headers.append(scanned.first_extension)
    cards = _Cards(headers)
    values: dict[str, Any] = {}
    for name, column in header_map.columns.items():
        found = _column(cards, column.sources)
        if found is None:
            if column.required:
                keys = " or ".join(s.key for s in column.sources)
                raise HeaderRejected(column.sources[0].key, f"missing ({name} needs {keys})")
            values[name] = None
            continue
        source, raw = found
        try:
            if source.kind == "date":
                time_key = source.time_key
                time = cards.value(time_key) if time_key and time_key in cards else None
                values[name] = date_time(raw, time)
            else:
                values[name] = convert(raw, source)
        except BadValue as exc:
            raise HeaderRejected(source.key, str(exc)) from None
    return ImageRecord(
        filename=filename,
        instrument=header_map.instrument,
        runid=values["runid"],
        qrunid=values.get("qrunid"),
        filter=values["filter"],
        object=values.get("object"),
        ra=values.get("ra"),
        dec=values.get("dec"),
        exptime=values.get("exptime"),
        date_obs=values["date_obs"],
        mjd_obs=values.get("mjd_obs"),
        airmass=values.get("airmass"),
        gain=values.get("gain"),
        saturate=values.get("saturate"),
        phot_c=values.get("phot_c"),
        phot_k=values.get("phot_k"),
        extensions=scanned.extensions,
        bytes=scanned.size,
        checksum=scanned.checksum,
        path=path,
        node=node,
        partition=partition,
        repository=repository,
    )
