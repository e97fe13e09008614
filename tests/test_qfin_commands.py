"""The lines of a QFin unit: argv lists of real binaries and ``spica`` subcommands."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from spica_core.errors import InvalidName, UsageError
from spica_core.qfin.commands import CONFIG_FILES, QfinUnitPaths, qfin_commands
from spica_core.resources import astromatic_dir

UNIT = QfinUnitPaths(
    image="811001p",
    image_path="/data/node1/raid1/811001p.fits",
    workdir="/data/node1/raid1/qfin/T0003/811001p",
)


def _lines(unit: QfinUnitPaths = UNIT) -> list[list[str]]:
    return qfin_commands(unit, release="T0003", config_dir=str(astromatic_dir()))


def _value(argv: list[str], key: str) -> str:
    return argv[argv.index(key) + 1]


def test_lines_in_order_with_the_interface_arguments() -> None:
    maps, sex, psfex, record = _lines()
    assert maps == [
        "spica", "qfin", "maps", "811001p",
        "--image-path", UNIT.image_path, "--workdir", UNIT.workdir,
    ]  # fmt: skip
    assert sex[:2] == ["source-extractor", UNIT.image_path]
    assert psfex[0] == "psfex"
    assert record == [
        "spica", "qfin", "record", "811001p",
        "--workdir", UNIT.workdir, "--release", "T0003", "--image-path", UNIT.image_path,
    ]  # fmt: skip


def test_tools_read_our_configuration_and_the_maps() -> None:
    _, sex, psfex, _ = _lines()
    config = astromatic_dir()
    assert _value(sex, "-c") == str(config / "qfin.sex")
    assert _value(sex, "-PARAMETERS_NAME") == str(config / "qfin.param")
    assert _value(sex, "-WEIGHT_IMAGE") == f"{UNIT.workdir}/811001p.weight.fits"
    assert _value(sex, "-FLAG_IMAGE") == f"{UNIT.workdir}/811001p.flag.fits"
    catalog = _value(sex, "-CATALOG_NAME")
    assert catalog == f"{UNIT.workdir}/811001p.cat"
    assert psfex[1] == catalog
    assert _value(psfex, "-c") == str(config / "qfin.psfex")
    assert _value(psfex, "-PSF_DIR") == UNIT.workdir
    for name in CONFIG_FILES:
        assert (config / name).is_file(), name


def test_param_list_carries_what_psfex_and_scamp_read() -> None:
    lines = (astromatic_dir() / "qfin.param").read_text().splitlines()
    params = {line.split("(")[0] for line in lines if line and not line.startswith("#")}
    for needed in (
        "VIGNET", "FLUX_APER", "FLUXERR_APER", "FLUX_RADIUS", "ELONGATION", "FLAGS",
        "SNR_WIN", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE",
        "ERRTHETAWIN_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "FLAGS_WEIGHT", "IMAFLAGS_ISO",
    ):  # fmt: skip
        assert needed in params, needed


def test_compressed_image_is_read_from_its_unpacked_copy() -> None:
    unit = QfinUnitPaths(
        image="811001p", image_path="/data/r/811001p.fits.fz", workdir="/data/r/qfin/811001p"
    )
    maps, sex, _, record = _lines(unit)
    assert _value(maps, "--image-path") == "/data/r/811001p.fits.fz"
    assert sex[1] == "/data/r/qfin/811001p/811001p.fits"
    assert _value(record, "--image-path") == "/data/r/811001p.fits.fz"


def test_lines_survive_shell_quoting() -> None:
    unit = QfinUnitPaths(
        image="811001p", image_path="/data/r$(x)/811001p.fits", workdir="/data/r$(x)/q"
    )
    for argv in _lines(unit):
        assert shlex.split(shlex.join(argv)) == argv


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_path", "relative/811001p.fits", "not an absolute path"),
        ("workdir", "", "not an absolute path"),
        ("image_path", "/data/a,b/811001p.fits", "split their arguments on"),
        ("workdir", "/data/my dir/q", "split their arguments on"),
    ],
)
def test_paths_the_tools_cannot_take_are_refused(field: str, value: str, message: str) -> None:
    unit = QfinUnitPaths(**{**UNIT.__dict__, field: value})
    with pytest.raises(UsageError, match=message) as caught:
        _lines(unit)
    assert "811001p" in str(caught.value)


def test_bad_image_and_release_names_are_refused() -> None:
    with pytest.raises(InvalidName, match="image"):
        _lines(QfinUnitPaths(**{**UNIT.__dict__, "image": "../811001p"}))
    with pytest.raises(InvalidName, match="release"):
        qfin_commands(UNIT, release="T0003; rm -rf /", config_dir=str(astromatic_dir()))


def test_config_dir_in_a_wheel_layout_is_used_as_given(tmp_path: Path) -> None:
    _, sex, psfex, _ = qfin_commands(UNIT, release="T0003", config_dir=str(tmp_path))
    assert _value(sex, "-c") == str(tmp_path / "qfin.sex")
    assert _value(psfex, "-c") == str(tmp_path / "qfin.psfex")
