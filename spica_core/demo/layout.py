"""Where everything of a demo cluster lives, and the names and disks of its nodes.

Shared by the cluster manager (``spica demo up``) and the per-node server process, so both
agree on every path without passing more than ``--dir`` and ``--node`` between them.

Layout of a demo directory ``D`` (created 0700)::

    D/demo.json                   state: nodes (name, port, pid, started), created
    D/spica.toml                  the generated SPICA configuration (0600)
    D/known_hosts                 [127.0.0.1]:PORT ssh-ed25519 AAAA...  (one line per node)
    D/keys/client_ed25519(.pub)   the one client key every node accepts (private: 0600)
    D/keys/<node>_host_ed25519    each node's host key (0600)
    D/logs/<node>.log             each server's stdout and stderr
    D/logs/<node>.daemon.log      each node daemon's log
    D/logs/monitor.log            the cluster monitor's log (spica watch)
    D/logs/story.log              the story driver's log (spica_core.demo.story)
    D/story.json                  the story's progress: steps done, the corrupt exposure, the
                                  first co-add and its seconds from the cold start
    D/refcat/demo-w1.ldac         the stacking release's reference catalogue (FITS_LDAC)
    D/nodes/<node>/               each node's spica root: queue/ stacks/ locks/ raid1/ raid2/
    D/repository/<runid>/         the incoming repository: synthetic exposures (demo.repository)
    D/truth/<runid>/              what the synthetic exposures were drawn from (truth tables)
    D/.lock                       serialises up / down / start / stop
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spica_core.errors import UsageError

DEFAULT_DIR = ".spica-demo"
DEFAULT_NODES = 8
#: Each node is a Python process (~40 MB); beyond this a real cluster is the better demo.
MAX_NODES = 256
CLUSTER_NAME = "spica-demo"
HOST = "127.0.0.1"
#: The module the node servers run as (``python -m``); also how ``down`` recognises them.
SERVER_MODULE = "spica_core.demo.server"
#: The module the node daemons run as (``python -m spica_tui … daemon``).
DAEMON_MODULE = "spica_tui"
#: The module the story driver runs as (``python -m``).
STORY_MODULE = "spica_core.demo.story"
PARTITIONS = ("raid1", "raid2")
NODE_SUBDIRS = ("queue", "stacks", "locks", *PARTITIONS)

# The seed's DataTransfer page: the mix nodes had 652.036 GB disks, the pix nodes 1869.964 GB.
_MIX_DISK = "652.036 GB"
_PIX_DISK = "1869.964 GB"
_RESERVED = "50 GB"
_MIN_FREE = "20 GB"


def demo_node_names(n: int) -> list[str]:
    """The first ``n`` node names: mix1..mix6, pix1..pix9 (the seed's cluster), then node16..."""
    if not 1 <= n <= MAX_NODES:
        raise UsageError(f"a demo cluster has 1 to {MAX_NODES} nodes, not {n}")
    names = [f"mix{i}" for i in range(1, 7)] + [f"pix{i}" for i in range(1, 10)]
    names += [f"node{i}" for i in range(16, n + 1)]
    return names[:n]


@dataclass(frozen=True)
class DemoPartition:
    name: str
    capacity: str
    reserved: str = _RESERVED
    min_free: str = _MIN_FREE


def demo_partitions(node: str) -> list[DemoPartition]:
    """The virtual disks of a node: deterministic, so a rebuilt demo shows the same cluster."""
    if node.startswith("mix"):
        capacity = _MIX_DISK
    elif node.startswith("pix"):
        capacity = _PIX_DISK
    else:
        digits = "".join(c for c in node if c.isdigit())
        capacity = _PIX_DISK if int(digits or 0) % 2 == 0 else _MIX_DISK
    return [DemoPartition(name, capacity) for name in PARTITIONS]


@dataclass(frozen=True)
class DemoPaths:
    """The paths of one demo directory; ``directory`` is absolute and resolved, so every
    spelling of one directory names the same cluster (``down`` matches servers by it)."""

    directory: Path

    @classmethod
    def at(cls, directory: str | Path) -> DemoPaths:
        return cls(Path(directory).expanduser().resolve())

    @property
    def state(self) -> Path:
        return self.directory / "demo.json"

    @property
    def config(self) -> Path:
        return self.directory / "spica.toml"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def keys(self) -> Path:
        return self.directory / "keys"

    @property
    def client_key(self) -> Path:
        return self.keys / "client_ed25519"

    @property
    def client_public_key(self) -> Path:
        return self.keys / "client_ed25519.pub"

    def host_key(self, node: str) -> Path:
        return self.keys / f"{node}_host_ed25519"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def log(self, node: str) -> Path:
        return self.logs / f"{node}.log"

    def daemon_log(self, node: str) -> Path:
        return self.logs / f"{node}.daemon.log"

    @property
    def monitor_log(self) -> Path:
        return self.logs / "monitor.log"

    @property
    def story(self) -> Path:
        return self.directory / "story.json"

    @property
    def story_log(self) -> Path:
        return self.logs / "story.log"

    @property
    def nodes(self) -> Path:
        return self.directory / "nodes"

    def root(self, node: str) -> Path:
        return self.nodes / node

    @property
    def repository(self) -> Path:
        return self.directory / "repository"

    @property
    def lock(self) -> Path:
        return self.directory / ".lock"
