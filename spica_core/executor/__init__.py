"""What runs units: the executor interface and the node agents behind it."""

from spica_core.executor.base import (
    Answer,
    Capability,
    Change,
    Executor,
    Launch,
    NotSupported,
    Remove,
    Requeue,
    Unlock,
    one_by_one,
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
    "Answer",
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
    "one_by_one",
]
