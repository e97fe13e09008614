""" "Transfer this runid now" in the core, on the seed's DataTransfer figures, on SQLite and
MariaDB: the preview stores nothing, the confirmed plan is the one shown and marks the runid
``immediate``; an impossible plan cannot be confirmed and changes nothing; a plan made after
the disks changed is told apart from the one shown."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.db.models import OperatorAction, Runid, Transfer
from spica_core.errors import UsageError
from spica_core.transfer.now import plan_now, preview, same_placement
from tests.test_transfer_plan_seed import (  # seed_db: the fixture of the seed's figures
    add_runid,
    seed_cluster,
    seed_config,
    seed_db,  # noqa: F401
)


@pytest.fixture
def seeded(request: pytest.FixtureRequest):
    """The seed's nodes and runids, and one runid bigger than the whole cluster (20 TB)."""
    engine = request.getfixturevalue("seed_db")
    with Session(engine) as s, s.begin():
        add_runid(s, "04BZ99", 10, 20 * 10**12)
    return engine


def transfers(engine, runid: str) -> int:
    with Session(engine) as s:
        count = select(func.count()).select_from(Transfer).where(Transfer.runid == runid)
        return int(s.scalar(count) or 0)


def mode(engine, runid: str) -> str:
    with Session(engine) as s:
        return str(s.scalar(select(Runid.transfer_mode).where(Runid.name == runid)))


def test_preview_then_plan_now(seeded, tmp_path, db_url) -> None:
    config = seed_config(tmp_path, db_url)
    shown = preview(seeded, config, seed_cluster(), "03AL03", "teraop")
    assert shown.doable and transfers(seeded, "03AL03") == 0
    # The seed's row: the whole runid on the least loaded node with the most virtual free.
    assert shown.text.splitlines()[0] == "03AL03  node5: 100.0% [288 files]"
    assert "288 file(s), 189.7 GB to copy, 758.9 GB reserved" in shown.text
    assert "node5:raid1  288 file(s)  189.7 GB" in shown.text
    assert mode(seeded, "03AL03") == "automatic"

    stored = plan_now(seeded, config, seed_cluster(), "03AL03", "teraop")
    assert stored.stored and same_placement(stored, shown.plan)
    assert transfers(seeded, "03AL03") == 288
    assert mode(seeded, "03AL03") == "immediate"
    with Session(seeded) as s:
        audit = s.scalars(
            select(OperatorAction.result).where(OperatorAction.action == "transfer-plan")
        ).all()
    assert sorted(audit) == ["applied", "dry-run"]


def test_impossible_plan_cannot_be_confirmed(seeded, tmp_path, db_url) -> None:
    config = seed_config(tmp_path, db_url)
    shown = preview(seeded, config, seed_cluster(), "04BZ99", "teraop")
    assert not shown.doable
    assert shown.text.startswith("04BZ99 [all filters]: impossible: ")
    assert "missing" in shown.text
    stored = plan_now(seeded, config, seed_cluster(), "04BZ99", "teraop")
    assert not stored.stored
    assert transfers(seeded, "04BZ99") == 0 and mode(seeded, "04BZ99") == "automatic"


def test_a_plan_after_the_disks_changed_differs_from_the_one_shown(
    seeded, tmp_path, db_url
) -> None:
    config = seed_config(tmp_path, db_url)
    shown = preview(seeded, config, seed_cluster(), "03AL03", "teraop")
    # Meanwhile node5 goes down: the same request now places the runid elsewhere.
    stored = plan_now(seeded, config, seed_cluster(down=("node5",)), "03AL03", "teraop")
    assert stored.stored and not same_placement(stored, shown.plan)
    assert "node5" not in stored.plan.distribution()


def test_unknown_runid_is_refused(seeded, tmp_path, db_url) -> None:
    config = seed_config(tmp_path, db_url)
    with pytest.raises(UsageError, match="03XX00"):
        preview(seeded, config, seed_cluster(), "03XX00", "teraop")
