"""What an operator, a stack or a failing dbspica can throw at the faces, end to end.

* A pattern that makes a backtracking engine run for ever (``(a+)+$`` over 60 ``a`` then
  ``-``) is refused (exit 2) by ``stacks --match``, ``remove --match --dry-run`` and the
  console's queries; one the static checks let through (``(a|aa)+$``) is answered by RE2 on
  SQLite and refused when MariaDB's PCRE gives up. Patterns RE2 cannot run are refused.
* Numbers and times that overflow a driver or ``datetime`` are usage errors naming the option.
* Terminal control sequences in stack errors, commands and problem messages are shown
  escaped, and rich markup in them is shown as it is.
* ``--as ''`` is refused.
* dbspica made read-only under a command: the "dbspica unreachable" message and exit 3.

The catastrophic patterns run in a subprocess with a timeout, so a regression fails instead
of hanging; the other commands run in-process (``invoke_spica``), one read-only case in a
subprocess for the real entry point's exit 3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from spica_core.db.models import Node, OperatorAction, Problem, Stack, StackRun
from spica_core.errors import UsageError
from spica_core.read_model import REGEX_CHARS, StackSelection
from tests.conftest import invoke_spica, run_spica

EVIL = "(a+)+$"
#: Exponential on a backtracking engine too, but not refused by the static checks.
RUNAWAY = "(a|aa)+$"
#: With Python's ``re`` this name makes EVIL backtrack 2**60 times.
VICTIM = "a" * 60 + "-"
HOSTILE = "Failed on printf '\x1b]0;pwned\x07' ; clear \x1b[2J\x9b31m [bold]x[/bold] [/oops]"
#: How the hostile text must look once shown (controls escaped, markup left as it is).
SHOWN = "\\x1b]0;pwned\\x07' ; clear \\x1b[2J\\x9b31m [bold]x[/bold] [/oops]"
RAW = ("\x1b", "\x07", "\x9b")
TIMEOUT = 60  # seconds; a run with the pattern on a backtracking engine never ends


def spica(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """In a subprocess with a timeout: for what could hang."""
    return run_spica(*args, env={"SPICA_DB_URL": url, **env}, timeout=TIMEOUT)


def spica_in_process(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke_spica(*args, env={"SPICA_DB_URL": url, **env})


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def hostile(db_engine):
    """A stack that the evil pattern backtracks on (name and error), and stack text holding
    terminal control sequences and rich markup."""
    now = datetime.now(UTC)
    with Session(db_engine) as s, s.begin():
        node = Node(name="mix1", host="127.0.0.1", root="/nonexistent/mix1")
        s.add(Stack(name=VICTIM, node=node, state="failed", error=VICTIM * 4, failed_line=1))
        evil = Stack(
            name="evil_T0003",
            node=node,
            state="failed",
            lines=1,
            failed_line=1,
            exit_code=1,
            error=HOSTILE,
        )
        evil.runs.append(
            StackRun(line=1, command=HOSTILE, node="mix1", started_at=now, exit_code=1)
        )
        s.add(evil)
        s.add(Problem(kind="software", node="mix1", stack="evil_T0003", message=HOSTILE))
    return db_engine


# ------------------------------------------------------------------- catastrophic regex


@pytest.mark.parametrize(
    "args",
    [
        ["stacks", "--match", EVIL],
        ["stacks", "--match", EVIL, "--json"],
        ["remove", "--match", EVIL, "--dry-run"],
    ],
    ids=["stacks", "stacks-json", "remove-dry-run"],
)
def test_nested_repetition_is_refused_in_the_cli(hostile, args: list[str]) -> None:
    """``(a+)+$`` is refused before any query, on both engines alike (RE2 would run it, but
    MariaDB's PCRE would not: one answer for both)."""
    result = spica(url_of(hostile), *args)
    assert result.returncode == 2, result.stderr
    assert f"--match {EVIL!r}: nested repetition" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_runaway_pattern_is_bounded_in_the_cli(hostile) -> None:
    """``(a|aa)+$`` passes the static checks; RE2 answers it in linear time (SQLite), PCRE
    gives up at its match limit (MariaDB), which SPICA refuses rather than call "no match"."""
    url = url_of(hostile)
    result = spica(url, "stacks", "--match", RUNAWAY, "--json")
    if url.startswith("sqlite"):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == []
    else:
        assert result.returncode == 2, result.stderr
        assert f"--match {RUNAWAY!r}: dbspica's regex engine gave up" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_catastrophic_patterns_in_the_console_queries(hostile) -> None:
    """The console's ``/`` filter goes through the same read model."""
    probe = (
        "import json, sys\n"
        "from spica_core.config import DatabaseConfig\n"
        "from spica_core.db.engine import make_engine\n"
        "from spica_core.errors import UsageError\n"
        "from spica_core.read_model import StackSelection, count_stacks, page_stacks,"
        " state_counts\n"
        "engine = make_engine(DatabaseConfig(url=sys.argv[1]))\n"
        "try:\n"
        "    q = StackSelection(None, sys.argv[2])\n"
        "    page = page_stacks(engine, q, 0, 50, with_total=True)\n"
        "    print(json.dumps([count_stacks(engine, q), page.total, len(page.rows),"
        " state_counts(engine, q)]))\n"
        "except UsageError as exc:\n"
        "    print(json.dumps(str(exc)))\n"
    )

    def run(pattern: str):  # type: ignore[no-untyped-def]
        result = subprocess.run(
            [sys.executable, "-c", probe, url_of(hostile), pattern],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert run(EVIL).startswith(f"filter {EVIL!r}: nested repetition")
    bounded = run(RUNAWAY)
    if url_of(hostile).startswith("sqlite"):
        count, total, rows, per_state = bounded
        assert (count, total, rows) == (0, 0, 0) and per_state["failed"] == 0
    else:
        assert bounded.startswith(f"filter {RUNAWAY!r}: dbspica's regex engine gave up")
    # The same query still finds what it should: case-insensitive, over the error too.
    assert run("(?:PWNED)+")[:3] == [1, 1, 1]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "backreferences are not supported"),
        (r"(?P<x>a)(?P=x)", "backreferences are not supported"),
        ("(?=a)", "lookahead is not supported"),
        ("(?<!a)b", "lookbehind is not supported"),
        ("a++", "possessive quantifiers are not supported"),
    ],
)
def test_patterns_re2_cannot_run_are_refused(hostile, pattern: str, reason: str) -> None:
    url = url_of(hostile)
    with Session(hostile) as s:
        audited = s.scalar(select(func.count()).select_from(OperatorAction))
    for args in (["stacks", "--match", pattern], ["remove", "--match", pattern, "--dry-run"]):
        result = spica_in_process(url, *args)
        assert result.returncode == 2, result.stderr
        assert f"--match {pattern!r}" in result.stderr and reason in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    with Session(hostile) as s:  # refused before anything was planned or audited
        assert s.scalar(select(func.count()).select_from(OperatorAction)) == audited
    if REGEX_CHARS & set(pattern):  # the console's filter is a regex when it has one
        with pytest.raises(UsageError, match=f"filter .*{reason}"):
            StackSelection(None, pattern)


