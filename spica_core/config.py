"""SPICA configuration: the one owner of the TOML model, its discovery and validation.

Lookup order (first found wins): ``--config FILE``, ``$SPICA_CONFIG``, ``./spica.toml``, the
user config dir (``spica.toml`` there). ``$SPICA_DB_URL`` overrides the db URL of whichever
file is used. With no file at all the embedded default applies: a SQLite dbspica in the user
data dir and no nodes. Relative paths in a file are relative to that file's directory.

Every error names the file, the key and what was expected, and never shows a password.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from spica_core.errors import ConfigError, InvalidName
from spica_core.names import validate_name
from spica_core.node.layout import root_problem
from spica_core.units import parse_size

CONFIG_FILENAME = "spica.toml"
ENV_CONFIG = "SPICA_CONFIG"
ENV_DB_URL = "SPICA_DB_URL"

Size = Annotated[int, BeforeValidator(parse_size)]


def mask_url(url: str) -> str:
    """A database URL fit to print: any password replaced by ``***``."""
    return re.sub(r"(?<=://)([^:/@]*):([^@/]*)@", r"\1:***@", url)


def _checked_name(value: str, kind: str) -> str:
    try:
        return validate_name(value, kind)
    except InvalidName as exc:
        raise ValueError(str(exc)) from None


class _Model(BaseModel):
    #: ``inf`` and ``nan`` are no durations, sizes or thresholds.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: The longest timeout, interval or grace period accepted: a week (beyond it, a typo).
MAX_SECONDS = 7 * 24 * 3600.0
#: A timeout or interval, in seconds: positive and finite.
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class DatabaseConfig(_Model):
    url: str = Field(description="SQLAlchemy URL of dbspica")
    echo: bool = False
    connect_timeout: Seconds = 5.0

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


class PartitionConfig(_Model):
    name: str
    #: Virtual capacity: when set, the node reports total = capacity and
    #: used = bytes under the partition (the demo's realistic disks).
    capacity: Size | None = None
    #: Kept free for outputs: "virtual free" = free - reserved (the seed's DataTransfer).
    reserved: Size = 0
    #: Free space the daemon requires before it claims a stack here.
    min_free: Size = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "partition")

    @model_validator(mode="after")
    def _fits(self) -> PartitionConfig:
        if self.capacity is not None:
            for key in ("reserved", "min_free"):
                if getattr(self, key) > self.capacity:
                    raise ValueError(
                        f"{key} ({getattr(self, key)} bytes) is larger than the partition's "
                        f"capacity ({self.capacity} bytes)"
                    )
        return self


class NodeConfig(_Model):
    name: str
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    root: str = Field(description="the node's spica root directory")
    cpus: int | None = Field(None, ge=1)
    ram_gb: float | None = Field(None, gt=0)
    partitions: list[PartitionConfig] = Field(
        default_factory=lambda: [PartitionConfig(name="raid1"), PartitionConfig(name="raid2")]
    )
    #: Command that starts the node agent over SSH.
    agent_command: str = "spica node serve"
    #: Per node override of the client keys.
    client_keys: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "node")

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        why = root_problem(v)
        if why is not None:
            raise ValueError(why)
        return v.rstrip("/")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", v):
            raise ValueError("expected a host name or an IP address")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", v):
            raise ValueError("expected a POSIX user name")
        return v


class SshConfig(_Model):
    #: Host keys are always verified against this file; there is no switch to turn it off.
    known_hosts: str = "~/.ssh/known_hosts"
    client_keys: list[str] = Field(default_factory=list)
    connect_timeout: Seconds = 5.0
    call_timeout: Seconds = 10.0
    #: How long a starting agent may take to greet; polls use plain commands meanwhile.
    agent_start_timeout: Seconds = 60.0
    #: Cap of the exponential reconnect backoff, in seconds.
    max_backoff: Seconds = 60.0


class SmtpConfig(_Model):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "spica@localhost"
    #: The Teraop list: who receives failure mail.
    operators: list[str] = Field(default_factory=list)
    timeout: Seconds = 10.0


class ApplicationConfig(_Model):
    name: str
    binary: str
    version: str | None = None
    config_files: list[str] = Field(default_factory=list)


#: Three limits of one grade criterion: the last value still graded A, B and C.
Limits = tuple[float, float, float]


class GradeThresholds(_Model):
    """The release's limits for QFin's automatic grade proposal (``[release.grades]``).

    Each criterion has three limits, the last value still graded A, B and C (inclusive);
    beyond the C limit the criterion proposes D. The proposal is the worst grade over the
    criteria (:func:`spica_core.qfin.grades.propose`).
    """

    #: PSF FWHM in arcsec: the largest seeing graded A, B, C (the seed's "Poor seeing (>1.2)").
    seeing: Limits = (1.0, 1.2, 1.5)
    #: Mean A/B of the PSF stars: the largest elongation graded A, B, C.
    elongation: Limits = (1.15, 1.3, 1.5)
    #: CCDs the header announces but QFin did not measure: the most graded A, B, C.
    missing_ccds: tuple[int, int, int] = (0, 1, 4)
    #: Sources expected per measured CCD in ``reference_exptime`` seconds; the expected
    #: count of an image is ``expected_sources * ccds * (exptime / reference_exptime) **
    #: counts_alpha`` (alpha 0.5: background-limited depth grows by 1.25 log10 t magnitudes
    #: and counts by about 0.4 dex per magnitude). It depends on the instrument's CCDs, the
    #: filter and the detection threshold, so there is no default: 0, the criterion off,
    #: until a release sets it from its good images.
    expected_sources: float = Field(0.0, ge=0)
    reference_exptime: float = Field(180.0, gt=0)
    counts_alpha: float = Field(0.5, ge=0, le=2)
    #: Measured / expected counts: the smallest ratio graded A, B, C (decreasing).
    counts_low: Limits = (0.7, 0.5, 0.3)
    #: Measured / expected counts: the largest ratio graded A, B, C (increasing).
    counts_high: Limits = (1.5, 2.0, 3.0)

    @field_validator("seeing", "elongation", "counts_high", "missing_ccds")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        _check_monotonic(v, increasing=True)
        return v

    @field_validator("counts_low")
    @classmethod
    def _decreasing(cls, v: Limits) -> Limits:
        _check_monotonic(v, increasing=False)
        return v

    @field_validator("seeing")
    @classmethod
    def _positive(cls, v: Limits) -> Limits:
        if v[0] <= 0:
            raise ValueError(f"a seeing limit is positive, got {v[0]} for A")
        return v

    @field_validator("elongation")
    @classmethod
    def _at_least_one(cls, v: Limits) -> Limits:
        if v[0] < 1:
            raise ValueError(f"an elongation (A/B) is at least 1, got {v[0]} for A")
        return v

    @model_validator(mode="after")
    def _ratios_apart(self) -> GradeThresholds:
        if self.counts_low[0] > self.counts_high[0]:
            raise ValueError(
                f"counts_low A ({self.counts_low[0]}) is above counts_high A "
                f"({self.counts_high[0]}): no count could be graded A"
            )
        return self


def _check_monotonic(limits: tuple[float, ...], *, increasing: bool) -> None:
    """Limits of A, B, C that a worse grade never reverses; no negative limit."""
    for grade, value in zip("ABC", limits, strict=True):
        if value < 0:
            raise ValueError(f"the limit for {grade} is negative ({value})")
    for i in (1, 2):
        better, worse = limits[i - 1], limits[i]
        if (worse < better) if increasing else (worse > better):
            way = "at least" if increasing else "at most"
            raise ValueError(
                f"the limit for {'ABC'[i]} ({worse}) must be {way} "
                f"the limit for {'ABC'[i - 1]} ({better})"
            )


class ReleaseConfig(_Model):
    name: str = "T0001"
    applications: list[ApplicationConfig] = Field(default_factory=list)
    #: Thresholds of QFin's automatic grade proposal for this release.
    grades: GradeThresholds = GradeThresholds()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "release")


#: CFHTLS Wide tiles: 19354 pixels of 0.186" (one degree), rows 56' apart in declination.
CFHTLS_TILE_PIXELS = 19354
CFHTLS_PIXEL_SCALE = 0.186
CFHTLS_ROW_STEP = 56.0 / 60.0


class StackRulesConfig(_Model):
    """Which graded exposures a stacking release takes (the seed's "filtering rules").

    Limits are strict where the seed writes them so (``exposure > 60 s``, ``seeing < 1.1"``,
    ``airmass < 1.7``); ``max_seeing_filter`` overrides ``max_seeing`` for a filter, named by
    its letter (``u``) or its full name (``u.MP9301``).
    """

    grades: list[str] = Field(default_factory=lambda: ["A", "B"])
    #: Exposures of more than this many seconds.
    min_exptime: float = Field(0.0, ge=0)
    #: Seeing (QFin's, arcsec) below this; None: any.
    max_seeing: float | None = Field(None, gt=0)
    max_seeing_filter: dict[str, float] = Field(default_factory=dict)
    #: Airmass below this; None: any.
    max_airmass: float | None = Field(None, gt=1)
    #: Filters stacked (letters or full names); empty: all.
    filters: list[str] = Field(default_factory=list)
    #: A tile gets a stack when at least this many exposures touch it.
    min_images: int = Field(1, ge=1)

    @field_validator("grades")
    @classmethod
    def _grades(cls, v: list[str]) -> list[str]:
        bad = [g for g in v if g not in ("A", "B", "C", "D")]
        if bad or not v:
            raise ValueError(f"grades are among A, B, C, D (got {v!r})")
        return v

    @field_validator("max_seeing_filter")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for name, limit in v.items():
            if not limit > 0:
                raise ValueError(f"the seeing limit of filter {name!r} is not positive")
        return v


class TileFieldConfig(_Model):
    """One survey field of a tile grid: its box on the sky (deg).

    ``ra_min`` above ``ra_max`` means the field crosses 0h (e.g. 350 to 10).
    """

    name: str
    ra_min: float = Field(ge=0, lt=360)
    ra_max: float = Field(ge=0, le=360)
    dec_min: float = Field(ge=-90, le=90)
    dec_max: float = Field(ge=-90, le=90)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "field")

    @model_validator(mode="after")
    def _box(self) -> TileFieldConfig:
        if self.dec_min > self.dec_max:
            raise ValueError(f"dec_min ({self.dec_min}) is above dec_max ({self.dec_max})")
        return self


class TileGridConfig(_Model):
    """A survey's tiles: rows ``row_step`` degrees apart in declination, and along each row
    tile centres ``row_step / cos(dec)`` degrees apart in RA (the same overlap on the sky).

    The defaults are CFHTLS Wide's; the demo configures small tiles.
    """

    name: str
    #: The first word of the tiles' names (``CFHTLS_W_u_021410-041200_T0003``).
    prefix: str = "CFHTLS"
    survey: str = "W"
    tile_pixels: int = Field(CFHTLS_TILE_PIXELS, ge=16, le=200_000)
    #: Arcsec per pixel of the co-adds.
    pixel_scale: float = Field(CFHTLS_PIXEL_SCALE, gt=0, le=60)
    #: Degrees between two rows of tile centres.
    row_step: float = Field(CFHTLS_ROW_STEP, gt=0, le=30)
    #: Side (deg) of one exposure's footprint on the sky about its pointing (MegaCam: 1).
    exposure_size: float = Field(1.0, gt=0, le=30)
    fields: list[TileFieldConfig] = Field(default_factory=list)

    @field_validator("name", "prefix", "survey")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "grid")

    @property
    def tile_size(self) -> float:
        """The side of a tile, in degrees."""
        return self.tile_pixels * self.pixel_scale / 3600.0


class StackReleaseConfig(_Model):
    """A stacking release (``[[releases]]``): its rules, tile grid, tool configuration and
    reference catalogue. dbspica freezes it at its first stacks (``stack_release``)."""

    name: str
    #: The ``[[grids]]`` entry its stacks are tiles of.
    grid: str
    #: ``stack``: co-adds on tiles; ``image``: one unit per exposure (VW, ``805282p_V0003``).
    mode: Literal["stack", "image"] = "stack"
    rules: StackRulesConfig = StackRulesConfig()
    #: Astrometric reference catalogue: FITS_LDAC, a FITS table or CSV (ra, dec, mag and
    #: optionally their errors); SPICA writes the LDAC SCAMP reads.
    reference_catalogue: str | None = None
    #: Directory of the tools' configuration files; default: this installation's.
    tool_config: str | None = None
    #: Priority of the release's units in the nodes' queues.
    priority: int = 0

    @field_validator("name", "grid")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "release")


class DaemonConfig(_Model):
    #: Stacks run at once per node; default: the node's CPU count.
    slots: int | None = Field(None, ge=1)
    poll_interval: Seconds = 2.0
    heartbeat_interval: Seconds = 5.0
    #: What a crashed claim becomes when the daemon restarts.
    recover: Literal["pending", "failed"] = "pending"
    #: Seconds a running line gets to finish after SIGTERM before it is killed.
    stop_grace: float = Field(30.0, ge=0, le=MAX_SECONDS)
    journal: str = "journal/dbspica.jsonl"
    #: Seconds before a stack whose preflight check failed is checked again; doubles at
    #: each further failure, up to ``check_backoff_max`` (a failing check never spins).
    check_backoff: Seconds = 10.0
    check_backoff_max: Seconds = 600.0


class ConsoleConfig(_Model):
    refresh_interval: Seconds = 2.0
    #: Remapped keys: action name -> key (e.g. ``requeue = "R"``).
    keys: dict[str, str] = Field(default_factory=dict)
    theme: str | None = None


class MonitorConfig(_Model):
    """``spica watch``: seconds between two polls of every node (default: the console's
    refresh interval)."""

    interval: Seconds | None = None


class RepositoryConfig(_Model):
    """An incoming repository (the seed's ``from_CADC/headervalid/`` disks)."""

    name: str
    #: Absolute directory holding the incoming FITS files (searched recursively).
    path: str
    #: The node holding the directory (read through its agent); None: the console host.
    node: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _checked_name(v, "repository")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"repository path {v!r} is not absolute")
        return v


#: Disk space a runid needs per byte of raw data: raw + weight + flag + working space.
DEFAULT_SPACE_FACTOR = 4.0


class TransferConfig(_Model):
    """DataTransfer: repositories, the space a runid needs, and how files are copied."""

    repositories: list[RepositoryConfig] = Field(default_factory=list)
    #: Disk space needed per byte of raw data: raw + weight + flag + working space.
    space_factor: float = Field(DEFAULT_SPACE_FACTOR, ge=1.0, le=100.0)
    #: Files copied at once to one node.
    in_flight: int = Field(4, ge=1, le=64)
    #: Attempts per file before its transfer is marked failed, and the first retry delay.
    attempts: int = Field(3, ge=1, le=100)
    retry_delay: Seconds = 5.0
    #: ``spica transfer watch``: seconds between two scans of the repositories.
    interval: Seconds = 300.0

    @model_validator(mode="after")
    def _unique(self) -> TransferConfig:
        seen: set[str] = set()
        for repo in self.repositories:
            if repo.name in seen:
                raise ValueError(f"repository {repo.name!r} is defined twice")
            seen.add(repo.name)
        return self


class SpicaConfig(_Model):
    cluster: str = "spica"
    db: DatabaseConfig
    ssh: SshConfig = SshConfig()
    nodes: list[NodeConfig] = Field(default_factory=list)
    smtp: SmtpConfig = SmtpConfig()
    release: ReleaseConfig = ReleaseConfig()
    #: Stacking releases and the tile grids they use (``spica auto``).
    grids: list[TileGridConfig] = Field(default_factory=list)
    releases: list[StackReleaseConfig] = Field(default_factory=list)
    daemon: DaemonConfig = DaemonConfig()
    console: ConsoleConfig = ConsoleConfig()
    monitor: MonitorConfig = MonitorConfig()
    transfer: TransferConfig = TransferConfig()
    #: Where this configuration came from (a file path, or "embedded default").
    _source: str = PrivateAttr("embedded default")

    @model_validator(mode="after")
    def _unique_nodes(self) -> SpicaConfig:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"node {node.name!r} is defined twice")
            seen.add(node.name)
        _unique("grid", [g.name for g in self.grids])
        _unique("release", [r.name for r in self.releases])
        grids = {g.name for g in self.grids}
        for rel in self.releases:
            if rel.grid not in grids:
                raise ValueError(
                    f"release {rel.name!r} uses grid {rel.grid!r}, which is not in [[grids]]"
                )
        names = {node.name for node in self.nodes}
        for repo in self.transfer.repositories:
            if repo.node is not None and repo.node not in names:
                raise ValueError(
                    f"repository {repo.name!r} is on node {repo.node!r}, which is not in [[nodes]]"
                )
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def refresh_interval(self) -> float:
        return self.console.refresh_interval

    @property
    def monitor_interval(self) -> float:
        return self.monitor.interval or self.console.refresh_interval

    def stack_release(self, name: str | None = None) -> StackReleaseConfig:
        """The ``[[releases]]`` entry named ``name``; without a name, the last one."""
        if not self.releases:
            raise ConfigError(f"{self.source}: no stacking release configured ([[releases]])")
        if name is None:
            return self.releases[-1]
        for rel in self.releases:
            if rel.name == name:
                return rel
        known = ", ".join(r.name for r in self.releases)
        raise ConfigError(f"{self.source}: no release named {name!r} in [[releases]] ({known})")

    def grid(self, name: str) -> TileGridConfig:
        for grid in self.grids:
            if grid.name == name:
                return grid
        raise ConfigError(f"{self.source}: no grid named {name!r} in [[grids]]")

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ConfigError(f"{self.source}: no node named {name!r} in [[nodes]]")


