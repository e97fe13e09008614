"""``read_small``: how every agent and daemon reads a record, ``progress`` or ``attempt``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spica_core.node.files import MAX_RECORD_BYTES, read_small

LIMIT = 100


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3 * LIMIT))
def test_a_file_up_to_the_limit_is_read_whole_and_a_larger_one_refused(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("small") / "record"
    path.write_bytes(data)
    if len(data) <= LIMIT:
        assert read_small(path, LIMIT) == data
    else:
        with pytest.raises(ValueError, match=f"over {LIMIT} bytes"):
            read_small(path, LIMIT)


def test_the_default_limit_is_the_record_limit(tmp_path: Path) -> None:
    path = tmp_path / "record"
    path.write_bytes(b"x" * MAX_RECORD_BYTES)
    assert len(read_small(path)) == MAX_RECORD_BYTES
    path.write_bytes(b"x" * (MAX_RECORD_BYTES + 1))
    with pytest.raises(ValueError, match=f"over {MAX_RECORD_BYTES} bytes"):
        read_small(path)


def test_what_is_not_a_small_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_small(tmp_path / "absent")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang here
    with pytest.raises(ValueError, match="not a regular file"):
        read_small(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_small(tmp_path)
    target = tmp_path / "target"
    target.write_bytes(b"1\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError) as info:
        read_small(link)
    assert info.value.errno == errno.ELOOP


def test_descriptors_are_closed_whatever_the_outcome(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (LIMIT + 1))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(ValueError):
            read_small(big, LIMIT)
        with pytest.raises(ValueError):
            read_small(fifo)
    assert len(os.listdir("/proc/self/fd")) == before
