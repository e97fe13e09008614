"""Regular expressions typed by an operator (``--match``, the console's ``/`` filter).

They run on Google's RE2 (``google-re2``), whose matching time is linear in the text: a
pattern such as ``(a+)+$`` cannot make a search backtrack for ever, whatever the stack names
and error messages hold. The price is RE2's syntax: no backreferences, no lookaround, no
atomic groups or possessive quantifiers. A pattern RE2 cannot run is refused with a
:class:`~spica_core.errors.UsageError` naming the option, the pattern and the reason, never
handed to a backtracking engine instead.

:func:`compile_pattern` is the one way SPICA compiles such a pattern. Stack selections
(:class:`~spica_core.read_model.StackSelection`, the CLI's ``--match`` and the console's
filter alike) match in dbspica: :mod:`spica_core.read_model.regex` validates with this
module, then runs RE2 inside SQLite or a checked translation on MariaDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spica_core.errors import UsageError
from spica_core.text import require_utf8

#: RE2 messages that mean "a feature of backtracking engines", with the words an operator
#: needs (RE2's own message is kept too).
_BACKREFERENCE = "invalid escape sequence: \\"
_UNSUPPORTED = (
    ("invalid perl operator: (?=", "lookahead is not supported"),
    ("invalid perl operator: (?!", "lookahead is not supported"),
    ("invalid perl operator: (?<=", "lookbehind is not supported"),
    ("invalid perl operator: (?<!", "lookbehind is not supported"),
    ("invalid perl operator: (?>", "atomic groups are not supported"),
    ("bad repetition operator: *+", "possessive quantifiers are not supported"),
    ("bad repetition operator: ++", "possessive quantifiers are not supported"),
    ("bad repetition operator: ?+", "possessive quantifiers are not supported"),
)
_SHOWN = 200


@dataclass(frozen=True)
class UserPattern:
    """A compiled operator pattern (RE2)."""

    text: str
    ignore_case: bool
    _regexp: Any = field(compare=False, repr=False)

    def matches(self, value: str) -> bool:
        """Whether the pattern is found in ``value``, empty text included (SQL's REGEXP).

        Searched as UTF-8 bytes: RE2's wrapper maps every match offset back to str indices
        otherwise, which costs several times the search itself."""
        return self._regexp.search(value.encode("utf-8", "replace")) is not None


def _reason(message: str, pattern: str) -> str:
    """RE2's message, with what it means when it refuses a backtracking-only feature."""
    digits = message.removeprefix(_BACKREFERENCE)
    named = message.startswith("invalid perl operator: (?P") and "(?P=" in pattern
    hint = "backreferences are not supported" if digits.isdigit() or named else None
    for start, said in _UNSUPPORTED:
        if message.startswith(start):
            hint = said
    return f"{message} ({hint})" if hint else message


def compile_pattern(text: str, what: str = "--match", *, ignore_case: bool = False) -> UserPattern:
    """Compile an operator's pattern with RE2, or raise UsageError naming ``what``, the
    pattern and why RE2 refused it (exit code 2)."""
    import re2

    require_utf8(text, what)
    options = re2.Options()
    options.log_errors = False  # RE2 would print the reason on stderr itself
    options.case_sensitive = not ignore_case
    options.never_capture = True  # only whether it matches is wanted
    try:
        regexp = re2.compile(text.encode("utf-8"), options)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else exc
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        shown = text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
        reason = _reason(message, text)
        raise UsageError(
            f"{what} {shown!r}: not a valid regular expression (RE2 syntax): {reason}"
        ) from None
    return UserPattern(text, ignore_case, regexp)
