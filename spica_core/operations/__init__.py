"""Operator actions (launch, requeue, unlock, remove) and reconcile, for both faces."""

from spica_core.operations.model import (
    ItemResult,
    OpAction,
    OperationRequest,
    Outcome,
    Plan,
    PlanItem,
    Selection,
    exit_code,
)
from spica_core.operations.session import Operations, operator_name

__all__ = [
    "ItemResult",
    "OpAction",
    "OperationRequest",
    "Operations",
    "Outcome",
    "Plan",
    "PlanItem",
    "Selection",
    "exit_code",
    "operator_name",
]
