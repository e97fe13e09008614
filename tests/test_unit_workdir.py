"""A co-add's work directory (on its partition, outside ``stacks/<stack>/``) goes with its
stack: named in ``unit.json`` when staged, deleted by a remove, shown by its dry run; a
record naming anything else (outside the root, another stack's, a partition's top, through
a symlink) is refused when staged and deletes nothing when found on a node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spica_core.node import actions
from spica_core.node.layout import NodeLayout, unit_workdir_problem
from spica_core.node.protocol import ProtocolError, UnitRecord
from spica_core.node.records import write_record

STACK = "CFHTLS_W_r_004000-010000_T0003"
WORKDIR = f"raid1/stacks/T0003/{STACK}"


@pytest.mark.parametrize(
    "workdir",
    [
        WORKDIR,
        f"raid2/x/stacks/{STACK}",
    ],
)
def test_the_rule_accepts_a_partitions_stack_directory(workdir: str) -> None:
    assert unit_workdir_problem(workdir, STACK) is None


@pytest.mark.parametrize(
    "workdir",
    [
        f"/data/mix1/{WORKDIR}",  # absolute
        f"raid1/stacks/../stacks/{STACK}",  # not plain
        f"raid1/stacks//{STACK}",
        f"./{WORKDIR}",
        "raid1/stacks/T0003/OTHER_T0003",  # another stack's
        f"raid1/{STACK}",  # not below a stacks directory
        f"stacks/{STACK}",  # the node's own stacks/ (removed anyway), or a partition's top
        f"raid1/stacks/T0003/{STACK}/",  # trailing slash
    ],
)
def test_the_rule_refuses_anything_else(workdir: str) -> None:
    assert unit_workdir_problem(workdir, STACK) is not None


def node(tmp_path: Path) -> NodeLayout:
    for d in ("queue", "stacks", "raid1"):
        (tmp_path / d).mkdir()
    return NodeLayout(tmp_path)


def outputs(root: Path, rel: str) -> Path:
    work = root / rel
    (work / "inputs").mkdir(parents=True)
    (work / f"{STACK}.fits").write_bytes(b"c" * 3000)
    (work / "inputs" / "a1.fits").write_bytes(b"i" * 1000)
    return work


def test_staged_then_removed_with_its_stack(tmp_path: Path) -> None:
    layout = node(tmp_path)
    unit = UnitRecord(step="stack", workdir=WORKDIR)
    actions.stage(layout, STACK, b"true\n", None, unit=unit)
    work = outputs(tmp_path, WORKDIR)
    sibling = outputs(tmp_path, "raid1/stacks/T0003/OTHER_T0003")

    dry = actions.remove(layout, STACK, [], "op", dry_run=True)
    listed = {d.path: (d.files, d.bytes) for d in dry.delete or ()}
    assert listed[WORKDIR] == (2, 4000)
    assert f"stacks/{STACK}" in listed
    assert work.is_dir()  # a dry run deletes nothing

    done = actions.remove(layout, STACK, [], "op")
    assert {d.path for d in done.delete or ()} == set(listed)
    assert not work.exists() and not (tmp_path / "stacks" / STACK).exists()
    assert sibling.is_dir() and (tmp_path / "raid1" / "stacks" / "T0003").is_dir()
    assert not [p for p in (tmp_path / "raid1" / "stacks" / "T0003").iterdir() if p != sibling]


def test_a_bad_work_directory_is_refused_when_staged(tmp_path: Path) -> None:
    layout = node(tmp_path)
    with pytest.raises(ProtocolError, match="work directory"):
        actions.stage(
            layout, STACK, b"true\n", None, unit=UnitRecord(step="stack", workdir="raid1")
        )
    assert not (tmp_path / "stacks" / STACK).exists()


@pytest.mark.parametrize(
    "named", ["raid1", "../outside/stacks/x/" + STACK, "link", "link named as the stack"]
)
def test_a_record_naming_anything_else_deletes_nothing(tmp_path: Path, named: str) -> None:
    layout = node(tmp_path)
    actions.stage(layout, STACK, b"true\n", None)
    kept = [outputs(tmp_path, "raid1/data")]
    outside = tmp_path.parent / "outside" / "stacks" / "x" / STACK
    outside.mkdir(parents=True, exist_ok=True)
    kept.append(outside)
    if named.startswith("link"):  # a conforming name, through a symlink to elsewhere
        target = f"raid1/keep/{STACK}" if named.endswith("stack") else "raid1/keep"
        elsewhere = outputs(tmp_path, target)
        kept.append(elsewhere)
        (tmp_path / "raid1" / "stacks" / "T0003").mkdir(parents=True)
        os.symlink(elsewhere, tmp_path / WORKDIR)
        named = WORKDIR
    # As a node could find it: written by hand or by an older SPICA, never by a stage.
    write_record(layout.unit_file(STACK), UnitRecord(step="stack", workdir=named))
    done = actions.remove(layout, STACK, [], "op")
    assert {d.path for d in done.delete or ()} == {f"stacks/{STACK}"}
    assert outside.is_dir()
    for path in kept[:1] + kept[2:]:
        assert (path / f"{STACK}.fits").is_file() and (path / "inputs" / "a1.fits").is_file()


def test_a_remove_sweeps_what_a_killed_remove_left(tmp_path: Path) -> None:
    """A remove killed between its renames and its deleting leaves hidden trash; the next
    remove deletes it from the directories it renames into, and nothing else there."""
    layout = node(tmp_path)
    actions.stage(layout, STACK, b"true\n", None, unit=UnitRecord(step="stack", workdir=WORKDIR))
    actions.launch(layout, STACK, 0, "op")
    outputs(tmp_path, WORKDIR)
    left = [
        tmp_path / "stacks" / ".OLD_T0003.k2j3.removing",
        tmp_path / "raid1" / "stacks" / "T0003" / ".OLD_T0003.x9.removing",
    ]
    for directory in left:
        (directory / "logs").mkdir(parents=True)
        (directory / "logs" / "001.log").write_text("old\n")
    left_file = tmp_path / "queue" / ".OLD_T0003.error.removed"
    left_file.write_text("{}")
    kept = [
        tmp_path / "queue" / ".keep",
        tmp_path / "stacks" / "data.removing",
        tmp_path / "raid1" / "stacks" / "T0003" / "OTHER_T0003",
    ]
    kept[0].write_text("")
    kept[1].mkdir()
    kept[2].mkdir()

    actions.remove(layout, STACK, [], "op")
    assert not any(path.exists() for path in [*left, left_file])
    assert all(path.exists() for path in kept)
    assert not (tmp_path / WORKDIR).exists()
