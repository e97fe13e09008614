"""The planner and the read model on the seed's own DataTransfer figures, on SQLite and
MariaDB: the seed's nodes (virtual free / total disk), its runid table (images, size) and
"disk space needed" column, plans that fit, are stored as ``planned`` transfer rows and
counted in virtual free at once; re-planning, down and loaded nodes, stack products, an
impossible plan, and the runid distribution (``100.0% [2 files]``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import ClusterSnapshot, Liveness, NodeSnapshot, PartitionStatus
from spica_core.config import SpicaConfig, parse_config
from spica_core.db.models import Image, Node, OperatorAction, Runid, Stack, StackFile, Transfer
from spica_core.errors import UsageError
from spica_core.read_model import (
    Scope,
    transfer_distribution,
    transfer_space,
    transfer_status,
    waiting_runids,
)
from spica_core.transfer.store import plan_runid
from spica_core.units import gigabytes

GB = 10**9
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RESERVE = 20 * GB

#: The seed's DataTransfer page: node -> (Virtual free disk, Total disk, percent shown).
SEED_NODES = {
    "node1": ("433.107 GB", "652.036 GB", "33.6"),
    "node2": ("433.107 GB", "652.036 GB", "33.6"),
    "node3": ("433.107 GB", "652.036 GB", "33.6"),
    "node4": ("487.207 GB", "652.036 GB", "25.3"),
    "node5": ("1523.314 GB", "1869.964 GB", "18.5"),
    "node6": ("1306.830 GB", "1869.964 GB", "30.1"),
    "node7": ("1508.813 GB", "1869.964 GB", "19.3"),
    "node8": ("1508.813 GB", "1869.964 GB", "19.3"),
}
#: The seed's runid table: Runid, Number of images, Runid size, Disk space needed.
SEED_RUNIDS = [
    ("03AF19", 27, "17.786 GB", "71.145 GB"),
    ("03AL01", 284, "187.079 GB", "748.315 GB"),
    ("03AL02", 28, "18.447 GB", "73.788 GB"),
    ("03AL03", 288, "189.720 GB", "758.882 GB"),
    ("03AQ97", 80, "52.691 GB", "210.764 GB"),
    ("03AQ98", 9, "5.929 GB", "23.717 GB"),
]
FILTERS = ["u", "g", "r", "i", "z"]


def gb(text: str) -> int:
    return round(float(text.removesuffix(" GB")) * GB)


def seed_bytes(size: str, needed: str) -> int:
    """A runid size (bytes) the seed's two rounded columns both allow: shown as ``size`` and,
    times 4, as ``needed`` (its figures were rounded from exact bytes)."""
    lo = max(gb(size) - GB // 2000, -(-(gb(needed) - GB // 2000) // 4))
    hi = min(gb(size) + GB // 2000, (gb(needed) + GB // 2000) // 4)
    assert lo < hi, f"no size fits {size} and {needed}"
    return (lo + hi) // 2


def seed_config(tmp_path, db_url: str) -> SpicaConfig:
    nodes = "".join(
        f"""
[[nodes]]
name = "{name}"
host = "127.0.0.1"
root = "/data/{name}"
partitions = [{{ name = "raid1", reserved = {RESERVE} }}]
"""
        for name in SEED_NODES
    )
    text = f"""
[db]
url = "{db_url}"
[transfer]
repositories = [{{ name = "fc1", path = "/data/clix/fc1/from_CADC/headervalid" }}]
{nodes}"""
    return parse_config(text, str(tmp_path / "spica.toml"))


def seed_cluster(down: tuple[str, ...] = ()) -> ClusterSnapshot:
    """The seed's disks as a poll reports them: free = virtual free + the reserve."""
    nodes = []
    for name, (vfree, total, _) in SEED_NODES.items():
        up = name not in down
        parts = (
            (PartitionStatus("raid1", gb(total), gb(vfree) + RESERVE, 0, RESERVE),) if up else ()
        )
        nodes.append(
            NodeSnapshot(
                name,
                "127.0.0.1",
                22,
                Liveness.UP if up else Liveness.DOWN,
                last_seen=NOW,
                polled_at=NOW,
                partitions=parts,
            )
        )
    return ClusterSnapshot(NOW, tuple(nodes))


