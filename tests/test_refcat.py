"""Reference catalogues: CSV and FITS tables converted to the FITS_LDAC SCAMP reads (cached
by checksum), FITS_LDAC kept, and clear messages for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from spica_core.stacking.refcat import (
    DEFAULT_MAG_ERR,
    DEFAULT_POS_ERR,
    RefcatError,
    read_reference,
    reference_ldac,
)
from spica_core.synth.refcat import write_reference_catalogue

CSV = "ra,dec,mag,mag_err\n34.50,-7.00,18.5,0.02\n34.60,-7.10,19.25,0.04\n0.01,-6.90,20.0,0.05\n"


def field_header(hdus: fits.HDUList) -> fits.Header:
    cards = hdus["LDAC_IMHEAD"].data["Field Header Card"][0]
    return fits.Header.fromstring("".join(card.ljust(80) for card in cards))


def objects(path: Path) -> fits.FITS_rec:
    with fits.open(path) as hdus:
        assert [h.name for h in hdus] == ["PRIMARY", "LDAC_IMHEAD", "LDAC_OBJECTS"]
        header = field_header(hdus)
        assert header["CTYPE1"] == "RA---STG"
        return hdus["LDAC_OBJECTS"].data.copy()


def test_csv_becomes_ldac(tmp_path: Path) -> None:
    source = tmp_path / "ref.csv"
    source.write_text(CSV)
    ldac, checksum = reference_ldac(source, tmp_path / "cache")
    assert ldac.parent == tmp_path / "cache" and checksum.startswith("xxh128:")
    rows = objects(ldac)
    assert np.allclose(rows["X_WORLD"], [34.5, 34.6, 0.01])
    assert np.allclose(rows["Y_WORLD"], [-7.0, -7.1, -6.9])
    assert np.allclose(rows["MAG"], [18.5, 19.25, 20.0])
    assert np.allclose(rows["MAGERR"], [0.02, 0.04, 0.05])
    assert np.allclose(rows["ERRA_WORLD"], DEFAULT_POS_ERR / 3600)
    assert set(rows.columns.names) >= {"ERRB_WORLD", "ERRTHETA_WORLD", "OBSDATE", "FLAGS"}


def test_the_field_header_covers_a_catalogue_across_0h(tmp_path: Path) -> None:
    source = tmp_path / "ref.csv"
    source.write_text("RA;DEC;MAG\n359.9;1.0;18\n0.1;1.2;19\n")  # any case, ; separated
    ldac, _ = reference_ldac(source, tmp_path / "cache")
    with fits.open(ldac) as hdus:
        header = field_header(hdus)
    centre = header["CRVAL1"] % 360
    assert min(centre, 360 - centre) < 0.01  # the mean across 0h, not 180
    assert np.allclose(objects(ldac)["MAGERR"], DEFAULT_MAG_ERR)


def test_fits_table_with_position_errors(tmp_path: Path) -> None:
    source = tmp_path / "ref.fits"
    table = Table(
        {
            "RA": [10.0, 10.1],
            "DEC": [20.0, 20.1],
            "MAG": [17.0, 18.0],
            "RA_ERR": [0.02, 0.05],
            "DEC_ERR": [0.03, 0.01],
        }
    )
    table.write(source)
    ldac, _ = reference_ldac(source, tmp_path / "cache")
    rows = objects(ldac)
    assert np.allclose(rows["ERRA_WORLD"] * 3600, [0.03, 0.05])  # the larger per axis
    assert np.allclose(rows["X_WORLD"], [10.0, 10.1])


def test_ldac_is_kept_as_it_is(tmp_path: Path) -> None:
    source = write_reference_catalogue(tmp_path / "sky.ldac", (34.5, -7.0), 0.1)
    ldac, _ = reference_ldac(source, tmp_path / "cache")
    assert ldac == source
    assert not (tmp_path / "cache").exists()


def test_the_cache_follows_the_source_checksum(tmp_path: Path) -> None:
    source = tmp_path / "ref.csv"
    source.write_text(CSV)
    first, sum1 = reference_ldac(source, tmp_path / "cache")
    os.utime(first, (1, 1))
    again, _ = reference_ldac(source, tmp_path / "cache")
    assert again == first and first.stat().st_mtime == 1  # converted once
    source.write_text(CSV.replace("18.5", "18.6"))
    changed, sum2 = reference_ldac(source, tmp_path / "cache")
    assert sum2 != sum1 and changed != first
    assert np.allclose(objects(changed)["MAG"][0], 18.6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ra,dec\n1,2\n", "no column mag (columns: dec, ra)"),
        ("ra,dec,mag\n1,2,bright\n", "column mag: 'bright' is not a number"),
        ("ra,dec,mag\n1,2\n", "line 2 has 2 fields, the header 3"),
        ("ra,dec,mag\n1,95,18\n", "column dec: a value lies outside -90..90 deg"),
        ("ra,dec,mag\n", "no references (the table is empty)"),
        ("", "empty: a header line"),
    ],
)
def test_bad_catalogues_are_named(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(text)
    with pytest.raises(RefcatError) as info:
        read_reference(source)
    assert str(info.value) == f"reference catalogue {source}: {message}" or message in str(
        info.value
    )
    assert str(source) in str(info.value)
    assert info.value.exit_code == 2


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(RefcatError, match="No such file"):
        reference_ldac(tmp_path / "nowhere.csv", tmp_path / "cache")
    binary = tmp_path / "ref.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 100)
    with pytest.raises(RefcatError, match="neither FITS nor UTF-8"):
        read_reference(binary)
