"""The read model on SQLite and MariaDB: regexes matched in the database with one meaning on
both engines, runaway patterns refused or bounded, and a runid scope that never sees another
runid's rows nor any node internals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from spica_core.db.models import Image, Node, NodeDisk, Problem, Runid, Stack, StackRun
from spica_core.errors import NotFound, UsageError
from spica_core.patterns import compile_pattern
from spica_core.read_model import (
    MAX_PATTERN,
    Scope,
    StackSelection,
    count_stacks,
    list_nodes,
    list_problems,
    list_stacks,
    page_stacks,
    runid_distribution,
    stack_detail,
    state_counts,
)
from spica_core.states import StackState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: (name, error): names and errors chosen so that each pattern below tells engines apart
#: when a rule (case, ``$``, ``\w``, POSIX classes, word boundaries) is translated wrongly.
TEXTS = [
    ("CFHTLS_W_u_00001_T0003", None),
    ("CFHTLS_W_g_00002_T0003", "Failed on spica_copy.pl - Code 2"),
    ("CFHTLS_D_r_00010_T0004", "disk full\n"),
    ("cfhtls_w_i_00003_T0003", "écriture refusée"),
    ("WIRDS_z_00004_T0003", "line 3: exit 1"),
    ("a" * 60 + "-", "a" * 120 + "-"),
    ("foo.bar_T0003", "see foo bar"),
]

PATTERNS = [
    "^CFHTLS_W",
    "T0003$",
    "_[ug]_\\d{5}_",
    "full$",  # RE2's $ is the end of the text: not before the error's final newline
    "^[[:upper:]]{5}_",
    "W_u|D_r",
    "\\bbar\\b",
    "\\Bbar",
    "^\\w+$",
    "\\w{3}iture",  # "écriture": \w is ASCII, so "é" is not a word character
    "(?i)^cfhtls_w_[ui]",
    "[^a-z_]+_T0004$",
    "x{2,}|Code \\d",
    "\\s\\d:",
    "a{",
    "^(?:a|b)+-$",
    "\\x{65}xit",
    # literal runs (checked with LIKE before the regex): optional and repeated characters
    "spica_?copy",
    "Code +2",
    "W_g_0{0,4}2",
    "foo\\.bar",
]


def oracle(pattern: str) -> set[str]:
    """What RE2 itself says: the name or the error holds the pattern."""
    p = compile_pattern(pattern)
    return {n for n, e in TEXTS if p.matches(n) or (e is not None and p.matches(e))}


@pytest.fixture
def texts(db_engine):
    with Session(db_engine) as s, s.begin():
        node = Node(name="pix3", host="10.0.0.3", root="/data/pix3")
        for i, (name, error) in enumerate(TEXTS):
            s.add(Stack(name=name, node=node, state="failed", error=error, priority=i, runid="R"))
    return db_engine


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_pattern_means_what_re2_means_on_both_engines(texts, pattern: str) -> None:
    expected = oracle(pattern)
    found = {r.name for r in list_stacks(texts, StackSelection(match=pattern))}
    assert found == expected
    assert count_stacks(texts, StackSelection(match=pattern)) == len(expected)


def test_the_rules_the_table_relies_on() -> None:
    """The oracle is not vacuous: the patterns that tell engines apart do select rows."""
    assert oracle("full$") == set() and oracle("full\\n") == {"CFHTLS_D_r_00010_T0004"}
    assert oracle("\\w{3}iture") == set() and oracle("criture") == {"cfhtls_w_i_00003_T0003"}
    assert oracle("\\bbar\\b") == {"foo.bar_T0003"}
    assert len(oracle("T0003$")) == 5


def test_the_console_filter_is_case_insensitive_and_pages_in_sql(texts) -> None:
    sel = StackSelection(text="^cfhtls_W_")
    rows = [r.name for r in page_stacks(texts, sel, 0, 10, with_total=True).rows]
    # names sort byte for byte on both engines (dbspica's MariaDB text is utf8mb4_bin)
    assert rows == [
        "CFHTLS_W_g_00002_T0003",
        "CFHTLS_W_u_00001_T0003",
        "cfhtls_w_i_00003_T0003",
    ]
    assert [r.name for r in page_stacks(texts, sel, 1, 1).rows] == rows[1:2]
    assert page_stacks(texts, sel, 0, 1, with_total=True).total == 3
    assert state_counts(texts, sel)["failed"] == 3
    # --match is case-sensitive, whatever the column's collation says on MariaDB
    assert count_stacks(texts, StackSelection(match="^cfhtls_W_")) == 0
    assert count_stacks(texts, StackSelection(text="PIX[0-9]")) == len(TEXTS)  # the node


def test_sqlite_regexp_is_re2(engine_factory, tmp_path) -> None:
    """SQLAlchemy registers Python's backtracking ``re`` as SQLite's REGEXP; SPICA's engine
    replaces it with RE2 (``$`` at the very end: Python's ``re`` would say 1 here)."""
    engine = engine_factory(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ('ab' || char(10)) REGEXP 'b$'")).scalar() == 0
        assert conn.execute(text("SELECT 'ab' REGEXP 'b$'")).scalar() == 1
        # the catastrophic shape itself, straight to the function: linear on RE2
        victim = "a" * 5000 + "-"
        hit = conn.execute(text("SELECT :v REGEXP '(a+)+$'"), {"v": victim}).scalar()
        assert hit == 0


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a+)+$", "nested repetition"),
        ("(?:x*y)*", "nested repetition"),
        ("(a{2,})+", "nested repetition"),
        ("(?m)^a", "flag m is refused"),
        ("\\pL", "Unicode classes"),
        ("[\\D]", "\\D inside [...]"),
        ("\\Qa.b\\E", "\\Q...\\E"),
        ("a" * (MAX_PATTERN + 1), f"longer than {MAX_PATTERN} characters"),
    ],
)
def test_patterns_outside_the_subset_are_refused_before_any_query(
    pattern: str, reason: str
) -> None:
    with pytest.raises(UsageError, match="--match") as refused:
        StackSelection(match=pattern)
    assert reason in str(refused.value)
    with pytest.raises(UsageError, match=r"^filter "):
        StackSelection(text=pattern if "(" in pattern or "\\" in pattern else pattern + "$")


