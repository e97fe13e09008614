"""dbspica goes away while stacks run, then comes back: nothing lost, nothing written twice.

On MariaDB the daemon reaches the server through a TCP proxy the test stops (every open
connection cut, new ones refused) and starts again on the same port: to the daemon, exactly
a database server going down and coming back, without touching the shared server. On SQLite
the directory holding the dbspica file is moved away and back: the file is gone for the
daemon as it is when the filesystem holding it is unmounted.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.daemon_support import (
    Daemons,
    NodeEnv,
    TcpProxy,
    daemon_processes,
    make_node,
    wait_for,
)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    yield from daemon_processes()


GATE = "while [ ! -e ../../gate ]; do sleep 0.05; done"


def _journal_last_seq(env: NodeEnv) -> int:
    lines = (env.root / "journal" / "dbspica.jsonl").read_text().splitlines()
    return max(json.loads(line).get("seq", json.loads(line).get("base", 0)) for line in lines)


def test_an_outage_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path, db_url: str, daemons: Daemons
) -> None:
    if db_url.startswith("sqlite"):
        db_dir = tmp_path / "db"
        db_dir.mkdir()
        url = daemon_url = f"sqlite:///{db_dir / 'dbspica.sqlite'}"

        def go_down() -> None:
            os.rename(db_dir, tmp_path / "db.away")

        def come_back() -> None:
            os.rename(tmp_path / "db.away", db_dir)

    else:
        url = db_url
        server = make_url(db_url)
        proxy = TcpProxy((server.host or "127.0.0.1", server.port or 3306))
        proxy.start()
        daemon_url = server.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        go_down, come_back = proxy.stop, proxy.start

    env = make_node(tmp_path / "node", url, daemon_url=daemon_url, daemon={"slots": 8})
    good = [f"OUT_{i}" for i in range(4)]
    for name in good:
        env.add(name, ["echo 1", GATE, "echo 3", "echo 4"], runid="03AL01", filter="i")
    env.add("OUT_FAIL", ["echo 1", GATE, "exit 4"], runid="03AL01", filter="i")
    daemon = daemons.start(env)

    wait_for(
        lambda: all(env.runs(s)[-1:] == [(2, 1, None)] for s in [*good, "OUT_FAIL"]),
        what="every stack at its line 2, recorded in dbspica",
    )
    go_down()
    try:
        (env.root / "gate").touch()
        # A stack queued by hand while dbspica is away: dbspica learns of it on the replay.
        hand = env.root / "stacks" / "OUT_HAND"
        hand.mkdir()
        (hand / "commands.sh").write_text("echo by hand\necho done\n")
        (env.queue / "OUT_HAND.spica").write_text("")
        wait_for(
            lambda: (
                all(env.state(s) == "processed" for s in [*good, "OUT_HAND"])
                and env.state("OUT_FAIL") == "error"
            ),
            what="the stacks to finish while dbspica is down",
        )
        log = env.base / "daemon.log"
        wait_for(lambda: "dbspica unreachable" in log.read_text(), what="the outage to be seen")
    finally:
        come_back()

    last = _journal_last_seq(env)
    wait_for(lambda: env.applied_seq() >= last, what="the journal to be replayed")
    for name in good:
        assert env.runs(name) == [(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 1, 0)]
        row = env.row(name)
        assert (row.state, row.progress, row.error) == ("completed", 4, None)
        assert env.problems(name) == []
    assert env.runs("OUT_FAIL") == [(1, 1, 0), (2, 1, 0), (3, 1, 4)]
    assert env.row("OUT_FAIL").state == "failed"
    problems = env.problems("OUT_FAIL")
    assert len(problems) == 1 and (problems[0].runid, problems[0].filter) == ("03AL01", "i")
    assert env.runs("OUT_HAND") == [(1, 1, 0), (2, 1, 0)]
    assert env.row("OUT_HAND").state == "completed"
    assert "dbspica answers again" in (env.base / "daemon.log").read_text()

    # A restart replays the same journal: dbspica already holds all of it.
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    daemons.start(env)
    env.add("OUT_AFTER", ["echo after"])
    wait_for(lambda: env.row("OUT_AFTER").state == "completed", what="a stack after restart")
    assert len(env.problems()) == 1
    for name in good:
        assert len(env.runs(name)) == 4
