"""``spica auto`` planning: the stack units a release's rules and tile grid call for (no
writes).

Stack mode: the images the rules accept (:mod:`.rules`) are assigned to the tiles they touch
(:mod:`.tiles`); every (tile, filter) with at least ``min_images`` of them is a unit named
``<tile key>_<release>``. Its SWarp inputs are the exposures touching the tile; its SCAMP
inputs are those plus every accepted exposure of the filter overlapping one of them (the
group SCAMP solves together, so the tile's astrometry agrees with its neighbours'). Image
mode (VW): one unit per accepted exposure, ``<image>_<release>``, the exposure its only
input.

A unit runs on the node holding most of its input bytes (ties: the node's name), in
``<root>/<partition>/stacks/<release>/<stack>`` on that node's partition holding most of
them. Inputs held by other nodes are planned as copies to
``<root>/<partition>/inputs/<runid>/<file>`` on the unit's node (one copy shared by the
node's units), the release's reference catalogue (FITS_LDAC) to
``<root>/<partition>/stacks/<release>/reference-<checksum>.ldac``.

``.ahead`` cards: SCAMP reads its photometric keys per CCD, from source-extractor's
catalogues, which carry the CCD's header and not the primary one where MegaCam writes them;
so every input's ``.ahead`` gives ``FILTER``, ``EXPTIME``, ``AIRMASS``, ``PHOT_C``, ``PHOT_K``
and ``PHOTFLAG`` as dbspica holds them from ingestion. An exposure whose header lacked
``PHOT_C`` or ``PHOT_K`` gets the median of its filter's images which have it and
``PHOTFLAG = F`` (made up, not measured on the night; ``T`` otherwise); a key no image of the
filter has is left out.

Idempotent: a unit whose name exists with the same inputs digest (sha256 of its sorted
``role:image``) is skipped; with another digest it is reported changed (images added and
removed) and never rewritten (the seed's F.A.Q.: remove the stack first).
"""

from __future__ import annotations

import functools
import hashlib
import math
import posixpath
import shlex
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.auto.freeze import ReleaseSettings, check_frozen, release_settings, tool_config_dir
from spica_core.auto.images import AutoImage, load_images
from spica_core.auto.rules import Refusal, filter_matches, select_images
from spica_core.auto.tiles import TileGrid, boxes_overlap, filter_letter, stack_name
from spica_core.config import SpicaConfig, StackReleaseConfig, TileGridConfig
from spica_core.db.models import Image, Stack, StackFile
from spica_core.errors import ConfigError, UsageError
from spica_core.names import validate_name
from spica_core.stacking.commands import stack_commands
from spica_core.stacking.unit import (
    IMAGE_STEP,
    SCAMP,
    SWARP,
    CardValue,
    Mode,
    StackInput,
    StackUnit,
    TileSpec,
)

#: Directories of a partition: the stacks of each release, and inputs copied from elsewhere.
STACKS_DIR = "stacks"
INPUTS_DIR = "inputs"
#: The runid directory of copied inputs whose image has no runid.
NO_RUNID = "no-runid"


@dataclass(frozen=True)
class AutoQuery:
    """Which release (None: the last configured), and optionally one survey field, one
    filter (letter or full name) and the mode (None: the release's)."""

    release: str | None = None
    survey: str | None = None
    filter: str | None = None
    mode: Mode | None = None


@dataclass(frozen=True)
class InputCopy:
    """An input held by another node, copied to the unit's node before it is staged."""

    image: str
    source_node: str
    #: Absolute paths on the source node and on the unit's node.
    source_path: str
    node: str
    path: str
    checksum: str | None
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PlannedStack:
    unit: StackUnit
    node: str
    partition: str
    #: ``stack_file`` rows: (image id, role).
    files: tuple[tuple[int, str], ...]
    digest: str
    copies: tuple[InputCopy, ...]
    #: The lines of ``commands.sh``.
    commands: tuple[str, ...]
    runid: str | None = None
    #: ``new`` in a plan; ``planned`` or ``pending`` once written, ``failed`` when not added.
    state: str = "new"
    error: str | None = None

    @property
    def name(self) -> str:
        return self.unit.name

    def to_json(self) -> dict[str, Any]:
        unit = self.unit
        return {
            "stack": unit.name,
            "tile": unit.tile.key,
            "node": self.node,
            "partition": self.partition,
            "filter": unit.filter,
            "workdir": unit.workdir,
            "scamp": [i.image for i in unit.scamp_inputs],
            "swarp": [i.image for i in unit.swarp_inputs],
            "ahead": {i.image: dict(i.ahead) for i in unit.inputs if i.ahead},
            "copies": [c.to_json() for c in self.copies],
            "digest": self.digest,
            "commands": list(self.commands),
            "state": self.state,
            "error": self.error,
        }


