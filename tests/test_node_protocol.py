"""The typed node protocol: every verb round-trips, and both ends refuse what does not fit,
naming the field; an agent of another protocol version is refused over real SSH."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from spica_core.config import load_config
from spica_core.demo.cluster import DemoCluster
from spica_core.local_node import LocalNodes
from spica_core.node import protocol as proto
from spica_core.node.agent import Agent
from spica_core.node.protocol import (
    ARGS,
    Application,
    BinaryVersion,
    ClaimRecord,
    ClaimSeen,
    Deletion,
    EndedRun,
    ErrorBody,
    ErrorRecord,
    Heartbeat,
    LaunchArgs,
    LaunchMove,
    LaunchRecord,
    LockRecord,
    MoveAnswer,
    MovesArgs,
    MovesResult,
    Orphan,
    PartitionArg,
    PartitionUsage,
    PingArgs,
    PingResult,
    ProtocolError,
    QfinLock,
    QueueEntry,
    RemoveArgs,
    RemoveMove,
    RequeueArgs,
    RequeueMove,
    StackChange,
    StageArgs,
    StageResult,
    StatusArgs,
    StatusResult,
    TailArgs,
    TailResult,
    UnlockArgs,
    UnlockMove,
    UnlockQfinArgs,
    UnlockQfinResult,
    Verb,
    VersionsArgs,
    VersionsResult,
)
from spica_core.node_pool import AgentMissing, NodePool
from spica_core.states import StackState

T = "2026-03-01T12:00:00.000Z"
CLAIM = ClaimRecord(
    pid=4242,
    host="mix1",
    boot_id="6f664488-5fa8-4f49-bb4b-2d950b920984",
    started_at=T,
    daemon_pid=4100,
    attempt=3,
    priority=2,
    launched_at=T,
    launched_by="ops",
)
LOCK = LockRecord(pid=77, host="mix1", boot_id="b", acquired_at=T, stack="CFHTLS_W_u_T0001")

#: Every verb: realistic arguments and a realistic answer.
CASES: list[tuple[proto.Args[Any], msgspec.Struct]] = [
    (PingArgs(), PingResult(time=T)),
    (
        StatusArgs(
            partitions=[PartitionArg(name="raid1", capacity=10**12), PartitionArg(name="raid2")],
            states=[StackState.PENDING, StackState.RUNNING, StackState.FAILED],
            queue_version="a1b2c3.4",
        ),
        StatusResult(
            root="/data/spica",
            host="mix1",
            boot_id="6f664488",
            time=T,
            load=[0.52, 1.1, 0.98],
            partitions=[
                PartitionUsage(
                    name="raid1",
                    total_bytes=10**12,
                    free_bytes=4 * 10**11,
                    used_bytes=6 * 10**11,
                    virtual=True,
                    exists=True,
                ),
                PartitionUsage(
                    name="raid9",
                    total_bytes=None,
                    free_bytes=None,
                    used_bytes=None,
                    virtual=False,
                    exists=False,
                    error="outside_root: a symlink",
                ),
            ],
            queue=[
                QueueEntry(
                    stack="CFHTLS_W_u_T0001",
                    state=StackState.RUNNING,
                    mtime=T,
                    claim=ClaimSeen(**msgspec.structs.asdict(CLAIM), alive=True, daemon_alive=True),
                    progress=4,
                    lines=12,
                    attempt=3,
                ),
                QueueEntry(
                    stack="CFHTLS_W_g_T0002",
                    state=StackState.PENDING,
                    mtime=T,
                    launch=LaunchRecord(
                        stack="CFHTLS_W_g_T0002", priority=1, launched_at=T, by="ops"
                    ),
                ),
                QueueEntry(
                    stack="CFHTLS_W_r_T0003",
                    state=StackState.FAILED,
                    mtime=T,
                    error=ErrorRecord(line=7, exit_code=2, message="swarp failed", log_tail="oops"),
                    attempt=1,
                ),
                QueueEntry(
                    stack="GARBLED", state=StackState.FAILED, mtime=None, malformed="not JSON"
                ),
            ],
            queue_version="a1b2c3.5",
            queue_unchanged=False,
            counts={"pending": 1, "running": 1, "completed": 250, "failed": 2},
            heartbeat=Heartbeat(pid=4100, host="mix1", time=T, age_seconds=1.25),
            qfin_locks=[
                QfinLock(partition="raid1", holder=LOCK, alive=False),
                QfinLock(partition="raid2", holder=None, alive=False, malformed="empty lock"),
            ],
        ),
    ),
    (
        TailArgs(stack="CFHTLS_W_u_T0001", line=3, lines=200),
        TailResult(
            stack="CFHTLS_W_u_T0001",
            line=3,
            path="stacks/CFHTLS_W_u_T0001/logs/003.log",
            size=123456,
            text="swarp: done\nété ✓\n",
            truncated=True,
        ),
    ),
    (
        VersionsArgs(
            applications=[
                Application(name="swarp", binary="/opt/terapix/bin/swarp"),
                Application(name="scamp", binary="scamp"),
            ]
        ),
        VersionsResult(
            binaries=[
                BinaryVersion(
                    name="swarp",
                    binary="/opt/terapix/bin/swarp",
                    path="/opt/terapix/bin/swarp",
                    exists=True,
                    size=2_345_678,
                    sha256="ab" * 32,
                ),
                BinaryVersion(
                    name="scamp", binary="scamp", path=None, exists=False, size=None, sha256=None
                ),
            ]
        ),
    ),
    (
        StageArgs(
            stack="CFHTLS_W_u_T0001",
            commands_b64="c3dhcnAgQC9kYXRhL2xpc3QK",
            inputs=["raid1/in/a.fits", "/data/spica/raid2/b.fits"],
        ),
        StageResult(
            stack="CFHTLS_W_u_T0001", lines=1, commands="stacks/CFHTLS_W_u_T0001/commands.sh"
        ),
    ),
    (
        LaunchArgs(stack="CFHTLS_W_u_T0001", by="ops", priority=5, dry_run=True),
        StackChange(
            stack="CFHTLS_W_u_T0001",
            from_="planned",
            to="pending",
            create="queue/CFHTLS_W_u_T0001.spica",
            attempt=0,
        ),
    ),
    (
        RequeueArgs(stack="CFHTLS_W_r_T0003", by="ops", priority=-2, from_start=True),
        StackChange(
            stack="CFHTLS_W_r_T0003",
            from_="failed",
            to="pending",
            rename=("queue/CFHTLS_W_r_T0003.error", "queue/CFHTLS_W_r_T0003.spica"),
            from_start=True,
            resume_line=1,
            attempt=1,
        ),
    ),
    (
        UnlockArgs(stack="CFHTLS_W_u_T0001", by="ops", to="pending", priority=1),
        StackChange(
            stack="CFHTLS_W_u_T0001",
            from_="running",
            to="pending",
            rename=("queue/CFHTLS_W_u_T0001.processing", "queue/CFHTLS_W_u_T0001.spica"),
            claim=CLAIM,
            orphan=Orphan(line=4, pgid=5151, attempt=3, started_at=T, command="swarp @list"),
            ended_run=EndedRun(attempt=3, line=4, exit_code=137, ended_at=T),
            attempt=3,
        ),
    ),
    (
        RemoveArgs(stack="CFHTLS_W_u_T0001", by="ops", purge=["raid1/in/a.fits"], stack_id=12),
        StackChange(
            stack="CFHTLS_W_u_T0001",
            from_="failed",
            to="removed",
            delete=[
                Deletion(path="queue/CFHTLS_W_u_T0001.error", files=1, bytes=80),
                Deletion(path="stacks/CFHTLS_W_u_T0001", files=14, bytes=1_000_000),
            ],
            bytes=1_000_080,
            attempt=2,
        ),
    ),
    (
        UnlockQfinArgs(partition="raid1", by="ops"),
        UnlockQfinResult(partition="raid1", delete=["locks/raid1.qfin.lock"], holder=LOCK),
    ),
    (
        MovesArgs(
            items=[
                LaunchMove(stack="A_T0001", by="ops", priority=5),
                RequeueMove(stack="A_T0002", by="ops", from_start=True, dry_run=True),
                UnlockMove(stack="A_T0003", by="ops", to="pending"),
                RemoveMove(stack="A_T0004", by="ops", purge=["raid1/in/a.fits"], stack_id=3),
            ]
        ),
        MovesResult(
            results=[
                MoveAnswer(change=StackChange(stack="A_T0001", from_="planned", to="pending")),
                MoveAnswer(error=ErrorBody(code="wrong_state", message="A_T0002 is pending")),
                MoveAnswer(change=StackChange(stack="A_T0003", from_="running", to="pending")),
                MoveAnswer(error=ErrorBody(code="not_found", message="no stack A_T0004")),
            ]
        ),
    ),
    # DataTransfer's landing (spica_core.node.transfer_files).
    (
        proto.ChecksumArgs(paths=["raid1/07AQ01/805282p.fits", "raid1/gone.fits"]),
        proto.ChecksumResult(
            files=[
                proto.FileSum(
                    path="raid1/07AQ01/805282p.fits",
                    exists=True,
                    size=12,
                    checksum="xxh128:" + "ab" * 16,
                ),
                proto.FileSum(path="raid1/gone.fits", exists=False),
            ]
        ),
    ),
    (
        proto.PrepareArgs(path="raid1/07AQ01/805282p.fits", size=12),
        proto.PrepareResult(
            path="raid1/07AQ01/805282p.fits",
            partial="raid1/07AQ01/.805282p.fits.spica-part",
            real_partial="/data/spica/raid1/07AQ01/.805282p.fits.spica-part",
            size=0,
            checksum=None,
            destination=proto.FileSum(path="raid1/07AQ01/805282p.fits", exists=False),
        ),
    ),
    (
        proto.PlaceArgs(path="raid1/07AQ01/805282p.fits", size=12, checksum="xxh128:" + "ab" * 16),
        proto.PlaceResult(
            path="raid1/07AQ01/805282p.fits",
            placed=True,
            already=False,
            size=12,
            checksum="xxh128:" + "ab" * 16,
        ),
    ),
]
CASES.append(
    (
        proto.FitsHeadersArgs(paths=["raid1/03AF19", "incoming/695665o.fits.gz"], offset=100),
        proto.FitsHeadersResult(
            files=[
                proto.FitsFile(
                    path="raid1/03AF19/811001p.fits.gz",
                    primary="SIMPLE  =                    T".ljust(2880),
                    first_extension=None,
                    extensions=36,
                    size=52_000,
                    checksum="xxh128:" + "0" * 32,
                ),
                proto.FitsFile(path="raid1/03AF19/x.fits", error="not FITS"),
            ],
            problems=[proto.FitsProblem(path="raid1/03AF19/loop", reason="directory loop")],
            total=102,
            next=None,
        ),
    )
)


def test_every_verb_has_a_case() -> None:
    assert {type(args).VERB for args, _ in CASES} == set(Verb) == set(ARGS)


@pytest.mark.parametrize(("args", "result"), CASES, ids=[str(type(a).VERB) for a, _ in CASES])
def test_args_and_result_round_trip(args: proto.Args[Any], result: msgspec.Struct) -> None:
    request = proto.decode_request(proto.encode_request(7, args).rstrip(b"\n"))
    assert (request.id, request.verb) == (7, type(args).VERB.value)
    assert proto.decode_args(request.verb, request.args) == args
    line = proto.ok(7, result)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert proto.result_of(proto.decode_response(line), type(args)) == result


def test_stack_change_says_from_on_the_wire() -> None:
    change = CASES[6][1]
    assert json.loads(msgspec.json.encode(change))["from"] == "failed"


# ------------------------------------------------------------------- the agent refuses


AGENT_REFUSALS = [
    ({"stack": "S", "by": 7}, "launch", "launch: `by`: expected `str`, got `int`"),
    ({"stack": "S", "by": "ops", "prio": 1}, "launch", "launch: unknown field `prio`"),
    ({"stack": "S"}, "launch", "launch: missing field `by`"),
    ({"stack": "S", "lines": "9"}, "tail", "tail: `lines`: expected `int`, got `str`"),
    (
        {"partitions": [{"name": "raid1", "capacity": -1}]},
        "status",
        "status: `partitions[0].capacity`: expected `int` >= 0",
    ),
    (
        {"applications": [{"name": "swarp", "binary": "x", "sha": 1}]},
        "versions",
        "versions: `applications[0]`: unknown field `sha`",
    ),
    (
        {"items": [{"verb": "launch", "stack": "S", "by": "ops"}, {"verb": "requeue", "by": 7}]},
        "moves",
        "moves: `items[1].by`: expected `str`, got `int`",
    ),
    (
        {"items": [{"verb": "remove", "stack": "S", "by": "ops", "purge": "x", "stack_id": 1}]},
        "moves",
        "moves: `items[0].purge`: expected `array`, got `str`",
    ),
    (
        {"items": [{"verb": "requeue", "stack": "S", "by": "ops", "from": "failed"}]},
        "moves",
        "moves: `items[0]`: unknown field `from`",
    ),
    (
        {"items": [{"verb": "stage", "stack": "S"}]},
        "moves",
        "moves: `items[0].verb`: invalid value 'stage'",
    ),
    (
        {"items": [{"stack": "S", "by": "ops"}]},
        "moves",
        "moves: `items[0]`: missing field `verb`",
    ),
    (
        {"items": [{"verb": "launch", "stack": "S", "by": "ops"}] * (proto.MAX_MOVES + 1)},
        "moves",
        f"moves: `items`: expected `array` of length <= {proto.MAX_MOVES}",
    ),
]


def _refusal(response: dict[str, Any]) -> str:
    assert response["ok"] is False, response
    assert response["error"]["code"] == "bad_args", response
    return str(response["error"]["message"])


@pytest.mark.parametrize(("args", "verb", "message"), AGENT_REFUSALS)
def test_agent_respond_refuses_naming_the_field(
    tmp_path: Path, args: dict[str, Any], verb: str, message: str
) -> None:
    agent = Agent(tmp_path)
    line = json.dumps({"id": 3, "verb": verb, "args": args}).encode()
    response = json.loads(agent.respond(line))
    assert response["id"] == 3
    assert _refusal(response) == message


@pytest.fixture
def served(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spica_tui", "node", "serve", "--root", str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_real_agent_refuses_naming_the_field(served: subprocess.Popen[bytes]) -> None:
    assert served.stdin is not None and served.stdout is not None
    hello = proto.decode_hello(served.stdout.readline())
    assert hello.protocol == proto.PROTOCOL_VERSION
    for n, (args, verb, message) in enumerate(AGENT_REFUSALS):
        served.stdin.write(json.dumps({"id": n, "verb": verb, "args": args}).encode() + b"\n")
        served.stdin.flush()
        response = json.loads(served.stdout.readline())
        assert response["id"] == n and _refusal(response) == message


# ------------------------------------------------------------------- the console refuses


def test_result_that_does_not_fit_names_verb_and_field() -> None:
    bad = b'{"id":1,"ok":true,"result":{"time":5}}'
    with pytest.raises(ProtocolError) as info:
        proto.result_of(proto.decode_response(bad), PingArgs)
    assert info.value.code == "bad_answer"
    assert info.value.message == "ping answer: `time`: expected `str`, got `int`"
    extra = b'{"id":1,"ok":true,"result":{"time":"t","extra":1}}'
    with pytest.raises(ProtocolError, match="ping answer: unknown field `extra`"):
        proto.result_of(proto.decode_response(extra), PingArgs)


def test_hello_of_another_version_is_refused_naming_both() -> None:
    v1 = {"hello": "spica-agent", "protocol": 1, "version": "0.0.9", "root": "/r"}
    with pytest.raises(ProtocolError) as info:
        proto.decode_hello(json.dumps(v1).encode())
    assert info.value.message == (
        "the node's agent speaks protocol 1, this SPICA speaks 2: "
        "install the same SPICA version on the node"
    )
    with pytest.raises(ProtocolError, match="not a spica agent greeting"):
        proto.decode_hello(b"Welcome to mix1\n")
    hello = {**v1, "protocol": 2, "host": "mix1", "pid": "12", "boot_id": None}
    with pytest.raises(ProtocolError, match="agent hello: `pid`: expected `int`, got `str`"):
        proto.decode_hello(json.dumps(hello).encode())


async def test_local_nodes_request_goes_through_the_wire(tmp_path: Path) -> None:
    """LocalNodes answers typed requests through the bytes both ways, errors included."""
    root = tmp_path / "spica"
    root.mkdir()
    (root / "raid1").mkdir()
    config = load_config_for(tmp_path, root)
    nodes = LocalNodes(config)
    status = await nodes.request("mix1", StatusArgs())
    assert isinstance(status, StatusResult) and [p.name for p in status.partitions] == ["raid1"]
    with pytest.raises(ProtocolError) as info:
        await nodes.request("mix1", LaunchArgs(stack="../x", by="ops"))
    assert info.value.code == "bad_name"
    # A request of the wrong shape is refused by the agent naming the field.
    with pytest.raises(ProtocolError, match="launch: `priority`: expected `int`"):
        # Constructors do not check types: the wrong value goes out as it is.
        await nodes.request("mix1", LaunchArgs(stack="S", by="ops", priority="high"))  # type: ignore[arg-type]


def load_config_for(tmp_path: Path, root: Path):
    path = tmp_path / "spica.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [db]
            url = "sqlite:///{tmp_path / "db.sqlite"}"

            [[nodes]]
            name = "mix1"
            host = "127.0.0.1"
            root = "{root}"
            """
        )
    )
    return load_config(path)


