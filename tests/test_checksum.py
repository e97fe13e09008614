"""The one checksum of DataTransfer and ingestion."""

from __future__ import annotations

import io
from pathlib import Path

import xxhash

from spica_core.checksum import Hasher, file_checksum, is_checksum, stream_checksum


def test_file_stream_and_incremental_agree_with_xxh3(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000 + b"tail"
    path = tmp_path / "x.fits"
    path.write_bytes(data)
    expected = f"xxh128:{xxhash.xxh3_128_hexdigest(data)}"
    assert file_checksum(path, chunk=65_536) == (expected, len(data))
    assert stream_checksum(io.BytesIO(data)) == (expected, len(data))
    hasher = Hasher()
    for start in range(0, len(data), 999_983):
        hasher.update(memoryview(data)[start : start + 999_983])
    assert (hasher.value(), hasher.size) == (expected, len(data))
    assert is_checksum(expected)


def test_small_empty_and_partly_read_files_hash_what_is_left(tmp_path: Path) -> None:
    # The read buffer is sized to what is left of a file: below the chunk, nothing, and
    # from a position past the start all give the same value as hashing those bytes.
    data = bytes(range(256)) * 20 + b"end"
    for size in (0, 1, 3000, len(data)):
        path = tmp_path / f"f{size}"
        path.write_bytes(data[:size])
        assert file_checksum(path) == (f"xxh128:{xxhash.xxh3_128_hexdigest(data[:size])}", size)
    with open(tmp_path / f"f{len(data)}", "rb") as stream:
        stream.seek(1000)
        left = data[1000:]
        assert stream_checksum(stream) == (f"xxh128:{xxhash.xxh3_128_hexdigest(left)}", len(left))


def test_one_flipped_byte_changes_the_checksum(tmp_path: Path) -> None:
    data = bytearray(b"SIMPLE  =                    T" * 1000)
    before = stream_checksum(io.BytesIO(bytes(data)))[0]
    data[12_345] ^= 0x01
    assert stream_checksum(io.BytesIO(bytes(data)))[0] != before


def test_only_well_formed_values_are_checksums() -> None:
    assert not is_checksum("md5:" + "0" * 32)
    assert not is_checksum("xxh128:" + "0" * 31)
    assert not is_checksum("xxh128:" + "G" * 32)
