"""A stacking release is frozen once it has stacks: its settings may not change under them.

The settings are what decides a release's co-adds: its mode, rules and tile grid, the bytes
of its tools' configuration files and the checksum of its reference catalogue (a unit's
priority is scheduling, not content, and is left out). Their digest is written to
``stack_release`` by the first ``spica auto`` that adds units (never by ``--dry-run``). A
later plan whose settings differ is refused while the release has stacks (exit 2, naming
each setting changed): a release is one set of rules, and its stacks must say so. With no
stack left (all removed) the release is frozen afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.config import SpicaConfig, StackReleaseConfig
from spica_core.db.models import Stack, StackRelease
from spica_core.db.types import utcnow
from spica_core.errors import ConfigError
from spica_core.resources import astromatic_dir
from spica_core.stacking.unit import IMAGE_STEP, STACK_STEP


class ReleaseFrozen(ConfigError):
    """The release's settings changed while it has stacks (exit 2)."""

    def __init__(self, release: str, stacks: int, changed: list[str]) -> None:
        self.release = release
        self.changed = changed
        shown = ", ".join(changed[:12]) + (" …" if len(changed) > 12 else "")
        super().__init__(
            f"release {release} is frozen ({stacks} stack(s) made with its settings) and its "
            f"configuration changed: {shown}. Make a new release, or remove its stacks first"
        )


def tool_config_dir(release: StackReleaseConfig) -> Path:
    """The release's tools' configuration directory (default: this installation's)."""
    return Path(release.tool_config) if release.tool_config else astromatic_dir()


def _tool_files(release: StackReleaseConfig) -> dict[str, str]:
    """Checksum of each configuration file: all of a release's own directory; of this
    installation's, those the stack lines read."""
    from spica_core.checksum import file_checksum
    from spica_core.stacking.commands import CONFIG_FILES

    directory = tool_config_dir(release)
    if not directory.is_dir():
        raise ConfigError(f"release {release.name}: tool_config {directory} is not a directory")
    files: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if release.tool_config is None and path.name not in CONFIG_FILES:
            continue
        files[path.name] = file_checksum(path)[0]
    return files


@dataclass(frozen=True)
class ReleaseSettings:
    name: str
    settings: dict[str, Any]
    digest: str


def release_settings(
    config: SpicaConfig, release: StackReleaseConfig, refcat_checksum: str | None
) -> ReleaseSettings:
    """What freezes ``release``, and its digest (sha256 of the settings as sorted JSON)."""
    settings: dict[str, Any] = {
        "mode": release.mode,
        "grid": config.grid(release.grid).model_dump(mode="json"),
        "rules": release.rules.model_dump(mode="json"),
        "tool_config": _tool_files(release),
        "reference_catalogue": refcat_checksum,
    }
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return ReleaseSettings(release.name, settings, hashlib.sha256(text.encode()).hexdigest())


def changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between ``old`` and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def release_stacks(session: Session, release: str) -> int:
    """How many stacks (co-adds or image units) the release has."""
    count = session.scalar(
        select(func.count(Stack.id)).where(
            Stack.release == release, Stack.step.in_((STACK_STEP, IMAGE_STEP))
        )
    )
    return int(count or 0)


def check_frozen(session: Session, settings: ReleaseSettings) -> bool:
    """Whether the release is frozen with these very settings; ReleaseFrozen when it is
    frozen with others and has stacks."""
    row = session.scalar(select(StackRelease).where(StackRelease.name == settings.name))
    if row is None:
        return False
    if row.digest == settings.digest:
        return True
    stacks = release_stacks(session, settings.name)
    if stacks:
        raise ReleaseFrozen(settings.name, stacks, changes(row.settings, settings.settings))
    return False


def freeze(session: Session, settings: ReleaseSettings, by: str | None) -> None:
    """Record the release's settings (a row made, or replaced when it has no stack)."""
    row = session.scalar(select(StackRelease).where(StackRelease.name == settings.name))
    if row is None:
        session.add(
            StackRelease(
                name=settings.name,
                digest=settings.digest,
                settings=settings.settings,
                frozen_by=by,
            )
        )
    elif row.digest != settings.digest:
        row.digest = settings.digest
        row.settings = settings.settings
        row.frozen_at = utcnow()
        row.frozen_by = by