def test_a_runaway_pattern_is_bounded(texts) -> None:
    """``(a|aa)+$`` passes the static checks and backtracks exponentially on the 60 ``a``:
    RE2 (SQLite) answers at once; MariaDB's PCRE gives up at its match limit and SPICA
    refuses the answer instead of calling it "no match"."""
    sel = StackSelection(match="(a|aa)+$")
    if texts.dialect.name == "sqlite":
        assert list_stacks(texts, sel) == []
        return
    for read in (
        lambda: list_stacks(texts, sel),
        lambda: count_stacks(texts, sel),
        lambda: page_stacks(texts, sel, 0, 10),
        lambda: state_counts(texts, sel),
    ):
        with pytest.raises(UsageError, match="regex engine gave up on it"):
            read()
    # the connection it ran on is reset: the next read is not time-bounded nor refused
    assert count_stacks(texts, StackSelection(match="^a+-$")) == 1
    with Session(texts) as s:
        assert float(s.execute(text("SELECT @@SESSION.max_statement_time")).scalar()) == 0.0


# ----------------------------------------------------------------------------- scopes


RUNIDS = ("03AL01", "03AL02", "04BM01")
NODES = ("pix1", "pix2", "pix3")


def generate(engine, seed: int) -> dict[str, set[str]]:
    """A dbspica of random contents: stacks, runs, images, problems over runids and nodes.
    Returns each runid's stack names."""
    rnd = random.Random(seed)
    owned: dict[str, set[str]] = {r: set() for r in RUNIDS}
    with Session(engine) as s, s.begin():
        nodes = [Node(name=n, host=f"{n}.cluster", root=f"/spica/{n}") for n in NODES]
        for n in nodes:
            n.disks.append(NodeDisk(partition=f"/data/{n.name}", total_bytes=10, free_bytes=5))
        runids = {r: Runid(name=r) for r in RUNIDS}
        s.add_all([*nodes, *runids.values()])
        s.flush()
        for i in range(rnd.randint(20, 60)):
            runid = rnd.choice(RUNIDS)
            node = rnd.choice(nodes)
            name = f"S{i:03d}_{rnd.choice('ugriz')}_{runid}_T0003"
            owned[runid].add(name)
            stack = Stack(
                name=name,
                node=node,
                runid=runid,
                state=rnd.choice([s.value for s in StackState if s is not StackState.REMOVED]),
                error=f"failed on {node.name}:/spica/{node.name}/stacks/{name}",
                lines=2,
                created_at=NOW - timedelta(minutes=i),
            )
            stack.runs.append(
                StackRun(
                    line=1,
                    command=f"ssh {node.host} /spica/bin/swarp",
                    node=node.name,
                    started_at=NOW,
                )
            )
            s.add(stack)
            s.add(
                Image(
                    filename=f"{name}.fits",
                    runid_id=runids[runid].id,
                    node_id=node.id,
                    path=f"/data/{node.name}/{name}.fits",
                )
            )
            kind = rnd.choice(["software", "hardware", "security"])
            s.add(
                Problem(
                    kind=kind,
                    node=node.name,
                    stack=name,
                    runid=runid,
                    message=f"Unable to contact {node.name} via ssh ({node.host})",
                    created_at=NOW - timedelta(minutes=i),
                )
            )
    return owned


