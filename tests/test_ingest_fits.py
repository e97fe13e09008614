"""Reading exposures without the pixels: the one-pass scan, card values, sexagesimal and
dates, and the instrument maps — each checked against astropy reading the same thing."""

from __future__ import annotations

import gzip
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time
from hypothesis import given, settings
from hypothesis import strategies as st

from spica_core.checksum import file_checksum
from spica_core.errors import ConfigError
from spica_core.ingest.fitsscan import BLOCK, FitsFormatError, image_filename, scan_file
from spica_core.ingest.header_map import parse_header_map, shipped_maps
from spica_core.ingest.record import _simple_value
from spica_core.ingest.values import BadValue, date_time, sexagesimal
from spica_core.synth.layout import ExposureSpec
from spica_core.synth.writer import CONTAINERS, exposure_bytes, write_exposure

SPEC = ExposureSpec(
    filename="695665o",
    runid="03AF19",
    qrunid="03AQ01",
    filter="i.MP9702",
    object="w1.+1-1",
    ra_deg=36.1,
    dec_deg=-5.2,
    exptime=170.0,
    start=datetime(2003, 3, 2, 7, 30, 1, 500000, tzinfo=UTC),
    airmass=1.1,
    ccds=36,
)


@pytest.mark.parametrize("container", CONTAINERS)
def test_scan_matches_astropy(tmp_path: Path, container: str) -> None:
    path = write_exposure(SPEC, tmp_path, container)  # type: ignore[arg-type]
    scanned = scan_file(path)
    # .fz: the stored header is the compressed BINTABLE's (it carries the CCD's cards too).
    with fits.open(path, disable_image_compression=True) as hdul:
        assert scanned.extensions == len(hdul) - 1 == 36
        assert fits.Header.fromstring(scanned.primary) == hdul[0].header
        assert fits.Header.fromstring(scanned.first_extension) == hdul[1].header
        assert hdul[1].header["GAIN"] == SPEC.gain(0)
    assert (scanned.checksum, scanned.size) == file_checksum(path)
    assert scanned.compressed == (container == "fits.gz")


def test_names() -> None:
    assert image_filename("811001p.fits.gz") == "811001p"
    assert image_filename("811001p.fits.fz") == "811001p"
    assert image_filename("811001p.fits") == "811001p"
    assert image_filename("811001p.fit") is None
    assert image_filename(".fits") is None


def _cut(data: bytes, at: int) -> io.BytesIO:
    return io.BytesIO(data[:at])


@pytest.mark.parametrize(
    ("at", "reason"),
    [
        (100, "inside the header of HDU 0"),
        (BLOCK + 200, "inside the header of HDU 1"),
        (2 * BLOCK + 10, "inside the data of HDU 1"),
        (-1, "inside the data of HDU 36"),
    ],
)
def test_truncated_plain(tmp_path: Path, at: int, reason: str) -> None:
    data = exposure_bytes(SPEC, "fits")
    path = tmp_path / "cut.fits"
    path.write_bytes(data[:at])
    with pytest.raises(FitsFormatError, match=f"truncated: the file ends {reason}"):
        scan_file(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = exposure_bytes(SPEC, "fits.gz")
    for at in (30, len(data) // 2, len(data) - 4):
        path = tmp_path / "cut.fits.gz"
        path.write_bytes(data[:at])
        with pytest.raises(FitsFormatError, match="truncated"):
            scan_file(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, world\n" * 300, "not FITS"),
        (gzip.compress(b"plain text, gzipped" * 200, mtime=0), "not FITS: gzip data"),
        (b"\x1f\x8b\x08\x00garbage" * 100, "corrupt gzip stream"),
        (b"SIMPLE  =                    F" + b" " * (BLOCK - 30), "not FITS"),
    ],
    ids=["empty", "text", "gzipped-text", "bad-gzip", "simple-false"],
)
def test_not_fits(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "x.fits"
    path.write_bytes(content)
    with pytest.raises(FitsFormatError, match=reason):
        scan_file(path)


def test_junk_after_the_last_hdu_and_nul_padding(tmp_path: Path) -> None:
    data = exposure_bytes(SPEC, "fits")
    padded = tmp_path / "padded.fits"
    padded.write_bytes(data + b"\0" * 5000)
    assert scan_file(padded).extensions == 36
    junk = tmp_path / "junk.fits"
    junk.write_bytes(data + b"trailing junk" * 300)
    with pytest.raises(FitsFormatError, match="junk after HDU 36"):
        scan_file(junk)


def test_bad_structural_card(tmp_path: Path) -> None:
    data = bytearray(exposure_bytes(SPEC, "fits"))
    at = BLOCK + 80  # the first extension's BITPIX card
    data[at : at + 30] = b"BITPIX  =                   17"
    path = tmp_path / "bad.fits"
    path.write_bytes(bytes(data))
    with pytest.raises(FitsFormatError, match="HDU 1: BITPIX = 17"):
        scan_file(path)


CARDS = [
    "RUNID   = '03AF19  '           / Run identification",
    "OBJECT  = 'O''Brien field'",
    "EMPTY   = ''",
    "EXPTIME =                600.0 / seconds",
    "EXPTIME =                  600",
    "MJD-OBS =       52727.25000231",
    "PHOT_C  =              2.65D+1",
    "SMALL   =               -.5e-3",
    "FLAG    =                    T / yes",
    "FLAG    =                    F",
    "NEG     =                  -17",
    "FREE    =   12.5   / free format",
]


@pytest.mark.parametrize("card", CARDS)
def test_card_values_as_astropy_reads_them(card: str) -> None:
    text = card.ljust(80)
    assert _simple_value(text[10:]) == fits.Card.fromstring(text).value


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=359.99999, allow_nan=False))
def test_hours_sexagesimal_agrees_with_astropy(value: float) -> None:
    hours = value / 15
    h, rest = divmod(hours * 3600, 3600)
    m, s = divmod(rest, 60)
    text = f"{int(h):02d}:{int(m):02d}:{s:06.3f}"
    if text.endswith("60.000"):
        return
    assert sexagesimal(text, hours=True) == pytest.approx(
        Angle(text, unit=u.hourangle).deg, abs=1e-9
    )


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-90, max_value=90, allow_nan=False))
def test_degrees_sexagesimal_agrees_with_astropy(value: float) -> None:
    sign = "-" if value < 0 else "+"
    d, rest = divmod(abs(value) * 3600, 3600)
    m, s = divmod(rest, 60)
    text = f"{sign}{int(d):02d}:{int(m):02d}:{s:05.2f}"
    if "60.00" in text or abs(Angle(text, unit=u.deg).deg) > 90:
        return
    assert sexagesimal(text, hours=False) == pytest.approx(Angle(text, unit=u.deg).deg, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "hours"),
    [("02:1x:00", True), ("24:00:00", True), ("12:60:00", True), ("-01:00:00", True),
     ("+91:00:00", False), ("90:00:00.1", False), ("", True), ("2h13m", True)],
)  # fmt: skip
def test_bad_sexagesimal(text: str, hours: bool) -> None:
    with pytest.raises(BadValue):
        sexagesimal(text, hours=hours)


