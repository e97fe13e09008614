"""``spica watch``: the headless cluster monitor (DESIGN §7).

It polls every node each interval, records liveness transitions and their problem rows
(:class:`~spica_core.liveness.LivenessRecorder`), mails the operators once per transition,
and writes each node's figures to dbspica, where consoles read them instead of opening SSH
connections of their own (:mod:`spica_core.monitor.figures`).
"""

from spica_core.monitor.figures import (
    MonitorIdentity,
    MonitorStatus,
    MonitorView,
    read_monitor_view,
)
from spica_core.monitor.service import LivenessMail, Monitor, PollReport

__all__ = [
    "LivenessMail",
    "Monitor",
    "MonitorIdentity",
    "MonitorStatus",
    "MonitorView",
    "PollReport",
    "read_monitor_view",
]