@dataclass(frozen=True)
class ExistingStack:
    """A unit planned before with the same inputs: nothing to do."""

    stack: str
    state: str

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "state": self.state}


@dataclass(frozen=True)
class ChangedStack:
    """A unit whose inputs changed since it was planned: reported, never rewritten."""

    stack: str
    state: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "state": self.state,
            "added": list(self.added),
            "removed": list(self.removed),
        }

    @property
    def message(self) -> str:
        parts = []
        if self.added:
            parts.append(f"inputs added: {', '.join(self.added)}")
        if self.removed:
            parts.append(f"inputs removed: {', '.join(self.removed)}")
        return (
            f"{'; '.join(parts) or 'inputs changed'} — not rewritten "
            f"(remove {self.stack} first to plan it again)"
        )


@dataclass(frozen=True)
class AutoPlan:
    release: str
    mode: Mode
    units: list[PlannedStack]
    existing: list[ExistingStack]
    changed: list[ChangedStack]
    refused: list[Refusal]
    settings: ReleaseSettings
    #: The reference catalogue as configured (here), or None.
    reference: str | None
    #: The release was frozen with these settings already.
    frozen: bool = False
    dry_run: bool = True
    launch: bool = False
    #: Units written but whose launch did not apply: ``(stack, why)``.
    not_launched: list[tuple[str, str]] = field(default_factory=list)
    #: Units that cannot be made (a path the tools cannot take…): ``(stack, why)``.
    unplanned: list[tuple[str, str]] = field(default_factory=list)
    #: Nodes that did not answer while the units' files were copied.
    unreachable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.changed
            and not self.not_launched
            and not self.unplanned
            and all(u.error is None for u in self.units)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "launch": self.launch,
            "units": [u.to_json() for u in self.units],
            "existing": [e.to_json() for e in self.existing],
            "changed": [c.to_json() for c in self.changed],
            "refused": [{"image": r.image, "reason": r.reason} for r in self.refused],
            "not_launched": [{"stack": s, "message": m} for s, m in self.not_launched],
            "unplanned": [{"stack": s, "message": m} for s, m in self.unplanned],
            "unreachable": self.unreachable,
        }


def inputs_digest(inputs: Iterable[StackInput]) -> str:
    """sha256 of the unit's sorted ``role:image`` lines."""
    return hashlib.sha256("\n".join(sorted(_roles(inputs))).encode()).hexdigest()


def _roles(inputs: Iterable[StackInput]) -> list[str]:
    roles: list[str] = []
    for one in inputs:
        if one.scamp:
            roles.append(f"{SCAMP}:{one.image}")
        if one.swarp:
            roles.append(f"{SWARP}:{one.image}")
    return roles


def plan_auto(engine: Engine, config: SpicaConfig, query: AutoQuery) -> AutoPlan:
    """The units ``spica auto`` would add for ``query``; nothing is written. ConfigError
    (exit 2) for an unknown release, a missing reference catalogue or a frozen release
    whose settings changed; UsageError for a bad filter or survey."""
    release = config.stack_release(query.release)
    mode: Mode = query.mode or release.mode
    _fields(config.grid(release.grid), query.survey)  # a bad --survey before any work
    reference, checksum = _reference(release)
    settings = release_settings(config, release, checksum)
    with Session(engine) as session:
        frozen = check_frozen(session, settings)
        images = load_images(session)
    units, refused, unplanned = plan_units(config, query, images, checksum)
    with Session(engine) as session:
        fresh, existing, changed = _against_dbspica(session, units)
    return AutoPlan(
        release.name, mode, fresh, existing, changed, refused, settings, str(reference), frozen,
        unplanned=unplanned,
    )  # fmt: skip


def plan_units(
    config: SpicaConfig, query: AutoQuery, images: list[AutoImage], refcat_checksum: str
) -> tuple[list[PlannedStack], list[Refusal], list[tuple[str, str]]]:
    """The units of ``images`` under ``query``'s release, the images it refuses and the
    units that cannot be made (``(stack, why)``): the planning itself, without dbspica."""
    release = config.stack_release(query.release)
    grid = config.grid(release.grid)
    mode: Mode = query.mode or release.mode
    if query.filter is not None:
        wanted = [query.filter]
        images = [i for i in images if i.filter is not None and filter_matches(i.filter, wanted)]
    accepted, refused = select_images(release.rules, images)
    planner = _Planner(config, release, grid, mode, images, refcat_checksum)
    if mode == IMAGE_STEP:
        units = [u for u in (planner.image_unit(image) for image in accepted) if u is not None]
    else:
        units = planner.stack_units(accepted, _fields(grid, query.survey))
    return units, refused, planner.unplanned


