"""One entry point for the faces: plan and apply operator actions with audit."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
from collections.abc import Callable

from sqlalchemy import Engine

from spica_core.config import SpicaConfig
from spica_core.errors import UsageError
from spica_core.executor import Executor, UnlockQfinResult
from spica_core.operations import actions
from spica_core.operations.audit import record_request
from spica_core.operations.model import ItemResult, OperationRequest, Plan

_USER_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")


def operator_name(explicit: str | None = None) -> str:
    """Who acts: ``--as NAME``, else ``$SPICA_OPERATOR``, else the OS user; validated, it
    travels to the nodes and into the audit. A ``--as`` given is used as given: an empty
    one is refused, never silently replaced by the login user."""
    if explicit is not None:
        name, what = explicit, "--as"
    else:
        name, what = os.environ.get("SPICA_OPERATOR") or getpass.getuser(), "operator name"
    if not _USER_RE.fullmatch(name):
        raise UsageError(f"{what} {name!r}: 1 to 64 letters, digits and _ . @ + - only")
    return name


class Operations:
    """Plans and applies requests over one executor and one dbspica engine.

    The executor is the caller's (the console's runs over its polling pool; the CLI opens
    one; ``stack add --launch`` for a root on this machine answers in-process).
    """

    def __init__(self, config: SpicaConfig, engine: Engine, executor: Executor) -> None:
        self.config = config
        self.engine = engine
        self.executor = executor

    async def plan(self, request: OperationRequest) -> Plan:
        if request.selection.empty:
            raise UsageError(
                f"{request.action}: name at least one stack or give a filter "
                "(--state, --node, --step, --runid, --filter, --release, --match)"
            )
        return await actions.plan(request, self.engine, self.executor, self.config)

    def record_dry_run(self, plan: Plan) -> None:
        record_request(self.engine, plan, dry_run=True)

    async def apply(
        self, plan: Plan, on_result: Callable[[ItemResult], None] | None = None
    ) -> list[ItemResult]:
        results = await actions.apply(plan, self.engine, self.executor, on_result)
        await asyncio.to_thread(record_request, self.engine, plan, dry_run=False)
        return results


async def unlock_qfin(
    ops: Operations, node: str, partition: str, user: str, *, dry_run: bool
) -> UnlockQfinResult:
    """Remove a QFin lock whose holder is gone (audited); raises the agent's refusal."""
    from sqlalchemy.orm import Session

    from spica_core.db.models import OperatorAction
    from spica_core.executor import ProtocolError
    from spica_core.names import validate_name

    validate_name(node, "node")
    validate_name(partition, "partition")
    result: UnlockQfinResult | None = None
    outcome, message = "applied" if not dry_run else "dry-run", ""
    try:
        result = await ops.executor.release_qfin_lock(node, partition, user, dry_run=dry_run)
    except ProtocolError as exc:
        outcome, message = "refused", exc.message
        raise
    finally:
        with Session(ops.engine) as session, session.begin():
            session.add(
                OperatorAction(
                    user=user,
                    action="unlock-qfin",
                    targets=[f"{node}:{partition}"],
                    dry_run=dry_run,
                    plan=f"delete locks/{partition}.qfin.lock on {node}",
                    result=outcome,
                    detail={"message": message, "holder": _holder(result)},
                )
            )
    assert result is not None
    return result


def _holder(result: UnlockQfinResult | None) -> dict[str, object] | None:
    """The lock's holder as the audit keeps it (JSON)."""
    if result is None or result.holder is None:
        return None
    import msgspec

    return msgspec.to_builtins(result.holder)  # type: ignore[no-any-return]
