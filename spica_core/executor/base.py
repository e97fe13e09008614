"""The Executor: what runs units (stacks) on hosts, as the operations see it.

Operations, reconcile, ``stack add``, the demo seed and the console talk to an executor,
never to node agents, verbs or queue files. Today's executor is the node agents
(:class:`~spica_core.executor.agents.AgentExecutor`); a batch scheduler (Slurm: ``sbatch``,
``scontrol hold/release``, ``scancel``) fits behind the same interface, saying through
:attr:`Executor.capabilities` what it can do beyond the four moves.

A change is a typed value (:class:`Launch`, :class:`Requeue`, :class:`Unlock`,
:class:`Remove`): the stack, its host (``node``), who asks and what the move needs. Its answer
is a :class:`StackChange` — the same shape whether dry (``plan``) or done (``apply``), so one
``Plan.render`` shows both. ``plan_many``/``apply_many`` take many changes at once and answer
each on its own (:data:`Answer`), in order: the node agents send them to every host at once,
in batches; an executor without batches loops (:func:`one_by_one`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from spica_core.errors import SpicaError
from spica_core.node.protocol import (
    Application,
    BinaryVersion,
    FileSum,
    FitsHeadersResult,
    PlaceResult,
    PrepareResult,
    QueueEntry,
    StackChange,
    StageResult,
    TailResult,
    UnitRecord,
    UnlockQfinResult,
)
from spica_core.states import StackState

if TYPE_CHECKING:
    from spica_core.checksum import Hasher
    from spica_core.cluster_snapshot import ClusterSnapshot
    from spica_core.executor.file_copy import NodeFile


class Capability(StrEnum):
    """What an executor can do beyond launch, requeue, unlock and remove."""

    #: Keep a queued unit from starting, and let it start again (Slurm: scontrol hold).
    HOLD = "hold"
    #: Units and hosts answered as one snapshot (a poll of every host).
    SNAPSHOT = "snapshot"
    #: Write a unit's commands (and inputs) where it will run.
    STAGE = "stage"
    #: Read the log of one of a unit's command lines.
    TAIL = "tail"
    #: Remove a QFin lock whose holder is gone.
    QFIN_LOCKS = "qfin-locks"
    #: Copy files to a host, checksummed there, landing complete or not at all
    #: (:class:`FileCopier`).
    COPY = "copy"
    #: Say what each application binary is on a host: checksum and version
    #: (:meth:`Executor.versions`).
    VERSIONS = "versions"


class NotSupported(SpicaError):
    """The executor cannot do this (see its ``capabilities``)."""


@dataclass(frozen=True)
class Change:
    """One move of one stack on its host, asked by ``by``."""

    node: str
    stack: str
    by: str


@dataclass(frozen=True)
class Launch(Change):
    """planned -> pending; refused if the stack is queued already (exclusive create)."""

    priority: int = 0


@dataclass(frozen=True)
class Requeue(Change):
    """failed -> pending, from the failed line (or from line 1 with ``from_start``)."""

    priority: int = 0
    from_start: bool = False


@dataclass(frozen=True)
class Unlock(Change):
    """running (its claimer dead) -> failed, or pending with ``to``."""

    to: Literal["failed", "pending"] = "failed"
    priority: int = 0


@dataclass(frozen=True)
class Remove(Change):
    """Any queued or planned state -> gone; ``purge``: input files (relative) deleted too."""

    purge: tuple[str, ...] = ()
    stack_id: int | None = None


#: One change's answer among many: what it does (or did), or why not — the exception its
#: single ``plan``/``apply`` would have raised (``ProtocolError``, ``NodeUnreachable``,
#: ``NodeAnswerLost``, ...).
Answer = StackChange | Exception


async def one_by_one(
    call: Callable[[Change], Awaitable[StackChange]], changes: Sequence[Change]
) -> list[Answer]:
    """``plan_many``/``apply_many`` of an executor without batches: each change in turn."""
    answers: list[Answer] = []
    for change in changes:
        try:
            answers.append(await call(change))
        except Exception as exc:
            answers.append(exc)
    return answers


@runtime_checkable
class Executor(Protocol):
    """What runs units. Errors: ``NodeUnreachable`` (nothing was sent, nothing changed),
    its subclass ``NodeAnswerLost`` (sent, answer lost: the change may have happened),
    ``ProtocolError`` (the host refused; its ``code`` says why, ``wrong_state`` for a move
    the unit's state does not allow)."""

    capabilities: frozenset[Capability]

    @property
    def hosts(self) -> Sequence[str]:
        """The hosts this executor runs units on (reconcile asks each)."""
        ...

    async def snapshot(self) -> ClusterSnapshot:
        """Every host and its units as seen now; a host that does not answer is in it,
        marked down, never left out."""
        ...

    async def plan(self, change: Change) -> StackChange:
        """What ``change`` would do (dry run): nothing changes; refused as apply would be."""
        ...

    async def apply(self, change: Change) -> StackChange:
        """Do ``change``, at most once: the host's commit is atomic and exclusive."""
        ...

    async def plan_many(self, changes: Sequence[Change]) -> list[Answer]:
        """:meth:`plan` of each change, answered in order, each on its own."""
        ...

    async def apply_many(self, changes: Sequence[Change]) -> list[Answer]:
        """:meth:`apply` of each change, answered in order, each on its own: one refused or
        unreachable never stops the others' hosts."""
        ...

    async def stage(
        self,
        node: str,
        stack: str,
        commands: bytes,
        inputs: Sequence[str] | None = None,
        unit: UnitRecord | None = None,
    ) -> StageResult:
        """Write a planned unit's commands (exact bytes), inputs and unit record (its step
        and partition, for the QFin lock) where it will run."""
        ...

    async def tail(
        self, node: str, stack: str, line: int | None = None, lines: int | None = None
    ) -> TailResult:
        """The end of the log of ``stack``'s line ``line`` (default: failed, else latest)."""
        ...

    async def units(self, node: str, states: Sequence[StackState]) -> list[QueueEntry]:
        """The units of ``node`` in ``states``, with their records (reconcile's evidence)."""
        ...

    async def release_qfin_lock(
        self, node: str, partition: str, by: str, *, dry_run: bool
    ) -> UnlockQfinResult:
        """Remove the QFin lock of ``partition`` if its holder is gone."""
        ...

    async def hold(self, node: str, stack: str, by: str) -> StackChange:
        """Keep a queued unit from starting (needs ``Capability.HOLD``)."""
        ...

    async def release(self, node: str, stack: str, by: str) -> StackChange:
        """Let a held unit start again (needs ``Capability.HOLD``)."""
        ...

    async def fits_headers(
        self, node: str, paths: Sequence[str], offset: int = 0
    ) -> FitsHeadersResult:
        """Headers, size and checksum of the FITS files under ``paths`` (relative to the
        host's root) from the ``offset``-th on; ``next`` in the answer says where to go on."""
        ...

    async def versions(self, node: str, applications: Sequence[Application]) -> list[BinaryVersion]:
        """What each application binary is on ``node``: path, size, sha256 and the version
        it reports (None from a host that cannot say), in ``applications``' order."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class FileCopier(Protocol):
    """Copies files onto hosts (``Capability.COPY``): DataTransfer's path to the partitions.

    Paths are relative to the host's spica root. The landing is in three steps so that the
    caller decides (and records) each: :meth:`prepare_file` says where the copy writes (a
    hidden partial file, kept from an interrupted copy when resuming), :meth:`copy_file`
    writes the source there while hashing it (one read), :meth:`place_file` has the host hash
    what arrived and rename it into place only when it matches. Errors: ``NodeUnreachable``
    (the connection failed; a partial may remain, to resume), ``ProtocolError`` (the host
    refused), ``OSError`` (the source could not be read).
    """

    async def file_sums(self, node: str, paths: Sequence[str]) -> list[FileSum]:
        """Size and checksum of each path on ``node``, computed there."""
        ...

    async def prepare_file(
        self, node: str, path: str, *, size: int | None = None, resume: bool = True
    ) -> PrepareResult:
        """Where the copy of ``path`` writes, and what an interrupted copy left there."""
        ...

    async def copy_file(
        self,
        node: str,
        source: Path | NodeFile,
        target: PrepareResult,
        hasher: Hasher,
        *,
        offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write ``source`` (here, or on another node: read over that node's connection)
        from ``offset`` to ``target``'s partial at ``offset``, feeding
        ``hasher`` (which holds the first ``offset`` bytes already) and ``progress`` (bytes
        written each time); the size of the partial once written."""
        ...

    async def place_file(self, node: str, path: str, size: int, checksum: str) -> PlaceResult:
        """Rename the partial of ``path`` into place if the host's checksum is ``checksum``
        (else the partial is deleted, ``placed`` false)."""
        ...