def add_runid(session: Session, name: str, images: int, size: int, *, repository: bool = True):
    run = Runid(name=name, images=images, bytes=size)
    session.add(run)
    session.flush()
    each, extra = divmod(size, images)
    base = 700000 + 1000 * len(session.scalars(select(Runid.id)).all())
    for i in range(images):
        session.add(
            Image(
                filename=f"{base + i}o.fits.gz",
                runid_id=run.id,
                filter=FILTERS[i % len(FILTERS)],
                bytes=each + (1 if i < extra else 0),
                checksum=f"xxh128:{i:032x}",
                repository="fc1" if repository else None,
            )
        )
    return run


@pytest.fixture
def seed_db(db_engine):
    with Session(db_engine) as s, s.begin():
        for name in SEED_NODES:
            s.add(Node(name=name, host="127.0.0.1", root=f"/data/{name}", status="up"))
        for runid, images, size, needed in SEED_RUNIDS:
            add_runid(s, runid, images, seed_bytes(size, needed))
    return db_engine


def test_seed_disks_and_runid_table(seed_db, tmp_path, db_url):
    """Virtual free, total and percent of every node, and the runid table, as the seed
    shows them."""
    config = seed_config(tmp_path, db_url)
    status = transfer_status(seed_db, seed_cluster(), config.transfer.space_factor)
    shown = {
        d.node: (gigabytes(d.virtual_free_bytes), gigabytes(d.total_bytes), f"{d.used_percent:.1f}")
        for d in status.disks
    }
    assert shown == SEED_NODES
    rows = [
        (r.runid, r.images, gigabytes(r.bytes), gigabytes(r.needed_bytes)) for r in status.runids
    ]
    assert rows == SEED_RUNIDS
    assert all(r.planned == 0 for r in status.runids)
    assert status.runids[0].filters == {"g": 6, "i": 5, "r": 5, "u": 6, "z": 5}


def test_seed_plans_fit_are_stored_and_counted_at_once(seed_db, tmp_path, db_url):
    config = seed_config(tmp_path, db_url)
    cluster = seed_cluster()
    first = plan_runid(seed_db, config, cluster, "03AL03", user="teraop")
    assert first.plan.fits and first.stored and first.plan_id
    # One node can hold it: the least loaded (all 0), then the most virtual free.
    assert first.plan.distribution() == {"node5": (288, 100.0)}
    second = plan_runid(seed_db, config, cluster, "03AL01")
    assert second.plan.distribution() == {"node7": (284, 100.0)}

    space = {d.node: d for d in transfer_space(seed_db, cluster, 4.0)}
    # The planned transfers are promised at once (each file: ceil(4 x bytes)).
    assert gigabytes(space["node5"].partitions[0].promised_bytes) == "758.882 GB"
    assert gigabytes(space["node5"].virtual_free_bytes) == "764.432 GB"  # 1523.314 - 758.882
    assert gigabytes(space["node7"].virtual_free_bytes) == "760.498 GB"  # 1508.813 - 748.315
    with Session(seed_db) as s:
        rows = s.scalars(select(Transfer).where(Transfer.runid == "03AL03")).all()
        assert len(rows) == 288 and {r.state for r in rows} == {"planned"}
        assert {r.plan_id for r in rows} == {first.plan_id}
        row = min(rows, key=lambda r: r.filename)
        image = s.get(Image, row.image_id)
        assert image is not None
        assert row.destination_node == "node5" and row.destination_partition == "raid1"
        assert row.destination_path == f"/data/node5/raid1/03AL03/{image.filename}"
        assert row.source == f"/data/clix/fc1/from_CADC/headervalid/{image.filename}"
        assert row.reserved_bytes == 4 * image.bytes and row.checksum == image.checksum
        audit = s.scalars(select(OperatorAction).order_by(OperatorAction.id)).first()
        assert audit is not None and audit.user == "teraop" and audit.action == "transfer-plan"
        assert audit.plan == "03AL03 [all filters]: node5: 100.0% [288 files]"
    waiting = {r.runid: r for r in waiting_runids(seed_db, 4.0)}
    assert waiting["03AL03"].planned == 288 and waiting["03AF19"].planned == 0