def _unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} {name!r} is defined twice")
        seen.add(name)


def user_config_path() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("spica")) / CONFIG_FILENAME


def default_db_url() -> str:
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('spica')) / 'dbspica.sqlite'}"


def discover(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, or None for the embedded default.

    An explicitly named file (``--config`` or ``$SPICA_CONFIG``) must exist.
    """
    for given, origin in ((explicit, "--config"), (os.environ.get(ENV_CONFIG), ENV_CONFIG)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                what = "does not exist" if not path.exists() else "is not a file"
                raise ConfigError(f"{path}: configuration file {what} (given by {origin})")
            return path
    for candidate in (Path.cwd() / CONFIG_FILENAME, user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "expected")
    value = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        if isinstance(value, dict | list) or "password" in _loc(err["loc"]):
            return msg
        return f"{msg}, got {value!r}"
    return msg


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file paths (SQLite file, known_hosts, keys) relative to the file's dir."""
    db = raw.get("db")
    if isinstance(db, dict) and isinstance(db.get("url"), str):
        url = db["url"]
        m = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
        if m and not m.group(2).startswith(":memory:"):
            db["url"] = f"{m.group(1)}{(base / m.group(2)).resolve()}"
    ssh = raw.get("ssh")
    if isinstance(ssh, dict):
        if isinstance(ssh.get("known_hosts"), str):
            ssh["known_hosts"] = _rel(ssh["known_hosts"], base)
        if isinstance(ssh.get("client_keys"), list):
            ssh["client_keys"] = [_rel(k, base) for k in ssh["client_keys"] if isinstance(k, str)]
    for rel in raw.get("releases") or []:
        if isinstance(rel, dict):
            for key in ("reference_catalogue", "tool_config"):
                if isinstance(rel.get(key), str):
                    rel[key] = _rel(rel[key], base)
    for node in raw.get("nodes") or []:
        if isinstance(node, dict) and isinstance(node.get("client_keys"), list):
            node["client_keys"] = [_rel(k, base) for k in node["client_keys"] if isinstance(k, str)]
    return raw


def _rel(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_config(text: str, source: str, base: Path | None = None) -> SpicaConfig:
    """Validate TOML text; ``source`` names the file in every message."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    if base is not None:
        raw = _resolve_paths(raw, base)
    db = raw.setdefault("db", {})
    if isinstance(db, dict):
        if os.environ.get(ENV_DB_URL):
            db["url"] = os.environ[ENV_DB_URL]
        db.setdefault("url", default_db_url())
    try:
        config = SpicaConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: key {_loc(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    config._source = source
    return config


def load_config(explicit: str | os.PathLike[str] | None = None) -> SpicaConfig:
    """Find, read and validate the configuration (see the module docstring for the order)."""
    path = discover(explicit)
    if path is None:
        return parse_config("", "embedded default")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    return parse_config(text, str(path), path.parent.resolve())
