"""Where a stack unit's files live in its work directory: one name per file, one owner.

The generated lines (:mod:`spica_core.stacking.commands`), the preparation of the inputs,
the injection of artificial stars and the reading of the results all name files through
:class:`StackOutputs`, so ``commands.sh`` and its readers never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from spica_core.tool_files import MeasuredImageFiles

#: The suffixes of an input's files in ``inputs/``.
INPUT_IMAGE = ".fits"
INPUT_WEIGHT = ".weight.fits"
INPUT_FLAG = ".flag.fits"
INPUT_CATALOG = ".cat"
INPUT_AHEAD = ".ahead"
INPUT_HEAD = ".head"


@dataclass(frozen=True)
class StackOutputs(MeasuredImageFiles):
    """The files of stack ``stack`` in ``workdir`` (paths as on the node)."""

    workdir: Path
    stack: str

    # The inputs, one plain MEF each with its maps and catalogue side by side: SCAMP finds
    # ``<catalogue>.ahead`` and writes ``<catalogue>.head`` there, where SWarp then finds the
    # ``.head`` of each image.
    @property
    def inputs_dir(self) -> Path:
        return self.workdir / "inputs"

    @cached_property
    def _inputs_text(self) -> str:
        return str(self.inputs_dir)

    def input_text(self, image: str, suffix: str) -> str:
        """An input's file as text (``suffix`` one of ``INPUT_*``): a release's planning
        names hundreds of thousands of them, where a :class:`Path` each would cost seconds."""
        return f"{self._inputs_text}/{image}{suffix}"

    def input_image(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_IMAGE))

    def input_weight(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_WEIGHT))

    def input_flag(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_FLAG))

    def input_catalog(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_CATALOG))

    def input_ahead(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_AHEAD))

    def input_head(self, image: str) -> Path:
        return Path(self.input_text(image, INPUT_HEAD))

    # Lists handed to the tools as ``@file``.
    @property
    def scamp_list(self) -> Path:
        return self.workdir / "scamp.list"

    @property
    def swarp_list(self) -> Path:
        return self.workdir / "swarp.list"

    @property
    def scamp_xml(self) -> Path:
        return self.workdir / "scamp.xml"

    @property
    def swarp_xml(self) -> Path:
        return self.workdir / "swarp.xml"

    @property
    def resample_dir(self) -> Path:
        return self.workdir / "resample"

    def _file(self, suffix: str) -> Path:
        return self.workdir / f"{self.stack}{suffix}"

    @property
    def coadd(self) -> Path:
        return self._file(".fits")

    @property
    def coadd_weight(self) -> Path:
        return self._file(".weight.fits")

    # Completeness: a copy of the co-add with artificial stars, what was injected, and
    # source-extractor's catalogue of the copy.
    @property
    def inject_image(self) -> Path:
        return self._file(".inject.fits")

    @property
    def inject_truth(self) -> Path:
        return self._file(".inject.truth.fits")

    @property
    def inject_catalog(self) -> Path:
        return self._file(".inject.cat")

    @property
    def thumbnail(self) -> Path:
        """STIFF's picture of the co-add (TIFF)."""
        return self._file(".tif")

    @property
    def result(self) -> Path:
        """The results as recorded (JSON), written last: its presence means done."""
        return self._file(".result.json")
