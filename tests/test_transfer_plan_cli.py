"""``spica transfer status|plan|distribution`` over a real demo cluster (SSH to its nodes)
and dbspica on SQLite and MariaDB: the disks as the nodes report them (polled, or the
figures of a running ``spica watch`` without any SSH of the command's own), the seed's
runid table, a plan printed as the seed's distribution row and stored, exit codes 1
(impossible) and 2 (unknown runid or filter)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, Runid, Transfer
from spica_core.demo.cluster import DemoCluster
from spica_core.units import gigabytes
from tests.conftest import invoke_spica, run_spica
from tests.daemon_support import Mailbox, wait_for
from tests.monitor_support import mailbox_fixture, monitor_config, running_demo, start_watch
from tests.test_console_monitor import agent_starts, monitor_polled
from tests.test_transfer_plan_seed import SEED_RUNIDS, add_runid, seed_bytes

pytestmark = pytest.mark.timeout(600)

REPOSITORY = "/data/clix/fc1/from_CADC/headervalid"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    yield from running_demo(tmp_path_factory, "transfer-plan", 2)


mailbox = pytest.fixture(name="mailbox")(mailbox_fixture)


def with_repository(path: Path) -> Path:
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    raw["transfer"] = {"repositories": [{"name": "fc1", "path": REPOSITORY}]}
    path.write_text(tomli_w.dumps(raw))
    return path


def spica(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``spica transfer ARGS`` in this process, with tables as wide as the seed's (a
    terminal's COLUMNS would fold their headers)."""
    return invoke_spica("--config", str(config), "transfer", *args, env={"COLUMNS": "200"})


