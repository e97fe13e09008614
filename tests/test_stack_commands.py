"""The lines of a stack unit: argv lists of real binaries and ``spica`` subcommands."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from spica_core.errors import InvalidName, UsageError
from spica_core.stacking.commands import stack_commands
from spica_core.stacking.unit import StackInput, StackUnit, TileSpec

WORK = "/data/node1/raid1/stacks/CFHTLS_W_u_021410-041200_T0003"
TILE = TileSpec(key="CFHTLS_W_u_021410-041200", ra=33.5416667, dec=-4.2, size=(2000, 1800),
                pixel_scale=0.186)  # fmt: skip


def _input(image: str, suffix: str = ".fits", **change: object) -> StackInput:
    plain = StackInput(image=image, path=f"/data/node1/raid1/{image}{suffix}", checksum=None,
                       exptime=600.0, scamp=True, swarp=True)  # fmt: skip
    return dataclasses.replace(plain, **change)  # type: ignore[arg-type]


INPUTS = (
    _input(
        "805282p",
        ".fits.fz",
        checksum="xxh128:" + "0" * 32,
        ahead={"PHOT_K": 0.35, "PHOTFLAG": True},
    ),
    _input("805283p", weight="/data/node1/raid1/qfin/805283p.weight.fits"),
    _input("805290p", exptime=300.0, swarp=False),
)
UNIT = StackUnit(
    name="CFHTLS_W_u_021410-041200_T0003", release="T0003", mode="stack", survey="W",
    filter="u.MP9301", workdir=WORK, tile=TILE, inputs=INPUTS,
    reference_catalogue="/data/node1/raid1/refcat/T0003.ldac", config_dir="/opt/spica/astromatic",
)  # fmt: skip


def _value(argv: list[str], key: str) -> str:
    return argv[argv.index(key) + 1]


def test_lines_in_order() -> None:
    lines = stack_commands(UNIT)
    tools = [line[0] if line[0] != "spica" else " ".join(line[:3]) for line in lines]
    assert tools == [
        "spica stack prepare", "spica stack prepare", "spica stack prepare",
        "source-extractor", "source-extractor", "source-extractor",
        "scamp", "SWarp", "source-extractor", "psfex", "spica stack inject",
        "source-extractor", "stiff", "spica stack record",
    ]  # fmt: skip
    first = lines[0]
    assert first[:6] == ["spica", "stack", "prepare", UNIT.name, "--workdir", WORK]
    assert _value(first, "--checksum") == INPUTS[0].checksum
    assert [first[i + 1] for i, a in enumerate(first) if a == "--ahead"] == [
        "PHOT_K=0.35",
        "PHOTFLAG=T",
    ]
    assert "--swarp" in first and "--scamp" in first
    assert "--swarp" not in lines[2]
    assert _value(lines[1], "--weight") == INPUTS[1].weight
    assert lines[-1] == ["spica", "stack", "record", UNIT.name, "--workdir", WORK,
                         "--release", "T0003"]  # fmt: skip


def test_tools_read_the_work_directory_files() -> None:
    lines = stack_commands(UNIT)
    sex = lines[3]
    assert sex[1] == f"{WORK}/inputs/805282p.fits"
    assert _value(sex, "-CATALOG_NAME") == f"{WORK}/inputs/805282p.cat"
    assert _value(sex, "-WEIGHT_IMAGE") == f"{WORK}/inputs/805282p.weight.fits"
    scamp, swarp = lines[6], lines[7]
    assert scamp[1] == f"@{WORK}/scamp.list"
    assert _value(scamp, "-ASTREFCAT_NAME") == UNIT.reference_catalogue
    assert _value(scamp, "-ASTREF_CATALOG") == "FILE"
    assert swarp[1] == f"@{WORK}/swarp.list"
    assert _value(swarp, "-IMAGEOUT_NAME") == f"{WORK}/{UNIT.name}.fits"
    assert _value(swarp, "-IMAGE_SIZE") == "2000,1800"
    assert _value(swarp, "-CENTER") == "33.5416667,-4.2000000"
    assert _value(lines[-2], "-OUTFILE_NAME") == f"{WORK}/{UNIT.name}.tif"
    assert _value(lines[10], "--refcat") == UNIT.reference_catalogue


def test_image_mode_runs_the_same_lines() -> None:
    unit = dataclasses.replace(UNIT, name="805282p_V0003", mode="image", inputs=INPUTS[:1])
    lines = stack_commands(unit)
    assert len(lines) == 1 + 1 + 8


def test_lines_survive_shell_quoting() -> None:
    for line in stack_commands(UNIT):
        assert shlex.split(shlex.join(line)) == line


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"workdir": "relative/dir"}, UsageError),
        ({"workdir": "/data/a,b"}, UsageError),
        ({"reference_catalogue": "/data/ref cat.ldac"}, UsageError),
        ({"config_dir": "conf"}, UsageError),
        ({"name": "bad name;rm"}, InvalidName),
        ({"release": "../T3"}, InvalidName),
        ({"inputs": ()}, UsageError),
        ({"inputs": (INPUTS[0], INPUTS[0])}, UsageError),
        ({"inputs": (dataclasses.replace(INPUTS[0], path="/data/x,y.fits"),)}, UsageError),
        ({"inputs": (dataclasses.replace(INPUTS[0], image="x y"),)}, InvalidName),
        ({"inputs": (dataclasses.replace(INPUTS[0], scamp=False),)}, UsageError),
        ({"inputs": (dataclasses.replace(INPUTS[0], ahead={"bad key": 1}),)}, UsageError),
        ({"tile": dataclasses.replace(TILE, size=(0, 10))}, UsageError),
    ],
)
def test_bad_units_are_refused(change: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        stack_commands(dataclasses.replace(UNIT, **change))  # type: ignore[arg-type]


def test_configuration_files_are_installed_and_hold_what_the_tools_read() -> None:
    from spica_core.resources import astromatic_dir
    from spica_core.stacking.commands import CONFIG_FILES

    config = astromatic_dir()
    for name in CONFIG_FILES:
        assert (config / name).is_file(), name
    lines = (config / "stack.param").read_text().splitlines()
    params = {line.split("(")[0] for line in lines if line and not line.startswith("#")}
    for needed in (
        "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE",
        "FLUX_AUTO", "FLUXERR_AUTO", "FLAGS", "FLAGS_WEIGHT", "VIGNET", "FLUX_APER",
        "FLUX_RADIUS", "SNR_WIN", "ALPHA_J2000", "DELTA_J2000", "MAG_AUTO", "FWHM_IMAGE",
        "X_IMAGE", "Y_IMAGE", "CLASS_STAR",
    ):  # fmt: skip
        assert needed in params, needed
    scamp = (config / "stack.scamp").read_text()
    assert "ASTREF_CATALOG         FILE" in scamp and "CHECKPLOT_TYPE         NONE" in scamp
