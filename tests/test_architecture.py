"""The shape of the house: the engine imports no UI, the fast commands import no heavy libs."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import spica_core

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("textual", "astropy", "asyncssh")
UI = ("textual", "rich", "typer")


def _loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_linter_contract() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency"
    result = subprocess.run([lint], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The engine never imports a UI library KEPT" in result.stdout


def test_every_core_module_imports_without_ui() -> None:
    names = [
        m.name
        for m in pkgutil.walk_packages(spica_core.__path__, "spica_core.")
        if not m.name.endswith("__main__")
    ]
    assert "spica_core.states" in names
    code = "import importlib\n" + "\n".join(f"importlib.import_module({n!r})" for n in names)
    assert not _loaded_after(code) & set(UI)


def _cli(args: list[str]) -> str:
    return (
        "import sys\nfrom spica_tui.cli import main\n"
        f"sys.argv = ['spica', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )


def test_help_imports_no_heavy_library() -> None:
    assert not _loaded_after(_cli(["--help"])) & set(HEAVY)


def test_demo_node_server_imports_no_database_layer() -> None:
    """Each demo node is a process of its own, started by every demo and many tests: it
    loads asyncssh to serve, never the dbspica stack (sqlalchemy, pydantic) or astropy."""
    loaded = _loaded_after("import spica_core.demo.server")
    assert not loaded & {"sqlalchemy", "pydantic", "astropy", "numpy", *UI}


def test_stacks_json_imports_no_heavy_library(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    init = subprocess.run(
        [sys.executable, "-m", "spica_tui", "db", "init"],
        env={**os.environ, "SPICA_DB_URL": url},
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    loaded = _loaded_after(_cli(["stacks", "--json"]), {"SPICA_DB_URL": url})
    assert "sqlalchemy" in loaded  # the probe really ran the command
    assert not loaded & set(HEAVY)


@pytest.mark.parametrize("package", ["spica_core", "spica_tui"])
def test_no_shell_true(package: str) -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / package).rglob("*.py")
        if "shell=True" in p.read_text()
    ]
    assert offenders == []


def test_agent_start_imports_only_the_engine(tmp_path: Path) -> None:
    """``spica node serve`` starts on every node at every connection: the standard library
    and spica_core only (no typer, rich, pydantic, sqlalchemy …), and it still answers."""
    probe = (
        "import sys, json\n"
        "from spica_tui.entry import main\n"
        f"sys.argv = ['spica', 'node', 'serve', '--root', {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "sys.__stdout__.write(json.dumps(sorted(sys.modules)))\n"
    )
    request = json.dumps({"id": 1, "verb": "ping", "args": {}}) + "\n"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        input=request,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    hello, answer, modules = out.stdout.splitlines()
    assert json.loads(hello)["hello"] == "spica-agent"
    assert json.loads(answer)["ok"] is True
    names = set(json.loads(modules))
    assert "spica_core.node.agent" in names and "spica_tui.cli" not in names
    assert not {m.split(".")[0] for m in names} & {*UI, *HEAVY, "pydantic", "sqlalchemy"}


def test_agent_help_is_the_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spica_tui", "node", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0 and "--root" in out.stdout and "JSON" in out.stdout


# ---------------------------------------------------------------- the executor is the seam

#: Where node agents, their verbs and the queue files may be named: the executor, the node
#: package and the daemon (both run on the node), the transports, the protocol itself and
#: the demo cluster (it builds node roots and serves agents).
EXECUTION_SIDE = (
    "spica_core/executor/",
    "spica_core/node/",
    "spica_core/daemon/",
    "spica_core/node_pool.py",
    "spica_core/local_node.py",
    "spica_core/node_protocol.py",
    "spica_core/cluster_snapshot.py",
    "spica_core/demo/cluster.py",
    "spica_core/demo/server.py",
    "spica_core/demo/layout.py",
)
PROTOCOL_MODULES = ("spica_core.node.protocol", "spica_core.node_protocol")
#: Names of the protocol that build a request: the verbs, their arguments, the envelope.
REQUEST_NAMES = frozenset({"Verb", "ARGS", "Request", "Args", "encode", "result_of"})
#: Modules that read or write the node's queue (files, locks, the scan).
QUEUE_MODULES = (
    "spica_core.node.queue",
    "spica_core.node.actions",
    "spica_core.node.locks",
    "spica_core.node.records",
)
#: NodeLayout's paths of queue files and locks, and the states' queue-file suffixes.
QUEUE_PATHS = frozenset({"queue_dir", "queue_file", "qfin_lock", "locks_dir", "SUFFIX"})


def _verbs() -> frozenset[str]:
    from spica_core.node.protocol import Verb

    return frozenset(v.value for v in Verb)


def _offences(path: Path, verbs: frozenset[str], where: str) -> list[str]:
    """``module:line what`` for each request built, verb called or queue file touched."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        found.append(f"{where}:{getattr(node, 'lineno', 0)} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [a.name for a in node.names]
            if node.module in PROTOCOL_MODULES:
                for name in names:
                    if name in REQUEST_NAMES or name.endswith("Args"):
                        say(node, f"imports {name} from {node.module}")
            if node.module.startswith(QUEUE_MODULES):
                say(node, f"imports {node.module}")
            if node.module == "spica_core.node":
                for name in set(names) & {m.rsplit(".", 1)[1] for m in QUEUE_MODULES}:
                    say(node, f"imports spica_core.node.{name}")
            for name in set(names) & QUEUE_PATHS:
                say(node, f"imports {name} from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(QUEUE_MODULES):
                    say(node, f"imports {alias.name}")
        elif isinstance(node, ast.Attribute):
            if node.attr in REQUEST_NAMES - {"encode"} or node.attr.endswith("Args"):
                say(node, f"uses .{node.attr} of the node protocol")
            elif node.attr in QUEUE_PATHS:
                say(node, f"uses .{node.attr} (a queue path)")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and any(isinstance(a, ast.Constant) and a.value in verbs for a in node.args)
        ):
            say(node, "calls an agent verb")
    return found


