"""The demo's spica.toml is its configuration model written as TOML: loading it gives the
same model back (relative paths resolved next to the file)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from spica_core.config import load_config
from spica_core.demo.cluster import DemoError, demo_config, render_config
from spica_core.demo.layout import DemoPaths


def test_the_written_config_loads_as_the_model(tmp_path: Path) -> None:
    paths = DemoPaths.at(tmp_path / "demo")
    paths.directory.mkdir()
    nodes = [("mix1", 40001), ("pix1", 40002)]
    model = demo_config(paths, nodes)
    text = render_config(paths, nodes)
    assert text.startswith("# SPICA configuration of the demo cluster")
    assert tomllib.loads(text)["daemon"] == {
        "poll_interval": 0.5,
        "heartbeat_interval": 1.0,
        "stop_grace": 5.0,
        "check_backoff": 5.0,
    }
    paths.config.write_text(text)

    loaded = load_config(paths.config)
    d = paths.directory
    expected = model.model_copy(
        update={
            "db": model.db.model_copy(update={"url": f"sqlite:///{d / 'dbspica.sqlite'}"}),
            "ssh": model.ssh.model_copy(
                update={
                    "known_hosts": str(d / "known_hosts"),
                    "client_keys": [str(d / "keys" / "client_ed25519")],
                }
            ),
        }
    )
    assert loaded.model_dump() == expected.model_dump()
    assert [(n.name, n.port, n.root) for n in loaded.nodes] == [
        ("mix1", 40001, str(paths.root("mix1"))),
        ("pix1", 40002, str(paths.root("pix1"))),
    ]
    assert loaded.nodes[0].partitions[0].capacity == 652_036_000_000
    assert loaded.nodes[1].partitions[0].capacity == 1_869_964_000_000


def test_a_directory_the_config_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    """A directory name that is not UTF-8 (a lone surrogate here): a DemoError naming the
    file and the key, never a half-written file or a traceback."""
    paths = DemoPaths.at(tmp_path / "d\udcff")
    with pytest.raises(DemoError, match=r"cannot write .*spica\.toml: root: .*control"):
        render_config(paths, [("mix1", 40001)])
