"""``spica qfin record``: the last line of a QFin unit writes what QFin found of its image.

The figures are read from the tools' outputs (:func:`spica_core.qfin.measure.measure_outputs`),
graded (:func:`spica_core.qfin.grades.propose`, the release's thresholds) and written as the
QualityFITS-like report beside the outputs (atomically); then ONE transaction updates the
image's row (``qf_status`` done and every figure, the grade proposal and its reasons; the
operator's grade is never overwritten), replaces its ``image_ccd`` rows and records the
application versions the unit ran with (``stack_app``). A report written whose transaction
then failed is rewritten by the requeued line: dbspica never holds half a result.

A broken image or unusable outputs (:class:`~spica_core.qfin.measure.QfinFailed`) mark the
image ``failed`` with the readable message, file a software problem (node, unit, runid,
filter) and are raised again, so the command exits non-zero and the daemon fails the unit
at this line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig
from spica_core.db.models import Image, ImageCcd, Problem, Runid
from spica_core.db.types import utcnow
from spica_core.names import validate_name
from spica_core.node.host import iso_utc
from spica_core.qfin.measure import QfinFailed
from spica_core.qfin.outputs import QfinOutputs
from spica_core.qfin.plan import UnknownImages
from spica_core.qfin.result import ImageFigures, QfinReport

#: ``image.qf_status`` values QFin writes (``new`` and ``planned`` are the planner's).
DONE, FAILED = "done", "failed"
#: ``problem.kind`` of a QFin that failed.
SOFTWARE = "software"


@dataclass(frozen=True)
class RecordTarget:
    """What one ``spica qfin record`` is about: the image, where its outputs are, the
    release, and (from the daemon's environment) the unit and node running it."""

    image: str
    workdir: Path
    release: str
    image_path: Path
    stack: str | None = None
    node: str | None = None

    def checked(self) -> RecordTarget:
        validate_name(self.image, "image")
        validate_name(self.release, "release")
        if self.stack is not None:
            validate_name(self.stack)
        if self.node is not None:
            validate_name(self.node, "node")
        return self


def record_qfin(engine: Engine, config: SpicaConfig, target: RecordTarget) -> QfinReport:
    """Measure, grade, write the report, then the image's rows in one transaction; the
    report. Raises UnknownImages for an image dbspica does not hold (nothing written) and
    QfinFailed (recorded as the image's failure first) for a broken image."""
    from spica_core.apps.versions import local_versions
    from spica_core.qfin.grades import propose
    from spica_core.qfin.measure import measure_outputs, report_path
    from spica_core.qfin.report import write_report

    target = target.checked()
    with Session(engine) as session:
        if session.scalar(select(Image.id).where(Image.filename == target.image)) is None:
            raise UnknownImages([target.image])
    try:
        figures = measure_outputs(
            target.workdir,
            image=target.image,
            release=target.release,
            image_path=target.image_path,
        )
    except QfinFailed as exc:
        fail_image(engine, target, exc)
        raise
    proposal = propose(figures, config.release.grades)
    versions = local_versions(config.release.applications)
    outputs = QfinOutputs(workdir=target.workdir, image=target.image, image_path=target.image_path)
    report = QfinReport(
        figures=figures,
        proposal=proposal,
        image_path=str(target.image_path),
        weight_path=_existing(outputs.weight),
        flag_path=_existing(outputs.flag),
        catalog_path=str(outputs.catalog),
        psf_path=_existing(outputs.psf),
        versions=versions,
        created_at=iso_utc(),
    )
    path = report_path(target.workdir, target.image)
    write_report(path, report)
    _write_results(engine, target, report, str(path))
    return report


def fail_image(
    engine: Engine | Callable[[], Engine], target: RecordTarget, failure: QfinFailed
) -> None:
    """Record ``failure`` (:func:`record_failure`) before it is raised again: when dbspica
    cannot take it either (``engine`` may be the function that connects), the failure still
    stands (the unit fails at its line, the daemon files its problem) and says so."""
    try:
        record_failure(engine if isinstance(engine, Engine) else engine(), target, str(failure))
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise QfinFailed(f"{failure} (not recorded in dbspica: {why})") from failure


def record_failure(engine: Engine, target: RecordTarget, message: str) -> None:
    """The image failed QFin: its status and error, and a software problem about it, in one
    transaction. Figures it had (an earlier release's) stay as they were."""
    now = utcnow()
    if target.image not in message:
        message = f"QFin of {target.image}: {message}"
    with Session(engine) as session, session.begin():
        image = session.scalars(
            select(Image).where(Image.filename == target.image).with_for_update()
        ).one_or_none()
        runid = None
        if image is not None:
            image.qf_status = FAILED
            image.qf_error = message
            image.qf_release = target.release
            image.qf_at = now
            if image.runid_id is not None:
                runid = session.scalar(select(Runid.name).where(Runid.id == image.runid_id))
        session.add(
            Problem(
                created_at=now,
                kind=SOFTWARE,
                node=target.node,
                stack=target.stack,
                runid=runid,
                filter=image.filter if image is not None else None,
                release=target.release,
                message=message,
            )
        )


def _write_results(engine: Engine, target: RecordTarget, report: QfinReport, path: str) -> None:
    from spica_core.apps.store import record_unit_versions

    figures, proposal = report.figures, report.proposal
    with Session(engine) as session, session.begin():
        image = session.scalars(
            select(Image).where(Image.filename == target.image).with_for_update()
        ).one()
        image.qf_status = DONE
        image.qf_release = target.release
        image.qf_at = utcnow()
        image.qf_error = None
        image.seeing = figures.seeing
        image.background = figures.background
        image.background_rms = figures.background_rms
        image.elongation = figures.elongation
        image.sources = figures.sources
        image.psf_stars = figures.psf_stars
        image.ccds_measured = len(figures.ccds)
        image.report_path = path
        image.weight_path = report.weight_path
        image.flag_path = report.flag_path
        image.grade_proposal = proposal.grade
        image.grade_reasons = list(proposal.reasons)
        if image.graded_by is None:  # an operator's grade is theirs: never overwritten
            image.grade = proposal.grade
        session.execute(delete(ImageCcd).where(ImageCcd.image_id == image.id))
        session.add_all(_ccd_rows(image.id, figures))
        if target.stack is not None:
            record_unit_versions(session, target.stack, report.versions)


def _ccd_rows(image_id: int, figures: ImageFigures) -> list[ImageCcd]:
    return [
        ImageCcd(
            image_id=image_id,
            ccd=ccd.ccd,
            extname=ccd.extname,
            seeing=ccd.seeing,
            elongation=ccd.elongation,
            sources=ccd.sources,
            psf_stars=ccd.psf_stars,
            background=ccd.background,
            background_rms=ccd.background_rms,
            saturation=ccd.saturation,
        )
        for ccd in figures.ccds
    ]


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None