def _operations_side() -> list[Path]:
    files = sorted((ROOT / "spica_core").rglob("*.py")) + sorted((ROOT / "spica_tui").rglob("*.py"))
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(EXECUTION_SIDE)]


def test_only_the_executor_calls_agent_verbs_or_touches_queue_files() -> None:
    """Operations, reconcile, stack add, the seed, the console and the CLI go through the
    executor: a Slurm executor then replaces the node agents without touching them."""
    files = _operations_side()
    assert ROOT / "spica_core" / "operations" / "actions.py" in files
    verbs = _verbs()
    offences = [o for f in files for o in _offences(f, verbs, str(f.relative_to(ROOT)))]
    assert not offences, "outside the executor:\n" + "\n".join(offences)


def test_the_seam_guard_names_each_offence(tmp_path: Path) -> None:
    """The guard sees each way through the seam, and says where."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from spica_core.node_protocol import Verb\n"
        "from spica_core.node.protocol import LaunchArgs, StackChange\n"
        "from spica_core.node.queue import scan_queue\n"
        "from spica_core.states import SUFFIX, StackState\n"
        "import spica_core.node.locks\n"
        "async def f(pool, layout, proto):\n"
        "    await pool.call('mix1', 'launch', {})\n"
        "    await pool.call('mix1', proto.Verb.STAGE, {})\n"
        "    await pool.call('mix1', 'anything')\n"
        "    return layout.queue_file('S', 'pending'), layout.stack_dir('S')\n"
    )
    offences = _offences(probe, _verbs(), "m.py")
    assert sorted(offences) == sorted(
        [
            "m.py:1 imports Verb from spica_core.node_protocol",
            "m.py:2 imports LaunchArgs from spica_core.node.protocol",
            "m.py:3 imports spica_core.node.queue",
            "m.py:4 imports SUFFIX from spica_core.states",
            "m.py:5 imports spica_core.node.locks",
            "m.py:7 calls an agent verb",
            "m.py:8 uses .Verb of the node protocol",
            "m.py:10 uses .queue_file (a queue path)",
        ]
    ), offences
