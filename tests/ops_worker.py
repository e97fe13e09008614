"""A test's operator: a real process that plans and applies operator actions through the
operations API, one request per line of its stdin, over one executor (node agents over real
SSH) and dbspica.

    python -m tests.ops_worker CONFIG USER

Each stdin line is ``ACTION STACK [--from-start]``; each answer is one JSON line:
``{"plan": [...], "results": [...]}``. The process keeps its pool open between requests, so
two workers fed at once race on the node as two operators would.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


async def serve(config_path: Path, user: str) -> None:
    from spica_core.config import load_config
    from spica_core.db.engine import make_engine
    from spica_core.executor.agents import AgentExecutor
    from spica_core.operations import OpAction, OperationRequest, Operations, Selection

    config = load_config(config_path)
    engine = make_engine(config.db)
    async with AgentExecutor.over_ssh(config) as executor:
        ops = Operations(config, engine, executor)
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            action, stack, *flags = line.split()
            request = OperationRequest(
                OpAction(action),
                Selection(names=(stack,)),
                user,
                from_start="--from-start" in flags,
            )
            plan = await ops.plan(request)
            results = await ops.apply(plan)
            print(
                json.dumps({"plan": plan.to_json(), "results": [r.to_json() for r in results]}),
                flush=True,
            )
    engine.dispose()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), sys.argv[2]))