def _fields(grid: TileGridConfig, survey: str | None) -> set[str] | None:
    """The fields planned: all (None), or the one ``survey`` names."""
    if survey is None or survey == grid.survey:
        return None
    names = {f.name for f in grid.fields}
    if survey in names:
        return {survey}
    raise UsageError(
        f"--survey {survey}: grid {grid.name} is survey {grid.survey} with fields "
        f"{', '.join(sorted(names)) or '(none)'}"
    )


def _reference(release: StackReleaseConfig) -> tuple[Path, str]:
    """The release's reference catalogue (checked readable) and its checksum."""
    from spica_core.checksum import file_checksum
    from spica_core.stacking.refcat import RefcatError, is_ldac, read_reference

    if release.reference_catalogue is None:
        raise ConfigError(
            f"release {release.name} has no reference_catalogue: SCAMP needs one "
            "(FITS_LDAC, a FITS table or CSV with ra, dec, mag)"
        )
    path = Path(release.reference_catalogue)
    try:
        checksum, _ = file_checksum(path)
    except OSError as exc:
        raise RefcatError(path, exc.strerror or str(exc)) from None
    if not is_ldac(path):
        read_reference(path)  # its faults named now, before anything is planned
    return path, checksum


class _Planner:
    def __init__(
        self,
        config: SpicaConfig,
        release: StackReleaseConfig,
        grid: TileGridConfig,
        mode: Mode,
        images: list[AutoImage],
        checksum: str,
    ) -> None:
        self.config = config
        self.release = release
        self.grid = grid
        self.mode = mode
        self.reference_name = f"reference-{checksum.partition(':')[2][:16]}.ldac"
        self.config_dir = str(tool_config_dir(release))
        self.phot = _phot_medians(images)
        self.roots = {node.name: node.root.rstrip("/") or "" for node in config.nodes}
        self._copy_names: dict[int, str] = {}
        self.unplanned: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ stack mode

    def stack_units(self, accepted: list[AutoImage], fields: set[str] | None) -> list[PlannedStack]:
        tiles = TileGrid(self.grid)
        members: dict[str, list[AutoImage]] = defaultdict(list)
        centres: dict[str, tuple[float, float]] = {}
        for image in accepted:
            assert image.ra is not None and image.dec is not None and image.filter
            letter = filter_letter(image.filter)
            for tile in tiles.touched_by(image.ra, image.dec):
                if fields is None or tile.field in fields:
                    key = tile.key(self.grid, letter)
                    members[key].append(image)
                    centres[key] = (tile.ra, tile.dec)
        groups = _Groups(accepted, self.grid.exposure_size)
        units: list[PlannedStack] = []
        size = self.grid.tile_pixels
        for key, swarp in sorted(members.items()):
            if len(swarp) < self.release.rules.min_images:
                continue
            ra, dec = centres[key]
            spec = TileSpec(key, ra, dec, (size, size), self.grid.pixel_scale)
            name = stack_name(key, self.release.name)
            filter = _most_common(i.filter for i in swarp)
            swarp_ids = {i.id for i in swarp}
            unit = self._unit(name, spec, filter, groups.group(swarp), swarp_ids)
            if unit is not None:
                units.append(unit)
        return units

    # ------------------------------------------------------------------ image mode

    def image_unit(self, image: AutoImage) -> PlannedStack | None:
        assert image.ra is not None and image.dec is not None
        size = max(16, round(self.grid.exposure_size * 3600.0 / self.grid.pixel_scale))
        tile = TileSpec(image.filename, image.ra, image.dec, (size, size), self.grid.pixel_scale)
        name = f"{image.filename}_{self.release.name}"
        return self._unit(name, tile, image.filter, [image], {image.id}, runid=image.runid)

    # ------------------------------------------------------------------ one unit

    def _unit(self, name: str, *args: Any, **kwargs: Any) -> PlannedStack | None:
        """The unit, or None (recorded in ``unplanned``) when a name or a path of it is one
        the nodes or the tools cannot take: the others are planned all the same."""
        try:
            return self._make(validate_name(name), *args, **kwargs)
        except UsageError as exc:
            self.unplanned.append((name, str(exc)))
            return None

    def _make(
        self,
        name: str,
        tile: TileSpec,
        filter: str | None,
        scamp: Sequence[AutoImage],
        swarp_ids: set[int],
        runid: str | None = None,
    ) -> PlannedStack:
        node, partition = _placement(scamp)
        root = self.roots.get(node)
        if root is None:
            raise UsageError(f"stack {name}: its node {node} is not in [[nodes]]")
        base = posixpath.join(root or "/", validate_name(partition, "partition"))
        release = validate_name(self.release.name, "release")
        workdir = posixpath.join(base, STACKS_DIR, release, name)
        inputs: list[StackInput] = []
        copies: list[InputCopy] = []
        files: list[tuple[int, str]] = []
        for image in scamp:
            assert image.path is not None and image.node is not None
            local = image.node == node
            path = posixpath.normpath(image.path)
            if not local:
                target = posixpath.join(base, INPUTS_DIR, self._copy_name(image, path))
                copies.append(InputCopy(image.filename, image.node, path, node, target,
                                        image.checksum, image.bytes))  # fmt: skip
                path = target
            in_swarp = image.id in swarp_ids
            inputs.append(
                StackInput(
                    image=image.filename,
                    path=path,
                    checksum=image.checksum,
                    exptime=float(image.exptime or 0.0),
                    scamp=True,
                    swarp=in_swarp,
                    ahead=self._ahead(image),
                    weight=image.weight_path if local else None,
                    flag=image.flag_path if local else None,
                )
            )
            files.append((image.id, SCAMP))
            if in_swarp:
                files.append((image.id, SWARP))
        unit = StackUnit(
            name=name,
            release=self.release.name,
            mode=self.mode,
            survey=self.grid.survey,
            filter=filter,
            workdir=workdir,
            tile=tile,
            inputs=tuple(inputs),
            reference_catalogue=posixpath.join(base, STACKS_DIR, release, self.reference_name),
            config_dir=self.config_dir,
        )
        return PlannedStack(
            unit, node, partition, tuple(files), inputs_digest(inputs), tuple(copies),
            _commands(unit), runid,
        )  # fmt: skip

    def _copy_name(self, image: AutoImage, path: str) -> str:
        """``<runid>/<file>`` of a copied input (names checked once per image)."""
        name = self._copy_names.get(image.id)
        if name is None:
            runid = validate_name(image.runid or NO_RUNID, "runid")
            name = f"{runid}/{validate_name(posixpath.basename(path), 'file')}"
            self._copy_names[image.id] = name
        return name

    def _ahead(self, image: AutoImage) -> dict[str, CardValue]:
        """The input's ``.ahead`` cards (see the module's docstring)."""
        cards: dict[str, CardValue] = {}
        if image.filter is not None:
            cards["FILTER"] = image.filter
        if image.exptime is not None:
            cards["EXPTIME"] = image.exptime
        if image.airmass is not None:
            cards["AIRMASS"] = image.airmass
        medians = self.phot.get(image.filter or "", {})
        measured = True
        for key, value in (("PHOT_C", image.phot_c), ("PHOT_K", image.phot_k)):
            if value is not None:
                cards[key] = value
            else:
                measured = False
                if key in medians:
                    cards[key] = medians[key]
        cards["PHOTFLAG"] = measured
        return cards


