"""One reader and one writer of byte sizes, the same in the engine, the CLI and the console."""

from __future__ import annotations

import pytest

from spica_core.executor import StackChange
from spica_core.node.protocol import Deletion
from spica_core.operations.model import PlanItem
from spica_core.units import gigabytes, human_bytes, parse_size


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (500_000, "500.0 KB"),
        (-1_500, "-1.5 KB"),
        (1_500_000, "1.5 MB"),
        (652_036_000_000, "652.0 GB"),
        (1_870 * 10**9, "1.9 TB"),
        (2 * 10**15, "2000.0 TB"),
    ],
)
def test_human_bytes(n: int | None, shown: str) -> None:
    assert human_bytes(n) == shown


def test_gigabytes_as_the_seed_shows_them() -> None:
    assert gigabytes(433_107_000_000) == "433.107 GB"


def test_sizes_read_back() -> None:
    assert parse_size("652 GB") == 652 * 10**9
    assert parse_size("1.5 TiB") == int(1.5 * 1024**4)
    with pytest.raises(ValueError, match="650 GB"):
        parse_size("lots")


def test_a_plan_shows_bytes_as_everywhere_else() -> None:
    item = PlanItem(
        "S", "mix1", "failed", "removed",
        node_change=StackChange(
            stack="S", from_="failed", to="removed",
            delete=[Deletion(path="stacks/S", files=2, bytes=1_500)],
        ),
    )  # fmt: skip
    assert item.describe() == "delete stacks/S (2 files, 1.5 KB)"
