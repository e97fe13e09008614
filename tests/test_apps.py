"""Applications: ``spica apps`` and ``spica apps register`` over real SSH to demo nodes, the
monitor's check, the nodes panel's mark, and the versions units record.

A node is given another binary for real: its agent starts with a ``PATH`` leading to a
directory of its own root (``agent_command``), where a script of the application's name
stands before the Debian binary; its sha256 is computed here from the file, never taken from
SPICA. The Debian version (``dpkg-query``) is the independent truth of ``-v``'s version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.config import ApplicationConfig, load_config
from spica_core.db.models import Application, Node, NodeApplication, OperatorAction, Stack
from spica_core.demo.cluster import DemoCluster
from tests.conftest import invoke_spica, require, run_spica

pytestmark = pytest.mark.timeout(600)


def debian_version(package: str) -> str:
    """The upstream version dpkg has installed (``3.21.1`` of ``3.21.1-1``)."""
    require(shutil.which("dpkg-query") is not None, "dpkg-query missing (a Debian system)")
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    require(done.returncode == 0, f"{package} not installed (./run setup installs it)")
    return done.stdout.split(":")[-1].split("-")[0].split("+")[0]


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(os.path.realpath(path)).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCluster]:
    require(shutil.which("psfex") is not None, "psfex missing (./run setup installs it)")
    cluster = DemoCluster(tmp_path_factory.mktemp("apps") / "cluster")
    cluster.up(2, daemons=False)
    try:
        yield cluster
    finally:
        cluster.down()


def own_bin(demo: DemoCluster, node: str) -> Path:
    """The directory first on ``node``'s agent PATH (see :func:`apps_config`)."""
    return demo.node_root(node) / "bin"


@pytest.fixture
def bins(demo: DemoCluster) -> Iterator[dict[str, Path]]:
    """Each node's own bin directory, emptied after the test."""
    dirs = {n: own_bin(demo, n) for n in ("mix1", "mix2")}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    yield dirs
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def apps_config(demo: DemoCluster, db_url: str, path: Path, apps: list[dict[str, Any]]) -> Path:
    """The demo's spica.toml on ``db_url`` (initialised) with ``apps`` as the release's
    applications; each node's agent looks first in its own ``<root>/bin``."""
    raw: dict[str, Any] = tomllib.loads(demo.config_path.read_text())
    raw["db"] = {"url": db_url}
    raw["ssh"].update(
        known_hosts=str(demo.known_hosts_path),
        client_keys=[str(demo.client_key_path)],
        connect_timeout=3.0,
        call_timeout=10.0,
    )
    for node in raw["nodes"]:
        first = shlex.quote(str(own_bin(demo, node["name"])))
        node["agent_command"] = f'PATH={first}:"$PATH" {node["agent_command"]}'
    raw["release"] = {"name": "T0003", "applications": apps}
    path.write_text(tomli_w.dumps(raw))
    code, _, err = spica(path, "db", "init")
    assert code == 0, err
    return path


def fake_tool(directory: Path, name: str, banner: str) -> Path:
    """An executable ``name`` in ``directory`` printing ``banner`` for ``-v``."""
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho {shlex.quote(banner)}\n")
    tool.chmod(0o755)
    return tool


def spica(config: Path, *args: str) -> tuple[int, str, str]:
    """``spica`` in this process (it asks the nodes over real SSH all the same)."""
    done = invoke_spica("--config", str(config), *args)
    return done.returncode, done.stdout, done.stderr


def spica_process(config: Path, *args: str) -> tuple[int, str, str]:
    """``spica`` in a process of its own, with no terminal to ask on."""
    done = run_spica("--config", str(config), *args, timeout=180)
    return done.returncode, done.stdout, done.stderr


