"""Per-instrument header maps: which header key fills which ``image`` column, as data.

A map is a TOML file in ``instruments/`` (shipped with the package): how to recognise the
instrument's files, and for each column its candidate keys with the kind of value each holds
(see ``megaprime.toml``). Maps are validated when loaded, with errors naming the file and
key, so a wrong map fails before any file is read. Adding an instrument is adding a file.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spica_core.config import _describe, _loc
from spica_core.errors import ConfigError

#: How a header value is read (see :mod:`spica_core.ingest.values`).
Kind = Literal["text", "number", "degrees", "hours_sexagesimal", "degrees_sexagesimal", "date"]

#: The columns a map may fill, and which kinds each accepts.
COLUMN_KINDS: dict[str, frozenset[str]] = {
    "runid": frozenset({"text"}),
    "qrunid": frozenset({"text"}),
    "filter": frozenset({"text"}),
    "object": frozenset({"text"}),
    "ra": frozenset({"degrees", "hours_sexagesimal"}),
    "dec": frozenset({"degrees", "degrees_sexagesimal"}),
    "exptime": frozenset({"number"}),
    "date_obs": frozenset({"date"}),
    "mjd_obs": frozenset({"number"}),
    "airmass": frozenset({"number"}),
    "gain": frozenset({"number"}),
    "saturate": frozenset({"number"}),
    "phot_c": frozenset({"number"}),
    "phot_k": frozenset({"number"}),
}
#: Columns every map must fill: a row without them is of no use to the pipeline.
REQUIRED_COLUMNS = ("runid", "filter", "date_obs")

_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _header_key(value: str) -> str:
    if not _KEY.match(value):
        raise ValueError(f"{value!r} is not a FITS keyword (1-8 of A-Z 0-9 _ -)")
    return value


class Source(_Strict):
    """One header key a column may come from."""

    key: str
    kind: Kind
    #: text: a regular expression the value must match, or the values allowed.
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    #: numbers and degrees: the range allowed (inclusive).
    min: float | None = None
    max: float | None = None
    #: date: the key holding the time of day when the date key holds a date alone.
    time_key: str | None = None

    @field_validator("key", "time_key")
    @classmethod
    def _keyword(cls, v: str | None) -> str | None:
        return None if v is None else _header_key(v)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _options_fit_kind(self) -> Source:
        if (self.pattern or self.choices) and self.kind != "text":
            raise ValueError(f"{self.key}: pattern and choices apply to text only")
        if self.time_key and self.kind != "date":
            raise ValueError(f"{self.key}: time_key applies to a date only")
        if (self.min is not None or self.max is not None) and self.kind not in (
            "number",
            "degrees",
        ):
            raise ValueError(f"{self.key}: min and max apply to numbers and degrees only")
        return self


class ColumnMap(_Strict):
    required: bool = False
    sources: tuple[Source, ...] = Field(min_length=1)


class Detect(_Strict):
    key: str
    values: tuple[str, ...] = Field(min_length=1)

    @field_validator("key")
    @classmethod
    def _keyword(cls, v: str) -> str:
        return _header_key(v)


class HeaderMap(_Strict):
    """An instrument's header map (one TOML file)."""

    instrument: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    detect: Detect
    columns: dict[str, ColumnMap]

    @model_validator(mode="after")
    def _known_columns(self) -> HeaderMap:
        for name, column in self.columns.items():
            if name not in COLUMN_KINDS:
                known = ", ".join(COLUMN_KINDS)
                raise ValueError(f"unknown column {name!r} (known: {known})")
            for source in column.sources:
                if source.kind not in COLUMN_KINDS[name]:
                    allowed = ", ".join(sorted(COLUMN_KINDS[name]))
                    raise ValueError(
                        f"column {name!r}: key {source.key} has kind {source.kind!r}; "
                        f"the column takes {allowed}"
                    )
        for name in REQUIRED_COLUMNS:
            if name not in self.columns or not self.columns[name].required:
                raise ValueError(f"column {name!r} must be mapped and required")
        return self

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and value.strip() in self.detect.values


def parse_header_map(text: str, source: str) -> HeaderMap:
    """Validate one map's TOML text; ``source`` names the file in every message."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return HeaderMap.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: key {_loc(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


@cache
def shipped_maps() -> tuple[HeaderMap, ...]:
    """The maps shipped in ``spica_core/ingest/instruments/`` (validated once)."""
    folder = resources.files("spica_core.ingest").joinpath("instruments")
    maps = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            maps.append(parse_header_map(entry.read_text(encoding="utf-8"), entry.name))
    return tuple(maps)
