"""What an operator, a stack or a failing dbspica can throw at the faces, end to end.

* A pattern that makes a backtracking engine run for ever (``(a+)+$`` over 60 ``a`` then
  ``-``) completes in ``stacks --match``, ``remove --match --dry-run`` and the console's
  queries: every operator pattern runs on RE2. Patterns RE2 cannot run are refused (exit 2).
* Numbers and times that overflow a driver or ``datetime`` are usage errors naming the option.
* Terminal control sequences in stack errors, commands and problem messages are shown
  escaped, and rich markup in them is shown as it is.
* ``--as ''`` is refused.
* dbspica made read-only under a command: the "dbspica unreachable" message and exit 3.

Each command runs in a subprocess with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.console_data import REGEX_CHARS, StackQuery
from spica_core.db.models import Node, OperatorAction, Problem, Stack, StackRun
from spica_core.errors import UsageError
from tests.conftest import run_spica

EVIL = "(a+)+$"
#: With Python's ``re`` this name makes EVIL backtrack 2**60 times.
VICTIM = "a" * 60 + "-"
HOSTILE = "Failed on printf '\x1b]0;pwned\x07' ; clear \x1b[2J\x9b31m [bold]x[/bold] [/oops]"
#: How the hostile text must look once shown (controls escaped, markup left as it is).
SHOWN = "\\x1b]0;pwned\\x07' ; clear \\x1b[2J\\x9b31m [bold]x[/bold] [/oops]"
RAW = ("\x1b", "\x07", "\x9b")
TIMEOUT = 60  # seconds; a run with the pattern on a backtracking engine never ends


def spica(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_spica(*args, env={"SPICA_DB_URL": url, **env}, timeout=TIMEOUT)


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
def test_catastrophic_pattern_completes_in_the_cli(hostile, args: list[str]) -> None:
    result = spica(url_of(hostile), *args)
    assert result.returncode == 0, result.stderr
    assert VICTIM not in result.stdout  # the pattern is anchored at the end: no match
    if "--json" in args:
        assert json.loads(result.stdout) == []


def test_catastrophic_pattern_completes_in_the_console_queries(hostile) -> None:
    """The console's ``/`` filter: a regex filter is streamed through the same matching."""
    probe = (
        "import json, sys\n"
        "from spica_core.config import DatabaseConfig\n"
        "from spica_core.db.engine import make_engine\n"
        "from spica_core.console_data import StackQuery, count_stacks, page_stacks,"
        " state_counts_for\n"
        "engine = make_engine(DatabaseConfig(url=sys.argv[1]))\n"
        "q = StackQuery(None, sys.argv[2])\n"
        "page = page_stacks(engine, q, 0, 50, with_total=True)\n"
        "print(json.dumps([count_stacks(engine, q), page.total, len(page.rows),"
        " state_counts_for(engine, q)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, url_of(hostile), EVIL],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    count, total, rows, per_state = json.loads(result.stdout)
    assert (count, total, rows) == (0, 0, 0) and per_state["failed"] == 0
    # The same query still finds what it should: case-insensitive, over the error too.
    found = subprocess.run(
        [sys.executable, "-c", probe, url_of(hostile), "(?:PWNED)+"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert json.loads(found.stdout)[:3] == [1, 1, 1], found.stderr


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
        result = spica(url, *args)
        assert result.returncode == 2, result.stderr
        assert f"--match {pattern!r}" in result.stderr and reason in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    with Session(hostile) as s:  # refused before anything was planned or audited
        assert s.scalar(select(func.count()).select_from(OperatorAction)) == audited
    if REGEX_CHARS & set(pattern):  # the console's filter is a regex when it has one
        with pytest.raises(UsageError, match=f"filter .*{reason}"):
            StackQuery(None, pattern)
