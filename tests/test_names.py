from __future__ import annotations

import pytest

from spica_core.errors import InvalidName
from spica_core.names import is_valid_name, validate_name


@pytest.mark.parametrize(
    "name",
    ["CFHTLS_W_u_021410-041200_T0003", "805282p_V0003", "mix1", "a", "x" * 128, "a.b+c-d"],
)
def test_valid(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x;touch /tmp/pwned", "';'"),
        ("../../etc", "'/'"),
        ("$(id)", "'$'"),
        ("x" * 129, "at most 128"),
        ("été", "'é'"),
        ("a/b", "'/'"),
        (".hidden", "start with"),
        ("-rf", "start with"),
        ("a\nb", "'\\n'"),
    ],
)
def test_invalid(name: str, why: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(name, "stack")
    assert why in str(info.value)
    assert "stack" in str(info.value)
    assert not is_valid_name(name)