def spica_process(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same in a subprocess of its own, beside a running ``spica watch``."""
    return run_spica("--config", str(config), "transfer", *args, env={"COLUMNS": "200"})


def seed_runids(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        for runid, images, size, needed in SEED_RUNIDS:
            add_runid(s, runid, images, seed_bytes(size, needed))


def test_status_plan_and_distribution_over_the_demo_nodes(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    config = with_repository(monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml"))
    seed_runids(db_engine)
    roots = {n: str(demo.paths.root(n)) for n in ("mix1", "mix2")}

    status = spica(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["figures_from"] == "poll"
    assert [n["node"] for n in report["nodes"]] == ["mix1", "mix2"]
    for node in report["nodes"]:
        assert node["status"] == "up"
        assert [p["partition"] for p in node["partitions"]] == ["raid1", "raid2"]
        for p in node["partitions"]:
            assert p["total_bytes"] == 652_036_000_000 and p["reserved_bytes"] == 50 * 10**9
            assert p["virtual_free_bytes"] == p["free_bytes"] - p["reserved_bytes"]
    rows = [
        (r["runid"], r["images"], gigabytes(r["bytes"]), gigabytes(r["needed_bytes"]))
        for r in report["runids"]
    ]
    assert rows == SEED_RUNIDS

    text = spica(config, "status")
    assert text.returncode == 0, text.stderr
    assert "Virtual free disk" in text.stdout and "Disk space needed" in text.stdout
    assert "03AF19" in text.stdout and "17.786 GB" in text.stdout and "71.145 GB" in text.stdout

    dry = spica(config, "plan", "03AL03", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # 758.882 GB: more than a partition (about 602 GB virtual free), less than a node.
    assert "100.0% [288 files]" in dry.stdout and "nothing stored" in dry.stderr
    with Session(db_engine) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 0

    stored = spica(config, "plan", "03AL03", "--json")
    assert stored.returncode == 0, stored.stderr
    plan = json.loads(stored.stdout)
    assert plan["stored"] and plan["fits"] and len(plan["distribution"]) == 1
    (node,) = plan["distribution"]
    assert plan["distribution"][node] == {"files": 288, "percent": 100.0}
    assert {f["partition"] for f in plan["files"]} == {"raid1", "raid2"}
    assert all(
        f["path"] == f"{roots[node]}/{f['partition']}/03AL03/{f['image']}" for f in plan["files"]
    )
    after = json.loads(spica(config, "status", "--json").stdout)
    promised = sum(p["promised_bytes"] for n in after["nodes"] for p in n["partitions"])
    assert promised == plan["reserved_bytes"]
    assert {r["runid"]: r["planned"] for r in after["runids"]}["03AL03"] == 288

    again = spica(config, "plan", "03AL03")
    assert again.returncode == 0, again.stderr
    assert "replaced 288 planned transfer(s)" in again.stderr
    with Session(db_engine) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 288

    with Session(db_engine) as s, s.begin():
        add_runid(s, "04BQ99", 3000, 3000 * 2 * 10**9)
    impossible = spica(config, "plan", "04BQ99")
    assert impossible.returncode == 1
    assert "the plan is impossible" in impossible.stderr and "missing" in impossible.stderr
    unknown = spica(config, "plan", "99ZZ99")
    assert unknown.returncode == 2 and "runid '99ZZ99': no such runid" in unknown.stderr
    bad_filter = spica(config, "plan", "03AF19", "--filter", "Ha")
    assert bad_filter.returncode == 2 and "--filter 'Ha'" in bad_filter.stderr

    # 03AQ98 arrives on mix2: the seed's distribution row, and nothing left to plan.
    with Session(db_engine) as s, s.begin():
        mix2 = Node(name="mix2", host="127.0.0.1", root=roots["mix2"])
        s.add(mix2)
        s.flush()
        for image in s.scalars(select(Image).join(Runid).where(Runid.name == "03AQ98")):
            image.repository, image.node_id, image.partition = None, mix2.id, "raid1"
    shown = spica(config, "distribution")
    assert shown.returncode == 0, shown.stderr
    line = next(row for row in shown.stdout.splitlines() if row.startswith("03AQ98"))
    assert line.split()[1:] == ["-", "100.0%", "[9", "files]"]
    as_json = json.loads(spica(config, "distribution", "--json").stdout)
    assert {r["runid"]: r["nodes"] for r in as_json}["03AQ98"] == {
        "mix2": {"files": 9, "percent": 100.0}
    }
    nothing = spica(config, "plan", "03AQ98")
    assert nothing.returncode == 0 and "nothing to plan" in nothing.stderr


def test_status_uses_a_running_monitor_and_opens_no_ssh(
    demo: DemoCluster, db_engine: Engine, db_url: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    config = with_repository(monitor_config(demo, db_url, mailbox, tmp_path / "spica.toml", 1.0))
    seed_runids(db_engine)
    watcher = start_watch(config, tmp_path / "watch.log")
    try:
        wait_for(lambda: monitor_polled(db_engine), 60, "a monitor poll")
        before = agent_starts(demo)
        status = spica_process(config, "status", "--json")
        assert status.returncode == 0, status.stderr
        label = f"{socket.gethostname()}:{watcher.pid}"
        assert f"disk figures of monitor {label}" in status.stderr
        report = json.loads(status.stdout)
        assert report["figures_from"] == f"monitor {label}"
        assert all(n["status"] == "up" and n["partitions"] for n in report["nodes"])
        planned = spica_process(config, "plan", "03AF19")
        assert planned.returncode == 0, planned.stderr
        assert "100.0% [27 files]" in planned.stdout
        assert agent_starts(demo) == before  # neither command opened an SSH connection
    finally:
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["plan", "03AF19; rm -rf /\x1b[31m"], "runid '03AF19; rm -rf /\\x1b[31m'"),
        (["plan", "03AF19", "--filter", "r$(id)\n"], "--filter 'r$(id)\\n'"),
        (["plan", "03af19"], "runid '03af19': no such runid"),
    ],
)
def test_unknown_runid_or_filter_is_refused_before_any_node_is_asked(
    db_engine: Engine, db_url: str, tmp_path: Path, args: list[str], named: str
) -> None:
    """Exit 2 with the name shown escaped, nothing written, and no node contacted (the
    configured node listens nowhere: a poll would report it down, exit 3)."""
    config = tmp_path / "spica.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "db": {"url": db_url},
                "nodes": [{"name": "node1", "host": "127.0.0.1", "port": 9, "root": "/data"}],
            }
        )
    )
    seed_runids(db_engine)
    done = spica(config, *args)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "\x1b" not in done.stderr
    with Session(db_engine) as s:
        assert s.scalar(select(func.count(Transfer.id))) == 0