def test_replanning_replaces_and_a_placed_runid_is_not_planned_again(seed_db, tmp_path, db_url):
    config = seed_config(tmp_path, db_url)
    cluster = seed_cluster()
    one = plan_runid(seed_db, config, cluster, "03AF19")
    two = plan_runid(seed_db, config, cluster, "03AF19")
    # The replaced rows' space is free again: the same node is chosen, nothing is doubled.
    assert two.replaced == 27 and two.plan.distribution() == one.plan.distribution()
    with Session(seed_db) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 27
    only_r = plan_runid(seed_db, config, cluster, "03AF19", "r")
    assert only_r.replaced == 5 and len(only_r.files) == 5
    assert only_r.plan.nodes() == one.plan.nodes()
    with Session(seed_db) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 27

    # 03AQ98's images arrive on node4: nothing is left to plan.
    with Session(seed_db) as s, s.begin():
        node4 = s.scalar(select(Node).where(Node.name == "node4"))
        assert node4 is not None
        for image in s.scalars(select(Image).join(Runid).where(Runid.name == "03AQ98")):
            image.repository, image.node_id, image.partition = None, node4.id, "raid1"
    placed = plan_runid(seed_db, config, cluster, "03AQ98")
    assert placed.nothing_to_plan and placed.settled == 9 and not placed.stored

    with pytest.raises(UsageError, match="no such runid"):
        plan_runid(seed_db, config, cluster, "99ZZ99")
    with pytest.raises(UsageError, match=r"--filter 'Ha'.*filters: g, i, r, u, z"):
        plan_runid(seed_db, config, cluster, "03AF19", "Ha")


def test_down_and_loaded_nodes_and_stack_products(seed_db, tmp_path, db_url):
    config = seed_config(tmp_path, db_url)
    with Session(seed_db) as s, s.begin():
        ids = {n.name: n.id for n in s.scalars(select(Node))}
        # node7 has stacks waiting to run; node6 a planned stack over 10 GB of its own inputs.
        for i in range(3):
            s.add(
                Stack(
                    name=f"CFHTLS_W_r_02141{i}-041200_T0003", node_id=ids["node7"], state="pending"
                )
            )
        stack = Stack(name="CFHTLS_W_g_021410-041200_T0003", node_id=ids["node6"], state="planned")
        s.add(stack)
        run = add_runid(s, "03BQ01", 10, 10 * GB, repository=False)
        s.flush()
        for image in s.scalars(select(Image).where(Image.runid_id == run.id)):
            image.node_id, image.partition = ids["node6"], "raid1"
            s.add(StackFile(stack_id=stack.id, image_id=image.id, role="swarp"))
            s.add(StackFile(stack_id=stack.id, image_id=image.id, role="scamp"))  # counted once
    cluster = seed_cluster(down=("node5",))
    space = {d.node: d for d in transfer_space(seed_db, cluster, 4.0)}
    assert space["node6"].partitions[0].products_bytes == 30 * GB  # (4 - 1) x 10 GB
    assert gigabytes(space["node6"].virtual_free_bytes) == "1276.830 GB"
    assert space["node7"].pending_stacks == 3 and space["node5"].partitions == ()

    plan = plan_runid(seed_db, config, cluster, "03AL03")
    # node5 (the most free) is down, node7 is loaded: node8 takes it.
    assert plan.plan.distribution() == {"node8": (288, 100.0)}


def test_filter_by_filter_a_runid_stays_on_its_node(seed_db, tmp_path, db_url):
    """The node already holding a runid's other filters is kept, even when another node is
    less loaded: the runid stays on as few nodes as possible."""
    config = seed_config(tmp_path, db_url)
    cluster = seed_cluster()
    first = plan_runid(seed_db, config, cluster, "03AL03", "r")
    assert first.plan.distribution() == {"node5": (58, 100.0)}
    with Session(seed_db) as s, s.begin():
        node5 = s.scalar(select(Node.id).where(Node.name == "node5"))
        for i in range(4):
            s.add(Stack(name=f"CFHTLS_D_g_0{i}_T0003", node_id=node5, state="pending"))
    second = plan_runid(seed_db, config, cluster, "03AL03", "g")
    assert second.plan.distribution() == {"node5": (58, 100.0)}
    other = plan_runid(seed_db, config, cluster, "03AQ97")  # a new runid avoids the load
    assert other.plan.nodes() == ["node7"]


