"""A NodeLayout for one request: the root, ``queue/`` and ``stacks/`` resolved once.

A ``moves`` request of hundreds of stacks resolves the same few directories for each stack
(a dozen paths each, every component checked with an lstat): the agent's dry run of a bulk
plan spent most of its time there. :class:`BatchLayout` resolves those directories when the
request starts and checks only the stack's own components below them, with the same rule
(:func:`~spica_core.node.layout.resolve_inside`): a symlink among them, or anything unusual,
takes the full resolution. A directory re-pointed during the request is seen at the next one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spica_core.names import validate_name
from spica_core.node.layout import (
    ATTEMPT_FILE,
    PROGRESS_FILE,
    QUEUE_DIR,
    STACKS_DIR,
    NodeLayout,
    _realpath_under,
)
from spica_core.states import SUFFIX, StackState


@dataclass(frozen=True)
class BatchLayout(NodeLayout):
    """:class:`NodeLayout` with the root's real path and its ``queue/`` and ``stacks/``
    directories resolved at construction (build one per request)."""

    _real: str = field(init=False, repr=False, compare=False)
    _queue: str = field(init=False, repr=False, compare=False)
    _stacks: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_real", os.path.realpath(self.root))
        object.__setattr__(self, "_queue", os.fspath(super().resolve(QUEUE_DIR)))
        object.__setattr__(self, "_stacks", os.fspath(super().resolve(STACKS_DIR)))

    def queue_dir(self) -> Path:
        return Path(self._queue)

    def queue_file(self, stack: str, state: StackState) -> Path:
        name = f"{validate_name(stack)}.{SUFFIX[state]}"
        path = self._below(self._queue, name)
        return path if path is not None else super().queue_file(stack, state)

    def queue_files(
        self, stack: str, states: Sequence[StackState]
    ) -> list[tuple[StackState, Path]]:
        """The stack's queue files of ``states`` that exist, in that order: what
        ``queue_file(stack, state).exists()`` of each says, one lstat each."""
        validate_name(stack)
        found: list[tuple[StackState, Path]] = []
        for state in states:
            path = os.path.join(self._queue, f"{stack}.{SUFFIX[state]}")
            try:
                plain = not stat.S_ISLNK(os.lstat(path).st_mode)
            except FileNotFoundError:
                continue
            except OSError:
                plain = False
            if plain:
                found.append((state, Path(path)))
            elif (full := super().queue_file(stack, state)).exists():
                found.append((state, full))
        return found

    def stack_dir(self, stack: str) -> Path:
        path = self._below(self._stacks, validate_name(stack))
        return path if path is not None else super().stack_dir(stack)

    def progress_file(self, stack: str) -> Path:
        path = self._below(self._stacks, validate_name(stack), PROGRESS_FILE)
        return path if path is not None else super().progress_file(stack)

    def attempt_file(self, stack: str) -> Path:
        path = self._below(self._stacks, validate_name(stack), ATTEMPT_FILE)
        return path if path is not None else super().attempt_file(stack)

    def _below(self, directory: str, *components: str) -> Path | None:
        """``directory/components…`` resolved as :func:`~spica_core.node.layout.resolve_inside`
        does below a resolved directory and checked names; None when it leads out of the
        root (the full resolution then refuses it, saying why)."""
        real = _realpath_under(directory, list(components))
        return Path(real) if real.startswith(self._real + "/") else None

    def relative(self, path: Path) -> str:
        text = os.fspath(path)
        if text.startswith(self._real + "/"):
            return text[len(self._real) + 1 :]
        return super().relative(path)
