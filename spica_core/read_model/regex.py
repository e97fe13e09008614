"""Operator regexes matched inside dbspica: the same answer on SQLite and MariaDB.

The pattern is first compiled by RE2 (:func:`spica_core.patterns.compile_pattern`: the one
syntax and the one set of error messages). Then:

* **SQLite** runs ``x REGEXP p`` through :func:`sqlite_regexp`, registered on every
  connection by :func:`register_sqlite_regexp` (replacing SQLAlchemy's, which is Python's
  backtracking ``re``): RE2 itself, linear time.
* **MariaDB** runs ``x REGEXP p`` on PCRE2, a backtracking engine whose defaults differ from
  RE2's. SPICA sends a *translation* that means what RE2 means: ``(?i)`` or ``(?-i)`` first
  (so the collation never decides the case), ``$`` as ``\\z`` (PCRE's ``$`` also matches
  before a final newline), ``\\d \\w \\s \\b`` and POSIX classes as explicit ASCII classes
  (MariaDB's PCRE is Unicode-aware where RE2 is ASCII-only).

Both engines accept one subset, refused with a :class:`~spica_core.errors.UsageError` naming
the option otherwise: at most :data:`MAX_PATTERN` characters; flags ``i`` and ``s`` only (no
``m``, ``U``); no ``\\p``/``\\P`` Unicode classes, ``\\C``, ``\\Q…\\E``, negated shorthands or
negated POSIX classes inside ``[…]``; and no nested unbounded repetition such as ``(a+)+`` or
``(x*y)*`` (harmless on RE2, exponential on PCRE). What still runs away on PCRE (say
``(a|aa)+$`` over long names) is bounded twice: PCRE2's match limit, whose warning SPICA
turns into a refusal rather than a silent "no match", and ``max_statement_time``
(:data:`REGEX_SECONDS`) on the statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, and_, literal
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from spica_core.errors import UsageError
from spica_core.patterns import UserPattern, compile_pattern

#: Longest pattern accepted (characters).
MAX_PATTERN = 256
#: Longest a regex statement may run on MariaDB/MySQL before it is stopped and refused.
REGEX_SECONDS = 5.0

_ASCII = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\f\\r "}
_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_W = "[0-9A-Za-z_]"
_BOUNDARY = f"(?:(?<={_W})(?!{_W})|(?<!{_W})(?={_W}))"
_NOT_BOUNDARY = f"(?:(?<={_W})(?={_W})|(?<!{_W})(?!{_W}))"
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z-]*)([:)])")
_NAMED = re.compile(r"\(\?P?<[A-Za-z_][A-Za-z0-9_]*>")


@dataclass(frozen=True)
class SqlPattern:
    """An operator pattern ready for either engine's ``REGEXP``."""

    text: str
    what: str
    ignore_case: bool
    re2: str
    pcre: str
    #: Text every match contains (ASCII, at least 2 characters), or None: a ``LIKE``
    #: checked first, so the regex only runs on rows that may match.
    literal: str | None = None

    def for_dialect(self, dialect: str) -> str:
        return self.re2 if dialect == "sqlite" else self.pcre

    def shown(self) -> str:
        return self.text if len(self.text) <= 60 else self.text[:57] + "..."


def sql_pattern(text: str, what: str, *, ignore_case: bool = False) -> SqlPattern:
    """Validate ``text`` (RE2 syntax, SPICA's subset) and translate it for both engines;
    UsageError naming ``what`` when it is refused."""
    compile_pattern(text, what, ignore_case=ignore_case)
    if len(text) > MAX_PATTERN:
        raise UsageError(
            f"{what} {text[:57] + '...'!r}: longer than {MAX_PATTERN} characters "
            "(dbspica matches at most that)"
        )
    walk = _Translator(text, what)
    body = walk.run()
    flag = "(?i)" if ignore_case else "(?-i)"
    re2 = f"(?i){text}" if ignore_case else text
    return SqlPattern(text, what, ignore_case, re2, flag + body, walk.required_literal())


