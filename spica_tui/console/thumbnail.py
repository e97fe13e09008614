"""A stack's thumbnail (STIFF's TIFF) drawn in the terminal.

Half-block cells (two pixels a cell, one colour above the other) work in every terminal, in
tmux and in the browser; where the terminal answers that it speaks a graphics protocol
(Sixel, Kitty's), the picture is drawn with it instead. ``textual-image`` asks the terminal
when it is imported, which must happen before Textual owns the terminal, and waits up to
0.1 s for each of its two questions (a terminal that speaks neither never answers the
second): :mod:`spica_tui.console.terminal_probe` imports it on a thread while the console
loads the rest. This module imports it only where a picture is drawn, by then loaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from spica_core.console_thumbnail import Thumbnail
from spica_core.text import printable

if TYPE_CHECKING:
    from PIL.Image import Image as Picture

Mode = Literal["auto", "halfcell"]
#: Pixels of the longest side kept: a terminal shows far fewer.
MAX_PIXELS = 512
#: Width of the picture in cells.
WIDTH_CELLS = 48


def graphics_protocol() -> bool:
    """Whether this terminal answered that it draws Sixel or Kitty graphics."""
    from textual_image import renderable

    return renderable.Image in (renderable.SixelImage, renderable.TGPImage)


def decode(data: bytes) -> Picture:
    """The TIFF as an RGB picture at most :data:`MAX_PIXELS` a side (ValueError if it is
    not a picture Pillow reads)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            picture = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a picture: {exc}") from None
    picture.thumbnail((MAX_PIXELS, MAX_PIXELS))
    return picture


class ThumbnailView(Vertical):
    """The picture, or why there is none (no thumbnail yet, the node's error)."""

    DEFAULT_CSS = """
    ThumbnailView { height: auto; width: auto; }
    ThumbnailView #thumb-caption { color: $text-muted; }
    """

    def __init__(self, *, mode: Mode = "auto", id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode: Mode = mode
        self.thumbnail: Thumbnail | None = None
        self._picture: Widget | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("no thumbnail yet", "dim"), id="thumb-caption")

    def _image_class(self) -> Callable[..., Widget]:
        from textual_image.widget import HalfcellImage
        from textual_image.widget import Image as GraphicsImage

        if self.mode == "auto" and graphics_protocol():
            return GraphicsImage
        return HalfcellImage

    async def show(self, thumbnail: Thumbnail) -> None:
        """Draw ``thumbnail`` (or its error in place of the picture)."""
        self.thumbnail = thumbnail
        caption = self.query_one("#thumb-caption", Static)
        picture: Picture | None = None
        error = thumbnail.error
        if thumbnail.data is not None:
            try:
                picture = decode(thumbnail.data)
            except ValueError as exc:
                error = f"{thumbnail.path}: {exc}"
        if self._picture is not None:
            await self._picture.remove()
            self._picture = None
        if picture is None:
            caption.update(Text(printable(error or "no thumbnail", lines=True), "yellow"))
            return
        caption.update(Text(printable(f"{thumbnail.path} ({thumbnail.node or 'here'})")))
        widget = self._image_class()(picture, classes="thumb-picture")
        # Both sides fixed: the image widget sizes an ``auto`` side from its own width before
        # it has one. A cell is about twice as tall as wide.
        widget.styles.width = WIDTH_CELLS
        widget.styles.height = max(1, round(WIDTH_CELLS * picture.height / picture.width / 2))
        self._picture = widget
        await self.mount(widget)