def audit_rows(engine: Engine) -> list[tuple[str, str, bool, list[Any]]]:
    with Session(engine) as s:
        rows = s.scalars(
            select(OperatorAction)
            .where(OperatorAction.action == "apps-register")
            .order_by(OperatorAction.id)
        )
        return [(r.user, r.result, r.dry_run, r.targets) for r in rows]


def node_rows(engine: Engine) -> dict[str, tuple[str, str | None]]:
    """node -> (application version, checksum) of node_application."""
    with Session(engine) as s:
        found = s.execute(
            select(Node.name, Application.version, NodeApplication.checksum)
            .join(Node, Node.id == NodeApplication.node_id)
            .join(Application, Application.id == NodeApplication.application_id)
        ).all()
    return {n: (v, c) for n, v, c in found}


def by_node(data: dict[str, Any], app: str) -> dict[str, dict[str, Any]]:
    (entry,) = [a for a in data["applications"] if a["name"] == app]
    return {n["node"]: n for n in entry["nodes"]}


# ---------------------------------------------------------------------------- spica apps


def test_apps_detects_a_node_whose_binary_differs(
    demo: DemoCluster, bins: dict[str, Path], db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    from spica_core.read_model.apps import binary_drift

    version = debian_version("psfex")
    real = sha256_of(shutil.which("psfex") or "")
    config = apps_config(
        demo, db_url, tmp_path / "spica.toml", [{"name": "psfex", "binary": "psfex"}]
    )
    # mix2 has another psfex claiming the same version: only the checksum tells them apart.
    fake = fake_tool(bins["mix2"], "psfex", f"PSFEx version {version} (2026-12-02)")
    fake_sum = sha256_of(fake)
    assert fake_sum != real

    code, out, err = spica(config, "apps", "--json")
    assert code == 1, err
    data = json.loads(out)
    nodes = by_node(data, "psfex")
    assert nodes["mix1"]["checksum"] == real and nodes["mix1"]["version"] == version
    assert nodes["mix2"]["checksum"] == fake_sum and nodes["mix2"]["version"] == version
    assert nodes["mix2"]["path"] == str(fake)
    assert {n["state"] for n in nodes.values()} == {"unregistered"}
    (reason,) = data["drift"]
    assert "nodes differ" in reason and "mix1" in reason and "mix2" in reason
    assert node_rows(db_engine) == {}  # nothing registered: nothing to keep per node

    # Registration refuses nodes that disagree, naming them; audited.
    code, _, err = spica(config, "apps", "register", "psfex", "--yes", "--as", "alice")
    assert code == 1
    assert "nodes have different binaries" in err and "mix1" in err and "mix2" in err
    with Session(db_engine) as s:
        assert s.scalars(select(Application)).all() == []

    # The same binary everywhere: registered, with what the nodes have (asked first).
    fake.rename(fake.with_name("psfex.off"))
    code, _, err = spica_process(config, "apps", "register", "psfex")
    assert code == 2 and f"record psfex {version} sha256 {real}" in err
    assert "no terminal to confirm on: pass --yes" in err
    code, out, err = spica(config, "apps", "register", "psfex", "--yes", "--as", "alice", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["result"], shown["version"], shown["checksum"]) == ("applied", version, real)
    with Session(db_engine) as s:
        (row,) = s.scalars(select(Application)).all()
        assert (row.name, row.version, row.checksum) == ("psfex", version, real)
        assert (row.release, row.registered_by, row.binary) == ("T0003", "alice", "psfex")
    assert node_rows(db_engine) == {"mix1": (version, real), "mix2": (version, real)}
    code, out, err = spica(config, "apps", "--json")
    assert code == 0, err
    assert {n["state"] for n in by_node(json.loads(out), "psfex").values()} == {"ok"}
    assert binary_drift(db_engine) == {}

    # The other binary is back on mix2: it differs from the registered one.
    fake.with_name("psfex.off").rename(fake)
    code, out, err = spica(config, "apps")
    assert code == 1
    assert "differs" in out and "drift: psfex: mix2 differs from the registered" in err
    code, out, _ = spica(config, "apps", "--json")
    nodes = by_node(json.loads(out), "psfex")
    assert (nodes["mix1"]["state"], nodes["mix2"]["state"]) == ("ok", "differs")
    assert node_rows(db_engine) == {"mix1": (version, real), "mix2": (version, fake_sum)}
    assert binary_drift(db_engine) == {"mix2": ("psfex",)}

    # Registering again the same binary changes nothing but is audited.
    fake.unlink()
    code, out, err = spica(config, "apps", "register", "psfex", "--yes", "--as", "bob")
    assert code == 0 and "registered already" in err
    assert audit_rows(db_engine) == [
        ("alice", "refused", False, ["psfex"]),
        ("alice", "applied", False, ["psfex"]),
        ("bob", "unchanged", False, ["psfex"]),
    ]


def test_apps_names_a_node_that_does_not_answer_and_a_missing_binary(
    demo: DemoCluster, bins: dict[str, Path], db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    config = apps_config(
        demo,
        db_url,
        tmp_path / "spica.toml",
        [{"name": "psfex", "binary": "psfex"}, {"name": "nowhere", "binary": "nowhere-tool"}],
    )
    code, out, err = spica(config, "apps", "--json")
    assert code == 1, err
    data = json.loads(out)
    assert {n["state"] for n in by_node(data, "nowhere").values()} == {"missing"}
    assert "nowhere: binary nowhere-tool missing on mix1, mix2" in data["drift"]
    code, _, err = spica(config, "apps", "register", "nowhere", "--yes")
    assert code == 1 and "binary nowhere-tool missing on mix1, mix2" in err
    code, _, err = spica(config, "apps", "register", "scamp", "--yes")
    assert code == 2 and "'scamp' is not in [[release.applications]]" in err

    demo.stop_node("mix2")
    try:
        code, out, err = spica(config, "apps", "--json")
        data = json.loads(out)
        assert "mix2" in data["unreachable"]
        assert by_node(data, "psfex")["mix2"]["state"] == "unreachable"
        assert code == 1  # the missing binary is drift; the silent node is named
        code, _, err = spica(config, "apps", "register", "psfex", "--yes")
        assert code == 1 and "node(s) not answering: mix2" in err
    finally:
        demo.start_node("mix2")
    assert [r[1] for r in audit_rows(db_engine)] == ["refused", "refused"]


# ------------------------------------------------------------------- the major version


def make_stacks(engine: Engine, states: dict[str, tuple[str, str]]) -> None:
    """Stack rows: name -> (release, state)."""
    with Session(engine) as s, s.begin():
        for name, (release, state) in states.items():
            s.add(Stack(name=name, step="qfin", release=release, state=state))


def test_major_version_change_refused_while_units_run_unless_forced(
    demo: DemoCluster, bins: dict[str, Path], db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    config = apps_config(
        demo, db_url, tmp_path / "spica.toml", [{"name": "mytool", "binary": "mytool"}]
    )

    def install(version: str) -> str:
        """The same new binary on every node (as an install does); its sha256."""
        for d in bins.values():
            tool = fake_tool(d, "mytool", f"MyTool version {version} (2026-12-02)")
        return sha256_of(tool)

    first = install("2.4.0")
    code, _, err = spica(config, "apps", "register", "mytool", "--yes", "--as", "carol")
    assert code == 0, err
    make_stacks(
        db_engine,
        {
            "811001p_T0003": ("T0003", "pending"),
            "811002p_T0003": ("T0003", "pending"),
            "811003p_T0003": ("T0003", "running"),
            "811004p_T0003": ("T0003", "completed"),
            "811005p_T0002": ("T0002", "running"),
        },
    )

    install("3.0.0")
    code, _, err = spica(config, "apps", "register", "mytool", "--yes", "--as", "carol")
    assert code == 1
    assert "mytool 2.4.0 -> 3.0.0 is a major version change" in err
    assert "3 units of release T0003 are pending or running (2 pending, 1 running)" in err
    assert "--force" in err
    code, _, err = spica(config, "apps", "register", "mytool", "--dry-run")
    assert code == 1 and "major version change" in err

    minor = install("2.5.0")  # a minor change goes through while units run
    code, out, err = spica(config, "apps", "register", "mytool", "--yes", "--json")
    assert code == 0, err
    assert (json.loads(out)["version"], json.loads(out)["checksum"]) == ("2.5.0", minor)

    major = install("3.0.0")
    code, out, err = spica(
        config, "apps", "register", "mytool", "--yes", "--force", "--as", "carol", "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["result"], shown["forced"], shown["major_change"]) == ("applied", True, True)
    assert shown["busy"] == {"pending": 2, "running": 1}
    with Session(db_engine) as s:
        rows = {a.version: a.checksum for a in s.scalars(select(Application))}
    assert rows == {"2.4.0": first, "2.5.0": minor, "3.0.0": major}
    assert [r[1] for r in audit_rows(db_engine)] == [
        "applied",
        "refused",
        "refused",
        "applied",
        "applied",
    ]
    with Session(db_engine) as s:
        last = s.scalars(select(OperatorAction).order_by(OperatorAction.id.desc())).first()
        assert last is not None and last.detail["forced"] is True
        dry = s.scalars(select(OperatorAction).where(OperatorAction.dry_run.is_(True))).all()
        assert dry == []  # a refused dry run is recorded as refused


# --------------------------------------------------------------- monitor and console


def test_monitor_records_what_nodes_have_and_the_nodes_panel_marks_drift(
    demo: DemoCluster, bins: dict[str, Path], db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    import asyncio

    from spica_core.monitor.service import Monitor
    from spica_core.read_model.apps import binary_drift
    from tests.console_support import console_app, fast_config, mounted, until

    config_path = apps_config(
        demo, db_url, tmp_path / "spica.toml", [{"name": "psfex", "binary": "psfex"}]
    )
    code, _, err = spica(config_path, "apps", "register", "psfex", "--yes")
    assert code == 0, err
    real = sha256_of(shutil.which("psfex") or "")
    config = load_config(config_path)

    async def polls() -> None:
        """The first poll checks the binaries, the next not, the third again."""
        monitor = Monitor(config, db_engine)
        monitor.versions_every = 2
        try:
            await monitor.poll_once()
            assert node_rows(db_engine)["mix1"][1] == real
            fake = fake_tool(bins["mix1"], "psfex", "PSFEx version 3.99.0 (2026-12-02)")
            await monitor.poll_once()
            assert node_rows(db_engine)["mix1"][1] == real
            await monitor.poll_once()
            assert node_rows(db_engine)["mix1"][1] == sha256_of(fake)
        finally:
            await monitor.close()

    asyncio.run(polls())
    assert binary_drift(db_engine) == {"mix1": ("psfex",)}

    async def panel() -> None:
        from spica_tui.console.panels.nodes import DIFFERS_MARK, NodesPanel

        app = console_app(fast_config(config_path))
        async with app.run_test(size=(160, 50)) as pilot:
            table = (await mounted(pilot, NodesPanel)).query_one("GridTable")

            def cells(node: str) -> list[str]:
                return [str(c) for c in table.get_row(node)] if node in table.row_keys else []

            await until(pilot, lambda: DIFFERS_MARK in "".join(cells("mix1")), "mix1 marked")
            assert cells("mix1")[1] == f"mix1 {DIFFERS_MARK}"
            assert cells("mix1")[6] == "binaries differ: psfex"
            assert cells("mix2")[1] == "mix2" and DIFFERS_MARK not in "".join(cells("mix2"))

    asyncio.run(panel())


# ------------------------------------------------------------------ versions of units


def test_local_versions_are_what_debian_installed() -> None:
    from spica_core.apps.versions import local_versions

    want = {
        "psfex": debian_version("psfex"),
        "source-extractor": debian_version("source-extractor"),
    }
    apps = [
        ApplicationConfig(name="psfex", binary="psfex"),
        ApplicationConfig(name="source-extractor", binary="source-extractor"),
        ApplicationConfig(name="missing", binary="/nonexistent/tool"),
        ApplicationConfig(name="silent", binary="true"),
    ]
    assert local_versions(apps) == want


def test_record_unit_versions(db_engine: Engine) -> None:
    from spica_core.apps.store import AUTO, record_unit_versions
    from spica_core.apps.table import newest, read_applications
    from spica_core.db.models import StackApp
    from spica_core.errors import NotFound, UsageError
    from spica_core.read_model import stack_detail

    with Session(db_engine) as s, s.begin():
        s.add(
            Application(
                name="psfex",
                version="3.21.1",
                binary="/usr/bin/psfex",
                checksum="ab" * 32,
                registered_by="alice",
            )
        )
        s.add(Stack(name="811001p_T0003", step="qfin", release="T0003", state="running"))

    def apps_of(stack: str) -> dict[str, tuple[str, str | None]]:
        with Session(db_engine) as s:
            unit = s.scalars(select(Stack).where(Stack.name == stack)).one()
            rows = s.scalars(select(StackApp).where(StackApp.stack_id == unit.id)).all()
            return {r.application.name: (r.version, r.application.registered_by) for r in rows}

    with Session(db_engine) as s, s.begin():
        record_unit_versions(s, "811001p_T0003", {"psfex": "3.21.1", "source-extractor": "2.25.0"})
    assert apps_of("811001p_T0003") == {
        "psfex": ("3.21.1", "alice"),
        "source-extractor": ("2.25.0", AUTO),
    }
    # Run again (requeued) with a newer psfex: the unit keeps the version it last ran with.
    with Session(db_engine) as s, s.begin():
        record_unit_versions(s, "811001p_T0003", {"psfex": "3.22.0"})
        record_unit_versions(s, "811001p_T0003", {"psfex": "3.22.0"})  # idempotent
    assert apps_of("811001p_T0003") == {
        "psfex": ("3.22.0", AUTO),
        "source-extractor": ("2.25.0", AUTO),
    }
    with Session(db_engine) as s:
        auto = s.scalars(select(Application).where(Application.version == "3.22.0")).one()
        assert (auto.binary, auto.checksum, auto.release) == ("/usr/bin/psfex", None, "T0003")
    shown = stack_detail(db_engine, "811001p_T0003").apps  # what spica stack show prints
    assert sorted((a["name"], a["version"]) for a in shown) == [
        ("psfex", "3.22.0"),
        ("source-extractor", "2.25.0"),
    ]
    # The unregistered version a unit ran with never hides the registered binary.
    registered = newest(read_applications(db_engine), "psfex")
    assert registered is not None and (registered.version, registered.registered_by) == (
        "3.21.1",
        "alice",
    )

    with Session(db_engine) as s, s.begin():
        with pytest.raises(NotFound, match="no_such_unit"):
            record_unit_versions(s, "no_such_unit", {"psfex": "3.21.1"})
        with pytest.raises(UsageError, match=re.escape("application psfex: version '3.2 1; rm'")):
            record_unit_versions(s, "811001p_T0003", {"psfex": "3.2 1; rm"})
        with pytest.raises(UsageError, match="invalid application name"):
            record_unit_versions(s, "811001p_T0003", {"$(id)": "1.0"})
    assert apps_of("811001p_T0003")["psfex"] == ("3.22.0", AUTO)  # nothing half-applied


# ------------------------------------------------------------- the agent's versions verb


def test_agent_answers_versions_once_per_binary_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for versions, the agent runs each binary's ``-v`` once, and again only when
    the file changes; not asked, it runs nothing and its answer has no ``version`` key (an
    older client decodes it)."""
    from spica_core.node.agent import Agent
    from spica_core.node.protocol import Application, VersionsArgs, encode

    bindir = tmp_path / "bin"
    bindir.mkdir()
    runs = tmp_path / "runs"
    tool = bindir / "mytool"

    def write(version: str) -> None:
        tool.write_text(
            f"#!/bin/sh\necho x >> {shlex.quote(str(runs))}\necho 'MyTool version {version}'\n"
        )
        tool.chmod(0o755)

    write("1.2.3")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    agent = Agent(tmp_path)
    apps = [Application(name="mytool", binary="mytool"), Application(name="no", binary="no-tool")]

    def ask(version: bool) -> list[Any]:
        return agent.versions(VersionsArgs(applications=apps, version=version)).binaries

    plain = ask(False)
    assert [b.version for b in plain] == [None, None] and not runs.exists()
    assert b'"version"' not in encode(agent.versions(VersionsArgs(applications=apps)))
    assert b'"version"' not in encode(VersionsArgs(applications=apps))
    first = ask(True)
    assert (first[0].version, first[0].sha256, first[1].version) == ("1.2.3", sha256_of(tool), None)
    assert ask(True)[0].version == "1.2.3"
    assert runs.read_text().count("x") == 1  # cached: the binary did not change
    write("1.10.0")
    assert ask(True)[0].version == "1.10.0"
    assert runs.read_text().count("x") == 2


def test_a_hanging_binary_has_no_version_and_holds_nobody_up(tmp_path: Path) -> None:
    from spica_core.apps.versions import read_versions

    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(0o755)
    quick = fake_tool(tmp_path, "quick", "Quick version 0.9.1")
    assert read_versions([str(hang), str(quick), str(tmp_path / "gone")], timeout=1.0) == [
        None,
        "0.9.1",
        None,
    ]


@pytest.mark.parametrize(
    ("banner", "version"),
    [
        ("Source Extractor version 2.25.0 (2018-02-08)", "2.25.0"),
        ("SWarp version 2.41.5 (2021-01-27)", "2.41.5"),
        ("STIFF version 2.4.0 (2014-02-23)", "2.4.0"),
        ("tool Version: 1.4rc2\nmore", "1.4rc2"),
        ("warning: something\nFoo version 10.2.3-beta1 built 2020", "10.2.3-beta1"),
        ("mytool 0.7\n", "0.7"),
        ("built on 2020-12-01", None),
        ("", None),
        ("version " + "1." * 40 + "1", None),
    ],
)
def test_parse_version(banner: str, version: str | None) -> None:
    from spica_core.apps.versions import parse_version

    assert parse_version(banner) == version


def test_two_units_recording_one_new_version_at_once(db_engine: Engine) -> None:
    """The second writer's insert meets the first's uncommitted row: it waits, then uses it."""
    import threading

    from spica_core.apps.store import record_unit_versions
    from spica_core.db.models import StackApp

    with Session(db_engine) as s, s.begin():
        s.add(Stack(name="811001p_T0003", step="qfin", release="T0003", state="running"))
        s.add(Stack(name="811002p_T0003", step="qfin", release="T0003", state="running"))
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with Session(db_engine) as s, s.begin():
                record_unit_versions(s, "811002p_T0003", {"scamp": "2.10.0"})
        except BaseException as exc:
            failures.append(exc)

    with Session(db_engine) as first, first.begin():
        record_unit_versions(first, "811001p_T0003", {"scamp": "2.10.0"})
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)  # let it reach the row the first has not committed yet
    thread.join(60)
    assert not thread.is_alive() and failures == []
    with Session(db_engine) as s:
        (app,) = s.scalars(select(Application)).all()
        assert {r.application_id for r in s.scalars(select(StackApp))} == {app.id}
        assert len(s.scalars(select(StackApp)).all()) == 2


async def test_an_agent_from_before_version_is_asked_again_without_it(tmp_path: Path) -> None:
    """Its strict decoding refuses the unknown argument (bad_args): the executor asks again
    for checksums alone, and the versions are unknown."""
    import msgspec

    from spica_core.executor.agents import AgentExecutor
    from spica_core.node.agent import Agent
    from spica_core.node.protocol import Application, ErrorCode, ProtocolError

    class OldArgs(msgspec.Struct, forbid_unknown_fields=True):
        applications: list[dict[str, str]]

    class OlderAgent:
        """The real agent behind the argument check of an agent without ``version``."""

        def __init__(self) -> None:
            self.agent = Agent(tmp_path)
            self.refused = 0

        async def request(self, node: str, args: Any) -> Any:
            try:
                msgspec.json.decode(msgspec.json.encode(args), type=OldArgs)
            except msgspec.ValidationError as exc:
                self.refused += 1
                raise ProtocolError(ErrorCode.BAD_ARGS, f"versions: {exc}") from None
            return self.agent.versions(args)

    older = OlderAgent()
    executor = AgentExecutor(older, ["old1"])
    psfex = shutil.which("psfex")
    require(psfex is not None, "psfex missing (./run setup installs it)")
    (found,) = await executor.versions("old1", [Application(name="psfex", binary="psfex")])
    assert older.refused == 1
    assert (found.sha256, found.version) == (sha256_of(psfex or ""), None)


def test_bad_names_and_binaries_are_refused_before_any_node_is_asked(
    demo: DemoCluster, db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    config = apps_config(
        demo, db_url, tmp_path / "spica.toml", [{"name": "mytool", "binary": "bin/mytool"}]
    )
    code, out, err = spica(config, "apps")
    assert code == 2 and out == ""
    assert "[[release.applications]] mytool: binary 'bin/mytool' must be an absolute path" in err
    for hostile in ("$(id)", "../x", "a b", ""):
        code, _, err = spica(config, "apps", "register", hostile, "--yes")
        assert code == 2 and "invalid application name" in err, err
    code, _, err = spica(config, "apps", "register", "mytool", "--yes", "--as", "x;y")
    assert code == 2 and "--as 'x;y'" in err
    assert audit_rows(db_engine) == []

    # The monitor says so in its log and goes on polling.
    import asyncio

    from spica_core.monitor.service import Monitor

    monitor = Monitor(load_config(config), db_engine)
    assert asyncio.run(monitor.run(once=True)) == 0 and monitor.polls == 1
    assert node_rows(db_engine) == {}


def test_every_stack_a_daemon_runs_records_the_versions_it_ran_with(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A real daemon claims an ordinary stack: its stack_app rows hold the versions the
    release's binaries on the node report, as dpkg installed them."""
    from spica_core.db.models import StackApp
    from tests.daemon_support import daemon_processes, make_node, wait_for

    want = {
        "psfex": debian_version("psfex"),
        "source-extractor": debian_version("source-extractor"),
    }
    apps = "\n".join(
        f'[[release.applications]]\nname = "{name}"\nbinary = "{name}"\n' for name in want
    )
    env = make_node(tmp_path, sqlite_url, extra=apps)
    env.add("S_VERSIONS", ["true"])
    with contextlib.contextmanager(daemon_processes)() as daemons:
        daemons.start(env)
        wait_for(lambda: env.state("S_VERSIONS") == "processed", what="the stack to complete")
        wait_for(lambda: env.row("S_VERSIONS").state == "completed", what="dbspica: completed")

    with Session(env.engine()) as s:
        rows = s.execute(
            select(Application.name, StackApp.version)
            .join(StackApp, StackApp.application_id == Application.id)
            .join(Stack, Stack.id == StackApp.stack_id)
            .where(Stack.name == "S_VERSIONS")
        ).all()
    assert dict(rows) == want
