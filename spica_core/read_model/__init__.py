"""The read model: every read of dbspica the CLI and the console show, within a scope.

One query layer, used by ``spica stacks``/``stack show``/``problems``/``nodes --recorded``,
the operations' stack selection and the console's data alike:

* stacks — :class:`StackSelection` (state, node, step, runid, filter, release, names, the
  console's substring-or-regex ``text``, the CLI's ``match``), :func:`page_stacks`,
  :func:`count_stacks`, :func:`state_counts`, :func:`iter_stacks`, :func:`list_stacks`,
  :func:`stack_detail`;
* :func:`list_problems`, :func:`list_nodes`, :func:`runid_distribution`;
* images with their QFin figures and grades (:mod:`.images`): :class:`ImageQuery`,
  :func:`list_images`;
* DataTransfer (:mod:`.transfer`): :func:`transfer_space` (disks with virtual free),
  :func:`waiting_runids`, :func:`transfer_distribution`;
* QFin (:mod:`.qfin`): per-runid QF figures, breakdowns, the units running;
* stacking results: a stack's recorded results (:mod:`.results`, in :func:`stack_detail`),
  two releases compared tile by tile (:mod:`.compare`: :func:`compare_releases`), the
  data-mining figures (:mod:`.mining`: :func:`mining_view`).

Every function takes a :class:`Scope` (default :data:`EVERYTHING`, the operators'): a runid
scope sees only its runids' rows and no node internals (:mod:`.scope` says which). Regexes
are matched in the database, bounded (:mod:`.regex`); no query loads every row into Python.
"""

from spica_core.read_model.cluster import (
    RunidDistribution,
    list_nodes,
    list_problems,
    natural_sorted,
    runid_distribution,
)
from spica_core.read_model.compare import ReleaseComparison, compare_releases, stack_releases
from spica_core.read_model.images import (
    NOT_GRADED,
    QF_STATES,
    ImageQuery,
    ImageRow,
    Range,
    list_images,
)
from spica_core.read_model.mining import MiningView, mining_view
from spica_core.read_model.regex import MAX_PATTERN, REGEX_SECONDS, SqlPattern, sql_pattern
from spica_core.read_model.scope import EVERYTHING, Scope
from spica_core.read_model.stacks import (
    REGEX_CHARS,
    VIEW_STATES,
    StackPage,
    StackSelection,
    count_stacks,
    iter_stacks,
    list_stacks,
    page_stacks,
    stack_detail,
    state_counts,
)
from spica_core.read_model.transfer import (
    NO_FILTER,
    Replanning,
    RunidWaiting,
    TransferStatus,
    runid_filters,
    transfer_distribution,
    transfer_space,
    transfer_status,
    waiting_runids,
)

__all__ = [
    "EVERYTHING",
    "MAX_PATTERN",
    "NOT_GRADED",
    "NO_FILTER",
    "QF_STATES",
    "REGEX_CHARS",
    "REGEX_SECONDS",
    "VIEW_STATES",
    "ImageQuery",
    "ImageRow",
    "MiningView",
    "Range",
    "ReleaseComparison",
    "Replanning",
    "RunidDistribution",
    "RunidWaiting",
    "Scope",
    "SqlPattern",
    "StackPage",
    "StackSelection",
    "TransferStatus",
    "compare_releases",
    "count_stacks",
    "iter_stacks",
    "list_images",
    "list_nodes",
    "list_problems",
    "list_stacks",
    "mining_view",
    "natural_sorted",
    "page_stacks",
    "runid_distribution",
    "runid_filters",
    "sql_pattern",
    "stack_detail",
    "stack_releases",
    "state_counts",
    "transfer_distribution",
    "transfer_space",
    "transfer_status",
    "waiting_runids",
]
