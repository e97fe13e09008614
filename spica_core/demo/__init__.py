"""The embedded demo cluster (``spica demo``): SSH nodes on 127.0.0.1 for the README demo,
the console and the tests. See :mod:`spica_core.demo.cluster`.

Importing this package is cheap: asyncssh is loaded only when keys are made or nodes probed.
The node server (:mod:`spica_core.demo.server`) is not imported here: it runs as ``-m``.
"""

from spica_core.demo.cluster import (
    DemoCluster,
    DemoError,
    DemoLayoutError,
    DemoNodeStatus,
    DemoNotFound,
    DemoStartError,
    DemoStatus,
    DemoUpResult,
    client_options,
)
from spica_core.demo.layout import DEFAULT_DIR, DEFAULT_NODES, MAX_NODES, demo_node_names

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_NODES",
    "MAX_NODES",
    "DemoCluster",
    "DemoError",
    "DemoLayoutError",
    "DemoNodeStatus",
    "DemoNotFound",
    "DemoStartError",
    "DemoStatus",
    "DemoUpResult",
    "client_options",
    "demo_node_names",
]
