"""One stack unit as its node will run it: the tile, the inputs and where everything is.

``spica auto`` (:mod:`spica_core.auto`) builds a :class:`StackUnit` per tile and filter (or
per exposure in image mode); :func:`spica_core.stacking.commands.stack_commands` turns it into
the argv lists of ``commands.sh``. Every path is absolute on the unit's node: inputs held by
another node are copied to the unit's node before it is staged, so a unit never reads over
the network while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: ``stack_file.role`` of a stack's inputs: astrometry (SCAMP) and co-addition (SWarp).
SCAMP, SWARP = "scamp", "swarp"
#: ``stack.step`` of ``spica auto``'s units: co-adds on tiles, or one exposure (VW).
STACK_STEP, IMAGE_STEP = "stack", "image"
Mode = Literal["stack", "image"]
#: A FITS card value of an ``.ahead`` file.
CardValue = str | int | float | bool


@dataclass(frozen=True)
class TileSpec:
    """Where the co-add lands: a tangent-plane image centred on (``ra``, ``dec``)."""

    #: The stack's name without its release (``CFHTLS_W_u_021410-041200``): what
    #: ``spica compare`` pairs across releases.
    key: str
    ra: float
    dec: float
    #: Co-add size in pixels (x, y) and scale (arcsec / pixel).
    size: tuple[int, int]
    pixel_scale: float


@dataclass(frozen=True)
class StackInput:
    """One exposure a unit reads, as it will be on the unit's node."""

    image: str
    #: The exposure (``.fits``, ``.fits.fz`` or ``.fits.gz``) on the unit's node.
    path: str
    #: Its checksum as ingested (``spica_core.checksum``), checked before it is read.
    checksum: str | None
    exptime: float
    #: Used for astrometry (SCAMP) and / or co-added (SWarp).
    scamp: bool
    swarp: bool
    #: Cards of the exposure's ``.ahead`` file (the photometric keys its header lacks:
    #: ``PHOT_C``, ``PHOT_K``, ``PHOTFLAG``…); empty: no ``.ahead``.
    ahead: Mapping[str, CardValue] = field(default_factory=dict)
    #: QFin's weight and flag maps on the unit's node, when it has them.
    weight: str | None = None
    flag: str | None = None


@dataclass(frozen=True)
class StackUnit:
    """Everything the lines of one stack unit need."""

    name: str
    release: str
    mode: Mode
    survey: str | None
    filter: str | None
    #: Absolute work directory on the node (inside its spica root), made by the first line.
    workdir: str
    tile: TileSpec
    inputs: tuple[StackInput, ...]
    #: The release's reference catalogue as FITS_LDAC, on the unit's node.
    reference_catalogue: str
    #: Directory of the tools' configuration files on the node.
    config_dir: str

    @property
    def scamp_inputs(self) -> tuple[StackInput, ...]:
        return tuple(i for i in self.inputs if i.scamp)

    @property
    def swarp_inputs(self) -> tuple[StackInput, ...]:
        return tuple(i for i in self.inputs if i.swarp)