#: :func:`shlex.quote`, remembered: most words of a release's lines (options, configuration
#: files, the reference catalogue) are the same in every unit.
_quote = functools.lru_cache(maxsize=1 << 16)(shlex.quote)


def _commands(unit: StackUnit) -> tuple[str, ...]:
    """The lines of ``commands.sh``, each argv joined as :func:`shlex.join` does."""
    return tuple(" ".join(map(_quote, argv)) for argv in stack_commands(unit))


def _most_common(names: Iterable[str | None]) -> str | None:
    """The filter most inputs name (a letter's MegaCam filter and its bare letter share a
    tile)."""
    counts: dict[str | None, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    return min(counts, key=lambda n: (-counts[n], n or ""))


def _phot_medians(images: list[AutoImage]) -> dict[str, dict[str, float]]:
    """Per filter, the median ``PHOT_C`` and ``PHOT_K`` of the images that have them."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for image in images:
        if image.filter is None:
            continue
        if image.phot_c is not None:
            values[image.filter]["PHOT_C"].append(image.phot_c)
        if image.phot_k is not None:
            values[image.filter]["PHOT_K"].append(image.phot_k)
    return {
        name: {key: float(statistics.median(v)) for key, v in keys.items()}
        for name, keys in values.items()
    }


def _placement(images: Sequence[AutoImage]) -> tuple[str, str]:
    """The node holding most of the input bytes (ties: the name), and its partition
    holding most of them."""
    by_node: dict[str, int] = defaultdict(int)
    by_partition: dict[tuple[str, str], int] = defaultdict(int)
    for image in images:
        assert image.node is not None and image.partition is not None
        by_node[image.node] += image.bytes
        by_partition[(image.node, image.partition)] += image.bytes
    node = min(by_node, key=lambda n: (-by_node[n], n))
    partition = min(
        (p for n, p in by_partition if n == node), key=lambda p: (-by_partition[(node, p)], p)
    )
    return node, partition


class _Groups:
    """Which accepted exposures of a filter overlap which: a dec band and RA cell index
    (cells no narrower than an exposure), then the exact overlap test."""

    def __init__(self, images: list[AutoImage], size: float) -> None:
        self.size = size
        self._bands: dict[tuple[str, int], dict[int, list[AutoImage]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._cells: dict[int, int] = {}
        self._near: dict[int, list[AutoImage]] = {}
        for image in images:
            assert image.ra is not None and image.dec is not None and image.filter
            band = self._band(image.dec)
            self._bands[(filter_letter(image.filter), band)][self._cell(band, image.ra)].append(
                image
            )

    def _band(self, dec: float) -> int:
        return math.floor(dec / self.size)

    def _count(self, band: int) -> int:
        """RA cells of a band: each at least an exposure wide at the band's far edges."""
        if band not in self._cells:
            far = min(89.0, max(abs(band * self.size), abs((band + 1) * self.size)) + self.size)
            width = self.size * 1.05 / math.cos(math.radians(far))
            self._cells[band] = max(1, math.floor(360.0 / width))
        return self._cells[band]

    def _cell(self, band: int, ra: float) -> int:
        count = self._count(band)
        return math.floor((ra % 360.0) / 360.0 * count) % count

    def near(self, image: AutoImage) -> list[AutoImage]:
        """The exposures of ``image``'s filter whose footprint overlaps its own (itself
        included)."""
        found = self._near.get(image.id)
        if found is not None:
            return found
        assert image.ra is not None and image.dec is not None and image.filter
        found = []
        reach = self.size * 1.05  # the tangent plane's stretch off-centre
        home = self._band(image.dec)
        for band in (home - 1, home, home + 1):
            cells = self._bands.get((filter_letter(image.filter), band))
            if not cells:
                continue
            count = self._count(band)
            centre = self._cell(band, image.ra)
            for cell in {(centre + d) % count for d in (-1, 0, 1)}:
                for other in cells.get(cell, ()):
                    assert other.ra is not None and other.dec is not None
                    if abs(other.dec - image.dec) >= reach:
                        continue  # the cheap test first: most neighbours are rows away
                    if boxes_overlap(image.ra, image.dec, other.ra, other.dec, self.size):
                        found.append(other)
        self._near[image.id] = found
        return found

    def group(self, swarp: Sequence[AutoImage]) -> list[AutoImage]:
        """SCAMP's inputs: the SWarp inputs and every exposure overlapping one, by name."""
        members: dict[int, AutoImage] = {}
        for image in swarp:
            members[image.id] = image
            for other in self.near(image):
                members.setdefault(other.id, other)
        return sorted(members.values(), key=lambda i: i.filename)


def _against_dbspica(
    session: Session, units: list[PlannedStack]
) -> tuple[list[PlannedStack], list[ExistingStack], list[ChangedStack]]:
    """Units split into new ones, those planned already with the same inputs and those
    whose inputs changed."""
    names = [u.name for u in units]
    found: dict[str, tuple[int, str, str | None]] = {}
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        for id_, name, state, digest in session.execute(
            select(Stack.id, Stack.name, Stack.state, Stack.inputs_digest).where(
                Stack.name.in_(chunk)
            )
        ):
            found[name] = (id_, state, digest)
    fresh: list[PlannedStack] = []
    existing: list[ExistingStack] = []
    changed: list[ChangedStack] = []
    for unit in units:
        row = found.get(unit.name)
        if row is None:
            fresh.append(unit)
            continue
        stack_id, state, digest = row
        if digest == unit.digest:
            existing.append(ExistingStack(unit.name, state))
            continue
        old = {
            f"{role}:{image}"
            for image, role in session.execute(
                select(Image.filename, StackFile.role)
                .join(Image, Image.id == StackFile.image_id)
                .where(StackFile.stack_id == stack_id)
            )
        }
        new = set(_roles(unit.unit.inputs))
        added = sorted({r for r in new - old})
        removed = sorted({r for r in old - new})
        changed.append(ChangedStack(unit.name, state, tuple(added), tuple(removed)))
    return fresh, existing, changed


def with_state(unit: PlannedStack, state: str, error: str | None = None) -> PlannedStack:
    return replace(unit, state=state, error=error)
