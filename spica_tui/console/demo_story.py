"""The console ``spica demo`` opens: the operations console, telling the story's news.

The story driver (:mod:`spica_core.demo.story`) writes its progress to ``story.json``; this
console reads it every few seconds and says, once each, that an exposure was corrupted (and
which stack will fail) and that the first co-add completed, with its seconds from the cold
start. Everything else is the ordinary console.
"""

from __future__ import annotations

from textual.notifications import SeverityLevel

from spica_core.config import SpicaConfig
from spica_core.demo.layout import DemoPaths
from spica_core.demo.story import StoryState, read_story
from spica_tui.console.app import SpicaConsole
from spica_tui.console.refresh import ConsoleBackend

#: Seconds between two reads of ``story.json``.
STORY_INTERVAL = 2.0


class DemoConsole(SpicaConsole):
    def __init__(
        self,
        config: SpicaConfig,
        backend: ConsoleBackend,
        *,
        paths: DemoPaths,
        operator: str | None = None,
    ) -> None:
        super().__init__(config, backend, operator=operator)
        self.paths = paths
        self._told: set[str] = set()

    def on_mount(self) -> None:
        # Textual calls SpicaConsole.on_mount too (handlers run along the MRO).
        self._story_tick()
        self.set_interval(STORY_INTERVAL, self._story_tick, name="spica-demo-story")

    def _story_tick(self) -> None:
        story = read_story(self.paths)
        if story is not None:
            for key, message, severity in story_news(story):
                if key not in self._told:
                    self._told.add(key)
                    self.notify(message, title="Demo", severity=severity, timeout=30)


def story_news(story: StoryState) -> list[tuple[str, str, SeverityLevel]]:
    """``(key, message, severity)`` of what the story has to say now."""
    news: list[tuple[str, str, SeverityLevel]] = []
    if story.corrupt is not None:
        c = story.corrupt
        news.append(
            (
                "corrupt",
                f"{c.image} was corrupted on {c.node}: stack {c.stack} will fail at its "
                "prepare line (README: fix and requeue the failing co-add)",
                "warning",
            )
        )
    if story.first_coadd is not None:
        f = story.first_coadd
        news.append(
            (
                "first",
                f"first co-add completed: {f.stack} on {f.node}, {f.seconds:.0f} s after "
                "the cold start",
                "information",
            )
        )
    if story.error:
        news.append(("error", f"story: {story.error} (logs/story.log)", "error"))
    return news
