"""Operator actions end to end: the real CLI, a demo cluster over SSH, dbspica, the audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url, select
from sqlalchemy.orm import Session

from spica_core.config import load_config
from spica_core.db.engine import make_engine
from spica_core.db.models import Image, Node, OperatorAction, Stack, StackFile
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica, run_spica

RAN_OR_QUEUED = {"pending", "running", "completed"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("ops") / "cluster")
    cluster.up(2)
    assert run_spica("--config", str(cluster.config_path), "db", "init").returncode == 0
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def engine(demo: DemoCluster):
    e = make_engine(load_config(demo.config_path).db)
    yield e
    e.dispose()


def spica(demo: DemoCluster, *args: str, **kw):
    """``spica`` in this process (over real SSH to the demo's nodes all the same)."""
    return invoke_spica("--config", str(demo.config_path), *args, **kw)


def spica_process(demo: DemoCluster, *args: str, **kw):
    """``spica`` in a process of its own: one a fault point ends, or with no terminal."""
    return run_spica("--config", str(demo.config_path), *args, **kw)


def root(demo: DemoCluster, node: str) -> Path:
    return demo.node_root(node)


def make_stack(
    demo: DemoCluster,
    engine,
    name: str,
    node: str = "mix1",
    state: str = "failed",
    commands: str = "true\ntrue\ntrue\n",
    error: str = "Failed on spica_copy.pl -m mix4 -n mix3 - Code 2 - Line 2",
    failed_line: int = 2,
    claim: dict | None = None,
) -> None:
    """A stack as the daemon leaves it: dbspica row, commands.sh, progress, queue file."""
    r = root(demo, node)
    (r / "stacks" / name / "logs").mkdir(parents=True)
    (r / "stacks" / name / "commands.sh").write_text(commands)
    (r / "stacks" / name / "logs" / "001.log").write_text("line one ok\n")
    suffix = {
        "pending": "spica",
        "running": "processing",
        "completed": "processed",
        "failed": "error",
    }.get(state)
    if state in ("failed", "running", "completed"):
        (r / "stacks" / name / "progress").write_text(f"{failed_line - 1}\n")
    if suffix == "error":
        (r / "queue" / f"{name}.error").write_text(
            json.dumps({"line": failed_line, "exit_code": 2, "message": error})
        )
    elif suffix == "processing":
        (r / "queue" / f"{name}.processing").write_text(
            json.dumps(
                claim
                or {
                    "pid": 4_000_000,
                    "host": "elsewhere",
                    "boot_id": "old",
                    "started_at": "2026-01-01T00:00:00Z",
                }
            )
        )
    elif suffix:
        (r / "queue" / f"{name}.{suffix}").write_text("{}")
    with Session(engine) as s, s.begin():
        node_row = s.scalars(select(Node).where(Node.name == node)).one()
        s.add(
            Stack(
                name=name,
                node=node_row,
                state=state,
                lines=commands.count("\n"),
                failed_line=failed_line if state == "failed" else None,
                error=error if state == "failed" else None,
                runid="04BL06",
            )
        )


def db_state(engine, name: str) -> str | None:
    with Session(engine) as s:
        return s.scalars(select(Stack.state).where(Stack.name == name)).one_or_none()


def queue_files(demo: DemoCluster, node: str, name: str) -> list[str]:
    return sorted(
        p.name for p in (root(demo, node) / "queue").iterdir() if p.name.startswith(name + ".")
    )


def snapshot(demo: DemoCluster, engine) -> tuple[dict[str, int], list[tuple]]:
    """Every file under the node roots (path -> size) and every stack row."""
    files = {
        str(p.relative_to(demo.directory)): p.stat().st_size
        for node in ("mix1", "mix2")
        for p in root(demo, node).rglob("*")
        if p.is_file()
    }
    with Session(engine) as s:
        rows = sorted((x.name, x.state, x.error) for x in s.scalars(select(Stack)))
    return files, rows


# ------------------------------------------------------------------------ happy paths


def test_requeue_happy_path_and_audit(demo, engine) -> None:
    make_stack(demo, engine, "805282p_V0003")
    result = spica(demo, "requeue", "805282p_V0003", "--yes", "--json", "--as", "laurent")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["results"][0]["outcome"] == "applied"
    assert "resumes at line 2" in out["results"][0]["message"]
    assert "805282p_V0003.error" not in queue_files(demo, "mix1", "805282p_V0003")
    assert db_state(engine, "805282p_V0003") in RAN_OR_QUEUED
    audit = json.loads(spica(demo, "audit", "--json").stdout)
    row = next(a for a in audit if a["targets"] == ["805282p_V0003"] and not a["dry_run"])
    assert (row["user"], row["action"], row["result"]) == ("laurent", "requeue", "applied")


def test_launch_happy_path(demo, engine) -> None:
    make_stack(demo, engine, "CFHTLS_W_u_021410-041200_T0003", state="planned")
    result = spica(demo, "launch", "CFHTLS_W_u_021410-041200_T0003", "--yes")
    assert result.returncode == 0, result.stderr
    files = queue_files(demo, "mix1", "CFHTLS_W_u_021410-041200_T0003")
    assert files and not files[0].endswith(".error")
    assert db_state(engine, "CFHTLS_W_u_021410-041200_T0003") in RAN_OR_QUEUED


def test_unlock_stale_running_stack(demo, engine) -> None:
    make_stack(demo, engine, "stale_T0003", state="running", failed_line=3)
    result = spica(demo, "unlock", "stale_T0003", "--yes")
    assert result.returncode == 0, result.stderr
    assert queue_files(demo, "mix1", "stale_T0003") == ["stale_T0003.error"]
    assert db_state(engine, "stale_T0003") == "failed"
    record = json.loads((root(demo, "mix1") / "queue" / "stale_T0003.error").read_text())
    assert "unlocked by" in record["message"]


def test_unlock_refuses_a_live_claim(demo, engine) -> None:
    import socket

    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    claim = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot_id": boot,
        "started_at": "2026-01-01T00:00:00Z",
    }
    make_stack(demo, engine, "alive_T0003", state="running", claim=claim)
    result = spica(demo, "unlock", "alive_T0003", "--yes")
    assert result.returncode == 1
    assert "claimer is alive" in result.stderr
    assert queue_files(demo, "mix1", "alive_T0003") == ["alive_T0003.processing"]
    assert db_state(engine, "alive_T0003") == "running"