def leaks(value: object) -> list[str]:
    """Every node name, host or path found anywhere in ``value``'s text."""
    shown = repr(value)
    secrets = [*NODES, ".cluster", "/spica", "/data"]
    return [s for s in secrets if s in shown]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_runid_scope_sees_its_rows_and_no_node_internals(db_engine, seed: int) -> None:
    owned = generate(db_engine, seed)
    mine = RUNIDS[seed % len(RUNIDS)]
    scope = Scope.of_runids({mine})
    everyone = list_stacks(db_engine, StackSelection())
    assert {r.name for r in everyone} == set().union(*owned.values())  # the operators' view
    assert leaks(everyone)

    reads = {
        "stacks": list_stacks(db_engine, StackSelection(), scope=scope),
        "page": page_stacks(db_engine, StackSelection(), 0, 1000, with_total=True, scope=scope),
        "regex page": page_stacks(db_engine, StackSelection(text="^S0"), 0, 1000, scope=scope),
        "counts": state_counts(db_engine, StackSelection(), scope),
        "problems": list_problems(db_engine, scope=scope),
        "distribution": runid_distribution(db_engine, scope).to_json(),
        "nodes": list_nodes(db_engine, scope),
        "details": [stack_detail(db_engine, n, scope).to_json() for n in sorted(owned[mine])],
    }
    for what, value in reads.items():
        assert leaks(value) == [], what
        assert not any(r in repr(value) for r in RUNIDS if r != mine), what

    assert {r.name for r in reads["stacks"]} == owned[mine]
    assert reads["page"].total == len(owned[mine]) == sum(reads["counts"].values())
    assert {r.name for r in reads["regex page"].rows} == owned[mine]
    assert reads["nodes"] == []
    assert all(p["kind"] == "software" and p["runid"] == mine for p in reads["problems"])
    assert [d["runid"] for d in reads["distribution"]] == [mine]
    for other in set(RUNIDS) - {mine}:
        for name in owned[other]:
            with pytest.raises(NotFound):
                stack_detail(db_engine, name, scope)
        assert count_stacks(db_engine, StackSelection(runid=other), scope) == 0
    # Filters never reveal hidden text: not a node name, not an error, not by --node.
    assert count_stacks(db_engine, StackSelection(text="pix"), scope) == 0
    assert count_stacks(db_engine, StackSelection(match="spica"), scope) == 0
    with pytest.raises(UsageError, match="--node 'pix1': node names are not shown"):
        list_stacks(db_engine, StackSelection(node="pix1"), scope=scope)
    # An empty scope sees nothing at all.
    nobody = Scope.of_runids(())
    assert list_stacks(db_engine, StackSelection(), scope=nobody) == []
    assert list_problems(db_engine, scope=nobody) == []
    assert runid_distribution(db_engine, nobody).runids == ()
