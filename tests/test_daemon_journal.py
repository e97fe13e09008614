"""The daemon's journal and its exactly-once replay into dbspica (both engines)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from spica_core.config import DatabaseConfig
from spica_core.daemon import events as ev
from spica_core.daemon.events import KINDS
from spica_core.daemon.journal import Journal
from spica_core.daemon.replay import DaemonDb
from spica_core.db.models import DaemonJournal, Problem, Stack, StackRun


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_append_numbers_densely_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "dbspica.jsonl"
    journal = Journal(path, "mix1")
    assert [journal.append({"kind": "x", "n": i}) for i in range(3)] == [1, 2, 3]
    header, *entries = _lines(path)
    assert header["node"] == "mix1" and header["base"] == 0 and len(header["journal"]) == 32
    assert [e["seq"] for e in entries] == [1, 2, 3]
    journal.close()
    again = Journal(path, "mix1")
    assert again.journal_id == header["journal"]
    assert again.append({"kind": "x"}) == 4
    batch = again.read_new()
    assert batch.journal_id == header["journal"]
    assert [e["seq"] for e in batch.entries] == [1, 2, 3, 4]
    assert again.read_new().entries == []


def test_two_writers_on_one_file_never_share_a_seq(tmp_path: Path) -> None:
    """Two daemons of one root append to the same journal (flock + rescan)."""
    path = tmp_path / "j.jsonl"
    a, b = Journal(path, "mix1"), Journal(path, "mix1")

    def write(journal: Journal, tag: str) -> None:
        for i in range(100):
            journal.append({"kind": "x", "who": tag, "i": i})

    threads = [threading.Thread(target=write, args=(j, t)) for j, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e["seq"] for e in _lines(path)[1:]]
    assert seqs == list(range(1, 201))


def test_a_torn_last_line_is_terminated_and_its_seq_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "mix1")
    journal.append({"kind": "x"})
    journal.close()
    with open(path, "ab") as f:  # a crash in the middle of an append
        f.write(b'{"seq":2,"kind":"x","half')
    journal = Journal(path, "mix1")
    assert journal.append({"kind": "y"}) == 2
    reader = Journal(path, "mix1")
    assert [(e["seq"], e["kind"]) for e in reader.read_new().entries] == [(1, "x"), (2, "y")]

    with open(path, "ab") as f:  # complete JSON, only its newline lost
        f.write(b'{"seq":3,"kind":"z"}')
    journal = Journal(path, "mix1")
    assert journal.append({"kind": "w"}) == 4
    assert [e["seq"] for e in reader.read_new().entries] == [3, 4]


def test_compaction_keeps_the_id_and_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, "mix1")
    for _ in range(5):
        journal.append({"kind": "x", "pad": "." * 100})
    journal_id = journal.journal_id
    assert not journal.compact(applied_seq=4, min_bytes=0)  # seq 5 is not applied yet
    assert journal.compact(applied_seq=5, min_bytes=0)
    assert _lines(path) == [
        {"journal": journal_id, "node": "mix1", "base": 5, "created": _lines(path)[0]["created"]}
    ]
    other = Journal(path, "mix1")  # another process: it learns the base from the header
    assert other.append({"kind": "x"}) == 6
    assert journal.append({"kind": "x"}) == 7


def test_an_unreadable_journal_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text("garbage\n")
    journal = Journal(path, "mix1")
    assert journal.append({"kind": "x"}) == 1
    assert [p.name for p in tmp_path.glob("j.jsonl.unreadable-*")]


# --------------------------------------------------------------------------- replay


def _entries() -> list[ev.MirrorEvent]:
    run = {"stack": "S1", "attempt": 1}
    return [
        ev.Claimed(**run, progress=0, lines=2),
        ev.LineStarted(**run, line=1, command="echo 1"),
        ev.LineEnded(**run, line=1, exit_code=0, progress=1),
        ev.LineStarted(**run, line=2, command="false"),
        ev.LineEnded(**run, line=2, exit_code=1),
        ev.Failed(**run, line=2, exit_code=1, message="Failed on false - Code 1 - Line 2"),
    ]


def _counts(engine) -> tuple[int, int, str | None]:
    with Session(engine) as session:
        runs = session.scalar(select(func.count()).select_from(StackRun))
        problems = session.scalar(select(func.count()).select_from(Problem))
        state = session.scalar(select(Stack.state).where(Stack.name == "S1"))
    return runs, problems, state


def test_replay_applies_in_order_exactly_once(db_engine, tmp_path: Path) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    journal = Journal(tmp_path / "j.jsonl", "mix1")
    db = DaemonDb(DatabaseConfig(url=url), journal, "mix1")
    for event in _entries():
        db.record(event)
    assert db.replay() == 6
    assert _counts(db_engine) == (2, 1, "failed")
    with Session(db_engine) as session:
        stack = session.scalars(select(Stack).where(Stack.name == "S1")).one()
        assert (stack.failed_line, stack.exit_code, stack.progress) == (2, 1, 1)
        assert session.scalar(select(DaemonJournal.applied_seq)) == 6

    # Another replayer of the same file (the other daemon of the root, or a restart).
    again = DaemonDb(DatabaseConfig(url=url), Journal(tmp_path / "j.jsonl", "mix1"), "mix1")
    assert again.replay() == 6
    assert _counts(db_engine) == (2, 1, "failed")
    db.record(ev.Released(stack="S1", progress=1))
    assert again.replay() == 7 and db.replay() == 7
    assert _counts(db_engine) == (2, 1, "pending")


def test_concurrent_replays_write_nothing_twice(db_engine, tmp_path: Path) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    path = tmp_path / "j.jsonl"
    writer = DaemonDb(DatabaseConfig(url=url), Journal(path, "mix1"), "mix1")
    for i in range(40):
        writer.record(ev.Rejected(stack=f"S{i}", line=None, exit_code=None, message=f"bad {i}"))
    replayers = [DaemonDb(DatabaseConfig(url=url), Journal(path, "mix1"), "mix1") for _ in range(3)]
    errors: list[BaseException] = []

    def replay(db: DaemonDb) -> None:
        for _ in range(50):
            try:
                if db.replay() == 40:
                    return
            except Exception as exc:  # _Unavailable on a lost race: try again
                errors.append(exc)

    threads = [threading.Thread(target=replay, args=(r,)) for r in replayers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(db_engine) as session:
        assert session.scalar(select(func.count()).select_from(Problem)) == 40
        assert session.scalar(select(func.count()).select_from(Stack)) == 40


def test_a_refused_entry_is_kept_aside_and_the_rest_applied(db_engine, tmp_path: Path) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    path = tmp_path / "j.jsonl"
    db = DaemonDb(DatabaseConfig(url=url), Journal(path, "mix1"), "mix1")
    db.record(ev.Claimed(stack="S1", attempt=1, progress=0, lines=1))
    # An entry of a later daemon version (no event type here knows its kind).
    db.journal.append(
        {"kind": "from_the_future", "node": "mix1", "at": "2026-12-01T00:00:00Z", "stack": "S1"}
    )
    db.record(ev.Completed(stack="S1", lines=1))
    assert db.replay() == 3
    assert _counts(db_engine)[2] == "completed"
    rejected = _lines(tmp_path / "j.jsonl.rejected")
    assert [r["entry"]["kind"] for r in rejected] == ["from_the_future"]


def test_an_unreachable_database_keeps_everything_in_the_journal(tmp_path: Path) -> None:
    from spica_core.daemon.replay import _Unavailable

    url = f"sqlite:///{tmp_path / 'absent' / 'dbspica.sqlite'}"
    db = DaemonDb(DatabaseConfig(url=url), Journal(tmp_path / "j.jsonl", "mix1"), "mix1")
    db.record(ev.Claimed(stack="S1", attempt=1, progress=0, lines=1))
    with pytest.raises(_Unavailable, match="no dbspica file"):
        db.replay()
    assert db.applied_seq == 0
    assert not (tmp_path / "absent").exists()  # sqlite3 did not create an empty database


def test_every_kind_has_a_handler() -> None:
    assert set(KINDS) >= {
        "claimed",
        "line_started",
        "line_finished",
        "completed",
        "failed",
        "rejected",
        "released",
        "recovered",
        "check_failed",
    }


# A journal as the daemon wrote it before its events were typed (kind tag and fields by
# hand): it must still replay, exactly once, on an upgraded daemon.
_OLD_JOURNAL = [
    {"journal": "0" * 32, "node": "mix1", "base": 0, "created": "2026-11-30T10:00:00Z"},
    {"seq": 1, "kind": "claimed", "node": "mix1", "at": "2026-11-30T10:00:01Z",
     "stack": "S1", "attempt": 1, "progress": 0, "lines": 2},
    {"seq": 2, "kind": "line_started", "node": "mix1", "at": "2026-11-30T10:00:02Z",
     "stack": "S1", "line": 1, "attempt": 1, "command": "echo 1"},
    {"seq": 3, "kind": "line_finished", "node": "mix1", "at": "2026-11-30T10:00:03Z",
     "stack": "S1", "line": 1, "attempt": 1, "exit_code": 0, "progress": 1},
    {"seq": 4, "kind": "line_started", "node": "mix1", "at": "2026-11-30T10:00:04Z",
     "stack": "S1", "line": 2, "attempt": 1, "command": "sleep 9"},
    {"seq": 5, "kind": "released", "node": "mix1", "at": "2026-11-30T10:00:05Z",
     "stack": "S1", "progress": 1},
    {"seq": 6, "kind": "rejected", "node": "mix1", "at": "2026-11-30T10:00:06Z",
     "stack": "S2", "line": None, "exit_code": None, "message": "rejected: no commands.sh"},
    {"seq": 7, "kind": "check_failed", "node": "mix1", "at": "2026-11-30T10:00:07Z",
     "stack": "S3", "reason": "raid1: 1 GiB free", "problem": True},
    {"seq": 8, "kind": "claimed", "node": "mix1", "at": "2026-11-30T10:00:08Z",
     "stack": "S4", "attempt": 3, "progress": 0, "lines": 1},
    {"seq": 9, "kind": "line_started", "node": "mix1", "at": "2026-11-30T10:00:09Z",
     "stack": "S4", "line": 1, "attempt": 3, "command": "sleep 99"},
    {"seq": 10, "kind": "recovered", "node": "mix1", "at": "2026-11-30T10:00:10Z",
     "stack": "S4", "state": "failed", "line": 1, "message": "stale claim recovered as failed",
     "attempt": 3, "run_line": 1, "run_exit_code": None},
    {"seq": 11, "kind": "node_problem", "node": "mix1", "at": "2026-11-30T10:00:11Z",
     "stack": None, "message": "queue/x.spica: not a regular file"},
    {"seq": 12, "kind": "claimed", "node": "mix1", "at": "2026-11-30T10:00:12Z",
     "stack": "S5", "attempt": 1, "progress": 0, "lines": 1},
    {"seq": 13, "kind": "completed", "node": "mix1", "at": "2026-11-30T10:00:13Z",
     "stack": "S5", "lines": 1},
]  # fmt: skip


def test_a_journal_written_before_typed_events_still_replays_once(
    db_engine, tmp_path: Path
) -> None:
    url = db_engine.url.render_as_string(hide_password=False)
    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in _OLD_JOURNAL))
    for _ in range(2):  # a second daemon (or a restart) replays the same file
        db = DaemonDb(DatabaseConfig(url=url), Journal(path, "mix1"), "mix1")
        assert db.replay() == 13
    assert not (tmp_path / "j.jsonl.rejected").exists()
    with Session(db_engine) as session:
        stacks = {s.name: s for s in session.scalars(select(Stack))}
        assert {n: s.state for n, s in stacks.items()} == {
            "S1": "pending",
            "S2": "failed",
            "S3": "pending",
            "S4": "failed",
            "S5": "completed",
        }
        assert (stacks["S1"].progress, stacks["S1"].lines) == (1, 2)
        assert stacks["S2"].error == "rejected: no commands.sh"
        assert stacks["S3"].error == "check: raid1: 1 GiB free"
        assert (stacks["S4"].failed_line, stacks["S4"].error) == (
            1,
            "stale claim recovered as failed",
        )
        assert stacks["S5"].progress == 1
        runs = sorted(
            (r.stack.name, r.line, r.attempt, r.exit_code)
            for r in session.scalars(select(StackRun))
        )
        assert [r[:3] for r in runs] == [("S1", 1, 1), ("S1", 2, 1), ("S4", 1, 3)]
        assert runs[0][3] == 0
        problems = sorted(p.message for p in session.scalars(select(Problem)))
        assert problems == [
            "check failed, stack waits: raid1: 1 GiB free",
            "queue/x.spica: not a regular file",
            "rejected: no commands.sh",
            "stale claim recovered as failed",
        ]


def test_typed_events_are_journalled_as_before(tmp_path: Path) -> None:
    """The journal's format does not change: an older daemon replays a newer one's file."""
    path = tmp_path / "j.jsonl"
    db = DaemonDb(DatabaseConfig(url="sqlite://"), Journal(path, "mix1"), "mix1")
    db.record(ev.Rejected(stack="S2", message="rejected: no commands.sh"))
    db.record(ev.LineEnded(stack="S1", line=2, attempt=1, exit_code=1))
    written = _lines(path)[1:]
    for entry in written:
        entry.pop("at")
    assert written == [
        {"seq": 1, "kind": "rejected", "node": "mix1", "stack": "S2", "line": None,
         "exit_code": None, "message": "rejected: no commands.sh"},
        {"seq": 2, "kind": "line_finished", "node": "mix1", "stack": "S1", "line": 2,
         "attempt": 1, "exit_code": 1, "progress": None},
    ]  # fmt: skip


def test_an_entry_lacking_a_field_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"journal entry 7 \(claimed\): no 'lines'"):
        ev.from_entry({"seq": 7, "kind": "claimed", "stack": "S1", "attempt": 1, "progress": 0})