def test_an_impossible_plan_says_what_is_missing_and_stores_nothing(seed_db, tmp_path, db_url):
    config = seed_config(tmp_path, db_url)
    with Session(seed_db) as s, s.begin():
        add_runid(s, "04BQ99", 3000, 3000 * 2 * GB)  # 6 TB raw, 24 TB needed
    outcome = plan_runid(seed_db, config, seed_cluster(down=("node8",)), "04BQ99")
    assert not outcome.plan.fits and not outcome.stored
    message = outcome.plan.shortfall.message() if outcome.plan.shortfall else ""
    free = sum(gb(v) for n, (v, _, _) in SEED_NODES.items() if n != "node8")
    assert f"have {gigabytes(free)} virtual free" in message
    assert f"{gigabytes(24000 * GB - free)} missing" in message
    assert "not answering: node8" in message
    with Session(seed_db) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 0
        audit = s.scalars(select(OperatorAction)).one()
        assert audit.result == "refused" and "missing" in (audit.plan or "")


def test_a_runid_bigger_than_any_node_is_spread_over_few_nodes(seed_db, tmp_path, db_url):
    config = seed_config(tmp_path, db_url)
    with Session(seed_db) as s, s.begin():
        add_runid(s, "04AL01", 1200, 1200 * 660_000_000)  # 792 GB raw, 3168 GB needed
    outcome = plan_runid(seed_db, config, seed_cluster(), "04AL01")
    assert outcome.plan.fits
    # The three largest nodes hold 4538.96 GB; no two hold 3168 GB: three nodes.
    assert outcome.plan.nodes() == ["node5", "node7", "node8"]
    files = sum(n for n, _ in outcome.plan.distribution().values())
    assert files == 1200


def test_distribution_from_image_rows_and_scope(seed_db, tmp_path, db_url):
    """The seed's distribution page: ``03AL04 node1 100.0% [2 files]``."""
    with Session(seed_db) as s, s.begin():
        ids = {n.name: n.id for n in s.scalars(select(Node))}
        for name, images, node in (("03AL04", 2, "node1"), ("03AP98", 10, "node4")):
            run = add_runid(s, name, images, images * GB, repository=False)
            s.flush()
            for image in s.scalars(select(Image).where(Image.runid_id == run.id)):
                image.node_id, image.partition = ids[node], "raid1"
    found = transfer_distribution(seed_db, nodes=list(SEED_NODES))
    assert found.nodes == tuple(SEED_NODES)
    assert [found.cell("03AL04", n) for n in found.nodes] == ["100.0% [2 files]"] + ["-"] * 7
    assert found.cell("03AP98", "node4") == "100.0% [10 files]"
    assert found.cell("03AF19", "node1") == "-"  # waiting in the repository: on no node

    pi = Scope.of_runids(["03AL04"])
    scoped = transfer_distribution(seed_db, pi, nodes=list(SEED_NODES))
    assert scoped.runids == ("03AL04",) and scoped.nodes == ()
    status = transfer_status(seed_db, seed_cluster(), 4.0, pi, figures_from="poll")
    assert status.disks == [] and status.figures_from is None
    assert transfer_space(seed_db, seed_cluster(), 4.0, pi) == []
    assert [r.runid for r in waiting_runids(seed_db, 4.0, Scope.of_runids(["03AF19"]))] == [
        "03AF19"
    ]


def test_plans_made_at_once_never_promise_the_same_space(seed_db, tmp_path, db_url, engine_factory):
    """Four planners at once (separate engines, as separate processes would have), each
    runid big enough for one of the two answering nodes only: every stored plan is on its
    own node, and the others are impossible: no partition promised past its virtual free."""
    import threading

    config = seed_config(tmp_path, db_url)
    # node5 and node7 answer: each holds one of these runids (1 200 GB needed), not two.
    cluster = seed_cluster(down=tuple(n for n in SEED_NODES if n not in ("node5", "node7")))
    with Session(seed_db) as s, s.begin():
        for k in range(4):
            add_runid(s, f"05AL0{k}", 100, 300 * GB)
    outcomes: list = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def plan(k: int) -> None:
        engine = engine_factory(db_url, create=False)
        try:
            start.wait()
            outcomes.append(plan_runid(engine, config, cluster, f"05AL0{k}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=plan, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    stored = [o for o in outcomes if o.stored]
    assert len(stored) == 2 and len(outcomes) == 4
    assert sorted(n for o in stored for n in o.plan.nodes()) == ["node5", "node7"]
    space = {d.node: d for d in transfer_space(seed_db, cluster, 4.0)}
    for node in ("node5", "node7"):
        part = space[node].partitions[0]
        assert part.promised_bytes <= part.free_bytes - part.reserved_bytes