class _Translator:
    """One left-to-right walk: copies RE2 syntax PCRE reads the same, rewrites the rest,
    refuses what is outside the subset (the pattern is already valid RE2)."""

    def __init__(self, text: str, what: str) -> None:
        self.text, self.what = text, what
        self.out: list[str] = []
        self.i = 0
        # Per open group: whether it holds an unbounded repetition (for "(a+)+").
        self.groups: list[bool] = [False]
        self.prev_group_unbounded = False
        # Runs of literal characters at the top level (for the LIKE prefilter).
        self.run_chars: list[str] = []
        self.runs: list[str] = []
        self.last_literal = False
        self.alternation = False

    def required_literal(self) -> str | None:
        """The longest top-level literal run, when no top-level ``|`` makes it optional."""
        self.end_run()
        best = max(self.runs, key=len, default="")
        return None if self.alternation or len(best) < 2 else best

    def end_run(self) -> None:
        if self.run_chars:
            self.runs.append("".join(self.run_chars))
            self.run_chars = []

    def literal(self, char: str, width: int) -> None:
        """A character matched as itself: part of the current run at the top level."""
        self.out.append(self.text[self.i : self.i + width])
        self.i += width
        self.prev_group_unbounded = False
        self.last_literal = False
        if len(self.groups) == 1 and char.isascii() and char.isprintable():
            self.run_chars.append(char)
            self.last_literal = True
        else:
            self.end_run()

    def refuse(self, why: str) -> UsageError:
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return UsageError(
            f"{self.what} {shown!r}: {why} (not in the pattern subset dbspica runs the same "
            "on SQLite and MariaDB)"
        )

    def run(self) -> str:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c == "\\":
                self.escape()
            elif c == "[":
                self.klass()
            elif c == "(":
                self.open_group()
            elif c == ")":
                self.i += 1
                inner = self.groups.pop()
                self.groups[-1] = self.groups[-1] or inner
                self.prev_group_unbounded = inner
                self.out.append(")")
            elif c in "*+?{":
                self.quantifier()
            elif c == "$":
                self.atom("\\z", 1)
            elif c in ".^":
                self.atom(c, 1)
            else:
                if c == "|" and len(self.groups) == 1:
                    self.alternation = True
                if c == "|":
                    self.atom(c, 1)
                else:
                    self.literal(c, 1)
        return "".join(self.out)

    def atom(self, text: str, width: int) -> None:
        self.out.append(text)
        self.i += width
        self.prev_group_unbounded = False
        self.last_literal = False
        self.end_run()

    def escape(self) -> None:
        t, i = self.text, self.i
        e = t[i + 1]
        if e in _ASCII:
            self.atom(f"[{_ASCII[e]}]", 2)
        elif e.lower() in _ASCII:
            self.atom(f"[^{_ASCII[e.lower()]}]", 2)
        elif e == "b":
            self.atom(_BOUNDARY, 2)
        elif e == "B":
            self.atom(_NOT_BOUNDARY, 2)
        elif e in "pP":
            raise self.refuse("Unicode classes \\p and \\P are refused")
        elif e == "C":
            raise self.refuse("\\C (any byte) is refused")
        elif e in "QE":
            raise self.refuse("\\Q...\\E quoting is refused (escape each character)")
        elif e == "x" and t.startswith("{", i + 2):
            end = t.index("}", i) + 1
            self.atom(t[i:end], end - i)
        elif not e.isalnum():  # an escaped punctuation character: itself
            self.literal(e, 2)
        else:
            self.atom(t[i : i + 2], 2)

    def klass(self) -> None:
        t = self.text
        j = self.i + 1
        parts = ["["]
        if t.startswith("^", j):
            parts.append("^")
            j += 1
        if t.startswith("]", j):
            parts.append("\\]")
            j += 1
        while t[j] != "]":
            if t.startswith("[:", j):
                end = t.index(":]", j)
                name = t[j + 2 : end]
                if name.startswith("^"):
                    raise self.refuse(f"negated POSIX class [:{name}:] is refused")
                parts.append(_POSIX[name])
                j = end + 2
            elif t[j] == "\\":
                e = t[j + 1]
                if e in _ASCII:
                    parts.append(_ASCII[e])
                elif e.lower() in _ASCII:
                    raise self.refuse(f"\\{e} inside [...] is refused")
                elif e in "pPCQE":
                    raise self.refuse(f"\\{e} is refused")
                elif e == "x" and t.startswith("{", j + 2):
                    end = t.index("}", j) + 1
                    parts.append(t[j:end])
                    j = end
                    continue
                else:
                    parts.append(t[j : j + 2])
                j += 2
            else:
                parts.append("\\[" if t[j] == "[" else t[j])
                j += 1
        parts.append("]")
        self.atom("".join(parts), j + 1 - self.i)

    def open_group(self) -> None:
        t, i = self.text, self.i
        named = _NAMED.match(t, i)
        if named:
            self.out.append(named.group(0))
            self.i = named.end()
        elif t.startswith("(?", i):
            m = _FLAGS.match(t, i)
            if m is None:  # RE2 accepted it, so it is a construct SPICA has no rule for
                raise self.refuse("this (?...) group is refused")
            bad = sorted(set(m.group(1)) - set("is-"))
            if bad:
                raise self.refuse(f"flag {''.join(bad)} is refused (only i and s)")
            self.out.append(m.group(0))
            self.i = m.end()
            if m.group(2) == ")":  # (?i) alone: a flag change, not a group
                self.prev_group_unbounded = False
                return
        else:
            self.out.append("(")
            self.i += 1
        self.groups.append(False)

    def quantifier(self) -> None:
        t, i = self.text, self.i
        if t[i] == "{":
            m = _REPEAT.match(t, i)
            if m is None:  # a literal brace, for RE2 and PCRE alike
                self.atom("\\{", 1)
                return
            unbounded = m.group(2) is not None and not m.group(3)
            width = m.end() - i
        else:
            unbounded = t[i] in "*+"
            width = 1
        if unbounded and self.prev_group_unbounded:
            raise self.refuse("nested repetition such as (a+)+ is refused")
        if self.last_literal:  # the repeated character leaves the literal run
            optional = t[i] in "?*" or (t[i] == "{" and t.startswith("{0", i))
            if optional:
                self.run_chars.pop()
            self.end_run()
            self.last_literal = False
        if unbounded:
            self.groups[-1] = True
        if t.startswith("?", i + width):
            width += 1  # lazy
        self.out.append(t[i : i + width])
        self.i += width
        self.prev_group_unbounded = False


