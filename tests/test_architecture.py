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
