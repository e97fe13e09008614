"""Benchmark: DataTransfer's verified copy against ``scp`` of the same files, same server.

Makes 50 files of random bytes (1 GiB together, ``--mib`` to change), plans them onto one
node and times ``spica transfer run``'s engine (SFTP over the node's asyncssh connection,
``[transfer].in_flight`` files at once, the xxh128 checksum computed while reading the
source and again on the node before each file is renamed into place) beside the system's
``scp`` copying the same files to the same node in the same run (OpenSSH 9's scp speaks SFTP
too, so both go through the same SSH server and its SFTP subsystem; same cipher, AES-GCM).

Targets: ``demo`` (default) is a node of ``spica demo`` (an asyncssh server in Python);
``sshd`` is a real OpenSSH sshd on a loopback port (tests/openssh.py). Each round runs both,
scp first in odd rounds and SPICA first in even ones, with the page cache written back (``sync``,
not timed) before each copy, so that neither pays for the other's writeback; the figures are
per round, with the CPU seconds per GiB of the copying client (SPICA's engine in this process,
or scp), then the ratio of the best of each and of the medians. Target: SPICA >= 0.7x scp
with its checksums.

On a small virtual machine both tools share its cores with the node's server, and a copy's
writes into memory the host has taken back cost several times the usual (kernel time in
``copy_folio_from_iter_atomic``), which moves single rounds of either tool by up to 2x: read
the median beside the best, over four or more rounds.

    .venv/bin/python bench/transfer.py [--target demo|sshd] [--mib 1024] [--files 50] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy.orm import Session  # noqa: E402

from spica_core.config import SpicaConfig, load_config, parse_config  # noqa: E402
from spica_core.db.engine import make_engine  # noqa: E402
from spica_core.db.models import Transfer  # noqa: E402
from spica_core.db.setup import prepare_database  # noqa: E402
from spica_core.executor.agents import AgentExecutor  # noqa: E402
from spica_core.transfer.copy import CopyRun  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"
SPICA = Path(sys.executable).parent / "spica"


def make_files(where: Path, files: int, total: int) -> list[Path]:
    where.mkdir(parents=True)
    size = total // files
    out = []
    for i in range(files):
        path = where / f"bench{i:03d}p.fits"
        path.write_bytes(os.urandom(size))
        out.append(path)
    return out


def plan(config: SpicaConfig, node: str, runid: str, files: list[Path]) -> None:
    engine = make_engine(config.db)
    with Session(engine) as session, session.begin():
        for f in files:
            session.add(
                Transfer(
                    filename=f.name,
                    runid=runid,
                    source=str(f),
                    destination_node=node,
                    destination_partition="raid1",
                    destination_path=f"raid1/{runid}/{f.name}",
                    bytes=f.stat().st_size,
                )
            )
    engine.dispose()


def spica_round(config: SpicaConfig, node: str, runid: str, files: list[Path]) -> float:
    plan(config, node, runid, files)
    engine = make_engine(config.db)

    async def main() -> float:
        async with AgentExecutor.over_ssh(config) as executor:
            await executor.file_sums(node, [])  # connect first: time the copy, not the login
            await executor.pool.link(node).sftp()
            started = time.perf_counter()
            report = await CopyRun(config, engine, executor).run(runid)
            took = time.perf_counter() - started
            assert report.ok and report.count("done") == len(files), report.to_json()
            return took

    try:
        return asyncio.run(main())
    finally:
        engine.dispose()


def scp_round(files: list[Path], port: int, key: Path, known_hosts: Path, dest: Path) -> float:
    dest.mkdir(parents=True)
    argv = [
        "scp", "-q", "-B", "-c", CIPHER, "-P", str(port), "-i", str(key),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        *map(str, files), f"{getpass.getuser()}@127.0.0.1:{dest}/",
    ]  # fmt: skip
    started = time.perf_counter()
    # asyncssh's SFTP server closes the session without an exit status, which scp reports
    # as a failure: what arrived is checked instead.
    subprocess.run(argv, check=False)
    took = time.perf_counter() - started
    for f in files:
        if (dest / f.name).stat().st_size != f.stat().st_size:
            sys.exit(f"scp did not copy {f.name}")
    return took


def client_cpu() -> float:
    """CPU seconds of this process and of its finished children (scp) so far."""
    usage = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("demo", "sshd"), default="demo")
    parser.add_argument("--mib", type=int, default=1024, help="MiB in all (default 1024)")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--in-flight", type=int, help="files at once (default: the config's)")
    args = parser.parse_args()
    if shutil.which("scp") is None:
        sys.exit("scp not installed (apt-get install openssh-client)")
    total = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="spica-bench-transfer-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        db = f"sqlite:///{base / 'dbspica.sqlite'}"
        if args.target == "demo":
            from spica_core.demo.cluster import DemoCluster

            cluster = DemoCluster(base / "cluster")
            cluster.up(1)
            stack.callback(cluster.down)
            config = load_config(cluster.config_path)
            config = config.model_copy(update={"db": config.db.model_copy(update={"url": db})})
            node = "mix1"
            key, known_hosts = cluster.client_key_path, cluster.known_hosts_path
        else:
            from tests.openssh import openssh_server

            server = stack.enter_context(openssh_server(base / "sshd"))
            root = base / "root"
            for d in ("queue", "stacks", "raid1"):
                (root / d).mkdir(parents=True)
            node, key, known_hosts = "mix6", server.client_key, server.known_hosts
            config = parse_config(
                f'[db]\nurl = "{db}"\n[ssh]\nknown_hosts = "{known_hosts}"\n'
                f'client_keys = ["{key}"]\ncall_timeout = 60.0\n[[nodes]]\nname = "{node}"\n'
                f'host = "127.0.0.1"\nport = {server.port}\nuser = "{server.user}"\n'
                f'root = "{root}"\nagent_command = "{SPICA} node serve"\n',
                "bench.toml",
            )
        if args.in_flight:
            transfer = config.transfer.model_copy(update={"in_flight": args.in_flight})
            config = config.model_copy(update={"transfer": transfer})
        prepare_database(config, create=True)
        node_cfg = config.node(node)
        files = make_files(base / "incoming", args.files, total)
        moved = args.files * (total // args.files)
        print(f"{args.files} files, {moved / 2**20:.0f} MiB, to {args.target} node {node} "
              f"(in_flight {config.transfer.in_flight}, cipher {CIPHER})")  # fmt: skip
        times: dict[str, list[float]] = {"scp": [], "spica": []}
        for r in range(args.rounds):
            dest = Path(node_cfg.root) / "raid1" / f"scp{r}"
            # Each round in the other order: the disk's writeback of one copy slows the next.
            for tool in ("scp", "spica") if r % 2 == 0 else ("spica", "scp"):
                os.sync()
                cpu = client_cpu()
                if tool == "scp":
                    took = scp_round(files, node_cfg.port, key, known_hosts, dest)
                    note = ""
                else:
                    took = spica_round(config, node, f"BENCH{r}", files)
                    note = ", checksummed at the source and on the node"
                times[tool].append(took)
                rate = moved / took / 1e6
                per_gib = (client_cpu() - cpu) / (moved / 2**30)
                print(f"round {r + 1}: {tool:5} {rate:7.1f} MB/s ({took:.2f} s, client "
                      f"{per_gib:.2f} CPU-s/GiB{note})")  # fmt: skip
                # Each copy starts just after the last one's files were deleted.
                shutil.rmtree(
                    dest if tool == "scp" else Path(node_cfg.root) / "raid1" / f"BENCH{r}"
                )
        for name, pick in (("best", min), ("median", statistics.median)):
            scp, spica = pick(times["scp"]), pick(times["spica"])
            print(f"{name}: scp {moved / scp / 1e6:.1f} MB/s, spica {moved / spica / 1e6:.1f} "
                  f"MB/s: spica = {scp / spica:.2f}x scp (target >= 0.7x)")  # fmt: skip


if __name__ == "__main__":
    main()
