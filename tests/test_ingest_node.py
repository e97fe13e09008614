"""``spica ingest --node`` and repositories on a node: the files are read by the node's agent
(``fits_headers``) over real SSH to a demo node; rows checked against the files themselves."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spica_core.checksum import file_checksum
from spica_core.config import load_config
from spica_core.db.models import Image, Node, Runid
from spica_core.db.registry import register_nodes
from spica_core.demo.cluster import DemoCluster
from spica_core.synth.layout import ExposureSpec
from spica_core.synth.runid import RunidPlan, exposure_specs, write_runid
from spica_core.synth.writer import write_exposure
from tests.conftest import invoke_spica


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    cluster = DemoCluster(tmp_path_factory.mktemp("ingest") / "cluster")
    cluster.up(1)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def node_root(demo: DemoCluster, db_engine: Engine) -> Path:
    """mix1's root, emptied of earlier tests' files, and dbspica knowing the node."""
    config = load_config(demo.config_path)
    register_nodes(db_engine, config)
    root = Path(config.node("mix1").root)
    for made in ("raid1/03AF19", "incoming"):
        shutil.rmtree(root / made, ignore_errors=True)  # links are removed, not followed
    return root


def _spica(demo: DemoCluster, db_url: str, *args: str, repository: str | None = None):
    config = demo.config_path
    if repository is not None:
        config = demo.config_path.with_name("ingest.toml")
        raw = tomllib.loads(demo.config_path.read_text(encoding="utf-8"))
        repositories = raw.setdefault("transfer", {}).setdefault("repositories", [])
        repositories.append({"name": "cadc2", "path": repository, "node": "mix1"})
        config.write_text(tomli_w.dumps(raw), encoding="utf-8")
    done = invoke_spica("--config", str(config), *args, env={"SPICA_DB_URL": db_url})
    return done.returncode, done.stdout, done.stderr


def _rows(engine: Engine) -> dict[str, tuple[object, ...]]:
    with Session(engine) as s:
        nodes = {n.id: n.name for n in s.scalars(select(Node))}
        return {
            i.filename: (nodes.get(i.node_id), i.partition, i.repository, i.path, i.checksum,
                         i.bytes, i.extensions, i.filter)  # type: ignore[arg-type]
            for i in s.scalars(select(Image))
        }  # fmt: skip


def test_ingest_on_a_node(demo: DemoCluster, node_root: Path, db_engine: Engine, db_url: str):
    files = write_runid(RunidPlan("03AF19", 3, seed=5), node_root / "raid1", "fits.gz")
    base = next(exposure_specs(RunidPlan("03AF19", 1, seed=5)))
    bad = ExposureSpec(**{**base.__dict__, "filename": "811999p", "overrides": {"RUNID": None}})
    write_exposure(bad, node_root / "raid1" / "03AF19", "fits")
    outside = node_root.parent / "outside"
    outside.mkdir(exist_ok=True)
    os.symlink(outside, node_root / "raid1" / "03AF19" / "elsewhere")
    os.symlink("..", node_root / "raid1" / "03AF19" / "loop")

    code, out, err = _spica(demo, db_url, "ingest", "--node", "mix1", "--json", "raid1/03AF19")
    assert code == 1, err
    data = json.loads(out)
    assert data["added"] == 3
    skipped = {Path(s["path"]).name: (s["key"], s["reason"]) for s in data["skipped"]}
    assert skipped["811999p.fits"] == ("RUNID", "missing (runid needs RUNID)")
    assert "leading out of" in skipped["elsewhere"][1]
    assert "directory loop" in skipped["loop"][1]
    rows = _rows(db_engine)
    assert set(rows) == {"811001p", "811002p", "811003p"}
    for path in files:
        checksum, size = file_checksum(path)
        assert rows[path.name.split(".")[0]][:7] == (
            "mix1", "raid1", None, str(path), checksum, size, 36
        )  # fmt: skip
    with Session(db_engine) as s:
        runid = s.scalars(select(Runid).where(Runid.name == "03AF19")).one()
        assert (runid.images, runid.bytes) == (3, sum(p.stat().st_size for p in files))

    # The same files named through --partition: nothing changes.
    before = _rows(db_engine)
    code, out, err = _spica(
        demo, db_url, "ingest", "--node", "mix1", "--partition", "raid1", "--json", "03AF19"
    )
    assert code == 1 and json.loads(out)["unchanged"] == 3
    assert _rows(db_engine) == before


def test_repository_on_a_node(demo: DemoCluster, node_root: Path, db_engine: Engine, db_url: str):
    incoming = node_root / "incoming"
    files = write_runid(RunidPlan("03AL02", 2, seed=6), incoming, "fits.fz")
    code, out, err = _spica(demo, db_url, "ingest", str(incoming), repository=str(incoming))
    assert code == 0, err
    assert "2 added" in out
    rows = _rows(db_engine)
    for path in files:
        node, partition, repository, shown, *_ = rows[path.name.split(".")[0]]
        assert (node, partition, repository, shown) == ("mix1", None, "cadc2", str(path))


def test_paths_outside_the_node_root(demo: DemoCluster, node_root: Path, db_url: str):
    code, _, err = _spica(demo, db_url, "ingest", "--node", "mix1", "/etc")
    assert code == 2 and "not under the spica root" in err
    code, _, err = _spica(demo, db_url, "ingest", "--node", "mix1", "../..")
    assert code == 2 and "not under the spica root" in err
    code, _, err = _spica(demo, db_url, "ingest", "--node", "nosuch", "raid1")
    assert code == 2 and "no node named 'nosuch'" in err


def test_the_agent_answers_in_pages_and_stays_in_its_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spica_core.node import protocol as proto
    from spica_core.node.agent import Agent

    root = tmp_path / "root"
    files = write_runid(RunidPlan("03AQ98", 5, seed=9, ccds=2), root / "raid2", "fits")
    agent = Agent(root)
    monkeypatch.setattr(proto, "MAX_FITS_FILES", 2)

    def ask(*paths: str, offset: int = 0) -> dict[str, object]:
        line = proto.encode_request(1, proto.FitsHeadersArgs(paths=list(paths), offset=offset))
        return json.loads(agent.respond(line.rstrip(b"\n")))  # type: ignore[no-any-return]

    pages, offset = [], 0
    while offset is not None:
        answer = ask("raid2", offset=offset)
        result = answer["result"]
        pages.append([f["path"] for f in result["files"]])  # type: ignore[index]
        offset = result["next"]  # type: ignore[index]
        assert result["total"] == 5  # type: ignore[index]
    assert pages == [
        [f"raid2/03AQ98/{p.name}" for p in files[0:2]],
        [f"raid2/03AQ98/{p.name}" for p in files[2:4]],
        [f"raid2/03AQ98/{p.name}" for p in files[4:5]],
    ]
    first = ask("raid2/03AQ98/" + files[0].name)["result"]["files"][0]  # type: ignore[index]
    assert (first["checksum"], first["size"]) == file_checksum(files[0])
    assert first["extensions"] == 2
    for bad in ("/etc", "../x"):
        answer = ask(bad)
        assert answer["ok"] is False and answer["error"]["code"] == "outside_root"  # type: ignore[index]