@pytest.mark.parametrize("option", ["--match", "--step", "--runid", "--filter", "--release"])
def test_filter_that_is_not_utf8_is_refused(hostile, option: str) -> None:
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates, which
    RE2 and the database drivers cannot take: a usage error, not a traceback."""
    for args in (["stacks"], ["requeue", "--dry-run"]):
        result = spica_in_process(url_of(hostile), *args, option, "\udcff")
        assert result.returncode == 2, result.stderr
        assert f"{option} '\\udcff': not valid UTF-8" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ numbers and times


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["stacks", "--limit", "99999999999999999999"], "--limit"),
        (["stacks", "--limit", "-1"], "--limit"),
        (["problems", "--limit", "99999999999999999999"], "--limit"),
        (["audit", "--limit", "99999999999999999999"], "--limit"),
        (["problems", "--since", "99999999d"], "--since"),
        (["audit", "--since", "99999999d"], "--since"),
        (["problems", "--since", "9999-12-31T23:59:59-23:00"], "--since"),
        (["audit", "--since", "0001-01-01T00:00:00+05:00"], "--since"),
        (["problems", "--since", "9" * 5000 + "d"], "--since"),
    ],
)
def test_out_of_range_options_are_usage_errors(hostile, args: list[str], option: str) -> None:
    result = spica_in_process(url_of(hostile), *args)
    assert result.returncode == 2, result.stderr
    assert option in result.stderr
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stderr


def test_stack_add_priority_out_of_range(tmp_path: Path, sqlite_url: str) -> None:
    config = _node_config(tmp_path, sqlite_url)
    assert invoke_spica("--config", str(config), "db", "init").returncode == 0
    commands = tmp_path / "commands.txt"
    commands.write_text("true\n")
    result = invoke_spica(
        "--config",
        str(config),
        "stack",
        "add",
        "big_T0003",
        "--node",
        "mix1",
        "--commands",
        str(commands),
        "--priority",
        "99999999999999999999",
    )
    assert result.returncode == 2 and "--priority" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mix1" / "stacks" / "big_T0003").exists()


# ----------------------------------------------------------- terminal control sequences


@pytest.mark.parametrize(
    "args",
    [["stacks"], ["stacks", "--state", "failed"], ["stack", "show", "evil_T0003"], ["problems"]],
    ids=["stacks", "stacks-failed", "stack-show", "problems"],
)
def test_control_sequences_are_shown_escaped(hostile, args: list[str]) -> None:
    result = spica_in_process(url_of(hostile), *args, COLUMNS="400")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stdout + result.stderr for c in RAW), repr(result.stdout)
    assert "\\x1b]0;pwned\\x07" in result.stdout and "\\x1b[2J" in result.stdout
    if args[0] != "stacks":  # the stacks table cuts its note at 70 characters
        # Markup shown as it is: not interpreted, not failing on "[/oops]".
        assert SHOWN in result.stdout, result.stdout


def test_control_sequences_in_json_stay_exact(hostile) -> None:
    result = spica_in_process(url_of(hostile), "stack", "show", "evil_T0003", "--json")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stdout for c in RAW)
    data = json.loads(result.stdout)
    assert data["error"] == HOSTILE and data["runs"][0]["command"] == HOSTILE


# ------------------------------------------------------------------------------- --as


@pytest.mark.parametrize(
    "args", [["requeue", "evil_T0003", "--yes"], ["reconcile"], ["remove", "evil_T0003"]]
)
def test_empty_operator_name_is_refused(hostile, args: list[str]) -> None:
    result = spica_in_process(url_of(hostile), *args, "--as", "")
    assert result.returncode == 2, result.stderr
    assert "--as ''" in result.stderr and "Traceback" not in result.stderr
    with Session(hostile) as s:
        assert s.scalar(select(func.count()).select_from(OperatorAction)) == 0


# --------------------------------------------------------------- dbspica read-only


def _node_config(tmp_path: Path, url: str) -> Path:
    """A config whose node root is on this machine, so ``stack add`` writes locally."""
    (tmp_path / "mix1").mkdir(exist_ok=True)
    config = tmp_path / "spica.toml"
    config.write_text(
        f'[db]\nurl = "{url}"\n[[nodes]]\nname = "mix1"\nhost = "127.0.0.1"\n'
        f'root = "{tmp_path / "mix1"}"\n'
    )
    return config


def _read_only_sqlite(url: str) -> str:
    """The same SQLite file opened read-only by SQLite itself (root ignores file modes)."""
    path = url.removeprefix("sqlite:///")
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@pytest.fixture(params=["sqlite", "mariadb"])
def read_only_db(request, tmp_path: Path):
    """(config, read-write URL, read-only URL, what the message shows of it, secret): an
    initialised dbspica with node mix1 and a stack without a node, and a way in that can only
    read it — SQLite's read-only mode, or a MariaDB user granted SELECT alone."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "mysql_url")
    config = _node_config(tmp_path, url)
    init = invoke_spica("--config", str(config), "db", "init")
    assert init.returncode == 0, init.stderr
    engine = create_engine(url)
    with Session(engine) as s, s.begin():
        s.add(Stack(name="nodeless_T0003", state="failed", error="x"))
    if request.param == "sqlite":
        engine.dispose()
        ro = _read_only_sqlite(url)
        yield config, url, ro, "dbspica.sqlite?mode=ro", None
        return
    user, secret = f"spica_ro_{os.getpid()}", "s3cr3t-ro"
    database = engine.url.database
    hosts = ("localhost", "127.0.0.1", "%")
    with engine.begin() as conn:
        for host in hosts:
            conn.execute(text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{secret}'"))
            conn.execute(text(f"GRANT SELECT ON `{database}`.* TO '{user}'@'{host}'"))
    ro = engine.url.set(username=user, password=secret)
    try:
        yield config, url, ro.render_as_string(hide_password=False), f"{user}:***@", secret
    finally:
        with engine.begin() as conn:
            for host in hosts:
                conn.execute(text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        engine.dispose()


@pytest.mark.parametrize(
    "args",
    [
        ["stack", "add", "new_T0003", "--node", "mix1", "--commands", "COMMANDS"],
        ["stack", "add", "new_T0003", "--node", "mix1", "--commands", "COMMANDS", "--launch"],
        ["requeue", "nodeless_T0003", "--yes"],
        ["remove", "nodeless_T0003", "--dry-run"],
        ["db", "init"],
    ],
    ids=["stack-add", "stack-add-launch", "requeue-refused", "remove-dry-run", "db-init"],
)
def test_read_only_dbspica_is_reported_with_exit_3(
    read_only_db, tmp_path: Path, args: list[str]
) -> None:
    config, url, ro, shown, secret = read_only_db
    commands = tmp_path / "commands.txt"
    commands.write_text("true\n")
    args = [str(commands) if a == "COMMANDS" else a for a in args]
    if args == ["db", "init"]:  # a node added to the configuration: its row is written
        with config.open("a") as f:
            f.write('[[nodes]]\nname = "mix2"\nhost = "127.0.0.1"\nroot = "/nonexistent"\n')
    # db init in a subprocess: exit 3 from the real entry point too.
    run = run_spica if args == ["db", "init"] else invoke_spica
    result = run("--config", str(config), *args, env={"SPICA_DB_URL": ro})
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "spica: error: dbspica unreachable at " in result.stderr
    assert shown in result.stderr, result.stderr
    if secret:
        assert secret not in result.stderr + result.stdout
    # Nothing half-made: no stack directory, no queue file, no row.
    assert not (tmp_path / "mix1" / "stacks" / "new_T0003").exists()
    assert not list((tmp_path / "mix1").glob("queue/new_T0003.*"))
    engine = create_engine(url)
    with Session(engine) as s:
        assert s.scalar(select(Stack.id).where(Stack.name == "new_T0003")) is None
    engine.dispose()
