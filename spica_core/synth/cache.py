"""Rendered synthetic exposures kept in a directory, so that a test suite or a benchmark that
seeds the same demo repository many times draws each exposure once.

Drawing an exposure of the synthetic sky costs a third of a second of CPU per exposure
(rendering, Rice compression, astropy's header handling); the bytes depend only on the
:class:`~spica_core.synth.layout.ExposureSpec`, the container, the
:class:`~spica_core.synth.sky.SkyModel`, the sources of :mod:`spica_core.synth` and the
versions of numpy and astropy, so an entry is keyed by all of them. The cache is used only
when ``$SPICA_SYNTH_CACHE`` names a directory (``./run tests`` sets it to ``spica/synth`` in
the user's cache directory, so that every checkout on the machine, a fresh clone included,
shares it); deleting that directory, whole or in part, is always safe.

Layout: ``<cache>/<sources digest>/<key>/{image,truth}``. An entry is written in a private
temporary directory and renamed into place in one step, so two processes (pytest-xdist
workers) never see half of one; the loser of a race drops its copy. Files are copied out,
never linked: a test may corrupt the exposure it was given without touching the cache.
Each process marks its own sources' directory as used; directories of other sources digests
not used for a day (another checkout's, or older sources') are removed on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from spica_core.synth.layout import ExposureSpec
from spica_core.synth.sky import SkyModel

ENV = "SPICA_SYNTH_CACHE"
#: Seconds after its last use that another sources digest's directory is removed.
STALE_AFTER = 24 * 3600
IMAGE, TRUTH = "image", "truth"
_DIGEST = re.compile(r"[0-9a-f]{20}")


@lru_cache(maxsize=1)
def sources_digest() -> str:
    """What else decides the bytes: this package's sources and the numeric libraries."""
    import astropy
    import numpy

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"numpy {numpy.__version__} astropy {astropy.__version__}".encode())
    return digest.hexdigest()[:20]


def entry_key(spec: ExposureSpec, container: str, sky: SkyModel) -> str | None:
    """The entry's name; None when a part has no stable text (an object's address)."""
    text = repr((spec, container, sky))
    if " at 0x" in text:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class SynthCache:
    """One cache directory (see the module's docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = root / sources_digest()

    @classmethod
    def from_env(cls) -> SynthCache | None:
        """The cache ``$SPICA_SYNTH_CACHE`` names, or None when unset or empty."""
        value = os.environ.get(ENV, "").strip()
        if not value:
            return None
        cache = cls(Path(value).expanduser())
        _drop_stale(cache.root, cache.generation.name)
        return cache

    def restore(self, key: str, targets: dict[str, Path]) -> bool:
        """Copy the entry's files (by part name) to ``targets``; False when there is none."""
        entry = self.generation / key
        if not all((entry / part).is_file() for part in targets):
            return False
        try:
            for part, target in targets.items():
                _copy_atomically(entry / part, target)
        except FileNotFoundError:  # the cache was deleted meanwhile: render instead
            return False
        return True

    def store(self, key: str, sources: dict[str, Path]) -> None:
        """Keep copies of ``sources`` (by part name) as entry ``key``; a cache that cannot
        be written is no error: the files were rendered all the same."""
        entry = self.generation / key
        if entry.is_dir():
            return
        try:
            self.generation.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.generation))
        except OSError:
            return
        try:
            for part, source in sources.items():
                shutil.copyfile(source, staging / part)
            staging.rename(entry)
        except OSError:  # another process stored it first, or the disk is full
            shutil.rmtree(staging, ignore_errors=True)


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, name)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=4)
def _drop_stale(root: Path, generation: str) -> None:
    """Mark these sources' entries as used; remove those of other sources not used for
    :data:`STALE_AFTER` (once per process). Only directories named as a digest, whatever
    else the directory holds."""
    if not root.is_dir():
        return
    with contextlib.suppress(OSError):
        os.utime(root / generation)
    now = time.time()
    for child in root.iterdir():
        if child.name == generation or _DIGEST.fullmatch(child.name) is None:
            continue
        with contextlib.suppress(OSError):
            if child.is_dir() and now - child.stat().st_mtime > STALE_AFTER:
                shutil.rmtree(child, ignore_errors=True)
