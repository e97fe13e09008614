"""Validation of the names that travel between operators, dbspica and nodes.

A stack, node or partition name becomes a file name on a node, so the same rule is applied
by the faces before anything is sent and again by the node agent (defence in depth).
"""

from __future__ import annotations

import re

from spica_core.errors import InvalidName

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}"
NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")


def validate_name(name: str, kind: str = "stack") -> str:
    """Return ``name`` unchanged when it is a safe name, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(kind, repr(name), "not a string")
    if not name:
        raise InvalidName(kind, name, "empty")
    if len(name) > 128:
        raise InvalidName(kind, name, f"{len(name)} characters, at most 128 allowed")
    if not NAME_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9_.+-]", c)})
        if bad:
            shown = " ".join(repr(c) for c in bad[:5])
            reason = f"characters not allowed: {shown} (allowed: letters, digits, _ . + -)"
        else:
            reason = "must start with a letter or a digit"
        raise InvalidName(kind, name, reason)
    return name


def is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True
