"""What runs units: the executor interface and the node agents behind it."""

from spica_core.executor.base import (
    Capability,
    Change,
    Executor,
    Launch,
    NotSupported,
    Remove,
    Requeue,
    Unlock,
)
from spica_core.node.protocol import (
    ErrorCode,
    ErrorRecord,
    ProtocolError,
    QueueEntry,
    StackChange,
    StageResult,
    TailResult,
    UnlockQfinResult,
)

__all__ = [
    "Capability",
    "Change",
    "ErrorCode",
    "ErrorRecord",
    "Executor",
    "Launch",
    "NotSupported",
    "ProtocolError",
    "QueueEntry",
    "Remove",
    "Requeue",
    "StackChange",
    "StageResult",
    "TailResult",
    "Unlock",
    "UnlockQfinResult",
]
