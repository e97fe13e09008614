"""A FITS file's structure from its headers alone: one pass, pixels skipped, checksum taken.

Ingestion needs the primary header, the first extension's header, the number of extensions,
the size and the checksum, for files of hundreds of megabytes. This module reads the file
once: every byte goes through the checksum (``spica_core.checksum``), gzip is inflated as a
stream, headers are cut at their ``END`` card, and each HDU's data is skipped by the size its
mandatory keywords give (FITS 4.0 §4.4.1). Nothing here imports astropy, so the node agent
can answer the same question about its files cheaply; the values of the kept headers are
parsed by :mod:`spica_core.ingest.record`.

A file that is empty, not FITS, cut short (in a header, in a data unit, or in its gzip
stream) or followed by junk raises :class:`FitsFormatError` with the reason.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from spica_core.checksum import CHUNK, Hasher

BLOCK = 2880
CARD = 80
_END = b"END" + b" " * 77
_GZIP_MAGIC = b"\x1f\x8b"
#: Largest piece inflated at once, so a small gzip of zeros cannot fill the memory.
_INFLATE_LIMIT = 4 * CHUNK


#: Suffixes of the files ingestion takes, longest first; the filename is the name without it.
SUFFIXES = (".fits.gz", ".fits.fz", ".fits")


def image_filename(name: str) -> str | None:
    """``811001p`` for ``811001p.fits.gz``; None when the name has no FITS suffix."""
    for suffix in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


class FitsFormatError(ValueError):
    """The file is not a complete FITS file; the message says why and where."""


@dataclass(frozen=True)
class ScannedFits:
    """What one pass over a FITS file found (headers as their 80-column card text)."""

    primary: str
    #: The first extension's header; None for a single-HDU file.
    first_extension: str | None
    extensions: int
    size: int
    checksum: str
    compressed: bool


class _Bytes:
    """The file's (inflated) bytes as a stream one can take from or skip over.

    Every raw byte read is fed to the checksum, whether or not its content is needed.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0

    def _pull(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buffer = self._buffer[self._pos :] + chunk
                self._pos = 0
                return True
        return False

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end)."""
        while len(self._buffer) - self._pos < n and self._pull():
            pass
        out = self._buffer[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns how many there were."""
        skipped = 0
        while True:
            available = len(self._buffer) - self._pos
            if available >= n - skipped:
                self._pos += n - skipped
                return n
            skipped += available
            self._buffer, self._pos = b"", 0
            if not self._pull():
                return skipped

    def rest_is_blank(self) -> bool:
        """Whether everything left is NUL padding (some writers pad the last block)."""
        while True:
            if self._buffer[self._pos :].strip(b"\0"):
                return False
            self._buffer, self._pos = b"", 0
            if not self._pull():
                return True


def _raw_chunks(stream: BinaryIO, hasher: Hasher) -> Iterator[bytes]:
    read = stream.read
    while block := read(CHUNK):
        hasher.update(block)
        yield block


def _inflated(raw: Iterator[bytes]) -> Iterator[bytes]:
    """gzip members inflated in turn, in bounded pieces; a cut stream raises FitsFormatError."""
    inflater = zlib.decompressobj(wbits=31)
    started = False  # whether the current member has been fed anything
    for chunk in raw:
        data = chunk
        while data:
            started = True
            try:
                out = inflater.decompress(data, _INFLATE_LIMIT)
            except zlib.error as exc:
                raise FitsFormatError(f"corrupt gzip stream ({exc})") from None
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                started = False
            else:
                data = inflater.unconsumed_tail
    if started:
        raise FitsFormatError("truncated: the gzip stream ends before its end marker")


def _card_value(card: bytes) -> bytes:
    """A mandatory keyword's value (fixed format, but tolerate free format)."""
    if card[8:10] != b"= ":
        return b""
    return card[10:].split(b"/", 1)[0].strip()


def _int_card(header: bytes, index: int, keyword: bytes, hdu: int) -> int:
    card = header[index * CARD : (index + 1) * CARD]
    if card[:8].rstrip() != keyword:
        found = card[:8].rstrip().decode("ascii", "replace") or "a blank card"
        raise FitsFormatError(
            f"HDU {hdu}: card {index + 1} is {found}, where FITS requires {keyword.decode()}"
        )
    try:
        return int(_card_value(card))
    except ValueError:
        raise FitsFormatError(
            f"HDU {hdu}: {keyword.decode()} is not an integer: {_card_value(card)!r}"
        ) from None


