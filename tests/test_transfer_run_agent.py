"""The agent's transfer verbs (checksum, prepare, place), through the wire's bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import pytest

from spica_core.checksum import file_checksum
from spica_core.node import protocol as proto
from spica_core.node.agent import Agent
from spica_core.node.protocol import ErrorCode, ProtocolError

R = TypeVar("R")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "spica"
    for d in ("queue", "stacks", "raid1"):
        (root / d).mkdir(parents=True)
    return root


def ask(root: Path, args: proto.Args[R]) -> R:
    line = Agent(root).respond(proto.encode_request(1, args).rstrip(b"\n"))
    return proto.result_of(proto.decode_response(line), type(args))


def refused(root: Path, args: proto.Args[Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        ask(root, args)
    return info.value


def test_checksum_is_the_sources_algorithm_and_stays_in_the_root(root: Path) -> None:
    data = os.urandom(5_000_003)
    (root / "raid1" / "a.fits").write_bytes(data)
    (root / "raid1" / "fifo").mkdir()
    sums = ask(root, proto.ChecksumArgs(paths=["raid1/a.fits", "raid1/none.fits", "raid1/fifo"]))
    a, none, fifo = sums.files
    assert (a.exists, a.size, a.checksum) == (
        True,
        len(data),
        file_checksum(root / "raid1/a.fits")[0],
    )
    assert (none.exists, none.checksum) == (False, None)
    assert fifo.error == "not a regular file"
    assert refused(root, proto.ChecksumArgs(paths=["../etc/passwd"])).code == ErrorCode.OUTSIDE_ROOT
    os.symlink("/etc", root / "raid1" / "out")
    assert (
        refused(root, proto.ChecksumArgs(paths=["raid1/out/passwd"])).code == ErrorCode.OUTSIDE_ROOT
    )


def test_prepare_refuses_what_is_not_a_file_in_a_partition(root: Path) -> None:
    for path, code in (
        ("a.fits", ErrorCode.BAD_ARGS),
        ("queue/x.spica", ErrorCode.BAD_ARGS),
        ("stacks/S_T0001/commands.sh", ErrorCode.BAD_ARGS),
        ("raid1/../queue/x.spica", ErrorCode.BAD_NAME),
        ("raid1/.a.fits.spica-part", ErrorCode.BAD_NAME),
        ("/raid1/a.fits", ErrorCode.BAD_NAME),
    ):
        assert refused(root, proto.PrepareArgs(path=path)).code == code, path
    # A partition (or a directory in it) that leads out of the root through a symlink.
    outside = root.parent / "outside"
    outside.mkdir()
    os.symlink(outside, root / "raid2")
    assert refused(root, proto.PrepareArgs(path="raid2/07A/a.fits")).code == ErrorCode.OUTSIDE_ROOT
    assert list(outside.iterdir()) == []


def test_prepare_then_place_lands_only_matching_bytes(root: Path) -> None:
    data = os.urandom(300_000)
    checksum = f"xxh128:{__import__('xxhash').xxh3_128_hexdigest(data)}"
    prep = ask(root, proto.PrepareArgs(path="raid1/07AQ01/a.fits", size=len(data)))
    partial = Path(prep.real_partial)
    assert partial == root.resolve() / "raid1/07AQ01/.a.fits.spica-part"
    assert (prep.size, prep.checksum, prep.destination.exists) == (0, None, False)
    # A damaged arrival: answered with what the node holds, and the partial deleted.
    partial.write_bytes(data[:-1] + b"?")
    miss = ask(root, proto.PlaceArgs(path="raid1/07AQ01/a.fits", size=len(data), checksum=checksum))
    assert (miss.placed, miss.size) == (False, len(data)) and miss.checksum != checksum
    assert not partial.exists() and not (root / "raid1/07AQ01/a.fits").exists()
    # Half a copy is kept for resuming (its size and checksum answered), or dropped.
    partial.write_bytes(data[:1000])
    again = ask(root, proto.PrepareArgs(path="raid1/07AQ01/a.fits"))
    assert (again.size, again.checksum) == (1000, file_checksum(partial)[0])
    fresh = ask(root, proto.PrepareArgs(path="raid1/07AQ01/a.fits", resume=False))
    assert fresh.size == 0 and not partial.exists()
    # The right bytes are renamed into place.
    partial.write_bytes(data)
    placed = ask(
        root, proto.PlaceArgs(path="raid1/07AQ01/a.fits", size=len(data), checksum=checksum)
    )
    assert (placed.placed, placed.already, placed.checksum) == (True, False, checksum)
    assert (root / "raid1/07AQ01/a.fits").read_bytes() == data and not partial.exists()
    # Placed before (a runner died before recording it): kept, found by prepare.
    seen = ask(root, proto.PrepareArgs(path="raid1/07AQ01/a.fits", size=len(data)))
    assert seen.destination.checksum == checksum
    twice = ask(
        root, proto.PlaceArgs(path="raid1/07AQ01/a.fits", size=len(data), checksum=checksum)
    )
    assert (twice.placed, twice.already) == (True, True)
    # Other bytes already under that name are never replaced.
    other = f"xxh128:{'0' * 32}"
    clash = refused(
        root, proto.PlaceArgs(path="raid1/07AQ01/a.fits", size=len(data), checksum=other)
    )
    assert clash.code == ErrorCode.WRONG_STATE and "exists with other content" in clash.message
    assert (root / "raid1/07AQ01/a.fits").read_bytes() == data
    gone = refused(root, proto.PlaceArgs(path="raid1/07AQ01/b.fits", size=1, checksum=other))
    assert gone.code == ErrorCode.NOT_FOUND
