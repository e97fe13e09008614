"""Release comparison: the seed's side-by-side table of two releases' stacks, tile by tile.

Stacks are paired on ``stack.tile`` (what ``spica auto`` records: the name without its
release), else on the name minus ``_<release>``. Each tile shows the seed's figures for both
releases and the change; a tile stacked in one release only is listed as such. One query
reads both releases' stacks with their results, within the reader's scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.db.models import Stack, StackResult
from spica_core.errors import SpicaError, UsageError
from spica_core.names import validate_name
from spica_core.read_model.results import format_figure
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.text import require_utf8

#: The seed's rows, in its order (columns of ``stack_result``).
FIGURE_KEYS = (
    "scamp_inputs",
    "swarp_inputs",
    "exptime",
    "seeing",
    "completeness",
    "scamp_internal_rms",
    "scamp_external_rms",
    "background",
)

Figure = float | int | None


def tile_key(name: str, tile: str | None, release: str | None) -> str:
    """The tile a stack covers: ``stack.tile``, else its name without ``_<release>``."""
    if tile:
        return tile
    suffix = f"_{release}" if release else ""
    if suffix and name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class ReleaseStack:
    """One release's stack on a tile: its state and figures (None until recorded)."""

    name: str
    state: str
    figures: dict[str, Figure]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.name, "state": self.state, **self.figures}


@dataclass(frozen=True)
class Change:
    """``release`` minus ``against``, and that as a percentage of ``against``."""

    difference: float
    percent: float | None

    def to_json(self) -> dict[str, Any]:
        return {"difference": self.difference, "percent": self.percent}


def format_change(key: str, delta: Change | None) -> str:
    """A change as the table shows it: ``+0.005" (+12 %)``; ``-`` when a side is missing."""
    if delta is None:
        return "-"
    sign = "-" if delta.difference < 0 else "+"
    text = sign + format_figure(key, abs(delta.difference))
    if delta.percent is not None:
        text += f" ({delta.percent:+.0f} %)"
    return text


def change(new: Figure, old: Figure) -> Change | None:
    if new is None or old is None:
        return None
    difference = float(new) - float(old)
    percent = None if old == 0 else 100.0 * difference / abs(float(old))
    return Change(difference, percent)


@dataclass(frozen=True)
class TileComparison:
    tile: str
    survey: str | None
    filter: str | None
    release: ReleaseStack | None
    against: ReleaseStack | None

    def change(self, key: str) -> Change | None:
        if self.release is None or self.against is None:
            return None
        return change(self.release.figures.get(key), self.against.figures.get(key))

    @property
    def presence(self) -> str:
        """``both``, ``release`` (new in the release compared) or ``against`` (gone)."""
        if self.release is not None and self.against is not None:
            return "both"
        return "release" if self.release is not None else "against"

    def to_json(self) -> dict[str, Any]:
        changes = {key: self.change(key) for key in FIGURE_KEYS}
        return {
            "tile": self.tile,
            "survey": self.survey,
            "filter": self.filter,
            "in": self.presence,
            "release": None if self.release is None else self.release.to_json(),
            "against": None if self.against is None else self.against.to_json(),
            "change": {k: None if c is None else c.to_json() for k, c in changes.items()},
        }


@dataclass(frozen=True)
class ReleaseComparison:
    release: str
    against: str
    survey: str | None
    filter: str | None
    tiles: tuple[TileComparison, ...]

    def count(self, side: str) -> int:
        """Tiles stacked in ``side`` (``release`` or ``against``)."""
        return sum(1 for t in self.tiles if getattr(t, side) is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "against": self.against,
            "survey": self.survey,
            "filter": self.filter,
            "figures": list(FIGURE_KEYS),
            "stacks": {"release": self.count("release"), "against": self.count("against")},
            "only_in_release": sum(1 for t in self.tiles if t.presence == "release"),
            "only_in_against": sum(1 for t in self.tiles if t.presence == "against"),
            "tiles": [t.to_json() for t in self.tiles],
        }


def compare_releases(
    engine: Engine,
    release: str,
    against: str,
    *,
    survey: str | None = None,
    filter: str | None = None,
    scope: Scope = EVERYTHING,
    require_stacks: bool = True,
) -> ReleaseComparison:
    """Stacks of ``release`` and ``against`` paired by tile, sorted by tile.

    With ``require_stacks``, a release without a stack in the selection is a SpicaError
    naming it (the CLI exits 1): an empty side would make every tile look new or gone.
    """
    validate_name(release, "release")
    validate_name(against, "release")
    if release == against:
        raise UsageError(f"--against {against}: the release compared with itself")
    for option, value in (("--survey", survey), ("--filter", filter)):
        if value is not None:
            require_utf8(value, option)
    columns = [getattr(StackResult, key) for key in FIGURE_KEYS]
    stmt = (
        select(
            Stack.name, Stack.state, Stack.tile, Stack.release, Stack.survey, Stack.filter,
            *columns,
        )
        .outerjoin(StackResult, StackResult.stack_id == Stack.id)
        .where(Stack.release.in_((release, against)))
    )  # fmt: skip
    if survey is not None:
        stmt = stmt.where(Stack.survey == survey)
    if filter is not None:
        stmt = stmt.where(Stack.filter == filter)
    if scope.runids is not None:
        stmt = stmt.where(Stack.runid.in_(sorted(scope.runids)))
    sides: dict[str, dict[str, ReleaseStack]] = {release: {}, against: {}}
    about: dict[str, tuple[str | None, str | None]] = {}
    with Session(engine) as session:
        for name, state, tile, rel, srv, flt, *values in session.execute(stmt.order_by(Stack.name)):
            key = tile_key(name, tile, rel)
            figures = dict(zip(FIGURE_KEYS, values, strict=True))
            sides[rel].setdefault(key, ReleaseStack(name, state, figures))
            about.setdefault(key, (srv, flt))
    if require_stacks:
        where = "".join(
            f" {label} {value}"
            for label, value in (("survey", survey), ("filter", filter))
            if value
        )
        for name in (release, against):
            if not sides[name]:
                raise SpicaError(f"release {name}: no stacks{' in' + where if where else ''}")
    tiles = tuple(
        TileComparison(key, *about[key], sides[release].get(key), sides[against].get(key))
        for key in sorted(about)
    )
    return ReleaseComparison(release, against, survey, filter, tiles)


def stack_releases(engine: Engine, scope: Scope = EVERYTHING) -> list[str]:
    """Releases that have stacks in ``scope``, newest name first (the console's choices)."""
    stmt = select(Stack.release).where(Stack.release.is_not(None)).distinct()
    if scope.runids is not None:
        stmt = stmt.where(Stack.runid.in_(sorted(scope.runids)))
    with Session(engine) as session:
        return sorted((r for r in session.scalars(stmt) if r), reverse=True)