def test_remove_deletes_rows_and_outputs_keeps_raw_inputs(demo, engine) -> None:
    make_stack(demo, engine, "old_T0002", state="completed")
    r = root(demo, "mix1")
    (r / "raid1" / "old_T0002.fits").write_bytes(b"x" * 5000)  # a non-raw input (a weight map)
    (r / "raid1" / "811001p.fits").write_bytes(b"r" * 7000)  # a raw exposure
    with Session(engine) as s, s.begin():
        stack = s.scalars(select(Stack).where(Stack.name == "old_T0002")).one()
        stack.files.append(
            StackFile(
                role="swarp",
                image=Image(
                    filename="old_T0002.weight", raw=False, path=str(r / "raid1" / "old_T0002.fits")
                ),
            )
        )
        stack.files.append(
            StackFile(
                role="swarp",
                image=Image(filename="811001p", raw=True, path=str(r / "raid1" / "811001p.fits")),
            )
        )
    dry = spica(demo, "remove", "old_T0002", "--purge-inputs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "raid1/old_T0002.fits" in dry.stdout and "811001p" not in dry.stdout
    result = spica(demo, "remove", "old_T0002", "--purge-inputs", "--yes")
    assert result.returncode == 0, result.stderr
    assert db_state(engine, "old_T0002") is None
    assert queue_files(demo, "mix1", "old_T0002") == []
    assert not (r / "stacks" / "old_T0002").exists()
    assert not (r / "raid1" / "old_T0002.fits").exists()
    assert (r / "raid1" / "811001p.fits").exists()


# --------------------------------------------------------------------- dry run, refusals


@pytest.mark.parametrize(
    ("action", "name", "state"),
    [
        ("requeue", "dry_req", "failed"),
        ("launch", "dry_lau", "planned"),
        ("unlock", "dry_unl", "running"),
        ("remove", "dry_rem", "failed"),
    ],
)
def test_dry_run_changes_nothing(demo, engine, action: str, name: str, state: str) -> None:
    make_stack(demo, engine, name, state=state)
    before = snapshot(demo, engine)
    result = spica(demo, action, name, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{action} 1 stack" in result.stdout and name in result.stdout
    assert snapshot(demo, engine) == before


@pytest.mark.parametrize(
    ("action", "name", "state", "message"),
    [
        ("requeue", "wrong_req", "completed", "is completed: cannot requeue"),
        ("remove", "wrong_rem", "running", "is running: cannot remove"),
        ("launch", "wrong_lau", "failed", "is failed: cannot launch"),
    ],
)
def test_refusals_name_the_reason(demo, engine, action, name, state, message) -> None:
    make_stack(demo, engine, name, state=state)
    before = snapshot(demo, engine)
    result = spica(demo, action, name, "--yes")
    assert result.returncode == 1
    assert message in result.stderr
    assert snapshot(demo, engine) == before


def test_unreachable_node_is_refused_with_exit_3(demo, engine) -> None:
    make_stack(demo, engine, "far_T0003", node="mix2", error="scamp: no reference stars")
    demo.stop_node("mix2")
    try:
        result = spica(demo, "requeue", "far_T0003", "--yes")
    finally:
        demo.start_node("mix2")
    assert result.returncode == 3
    assert "mix2" in result.stderr and "unreachable" in result.stderr
    assert queue_files(demo, "mix2", "far_T0003") == ["far_T0003.error"]
    assert db_state(engine, "far_T0003") == "failed"


def test_no_terminal_and_no_yes_refuses(demo, engine) -> None:
    make_stack(demo, engine, "ask_T0003")
    result = spica_process(demo, "requeue", "ask_T0003")
    assert result.returncode == 2 and "--yes" in result.stderr
    assert queue_files(demo, "mix1", "ask_T0003") == ["ask_T0003.error"]


# ------------------------------------------------------------------- bulk, concurrency


def test_bulk_requeue_by_filter_changes_only_matches(demo, engine) -> None:
    for i in range(3):
        make_stack(
            demo,
            engine,
            f"bulk_copy_{i}",
            node="mix2",
            error=f"Failed on /usr/local/spica/spica_copy.pl - Code 2 - Line {i}",
        )
    make_stack(demo, engine, "bulk_swarp", node="mix2", error="SWarp: out of memory")
    make_stack(
        demo, engine, "bulk_other_node", node="mix1", error="Failed on spica_copy.pl - Code 2"
    )
    result = spica(
        demo,
        "requeue",
        "--state",
        "failed",
        "--node",
        "mix2",
        "--match",
        "spica_copy",
        "--yes",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert sorted(r["stack"] for r in out["results"]) == [f"bulk_copy_{i}" for i in range(3)]
    assert all(r["outcome"] == "applied" for r in out["results"])
    assert queue_files(demo, "mix2", "bulk_swarp") == ["bulk_swarp.error"]
    assert queue_files(demo, "mix1", "bulk_other_node") == ["bulk_other_node.error"]
    assert db_state(engine, "bulk_swarp") == "failed"
    for i in range(3):
        assert db_state(engine, f"bulk_copy_{i}") in RAN_OR_QUEUED


def test_names_and_a_filter_keep_the_named_stacks_the_filter_matches(demo, engine) -> None:
    make_stack(demo, engine, "both_kept", node="mix2")
    make_stack(demo, engine, "both_other_node", node="mix1")
    make_stack(demo, engine, "both_unnamed", node="mix2")
    result = spica(
        demo, "requeue", "both_kept", "both_other_node", "--node", "mix2", "--yes", "--json"
    )
    out = json.loads(result.stdout)
    assert [r["stack"] for r in out["results"] if r["outcome"] == "applied"] == ["both_kept"]
    assert db_state(engine, "both_kept") in RAN_OR_QUEUED
    # Named but outside the filter: refused, untouched; matching but unnamed: untouched.
    assert "both_other_node" not in {
        r["stack"] for r in out["results"] if r["outcome"] == "applied"
    }
    assert queue_files(demo, "mix1", "both_other_node") == ["both_other_node.error"]
    assert db_state(engine, "both_other_node") == "failed"
    assert queue_files(demo, "mix2", "both_unnamed") == ["both_unnamed.error"]
    assert db_state(engine, "both_unnamed") == "failed"


def test_two_concurrent_requeues_apply_once(demo, engine) -> None:
    make_stack(demo, engine, "race_T0003")
    cmd = [
        sys.executable,
        "-m",
        "spica_tui",
        "--config",
        str(demo.config_path),
        "requeue",
        "race_T0003",
        "--yes",
        "--json",
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "--as", who], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for who in ("alice", "bob")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    results = [json.loads(o)["results"][0] for o, _ in outs]
    applied = [r for r in results if r["outcome"] == "applied"]
    refused = [r for r in results if r["outcome"] == "refused"]
    assert len(applied) == 1 and len(refused) == 1
    winner = "alice" if procs[0].returncode == 0 else "bob"
    assert f"already requeued by {winner} at" in refused[0]["message"] or (
        "already" in refused[0]["message"] and winner in refused[0]["message"]
    )
    with Session(engine) as s:
        rows = s.scalars(
            select(OperatorAction).where(
                OperatorAction.action == "requeue", OperatorAction.result == "applied"
            )
        ).all()
    assert sum(r.targets == ["race_T0003"] for r in rows) == 1


# ----------------------------------------------------------------- crash and reconcile


def test_crash_between_node_rename_and_db_update_then_reconcile(demo, engine) -> None:
    make_stack(demo, engine, "crash_T0003", node="mix2", error="swarp: disk full")
    crashed = spica_process(
        demo, "requeue", "crash_T0003", "--yes", env={"SPICA_FAULT_POINT": "after-node-commit"}
    )
    assert crashed.returncode == 70
    assert "crash_T0003.error" not in queue_files(demo, "mix2", "crash_T0003")
    assert db_state(engine, "crash_T0003") == "failed"  # dbspica never heard of it
    demo.stop_node("mix2")
    try:
        down = json.loads(spica(demo, "reconcile", "--json").stdout)
        found = [d for d in down["drift"] if d["stack"] == "crash_T0003"]
        assert found and found[0]["kind"] == "unfinished-action" and found[0]["fix"] is None
    finally:
        demo.start_node("mix2")
    report = spica(demo, "reconcile", "--json")
    assert report.returncode == 1
    drift = [d for d in json.loads(report.stdout)["drift"] if d["stack"] == "crash_T0003"]
    assert len(drift) == 1 and "finish it" in drift[0]["fix"]
    fixed = spica(demo, "reconcile", "--fix", "--yes", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert db_state(engine, "crash_T0003") in RAN_OR_QUEUED
    again = json.loads(spica(demo, "reconcile", "--json").stdout)
    assert [d for d in again["drift"] if d["stack"] == "crash_T0003"] == []


def test_reconcile_finds_orphans_and_state_drift(demo, engine) -> None:
    (root(demo, "mix1") / "queue" / "orphan_T0001.processed").write_text("{}")
    make_stack(demo, engine, "drift_T0003", state="failed")
    with Session(engine) as s, s.begin():
        s.scalars(select(Stack).where(Stack.name == "drift_T0003")).one().state = "running"
    report = json.loads(spica(demo, "reconcile", "--json").stdout)
    kinds = {d["stack"]: d["kind"] for d in report["drift"]}
    assert kinds.get("orphan_T0001") == "orphan-queue-file"
    assert kinds.get("drift_T0003") == "state"
    assert spica(demo, "reconcile", "--fix", "--yes").returncode == 0
    assert db_state(engine, "drift_T0003") == "failed"
    assert db_state(engine, "orphan_T0001") == "completed"


def test_reconcile_fix_on_a_read_only_dbspica_exits_3(demo, engine) -> None:
    """dbspica that cannot be written (here SQLite's own read-only mode: root ignores file
    modes): ``reconcile --fix`` says dbspica is unreachable and exits 3, no traceback."""
    make_stack(demo, engine, "rodrift_T0003", state="failed")
    with Session(engine) as s, s.begin():
        s.scalars(select(Stack).where(Stack.name == "rodrift_T0003")).one().state = "running"
    path = make_url(load_config(demo.config_path).db.url).database
    read_only = {"SPICA_DB_URL": f"sqlite:///file:{path}?mode=ro&uri=true"}
    fixed = spica(demo, "reconcile", "--fix", "--yes", env=read_only)
    assert fixed.returncode == 3, fixed.stderr
    assert "spica: error: dbspica unreachable at sqlite:///" in fixed.stderr, fixed.stderr
    assert "readonly database" in fixed.stderr and "Traceback" not in fixed.stderr
    assert db_state(engine, "rodrift_T0003") == "running"
    assert spica(demo, "reconcile", "--fix", "--yes").returncode == 0
    assert db_state(engine, "rodrift_T0003") == "failed"


# --------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "args",
    [
        ["requeue", "x;touch /tmp/pwned-spica", "--yes"],
        ["remove", "../../etc", "--yes"],
        ["launch", "$(id)", "--yes"],
        ["unlock", "a" * 300, "--yes"],
        ["requeue", "été_T0003", "--yes"],
        ["requeue", "--node", "mix1;id", "--yes"],
        ["requeue", "--match", "([", "--yes"],
        ["requeue", "--state", "exploded", "--yes"],
        ["unlock", "--qfin", "../raid1", "--node", "mix1", "--yes"],
    ],
)
def test_hostile_input_is_a_usage_error_before_any_node(demo, engine, args) -> None:
    before = snapshot(demo, engine)
    result = spica(demo, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(demo, engine) == before
    assert not Path("/tmp/pwned-spica").exists()


def test_agent_validates_names_again(demo) -> None:
    """Defence in depth: the node agent refuses the same names if a client sends them."""
    from spica_core.node.agent import Agent

    agent = Agent(root(demo, "mix1"))
    for verb in ("launch", "requeue", "unlock", "remove", "stage"):
        for bad in ("../../etc", "x;touch /tmp/pwned-spica", "$(id)"):
            # Each verb's own arguments: an unknown field would be refused before the name.
            args = {"stack": bad, "by": "root"} if verb != "stage" else {"stack": bad}
            if verb == "stage":
                args["commands"] = "true\n"
            response = json.loads(
                agent.respond(json.dumps({"id": 1, "verb": verb, "args": args}).encode())
            )
            assert response["ok"] is False and response["error"]["code"] == "bad_name", response
    response = json.loads(
        agent.respond(
            json.dumps(
                {"id": 2, "verb": "requeue", "args": {"stack": "ok_name", "by": "x;rm"}}
            ).encode()
        )
    )
    assert response["error"]["code"] == "bad_args"
