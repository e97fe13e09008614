"""The one registry of the console's named actions.

Every key the console answers to is a :class:`ConsoleAction` here. From this table come the
``BINDINGS`` of the app and its screens (each binding's ``id`` is the action's name, so
``[console].keys`` in the configuration remaps it through Textual's keymap), the help
screen, and the command palette's :class:`SpicaCommands` provider. An action marked
``dangerous`` changes the cluster (stacks on the nodes, transfers, an image's grade): it is
not offered in ``--read-only`` mode, nor for a stack whose node is unreachable (each
screen's ``check_action`` asks :func:`allowed`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Literal

from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider

from spica_core.states import Actor, StackState, allowed_from

if TYPE_CHECKING:
    from textual.app import App

Scope = Literal["app", "dashboard", "detail", "transfer", "qfin", "compare", "mining"]


@dataclass(frozen=True)
class ConsoleAction:
    #: The keymap name (``[console].keys``) and binding id.
    name: str
    #: Default key(s), in Textual's key syntax (``r``, ``ctrl+r``, ``question_mark``).
    key: str
    #: Short label: footer and palette.
    label: str
    #: One line for the help screen and the palette.
    help: str
    #: Where it is bound: the whole app, the dashboard, the stack detail.
    scopes: tuple[Scope, ...]
    #: The Textual action it runs (defaults to the name).
    action: str = ""
    dangerous: bool = False
    #: Shown in the footer.
    footer: bool = True

    @property
    def textual_action(self) -> str:
        return self.action or self.name


ACTIONS: tuple[ConsoleAction, ...] = (
    # Everywhere.
    ConsoleAction("help", "question_mark", "Keys", "Show this key map", ("app",)),
    ConsoleAction(
        "refresh", "ctrl+r", "Refresh", "Poll the nodes and dbspica now", ("app",), footer=False
    ),
    ConsoleAction(
        "palette",
        "ctrl+p",
        "Palette",
        "Search and run any action",
        ("app",),
        action="command_palette",
        footer=False,
    ),
    ConsoleAction("quit", "q", "Quit", "Leave the console (nothing keeps running)", ("app",)),
    ConsoleAction(
        "datatransfer",
        "d",
        "DataTransfer",
        "Open DataTransfer: disks, runids waiting, distribution, transfers in progress",
        ("app",),
        footer=False,
    ),
    ConsoleAction(
        "qfin",
        "f",
        "QFin",
        "Open QFin: per runid images received, with problems, QF done and in progress; "
        "breakdowns; search over the measured fields; grades",
        ("app",),
        footer=False,
    ),
    ConsoleAction(
        "compare",
        "v",
        "Compare",
        "Open the release comparison: two releases' stacks tile by tile (SCAMP and SWarp "
        "files, exposure, seeing, completeness, astrometric RMS, background) and the change",
        ("app",),
        footer=False,
    ),
    ConsoleAction(
        "mining",
        "m",
        "Data mining",
        "Open data mining: seeing per filter, completeness against seeing, time per step and "
        "per node",
        ("app",),
        footer=False,
    ),
    # The stacks table.
    ConsoleAction(
        "filter",
        "slash",
        "Filter",
        "Filter the stacks: text, or a regex (RE2 syntax) if it has ^$*?()[]{}|\\ (name, node, "
        "runid, filter, error); enter keeps it, escape clears it",
        ("dashboard",),
    ),
    ConsoleAction(
        "mark",
        "space",
        "Mark",
        "Mark or unmark the selected stack; actions apply to marks",
        ("dashboard",),
    ),
    ConsoleAction("clear_marks", "c", "Unmark", "Clear every mark", ("dashboard",), footer=False),
    ConsoleAction("detail", "enter", "Detail", "Open the selected stack", ("dashboard",)),
    ConsoleAction(
        "view_all",
        "0",
        "All",
        "Show stacks in every state",
        ("dashboard",),
        "view('')",
        footer=False,
    ),
    ConsoleAction(
        "view_pending",
        "1",
        "Pending",
        "Show pending stacks",
        ("dashboard",),
        "view('pending')",
        footer=False,
    ),
    ConsoleAction(
        "view_running",
        "2",
        "Running",
        "Show running stacks",
        ("dashboard",),
        "view('running')",
        footer=False,
    ),
    ConsoleAction(
        "view_completed",
        "3",
        "Completed",
        "Show completed stacks",
        ("dashboard",),
        "view('completed')",
        footer=False,
    ),
    ConsoleAction(
        "view_failed",
        "4",
        "Failed",
        "Show failed stacks",
        ("dashboard",),
        "view('failed')",
        footer=False,
    ),
    ConsoleAction(
        "view_planned",
        "5",
        "Planned",
        "Show planned stacks (not launched yet)",
        ("dashboard",),
        "view('planned')",
        footer=False,
    ),
    ConsoleAction(
        "zoom", "z", "Zoom", "Give the focused panel the whole screen, or restore", ("dashboard",)
    ),
    # The stack detail.
    ConsoleAction(
        "back",
        "escape",
        "Back",
        "Back to the dashboard",
        ("detail", "transfer", "qfin", "compare", "mining"),
    ),
    ConsoleAction(
        "swap_releases",
        "s",
        "Swap",
        "Swap the two releases compared",
        ("compare",),
    ),
    ConsoleAction(
        "reload_log", "t", "Log tail", "Fetch the log tail from the node again", ("detail",)
    ),
    # Operator actions: the operations API plans, a modal shows the plan, then it applies.
    ConsoleAction(
        "launch",
        "l",
        "Launch",
        "Launch planned stacks (planned -> pending)",
        ("dashboard", "detail"),
        dangerous=True,
    ),
    ConsoleAction(
        "requeue",
        "r",
        "Requeue",
        "Requeue failed stacks; they resume at the failed line",
        ("dashboard", "detail"),
        dangerous=True,
    ),
    ConsoleAction(
        "unlock",
        "u",
        "Unlock",
        "Unlock stale running stacks (their daemon or pid is dead) to failed",
        ("dashboard", "detail"),
        dangerous=True,
    ),
    ConsoleAction(
        "remove",
        "ctrl+d",
        "Remove",
        "Remove stacks: dbspica rows, queue file, commands, logs and outputs",
        ("dashboard", "detail"),
        dangerous=True,
    ),
    # DataTransfer: the core plans (dry run), a modal shows the plan, then it copies.
    ConsoleAction(
        "transfer_now",
        "n",
        "Transfer now",
        "Transfer the selected waiting runid now (immediate): plan shown, then copied",
        ("transfer",),
        dangerous=True,
    ),
    # QFin: the search's images are marked, graded, and their unit's log read.
    ConsoleAction(
        "mark_image",
        "space",
        "Mark",
        "Mark or unmark the selected image of the search; grading applies to marks",
        ("qfin",),
    ),
    ConsoleAction(
        "unit_log",
        "t",
        "Unit log",
        "Open the QFin unit of the selected image (or unit running): commands and log tail",
        ("qfin",),
    ),
    ConsoleAction(
        "grade",
        "g",
        "Grade",
        "Grade the marked (or selected) images A-D with a comment from the list or your own",
        ("qfin",),
        dangerous=True,
    ),
)

BY_NAME: dict[str, ConsoleAction] = {a.name: a for a in ACTIONS}
#: Textual action name -> registry entry (e.g. "command_palette" -> palette).
BY_TEXTUAL: dict[str, ConsoleAction] = {a.textual_action.split("(")[0]: a for a in ACTIONS}
DANGEROUS: frozenset[str] = frozenset(a.name for a in ACTIONS if a.dangerous)


def bindings(scope: Scope) -> list[BindingType]:
    """The ``BINDINGS`` of one scope, generated from the registry."""
    return [
        Binding(
            a.key,
            a.textual_action,
            a.label,
            show=a.footer,
            id=a.name,
        )
        for a in ACTIONS
        if scope in a.scopes
    ]


def keymap(remapped: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The Textual keymap for ``[console].keys`` and the names it does not know."""
    unknown = sorted(name for name in remapped if name not in BY_NAME)
    return {name: key for name, key in remapped.items() if name in BY_NAME}, unknown


