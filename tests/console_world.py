"""A fixed cluster for console snapshots: dbspica rows with fixed times, and node snapshots.

The nodes are the seed's (mix1…mix4, pix1, pix2) with its DataTransfer disks; mix4 does not
answer (stale since two minutes), pix1 has no agent. The console runs on a real SQLite
dbspica; only the node poll is replaced by this fixed snapshot, and the clock is frozen, so
every screenshot is the same from run to run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from spica_core.cluster_snapshot import (
    ClusterSnapshot,
    Liveness,
    NodeSnapshot,
    PartitionStatus,
    QueueEntry,
)
from spica_core.config import SpicaConfig, parse_config
from spica_core.console_data import LogTail
from spica_core.db.models import Image, Node, Problem, Runid, Stack, StackFile, StackRun
from spica_core.node.host import iso_utc
from spica_core.node.protocol import ClaimSeen
from spica_core.states import StackState

NOW = datetime(2026, 11, 25, 3, 14, 15, tzinfo=UTC)
GB = 10**9
NODES = ("mix1", "mix2", "mix3", "mix4", "pix1", "pix2")
FAILED = "CFHTLS_Pre-W_r_021955-034400_T0003"
FAILED_ERROR = (
    "Failed on /usr/local/spica/spica_copy.pl -m mix4 -n mix3 -i "
    "/data/mix3/raid2/processing/04BL06A.MP9701/764615p - Code 2 - Line 3"
)
LOG_TEXT = (
    "spica_copy.pl: copying 764615p.ldac from mix4 to mix3\n"
    "ssh: connect to host mix4 port 22: Connection refused\n"
    "spica_copy.pl: giving up after 3 attempts\n"
)


def world_config(db_url: str, console: str = "") -> SpicaConfig:
    return parse_config(
        f'cluster = "terapix"\n[db]\nurl = "{db_url}"\n'
        f"[console]\nrefresh_interval = 2.0\n{console}",
        "console-world",
    )


def _stack(name: str, state: str, node: str, i: int, **kw: object) -> dict[str, object]:
    at = NOW - timedelta(minutes=90 - i)
    values: dict[str, object] = {
        "name": name,
        "state": state,
        "step": "stack",
        "survey": "W",
        "filter": "ugriz"[i % 5],
        "release": "T0003",
        "runid": ("03AL01", "03AL02", "03AQ97", "04BL06")[i % 4],
        "priority": (i * 7) % 10,
        "lines": 12,
        "progress": {"completed": 12, "running": 5, "failed": 2}.get(state, 0),
        "created_at": at - timedelta(hours=2),
        "launched_at": at - timedelta(hours=1) if state != "planned" else None,
        "started_at": at - timedelta(minutes=30)
        if state in ("running", "completed", "failed")
        else None,
        "finished_at": at if state in ("completed", "failed") else None,
        "updated_at": at,
    }
    values.update(kw)
    values["_node"] = node
    return values


def stacks() -> list[dict[str, object]]:
    rows = []
    tiles = ("021410-041200", "021800-085200", "022200-051200", "021955-034400", "020600-073200")
    states = ["completed"] * 9 + ["running"] * 3 + ["pending"] * 3 + ["planned"] * 2
    for i, state in enumerate(states):
        name = f"CFHTLS_W_{'ugriz'[i % 5]}_{tiles[i % 5]}_T{3 + i // 5:04d}"
        rows.append(_stack(name, state, NODES[i % 6], i))
    rows.append(
        _stack(
            FAILED,
            "failed",
            "mix3",
            20,
            survey="Pre-W",
            filter="r",
            failed_line=3,
            exit_code=2,
            error=FAILED_ERROR,
        )
    )
    rows.append(
        _stack(
            "805282p_V0003",
            "failed",
            "mix4",
            21,
            step="image",
            survey=None,
            release="V0003",
            runid="04BL06",
            failed_line=7,
            exit_code=2,
            error="Failed on spica_copy.pl -m mix4 -n mix3 - Code 2 - Line 7",
        )
    )
    return rows


def populate(engine: Engine) -> None:
    """dbspica rows of the fixed world (the schema must exist)."""
    with Session(engine) as s, s.begin():
        nodes = {
            name: Node(name=name, host="127.0.0.1", port=22, root=f"/data/{name}", status="up")
            for name in NODES
        }
        s.add_all(nodes.values())
        runids = {r: Runid(name=r, images=0) for r in ("03AL01", "03AL02", "03AQ97", "04BL06")}
        s.add_all(runids.values())
        s.flush()
        spread = {
            "03AL01": {"mix1": 7, "mix3": 23, "pix2": 11},
            "03AL02": {"mix3": 4, "pix1": 6},
            "03AQ97": {"mix2": 12, "mix4": 9},
            "04BL06": {"mix1": 2},
        }
        placed = [
            (runid, node)
            for runid, per_node in spread.items()
            for node, n in per_node.items()
            for _ in range(n)
        ]
        images = [
            Image(
                filename=f"{811001 + i}p",
                runid_id=runids[runid].id,
                node_id=nodes[node].id,
                filter="r",
            )
            for i, (runid, node) in enumerate(placed)
        ]
        s.add_all(images)
        s.flush()
        # Two images waiting for DataTransfer (no node yet): 03AL02 adds up under 100 %.
        s.add_all(
            Image(filename=f"{900000 + i}p", runid_id=runids["03AL02"].id, filter="i")
            for i in range(2)
        )
        made = {}
        for values in stacks():
            node = values.pop("_node")
            stack = Stack(**values, node=nodes[str(node)])  # type: ignore[arg-type]
            s.add(stack)
            made[stack.name] = stack
        s.flush()
        failed = made[FAILED]
        for image in images[:3]:
            s.add(StackFile(stack_id=failed.id, image_id=image.id, role="swarp"))
        commands = (
            "spica_copy.pl -m mix3 -n mix3 -i 811001p.fits",
            "source-extractor 811001p.fits -c default.sex",
            "spica_copy.pl -m mix4 -n mix3 -i 764615p.ldac",
        )
        for line, command in enumerate(commands, start=1):
            s.add(
                StackRun(
                    stack_id=failed.id,
                    line=line,
                    attempt=1,
                    command=command,
                    node="mix3",
                    started_at=NOW - timedelta(minutes=20 - line),
                    ended_at=NOW - timedelta(minutes=19 - line),
                    exit_code=0 if line < 3 else 2,
                )
            )
        problems = [
            ("software", "mix3", FAILED, "03AL01", "r", FAILED_ERROR, 9),
            ("hardware", "mix4", None, None, None, "Unable to contact mix4 via ssh", 2),
            ("hardware", "pix1", None, None, None, "pix1 is back to life", 30),
            ("hardware", "pix1", None, None, None, "Unable to contact pix1 via ssh", 35),
        ]
        for kind, node, stack, runid, flt, message, minutes in problems:
            s.add(
                Problem(
                    kind=kind,
                    node=node,
                    stack=stack,
                    runid=runid,
                    filter=flt,
                    message=message,
                    created_at=NOW - timedelta(minutes=minutes),
                )
            )


def _partitions(used: tuple[float, float], total: float = 326.018) -> tuple[PartitionStatus, ...]:
    return tuple(
        PartitionStatus(
            name=f"raid{i + 1}",
            total_bytes=int(total * GB),
            free_bytes=int((total - u) * GB),
            used_bytes=int(u * GB),
            reserved_bytes=50 * GB,
            virtual=True,
        )
        for i, u in enumerate(used)
    )


def cluster() -> ClusterSnapshot:
    seen = NOW - timedelta(seconds=1)
    running = QueueEntry(
        stack="CFHTLS_W_u_021410-041200_T0005",
        state=StackState.RUNNING,
        mtime=iso_utc((NOW - timedelta(minutes=3)).timestamp()),
        claim=ClaimSeen(
            pid=4242, host="mix1", boot_id="b", started_at="2026-01-01T00:00:00Z", alive=True
        ),
        progress=5,
        lines=12,
    )
    nodes = (
        NodeSnapshot(
            "mix1",
            "127.0.0.1",
            22001,
            Liveness.UP,
            seen,
            None,
            NOW,
            _partitions((109.6, 109.5)),
            (running,),
            {"pending": 1, "running": 1, "completed": 3, "failed": 0},
            4.2,
            4242,
            (1.52, 1.31, 1.02),
            "0.1.0",
        ),
        NodeSnapshot(
            "mix2",
            "127.0.0.1",
            22002,
            Liveness.UP,
            seen,
            None,
            NOW,
            _partitions((120.0, 99.3)),
            heartbeat_age=2.0,
            heartbeat_pid=4243,
            load=(0.20, 0.31, 0.40),
        ),
        NodeSnapshot(
            "mix3",
            "127.0.0.1",
            22003,
            Liveness.UP,
            seen,
            None,
            NOW,
            _partitions((82.5, 82.5)),
            heartbeat_age=3.0,
            heartbeat_pid=4244,
            load=(0.75, 0.51, 0.33),
        ),
        NodeSnapshot(
            "mix4",
            "127.0.0.1",
            22004,
            Liveness.DOWN,
            NOW - timedelta(minutes=2),
            "connection refused",
            NOW,
            _partitions((61.0, 62.4)),
            heartbeat_age=1.0,
            heartbeat_pid=4245,
            load=(0.10, 0.12, 0.11),
        ),
        NodeSnapshot(
            "pix1",
            "127.0.0.1",
            22005,
            Liveness.AGENT_MISSING,
            seen,
            "agent did not greet: timed out",
            NOW,
            _partitions((172.7, 173.0), total=934.982),
            load=(0.02, 0.03, 0.00),
        ),
        NodeSnapshot(
            "pix2",
            "127.0.0.1",
            22006,
            Liveness.UP,
            seen,
            None,
            NOW,
            _partitions((280.2, 283.0), total=934.982),
            heartbeat_age=40.0,
            heartbeat_pid=4246,
            load=(2.05, 1.90, 1.50),
        ),
    )
    return ClusterSnapshot(taken_at=NOW, nodes=nodes)


def frozen_backend_class():  # type: ignore[no-untyped-def]
    """A ConsoleBackend whose node poll is the fixed snapshot (textual is imported late)."""
    from spica_tui.console.refresh import ConsoleBackend

    class FrozenBackend(ConsoleBackend):
        async def poll_cluster(self) -> ClusterSnapshot:
            return cluster()

        def record_liveness(self, snapshot: ClusterSnapshot) -> str | None:
            return None

        async def log_tail(self, node: str | None, stack: str, line: int | None = None) -> LogTail:
            return LogTail(
                stack, node, 3, f"stacks/{stack}/logs/003.log", LOG_TEXT, False, None, NOW
            )

    return FrozenBackend


def make_db(url: str) -> str:
    """Create and fill a dbspica at ``url`` (a relative SQLite URL keeps screenshots stable)."""
    from spica_core.config import DatabaseConfig
    from spica_core.db.engine import make_engine
    from spica_core.db.schema import upgrade

    engine = make_engine(DatabaseConfig(url=url), create=True)
    try:
        upgrade(engine)
        populate(engine)
    finally:
        engine.dispose()
    return url


def frozen_console(url: str, console: str = "", *, read_only: bool = False):  # type: ignore[no-untyped-def]
    """The console on the fixed world: real dbspica at ``url``, fixed nodes, frozen clock.

    ``console`` is extra ``[console]`` TOML (e.g. a key map)."""
    from spica_core.db.engine import make_engine
    from spica_tui.console.app import SpicaConsole

    config = world_config(url, console)
    backend = frozen_backend_class()(
        config, make_engine(config.db), clock=lambda: NOW, read_only=read_only
    )
    return SpicaConsole(config, backend, clock=lambda: NOW, operator="laurent")
