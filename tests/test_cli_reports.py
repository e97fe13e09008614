"""The read-only command line: db init/status, stacks, stack show, nodes, problems. Run
in-process; exit 3 and ``--version`` also from the real entry point in a subprocess."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, NodeDisk, Problem, Stack, StackFile, StackRun
from spica_core.db.schema import SCHEMA_REVISION
from tests.conftest import invoke_spica, run_spica

NOW = datetime.now(UTC)
STACK_KEYS = {
    "name",
    "step",
    "survey",
    "filter",
    "release",
    "runid",
    "node",
    "state",
    "priority",
    "ranking",
    "lines",
    "progress",
    "failed_line",
    "exit_code",
    "error",
    "created_at",
    "launched_at",
    "started_at",
    "finished_at",
    "updated_at",
}


def spica(db_url: str, *args: str):
    return invoke_spica(*args, env={"SPICA_DB_URL": db_url})


@pytest.fixture
def populated(db_engine):
    with Session(db_engine) as s, s.begin():
        mix4 = Node(
            name="mix4", host="mix4.example.org", root="/data/mix4", status="up", last_seen=NOW
        )
        mix4.disks.append(
            NodeDisk(
                partition="raid1",
                total_bytes=652_036_000_000,
                free_bytes=433_107_000_000,
                reserved_bytes=10**9,
            )
        )
        pix9 = Node(name="pix9", host="pix9.example.org", root="/data/pix9", status="down")
        failed = Stack(
            name="805282p_V0003",
            step="image",
            release="V0003",
            runid="04BL06",
            node=mix4,
            state="failed",
            lines=9,
            progress=6,
            failed_line=7,
            exit_code=2,
            error="Failed on /usr/local/spica/spica_copy.pl -m mix4 -n mix3 - Code 2 - Line 7",
        )
        img = Image(filename="764615p", filter="r")
        failed.files.append(StackFile(image=img, role="scamp"))
        failed.runs.append(
            StackRun(
                line=1,
                command="spica_copy ok",
                started_at=NOW,
                ended_at=NOW,
                exit_code=0,
                node="mix4",
            )
        )
        s.add_all(
            [
                failed,
                Stack(
                    name="CFHTLS_W_u_021410-041200_T0003",
                    filter="u",
                    runid="03AL01",
                    release="T0003",
                    node=mix4,
                    state="pending",
                    priority=5,
                ),
                Stack(
                    name="CFHTLS_W_g_021410-041200_T0003",
                    filter="g",
                    runid="03AL01",
                    release="T0003",
                    node=pix9,
                    state="completed",
                ),
                Problem(
                    kind="hardware",
                    node="pix9",
                    message="Unable to contact pix9 via ssh",
                    created_at=NOW - timedelta(hours=3),
                ),
                Problem(
                    kind="hardware",
                    node="pix9",
                    message="pix9 is back to life",
                    created_at=NOW - timedelta(minutes=5),
                ),
                Problem(
                    kind="software",
                    node="mix4",
                    stack="805282p_V0003",
                    runid="04BL06",
                    message="Failed on spica_copy.pl - Code 2 - Line 7",
                    created_at=NOW,
                ),
            ]
        )
    return db_engine


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.mark.empty_db
def test_db_init_status_json_on_both_engines(db_url: str) -> None:
    init = spica(db_url, "db", "init", "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["revision"] == SCHEMA_REVISION
    again = spica(db_url, "db", "init")
    assert again.returncode == 0 and f"already at revision {SCHEMA_REVISION}" in again.stderr
    status = spica(db_url, "db", "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["revision"] == SCHEMA_REVISION and data["up_to_date"] is True
    assert data["tables"]["stack"] == 0 and "problem" in data["tables"]


def test_db_init_registers_configured_nodes(tmp_path) -> None:
    conf = tmp_path / "spica.toml"
    conf.write_text(
        '[db]\nurl = "sqlite:///d.sqlite"\n[[nodes]]\nname = "mix1"\nhost = "127.0.0.1"\n'
        'root = "/data/mix1"\n[[nodes.partitions]]\nname = "raid1"\ncapacity = "652 GB"\n'
    )
    assert invoke_spica("--config", str(conf), "db", "init").returncode == 0
    nodes = json.loads(invoke_spica("--config", str(conf), "nodes", "--recorded", "--json").stdout)
    assert [n["name"] for n in nodes] == ["mix1"]
    assert nodes[0]["disks"][0]["total_bytes"] == 652 * 10**9


def test_stacks_json_keys_and_filters(populated) -> None:
    url = url_of(populated)
    everything = json.loads(spica(url, "stacks", "--json").stdout)
    assert len(everything) == 3
    assert all(set(row) == STACK_KEYS for row in everything)
    failed = json.loads(spica(url, "stacks", "--state", "failed", "--json").stdout)
    assert [r["name"] for r in failed] == ["805282p_V0003"]
    assert failed[0]["failed_line"] == 7 and failed[0]["node"] == "mix4"
    by_node = json.loads(spica(url, "stacks", "--node", "pix9", "--json").stdout)
    assert [r["name"] for r in by_node] == ["CFHTLS_W_g_021410-041200_T0003"]
    matched = json.loads(spica(url, "stacks", "--match", "spica_copy", "--json").stdout)
    assert [r["name"] for r in matched] == ["805282p_V0003"]
    by_runid = json.loads(
        spica(url, "stacks", "--runid", "03AL01", "--filter", "u", "--json").stdout
    )
    assert [r["name"] for r in by_runid] == ["CFHTLS_W_u_021410-041200_T0003"]
    table = spica(url, "stacks")
    assert (
        table.returncode == 0 and "805282p_V0003" in table.stdout and "3 stack(s)" in table.stdout
    )


def test_stack_show(populated) -> None:
    url = url_of(populated)
    shown = spica(url, "stack", "show", "805282p_V0003", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert set(data) >= STACK_KEYS
    assert data["files"] == [{"image": "764615p", "role": "scamp", "filter": "r"}]
    assert data["runs"][0]["command"] == "spica_copy ok" and data["runs"][0]["exit_code"] == 0
    human = spica(url, "stack", "show", "805282p_V0003")
    assert "failed line" in human.stdout and "spica_copy.pl" in human.stdout
    missing = spica(url, "stack", "show", "nope")
    assert missing.returncode == 1 and "no stack named 'nope'" in missing.stderr


def test_problems_newest_first_and_since(populated) -> None:
    url = url_of(populated)
    rows = json.loads(spica(url, "problems", "--json").stdout)
    assert [p["message"][:12] for p in rows] == ["Failed on sp", "pix9 is back", "Unable to co"]
    recent = json.loads(spica(url, "problems", "--since", "1h", "--json").stdout)
    assert len(recent) == 2
    hardware = json.loads(spica(url, "problems", "--kind", "hardware", "--json").stdout)
    assert {p["kind"] for p in hardware} == {"hardware"}
    bad = spica(url, "problems", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_nodes_from_dbspica(populated) -> None:
    rows = json.loads(spica(url_of(populated), "nodes", "--recorded", "--json").stdout)
    assert [(n["name"], n["status"]) for n in rows] == [("mix4", "up"), ("pix9", "down")]
    disk = rows[0]["disks"][0]
    assert disk["virtual_free_bytes"] == 433_107_000_000 - 10**9


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["stacks", "--state", "lost"], 2, "--state 'lost'"),
        (["stacks", "--match", "("], 2, "not a valid regular expression"),
        (["stacks", "--node", "x;rm -rf /"], 2, "invalid node name"),
        (["stack", "show", "$(id)"], 2, "invalid stack name"),
        (["stacks", "--limit", "0"], 2, "--limit"),
    ],
)
def test_usage_errors(populated, args: list[str], code: int, message: str) -> None:
    result = spica(url_of(populated), *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_exit_3_with_masked_url() -> None:
    result = run_spica(
        "stacks",
        "--json",
        env={"SPICA_DB_URL": "mysql+pymysql://spica:s3cr3t@127.0.0.1:1/dbspica"},
    )
    assert result.returncode == 3
    assert "dbspica unreachable at mysql+pymysql://spica:***@127.0.0.1:1/dbspica" in result.stderr
    assert "s3cr3t" not in result.stderr + result.stdout


def test_missing_sqlite_file_is_not_created(tmp_path) -> None:
    db = tmp_path / "none.sqlite"
    result = run_spica("stacks", env={"SPICA_DB_URL": f"sqlite:///{db}"})
    assert result.returncode == 3 and "spica db init" in result.stderr
    assert not db.exists()


def test_uninitialised_database_exit_3(mysql_url: str) -> None:
    result = spica(mysql_url, "stacks")
    assert result.returncode == 3 and "spica db init" in result.stderr


def test_version() -> None:
    from spica_core import __version__

    result = run_spica("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"spica {__version__}"


def test_in_process_runs_show_what_a_process_shows(sqlite_migrated_url: str) -> None:
    """``invoke_spica``, which most command-line tests use, against the real process: the
    same exit code, stdout and stderr for help, tables (wide when piped, or at $COLUMNS),
    a usage error and an error of SPICA's own."""
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_migrated_url)
    with Session(engine) as s, s.begin():
        # Updated three and a half days ago: its age reads "3d ago" in both runs, however the
        # seconds tick between them and wherever a narrow table wraps the column.
        updated = datetime.now(UTC) - timedelta(days=3, hours=12)
        s.add(Stack(name="805282p_V0003", state="failed",
                    error="Failed on spica_copy.pl " * 8, updated_at=updated))  # fmt: skip
    engine.dispose()
    env = {"SPICA_DB_URL": sqlite_migrated_url}
    for args, extra in [
        (["--help"], {}),
        (["stacks"], {}),
        (["stacks"], {"COLUMNS": "60"}),
        (["stacks", "--limit", "0"], {}),
        (["stack", "show", "nope"], {}),
        (["nosuch"], {}),
    ]:
        real = run_spica(*args, env={**env, **extra})
        here = invoke_spica(*args, env={**env, **extra})
        if (args, extra) == (["stacks"], {}):
            assert "3d ago" in real.stdout, real.stdout
        assert (here.returncode, here.stdout, here.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), (args, extra)