def effective_key(action: ConsoleAction, remapped: Mapping[str, str]) -> str:
    return remapped.get(action.name, action.key)


def display_key(key: str) -> str:
    """``question_mark`` -> ``?``, ``ctrl+r`` -> ``ctrl+r``: keys as the operator types them."""
    names = {
        "question_mark": "?",
        "slash": "/",
        "space": "space",
        "enter": "enter",
        "escape": "esc",
    }
    return ", ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def allowed(
    action: str, *, read_only: bool, reachable: bool = True, state: str | None = None
) -> bool:
    """Whether an action is offered: dangerous ones need write access and a reachable node,
    and, for one stack in a known ``state``, a move of the state machine from there.

    ``action`` is a registry name or a Textual action name.
    """
    entry = BY_NAME.get(action) or BY_TEXTUAL.get(action)
    if entry is None or not entry.dangerous:
        return True
    if read_only or not reachable:
        return False
    return state is None or applicable(entry.name, state)


def applicable(action: str, state: str) -> bool:
    """The state machine's answer: has an operator ``action`` a move from ``state``?"""
    try:
        moves = allowed_from(StackState(state), Actor.OPERATOR)
    except ValueError:
        return True  # a state this console does not know: let the core decide
    return any(t.action.value == action for t in moves)


def scoped(scope: Scope, *, read_only: bool) -> Iterable[ConsoleAction]:
    """The actions of a scope as the help screen and the palette list them."""
    for a in ACTIONS:
        if (scope in a.scopes or "app" in a.scopes) and allowed(a.name, read_only=read_only):
            yield a


class SpicaCommands(Provider):
    """The command palette's view of the registry: the current screen's actions."""

    def _candidates(self) -> list[tuple[ConsoleAction, str]]:
        app: App[object] = self.app
        scope: Scope = getattr(self.screen, "SCOPE", "app")
        read_only = bool(getattr(app, "read_only", False))
        remapped = getattr(app, "remapped_keys", {})
        out = []
        for a in scoped(scope, read_only=read_only):
            if a.name == "palette":
                continue
            out.append((a, f"{a.label} ({display_key(effective_key(a, remapped))})"))
        return out

    def _runner(self, action: ConsoleAction) -> Callable[[], Awaitable[object]]:
        target = self.app if "app" in action.scopes else self.screen
        return partial(target.run_action, action.textual_action)

    async def discover(self) -> Hits:
        for action, title in self._candidates():
            yield DiscoveryHit(title, self._runner(action), help=action.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action, title in self._candidates():
            score = max(matcher.match(title), matcher.match(action.help) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(action), help=action.help)