def _data_size(header: bytes, hdu: int) -> int:
    """Bytes of the HDU's data (padding included), from its mandatory keywords."""
    bitpix = _int_card(header, 1, b"BITPIX", hdu)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise FitsFormatError(f"HDU {hdu}: BITPIX = {bitpix} is not a FITS value")
    naxis = _int_card(header, 2, b"NAXIS", hdu)
    if not 0 <= naxis <= 999:
        raise FitsFormatError(f"HDU {hdu}: NAXIS = {naxis} is out of range")
    if naxis == 0:
        return 0
    axes = [_int_card(header, 3 + i, f"NAXIS{i + 1}".encode(), hdu) for i in range(naxis)]
    if any(n < 0 for n in axes):
        raise FitsFormatError(f"HDU {hdu}: a NAXISn is negative")
    pcount, gcount = 0, 1
    if hdu > 0:
        pcount = _int_card(header, 3 + naxis, b"PCOUNT", hdu)
        gcount = _int_card(header, 4 + naxis, b"GCOUNT", hdu)
    elif axes[0] == 0:  # random groups: NAXIS1 = 0 and the groups follow
        pcount = _keyword_int(header, b"PCOUNT")
        gcount = _keyword_int(header, b"GCOUNT", 1)
        axes = axes[1:]
    elements = 1
    for n in axes:
        elements *= n
    size = abs(bitpix) // 8 * gcount * (pcount + elements)
    return -(-size // BLOCK) * BLOCK


def _keyword_int(header: bytes, keyword: bytes, default: int = 0) -> int:
    for i in range(0, len(header), CARD):
        if header[i : i + 8].rstrip() == keyword:
            try:
                return int(_card_value(header[i : i + CARD]))
            except ValueError:
                break
    return default


def _header_from(stream: _Bytes, first: bytes, hdu: int) -> bytes:
    """The HDU's header from its first block up to the block holding its END card."""
    blocks = [first]
    block = first
    while True:
        if len(block) < BLOCK:
            raise FitsFormatError(f"truncated: the file ends inside the header of HDU {hdu}")
        at = block.find(_END)
        while at != -1 and at % CARD:
            at = block.find(_END, at + 1)
        if at != -1:
            return b"".join(blocks)
        block = stream.take(BLOCK)
        blocks.append(block)


def _next_extension(stream: _Bytes, hdu: int) -> bytes | None:
    """The next extension's header; None at the end of the file (or of its NUL padding)."""
    first = stream.take(BLOCK)
    if not first.strip(b"\0") and stream.rest_is_blank():
        return None
    if not first.startswith(b"XTENSION="):
        raise FitsFormatError(f"junk after HDU {hdu - 1}: not a FITS extension")
    return _header_from(stream, first, hdu)


def _text(header: bytes, hdu: int) -> str:
    try:
        return header.decode("ascii")
    except UnicodeDecodeError:
        raise FitsFormatError(f"HDU {hdu}: the header is not ASCII text") from None


def scan_stream(stream: BinaryIO) -> ScannedFits:
    """Scan an open binary stream from its start to its end."""
    hasher = Hasher()
    raw = _raw_chunks(stream, hasher)
    head = next(raw, b"")
    if not head:
        raise FitsFormatError("empty file")
    compressed = head.startswith(_GZIP_MAGIC)
    chunks = itertools.chain((head,), raw)
    data = _Bytes(_inflated(chunks) if compressed else chunks)
    first = data.take(BLOCK)
    if not first.startswith(b"SIMPLE  =") or _card_value(first[:CARD]) != b"T":
        what = "gzip data" if compressed else "the file"
        raise FitsFormatError(f"not FITS: {what} does not start with SIMPLE = T")
    primary = _header_from(data, first, 0)
    first_extension: bytes | None = None
    header: bytes | None = primary
    hdu = 0
    while header is not None:
        size = _data_size(header, hdu)
        if data.skip(size) < size:
            raise FitsFormatError(f"truncated: the file ends inside the data of HDU {hdu}")
        hdu += 1
        header = _next_extension(data, hdu)
        if hdu == 1:
            first_extension = header
    return ScannedFits(
        primary=_text(primary, 0),
        first_extension=None if first_extension is None else _text(first_extension, 1),
        extensions=hdu - 1,
        size=hasher.size,
        checksum=hasher.value(),
        compressed=compressed,
    )


def scan_file(path: str | os.PathLike[str]) -> ScannedFits:
    """Scan the file at ``path`` (plain or gzipped FITS; ``.fz`` is plain FITS)."""
    with open(path, "rb") as stream:
        return scan_stream(stream)
