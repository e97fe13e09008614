"""dbspica tables as SQLAlchemy 2.0 typed models (DESIGN §4; seed names in brackets).

The Alembic migrations in ``sql/migrations`` and ``sql/dbspica.mysql.sql`` are derived from
these models; tests fail when either drifts. Indexes follow the console's queries: stacks by
state / node / runid / time, problems newest first, runs per stack.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from spica_core.db.types import UtcDateTime, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME = 128  # stack, node, partition names (spica_core.names)
SHORT = 32

#: Every MySQL/MariaDB table's text compares byte for byte, as SQLite's does: ``03AF19`` and
#: ``03af19`` are two runids, ``--filter U`` does not find ``u``, and names sort the same on
#: both engines. Case-insensitive searches say so (:func:`spica_core.read_model.regex.like_ci`).
MYSQL_TABLE_OPTIONS = {"engine": "InnoDB", "charset": "utf8mb4", "collate": "utf8mb4_bin"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Node(Base):
    """[ClusterNode] A processing host; ``status`` mirrors the last liveness transition."""

    __tablename__ = "node"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    user: Mapped[str | None] = mapped_column(String(64))
    root: Mapped[str] = mapped_column(String(1024))
    cpus: Mapped[int | None] = mapped_column(Integer)
    ram_gb: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(SHORT), default="unknown", index=True)
    last_seen: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    disks: Mapped[list[NodeDisk]] = relationship(
        back_populates="node", cascade="all, delete-orphan"
    )


class NodeDisk(Base):
    """One raid partition of a node; virtual free = free - reserved (DataTransfer)."""

    __tablename__ = "node_disk"
    __table_args__ = (UniqueConstraint("node_id", "partition"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"))
    partition: Mapped[str] = mapped_column(String(NAME))
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    node: Mapped[Node] = relationship(back_populates="disks")

    @property
    def virtual_free_bytes(self) -> int:
        return max(0, self.free_bytes - self.reserved_bytes)


class Application(Base):
    """[Application] A frozen application binary of a release; nodes must match it."""

    __tablename__ = "application"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    binary: Mapped[str] = mapped_column(String(1024))
    version: Mapped[str] = mapped_column(String(64))
    checksum: Mapped[str | None] = mapped_column(String(64))
    config_files: Mapped[list[Any]] = mapped_column(default=list)
    installed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Who registered it (``spica apps register``) and for which release.
    release: Mapped[str | None] = mapped_column(String(SHORT))
    registered_by: Mapped[str | None] = mapped_column(String(64))


class NodeApplication(Base):
    """What a node really has installed, as last checked."""

    __tablename__ = "node_application"
    __table_args__ = (UniqueConstraint("node_id", "application_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("node.id", ondelete="CASCADE"))
    application_id: Mapped[int] = mapped_column(ForeignKey("application.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    checksum: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class Runid(Base):
    """A CFHT observing run and its DataTransfer status."""

    __tablename__ = "runid"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(SHORT), unique=True)
    images: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    transfer_mode: Mapped[str] = mapped_column(String(SHORT), default="automatic")
    transfer_status: Mapped[str] = mapped_column(String(SHORT), default="waiting")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Image(Base):
    """One raw exposure (MEF) with its header metadata and QFin results.

    Measured and header figures are DOUBLE: MariaDB's FLOAT keeps 6 digits, an hour of MJD.
    """

    __tablename__ = "image"
    __table_args__ = (Index(None, "runid_id", "filter"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(NAME), unique=True)
    runid_id: Mapped[int | None] = mapped_column(ForeignKey("runid.id", ondelete="SET NULL"))
    filter: Mapped[str | None] = mapped_column(String(SHORT))
    object: Mapped[str | None] = mapped_column(String(NAME))
    ra: Mapped[float | None] = mapped_column(Double)
    dec: Mapped[float | None] = mapped_column(Double)
    exptime: Mapped[float | None] = mapped_column(Double)
    date_obs: Mapped[datetime | None]
    airmass: Mapped[float | None] = mapped_column(Double)
    seeing: Mapped[float | None] = mapped_column(Double)
    skyprobe: Mapped[float | None] = mapped_column(Double)
    grade: Mapped[str | None] = mapped_column(String(8))
    node_id: Mapped[int | None] = mapped_column(
        ForeignKey("node.id", ondelete="SET NULL"), index=True
    )
    path: Mapped[str | None] = mapped_column(String(1024))
    qf_status: Mapped[str] = mapped_column(String(SHORT), default="new")
    #: Raw exposures are never deleted by ``remove --purge-inputs``.
    raw: Mapped[bool] = mapped_column(Boolean, default=True)
    # Header metadata read by ``spica ingest`` (the instrument's header map names the keys).
    instrument: Mapped[str | None] = mapped_column(String(SHORT))
    qrunid: Mapped[str | None] = mapped_column(String(SHORT))
    mjd_obs: Mapped[float | None] = mapped_column(Double)
    gain: Mapped[float | None] = mapped_column(Double)
    saturate: Mapped[float | None] = mapped_column(Double)
    phot_c: Mapped[float | None] = mapped_column(Double)
    phot_k: Mapped[float | None] = mapped_column(Double)
    extensions: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str | None] = mapped_column(String(80))
    #: Partition of ``node`` holding the file; None while it waits in a repository.
    partition: Mapped[str | None] = mapped_column(String(NAME))
    #: Name of the incoming repository the file waits in; None once placed on a node.
    repository: Mapped[str | None] = mapped_column(String(NAME), index=True)
    ingested_at: Mapped[datetime | None]
    # QFin results (``spica qfin record``): the image's figures, medians over its CCDs.
    qf_release: Mapped[str | None] = mapped_column(String(SHORT))
    qf_at: Mapped[datetime | None]
    background: Mapped[float | None] = mapped_column(Double)
    background_rms: Mapped[float | None] = mapped_column(Double)
    elongation: Mapped[float | None] = mapped_column(Double)
    sources: Mapped[int | None] = mapped_column(Integer)
    psf_stars: Mapped[int | None] = mapped_column(Integer)
    ccds_measured: Mapped[int | None] = mapped_column(Integer)
    report_path: Mapped[str | None] = mapped_column(String(1024))
    weight_path: Mapped[str | None] = mapped_column(String(1024))
    flag_path: Mapped[str | None] = mapped_column(String(1024))
    qf_error: Mapped[str | None] = mapped_column(Text)
    # Grades: QFin's automatic proposal (with its reasons) and the operator's grade.
    grade_proposal: Mapped[str | None] = mapped_column(String(8))
    grade_reasons: Mapped[list[Any] | None]
    grade_comment: Mapped[str | None] = mapped_column(Text)
    graded_by: Mapped[str | None] = mapped_column(String(64))
    graded_at: Mapped[datetime | None]

    ccds: Mapped[list[ImageCcd]] = relationship(
        back_populates="image", cascade="all, delete-orphan", order_by="ImageCcd.ccd"
    )


class ImageCcd(Base):
    """QFin's figures for one CCD (extension) of an image."""

    __tablename__ = "image_ccd"
    __table_args__ = (UniqueConstraint("image_id", "ccd"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    #: 1-based extension number in the MEF.
    ccd: Mapped[int] = mapped_column(Integer)
    extname: Mapped[str | None] = mapped_column(String(SHORT))
    seeing: Mapped[float | None] = mapped_column(Double)
    elongation: Mapped[float | None] = mapped_column(Double)
    sources: Mapped[int | None] = mapped_column(Integer)
    psf_stars: Mapped[int | None] = mapped_column(Integer)
    background: Mapped[float | None] = mapped_column(Double)
    background_rms: Mapped[float | None] = mapped_column(Double)
    saturation: Mapped[float | None] = mapped_column(Double)

    image: Mapped[Image] = relationship(back_populates="ccds")


class Stack(Base):
    """[Auto_status] A unit of pipeline work; ``state`` mirrors the node's queue file."""

    __tablename__ = "stack"
    __table_args__ = (
        Index(None, "state", "priority"),
        Index(None, "node_id", "state"),
        Index(None, "runid"),
        Index(None, "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)
    step: Mapped[str] = mapped_column(String(SHORT), default="stack")
    survey: Mapped[str | None] = mapped_column(String(SHORT))
    filter: Mapped[str | None] = mapped_column(String(SHORT))
    release: Mapped[str | None] = mapped_column(String(SHORT))
    runid: Mapped[str | None] = mapped_column(String(SHORT))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("node.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(SHORT), default="planned")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    ranking: Mapped[str | None] = mapped_column(String(8))
    lines: Mapped[int] = mapped_column(Integer, default=0)
    #: Index of the last line that succeeded (the resume point), as last reported.
    progress: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    failed_line: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    #: ``spica auto``'s units: the tile (the stack's name without its release, what
    #: ``spica compare`` pairs across releases) and a digest of the input set, so that a
    #: changed selection is reported instead of silently rewriting the unit.
    tile: Mapped[str | None] = mapped_column(String(NAME), index=True)
    inputs_digest: Mapped[str | None] = mapped_column(String(64))

    node: Mapped[Node | None] = relationship()
    files: Mapped[list[StackFile]] = relationship(
        back_populates="stack", cascade="all, delete-orphan"
    )
    runs: Mapped[list[StackRun]] = relationship(
        back_populates="stack", cascade="all, delete-orphan", order_by="StackRun.id"
    )
    apps: Mapped[list[StackApp]] = relationship(cascade="all, delete-orphan")


class StackResult(Base):
    """What a completed co-add produced and measured (``spica stack record``), one row per
    stack: the seed's "Results" and the figures ``spica compare`` sets side by side.

    Astrometric RMS are SCAMP's (``scamp.xml``, ``FGroups``), in arcsec; the seeing is the
    PSF FWHM measured on the co-add (arcsec); completeness is the magnitude at which 80 % of
    stars injected into a copy of the co-add are recovered.
    """

    __tablename__ = "stack_result"

    id: Mapped[int] = mapped_column(primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.id", ondelete="CASCADE"), unique=True)
    coadd_path: Mapped[str | None] = mapped_column(String(1024))
    weight_path: Mapped[str | None] = mapped_column(String(1024))
    catalog_path: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_path: Mapped[str | None] = mapped_column(String(1024))
    scamp_inputs: Mapped[int | None] = mapped_column(Integer)
    swarp_inputs: Mapped[int | None] = mapped_column(Integer)
    #: Sum of the SWarp inputs' exposure times (s).
    exptime: Mapped[float | None] = mapped_column(Double)
    seeing: Mapped[float | None] = mapped_column(Double)
    scamp_internal_rms: Mapped[float | None] = mapped_column(Double)
    scamp_external_rms: Mapped[float | None] = mapped_column(Double)
    background: Mapped[float | None] = mapped_column(Double)
    background_rms: Mapped[float | None] = mapped_column(Double)
    completeness: Mapped[float | None] = mapped_column(Double)
    sources: Mapped[int | None] = mapped_column(Integer)
    #: Photometric zero point of the co-add (mag for 1 ADU/s), as SWarp's FLXSCALE made it.
    zero_point: Mapped[float | None] = mapped_column(Double)
    #: Wall-clock seconds per step (``source-extractor``, ``scamp``, ``swarp``, …).
    step_seconds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    stack: Mapped[Stack] = relationship()


class StackRelease(Base):
    """A stacking release as ``spica auto`` first planned it: frozen once it has stacks.

    ``digest`` covers the release's rules, tile grid, tool configuration files and reference
    catalogue; ``spica auto`` refuses a release whose configuration no longer matches it.
    """

    __tablename__ = "stack_release"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(SHORT), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    #: The configuration the digest covers, for ``spica auto`` to say what changed.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    frozen_at: Mapped[datetime] = mapped_column(default=utcnow)
    frozen_by: Mapped[str | None] = mapped_column(String(64))


class StackFile(Base):
    """[Auto_file] An image used by a stack, and for what (scamp / swarp)."""

    __tablename__ = "stack_file"
    __table_args__ = (UniqueConstraint("stack_id", "image_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(SHORT))

    stack: Mapped[Stack] = relationship(back_populates="files")
    image: Mapped[Image] = relationship()


class StackApp(Base):
    """[Auto_job] An application and the version a stack used."""

    __tablename__ = "stack_app"
    __table_args__ = (UniqueConstraint("stack_id", "application_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.id", ondelete="CASCADE"))
    application_id: Mapped[int] = mapped_column(
        ForeignKey("application.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[str] = mapped_column(String(64))

    application: Mapped[Application] = relationship()


class StackRun(Base):
    """[Auto_run] One execution of one command line.

    ``(stack_id, line, attempt)`` is unique so a journal replay can never write a run twice.
    """

    __tablename__ = "stack_run"
    __table_args__ = (UniqueConstraint("stack_id", "line", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    command: Mapped[str] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(NAME))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)

    stack: Mapped[Stack] = relationship(back_populates="runs")


class Problem(Base):
    """A software failure or a hardware (liveness) event, as on the seed's problem page.

    Names are kept as text, not keys: a problem outlives the stack it was about.
    """

    __tablename__ = "problem"
    __table_args__ = (Index(None, "created_at"), Index(None, "resolved", "kind"))

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(SHORT))
    node: Mapped[str | None] = mapped_column(String(NAME), index=True)
    stack: Mapped[str | None] = mapped_column(String(NAME), index=True)
    runid: Mapped[str | None] = mapped_column(String(SHORT))
    filter: Mapped[str | None] = mapped_column(String(SHORT))
    release: Mapped[str | None] = mapped_column(String(SHORT))
    message: Mapped[str] = mapped_column(Text)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None]


class Transfer(Base):
    """A DataTransfer move of one file to a processing node (planned → running → done/failed)."""

    __tablename__ = "transfer"
    __table_args__ = (
        Index(None, "state"),
        Index(None, "runid"),
        Index(None, "destination_node", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(NAME))
    runid: Mapped[str | None] = mapped_column(String(SHORT))
    source: Mapped[str] = mapped_column(String(1024))
    destination_node: Mapped[str] = mapped_column(String(NAME))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str | None] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(SHORT), default="planned")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    #: The plan this row belongs to (one ``spica transfer plan``), for history and undo.
    plan_id: Mapped[str | None] = mapped_column(String(SHORT), index=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("image.id", ondelete="SET NULL"))
    filter: Mapped[str | None] = mapped_column(String(SHORT))
    #: Node holding the source when the repository is on a node; None for the console host.
    source_node: Mapped[str | None] = mapped_column(String(NAME))
    destination_partition: Mapped[str | None] = mapped_column(String(NAME))
    destination_path: Mapped[str | None] = mapped_column(String(1024))
    #: Space the file will take on the partition once processed (space_factor * bytes).
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Checksum the node computed on arrival; ``done`` only when it equals ``checksum``.
    node_checksum: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None]


class OperatorAction(Base):
    """Audit: every applied, refused or dry-run operator request."""

    __tablename__ = "operator_action"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(SHORT))
    targets: Mapped[list[Any]] = mapped_column(default=list)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    plan: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(SHORT))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DaemonJournal(Base):
    """How far dbspica has applied one node daemon journal (exactly-once replay).

    A daemon appends every dbspica write to a local journal first, each entry numbered
    ``seq``; the replay applies entries and advances ``applied_seq`` in one transaction, so
    an entry is applied once whatever crashes or outages happen between. Keyed by the
    journal's own id: a node whose journal was recreated starts a new row, never skipping.
    """

    __tablename__ = "daemon_journal"

    id: Mapped[int] = mapped_column(primary_key=True)
    journal_id: Mapped[str] = mapped_column(String(SHORT), unique=True)
    node: Mapped[str] = mapped_column(String(NAME), index=True)
    applied_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Monitor(Base):
    """One ``spica watch`` process: who it is and when it last finished a poll.

    Consoles read ``heartbeat_at`` against ``interval`` to know whether a monitor runs (and
    then show its figures instead of polling the nodes); a clean stop sets ``stopped_at``.
    """

    __tablename__ = "monitor"
    __table_args__ = (Index(None, "heartbeat_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    interval: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    polls: Mapped[int] = mapped_column(BigInteger, default=0)
    stopped_at: Mapped[datetime | None]


class MonitorLease(Base):
    """Which monitor polls the cluster: one row (``id`` 1), taken and renewed by a conditional
    update (``WHERE monitor_id = me OR expires_at < now``); the other monitors stand by and
    take it once it expires or is released."""

    __tablename__ = "monitor_lease"

    id: Mapped[int] = mapped_column(primary_key=True)
    monitor_id: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]


class NodeFigures(Base):
    """A node's figures as of the last monitor poll (one row per node, overwritten each
    poll): what a console shows instead of polling the node itself."""

    __tablename__ = "node_figures"

    id: Mapped[int] = mapped_column(primary_key=True)
    node: Mapped[str] = mapped_column(String(NAME), unique=True)
    liveness: Mapped[str] = mapped_column(String(SHORT))
    polled_at: Mapped[datetime]
    last_seen: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    load: Mapped[list[Any] | None] = mapped_column(JSON)
    heartbeat_age: Mapped[float | None] = mapped_column(Float)
    heartbeat_pid: Mapped[int | None] = mapped_column(Integer)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    #: Queue files per state, as counted by the agent.
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Per partition: name, total, free, used, reserved bytes, virtual.
    partitions: Mapped[list[Any]] = mapped_column(default=list)
    #: The running stacks: stack, progress, lines, claim pid and whether it lives.
    running: Mapped[list[Any]] = mapped_column(default=list)
    monitor_host: Mapped[str] = mapped_column(String(255))
    monitor_pid: Mapped[int] = mapped_column(Integer)


class Viewer(Base):
    """[Auto_view] A PI's read-only access to their own runids."""

    __tablename__ = "viewer"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    runids: Mapped[list[Any]] = mapped_column(default=list)
    email: Mapped[str | None] = mapped_column(String(255))


ALL_MODELS: tuple[type[Base], ...] = (
    Node,
    NodeDisk,
    Application,
    NodeApplication,
    Runid,
    Image,
    ImageCcd,
    Stack,
    StackResult,
    StackRelease,
    StackFile,
    StackApp,
    StackRun,
    Problem,
    Transfer,
    OperatorAction,
    Viewer,
    DaemonJournal,
    Monitor,
    MonitorLease,
    NodeFigures,
)

for _table in Base.metadata.tables.values():
    _table.dialect_options["mysql"].update(MYSQL_TABLE_OPTIONS)
