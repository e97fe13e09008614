"""The exit codes of a unit plan's command (``spica auto``, ``spica qfin``): 3 when a node
could not be reached wins over 1 for a unit not added; 0 when all went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import typer

from spica_tui.cli.output import finish_plan


@dataclass
class Plan:
    ok: bool
    shown: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok}


def show(plan: Plan) -> None:
    plan.shown.append("table")


@pytest.mark.parametrize(
    ("ok", "unreachable", "code"),
    [(True, [], None), (False, [], 1), (False, ["mix1"], 3), (True, ["mix1"], 3)],
)
def test_exit_code(ok: bool, unreachable: list[str], code: int | None) -> None:
    plan = Plan(ok)
    if code is None:
        finish_plan(plan, show, as_json=False, unreachable=unreachable)
    else:
        with pytest.raises(typer.Exit) as exc:
            finish_plan(plan, show, as_json=False, unreachable=unreachable)
        assert exc.value.exit_code == code
    assert plan.shown == ["table"]  # shown before the exit, whatever the code


def test_json_is_printed_instead_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    plan = Plan(False)
    with pytest.raises(typer.Exit):
        finish_plan(plan, show, as_json=True, unreachable=["mix2"])
    assert plan.shown == [] and '"ok": false' in capsys.readouterr().out