@pytest.mark.parametrize(
    ("date", "time"),
    [("2003-06-25", "14:02:07.25"), ("2003-06-25T14:02:07.25", None), ("2003-12-31", None),
     ("2004-02-29", "23:59:59.999999")],
)  # fmt: skip
def test_dates_agree_with_astropy_time(date: str, time: str | None) -> None:
    iso = date if time is None else f"{date}T{time}"
    expected = Time(iso, scale="utc").to_datetime().replace(tzinfo=UTC)
    assert abs((date_time(date, time) - expected).total_seconds()) < 1e-6


@pytest.mark.parametrize(
    ("date", "time"),
    [("2003-02-30", "00:00:00"), ("25/06/2003", None), ("2003-06-25", "25:00:00"),
     ("2003-06-25", "noon"), (20030625, None)],
)  # fmt: skip
def test_bad_dates(date: object, time: object) -> None:
    with pytest.raises(BadValue):
        date_time(date, time)


def test_shipped_maps_load() -> None:
    (megaprime,) = shipped_maps()
    assert megaprime.instrument == "megaprime"
    assert megaprime.matches("MegaPrime") and not megaprime.matches("WIRCam")
    assert [s.key for s in megaprime.columns["ra"].sources] == ["RA_DEG", "RA"]


GOOD_MAP = """
instrument = "wircam"
detect = { key = "INSTRUME", values = ["WIRCam"] }
[columns.runid]
required = true
sources = [{ key = "RUNID", kind = "text" }]
[columns.filter]
required = true
sources = [{ key = "FILTER", kind = "text" }]
[columns.date_obs]
required = true
sources = [{ key = "DATE-OBS", kind = "date" }]
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[columns.filter]", "[columns.colour]"), "unknown column 'colour'"),
        (('kind = "date"', 'kind = "number"'), "key DATE-OBS has kind 'number'"),
        (('key = "RUNID"', 'key = "run id"'), "is not a FITS keyword"),
        (('kind = "text" }]\n[columns.filter]', 'kind = "texte" }]\n[columns.filter]'), "kind"),
        (("required = true\nsources = [{ key = \"FILTER\"", "sources = [{ key = \"FILTER\""),
         "column 'filter' must be mapped and required"),
        (('instrument = "wircam"', 'instrument = "wircam"\ncolour = 1'), "colour: unknown key"),
        (('"RUNID", kind = "text" }', '"RUNID", kind = "text", pattern = "(" }'),
         "not a regular expression"),
    ],
)  # fmt: skip
def test_bad_maps_name_file_and_key(change: tuple[str, str], message: str) -> None:
    parse_header_map(GOOD_MAP, "wircam.toml")
    text = GOOD_MAP.replace(*change)
    assert text != GOOD_MAP
    with pytest.raises(ConfigError, match=re.escape("wircam.toml: key")) as err:
        parse_header_map(text, "wircam.toml")
    assert message in str(err.value)