# ------------------------------------------------------------------- over real SSH


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    cluster = DemoCluster(tmp_path_factory.mktemp("demo") / "cluster")
    cluster.up(2)
    try:
        yield cluster
    finally:
        cluster.down()


def _fake_agent(tmp_path: Path, hello: dict[str, Any], result: dict[str, Any]) -> str:
    """A command that greets with ``hello`` and answers every request with ``result``."""
    script = tmp_path / "fake_agent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            print(json.dumps({hello!r}), flush=True)
            for line in sys.stdin:
                rid = json.loads(line)["id"]
                print(json.dumps({{"id": rid, "ok": True, "result": {result!r}}}), flush=True)
            """
        )
    )
    return f"{sys.executable} {script}"


def _with_agent(demo: DemoCluster, node: str, command: str):
    cfg = load_config(demo.config_path)
    nodes = [
        n.model_copy(update={"agent_command": command}) if n.name == node else n for n in cfg.nodes
    ]
    return cfg.model_copy(update={"nodes": nodes})


HELLO = {"hello": "spica-agent", "version": "0.1.0", "root": "/r", "host": "h", "pid": 1}


async def test_agent_of_protocol_1_is_refused_over_ssh(demo: DemoCluster, tmp_path: Path) -> None:
    node = load_config(demo.config_path).nodes[0].name
    command = _fake_agent(tmp_path, {**HELLO, "protocol": 1}, {"time": T})
    async with NodePool(_with_agent(demo, node, command), nodes=[node]) as pool:
        with pytest.raises(AgentMissing) as info:
            await pool.request(node, PingArgs())
        assert "the node's agent speaks protocol 1, this SPICA speaks 2" in str(info.value)
        assert "install the same SPICA version on the node" in str(info.value)
        snap = (await pool.refresh()).node(node)
    assert snap.liveness.value == "agent-missing"
    assert snap.last_error is not None and "speaks protocol 1" in snap.last_error


async def test_answer_with_a_bad_field_is_refused_over_ssh(
    demo: DemoCluster, tmp_path: Path
) -> None:
    node = load_config(demo.config_path).nodes[0].name
    hello = {**HELLO, "protocol": 2, "boot_id": None}
    command = _fake_agent(tmp_path, hello, {"time": 12})
    async with NodePool(_with_agent(demo, node, command), nodes=[node]) as pool:
        with pytest.raises(ProtocolError) as info:
            await pool.request(node, PingArgs())
        assert info.value.message == "ping answer: `time`: expected `str`, got `int`"
        # The link survives a refused answer: the next request is answered (and refused).
        with pytest.raises(ProtocolError, match="ping answer: `time`"):
            await pool.request(node, PingArgs())


async def test_real_agent_answers_typed_requests_over_ssh(demo: DemoCluster) -> None:
    node = load_config(demo.config_path).nodes[1].name
    async with NodePool(load_config(demo.config_path), nodes=[node]) as pool:
        pong = await pool.request(node, PingArgs())
        assert isinstance(pong, PingResult) and pong.time.endswith("Z")
        status = await pool.request(node, StatusArgs(states=[StackState.PENDING]))
        assert isinstance(status, StatusResult) and status.queue is not None
        with pytest.raises(ProtocolError) as info:
            await pool.request(node, TailArgs(stack="NO_SUCH_STACK"))
        assert info.value.code == "not_found"


def test_verbs_that_read_files_whole_wait_longer() -> None:
    """A 700 MB exposure hashed and flushed on a busy raid takes longer than the call
    timeout: its place (and prepare) waits per byte, a page of headers or checksums of
    files the console has not sized waits a fixed extra; every other verb the timeout."""
    mb700 = 700 * 1024 * 1024
    rate = proto.SLOW_DISK_BYTES_PER_S
    place = proto.PlaceArgs(path="raid1/R/805282p.fits", size=mb700, checksum="xxh128:00")
    assert place.timeout(10.0) == pytest.approx(10.0 + 2 * mb700 / rate)
    assert place.timeout(10.0) > 60
    assert proto.PrepareArgs(path="raid1/R/x.fits", size=mb700).timeout(10.0) > 60
    assert proto.PrepareArgs(path="raid1/R/x.fits").timeout(10.0) == 10.0
    assert proto.PlaceArgs(path="a", size=0, checksum="xxh128:00").timeout(10.0) == 10.0
    unsized = 10.0 + proto.UNSIZED_READ_S
    assert proto.FitsHeadersArgs(paths=["raid1"]).timeout(10.0) == unsized
    assert proto.ChecksumArgs(paths=["raid1/a"]).timeout(10.0) == unsized
    assert proto.ChecksumArgs(paths=[]).timeout(10.0) == 10.0
    assert proto.StatusArgs(partitions=[]).timeout(10.0) == 10.0
    assert proto.TailArgs(stack="S").timeout(10.0) == 10.0