# ----------------------------------------------------------------------- SQL side


def regexp(column: ColumnElement[Any], pattern: SqlPattern, dialect: str) -> ColumnElement[bool]:
    """``column REGEXP pattern`` for ``dialect`` (NULL never matches), behind a ``LIKE`` of
    the pattern's required literal when it has one (case-insensitive, so never stricter
    than the regex; the regex then runs on few rows)."""
    matches = column.op("REGEXP", is_comparison=True)(literal(pattern.for_dialect(dialect)))
    if pattern.literal is None:
        return matches
    return and_(like_ci(column, f"%{like_escape(pattern.literal)}%", dialect), matches)


def like_escape(text: str) -> str:
    """``text`` as a LIKE pattern matching itself (``\\`` the escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_ci(column: ColumnElement[Any], pattern: str, dialect: str) -> ColumnElement[bool]:
    """``column LIKE pattern`` (``\\`` escapes) whatever the case, on both engines: SQLite's
    LIKE ignores ASCII case; dbspica's MySQL/MariaDB text is byte-exact (``utf8mb4_bin``), so
    there the comparison takes a case-insensitive collation of the same character set."""
    if dialect in ("mysql", "mariadb"):
        column = column.collate("utf8mb4_general_ci")
    return column.like(pattern, escape="\\")


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> UserPattern:
    return compile_pattern(pattern, "REGEXP")


def sqlite_regexp(pattern: str | None, value: str | None) -> bool | None:
    """SQLite's ``value REGEXP pattern``, on RE2."""
    if pattern is None or value is None:
        return None
    return _compiled(pattern).matches(str(value))


def register_sqlite_regexp(dbapi_connection: Any, _record: object = None) -> None:
    """Make SQLite's ``REGEXP`` operator RE2 on this connection (a ``connect`` listener)."""
    dbapi_connection.create_function("regexp", 2, sqlite_regexp, deterministic=True)


def _mysql(session: Session) -> tuple[bool, bool]:
    """(MySQL family, MariaDB) — asked of the session's connection: a dialect only knows
    which server it talks to once it has connected."""
    if session.get_bind().dialect.name not in ("mysql", "mariadb"):
        return False, False
    return True, bool(getattr(session.connection().dialect, "is_mariadb", False))


@contextmanager
def regex_bounded(session: Session, pattern: SqlPattern | None) -> Iterator[None]:
    """Inside: MariaDB/MySQL statements stop after :data:`REGEX_SECONDS`, and a stopped one
    is a UsageError naming the pattern. Nothing to do without a pattern, nor on SQLite."""
    mysql, maria = _mysql(session)
    if pattern is None or not mysql:
        yield
        return
    conn = session.connection()
    if maria:
        conn.exec_driver_sql(f"SET SESSION max_statement_time = {REGEX_SECONDS:.1f}")
    else:
        conn.exec_driver_sql(f"SET SESSION max_execution_time = {int(REGEX_SECONDS * 1000)}")
    try:
        yield
    except OperationalError as exc:
        code = getattr(exc.orig, "args", (None,))[0]
        if code in (1969, 3024):  # MariaDB / MySQL: statement time exceeded
            raise UsageError(
                f"{pattern.what} {pattern.shown()!r}: matching took longer than "
                f"{REGEX_SECONDS:g} s in dbspica and was stopped; anchor or simplify it"
            ) from None
        raise
    finally:
        name = "max_statement_time" if maria else "max_execution_time"
        with suppress(Exception):  # the connection is gone: the pool drops it
            conn.exec_driver_sql(f"SET SESSION {name} = DEFAULT")


def check_regex_warnings(session: Session, pattern: SqlPattern | None) -> None:
    """After a MariaDB statement with ``pattern``: PCRE2 giving up on a row is only a
    warning (the row then does not match); SPICA refuses the answer instead."""
    mysql, _ = _mysql(session)
    if pattern is None or not mysql:
        return
    for row in session.connection().exec_driver_sql("SHOW WARNINGS"):
        if int(row[1]) == 1139:  # ER_REGEXP_ERROR
            raise UsageError(
                f"{pattern.what} {pattern.shown()!r}: dbspica's regex engine gave up on it "
                f"({row[2]}); anchor or simplify it"
            )
