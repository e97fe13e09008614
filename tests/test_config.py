"""Configuration: discovery order, validation messages, masking, and bad files via the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spica_core.config import ConfigError, load_config, mask_url, parse_config, parse_size
from spica_core.resources import example_config
from tests.conftest import invoke_spica, run_spica

GOOD = """
cluster = "terapix"
[db]
url = "sqlite:///dbspica.sqlite"
[[nodes]]
name = "mix1"
host = "127.0.0.1"
root = "/data/mix1"
[[nodes.partitions]]
name = "raid1"
capacity = "652 GB"
reserved = "50 GB"
"""


def test_example_config_documents_and_validates_every_section() -> None:
    cfg = load_config(example_config())
    assert cfg.nodes[0].name == "mix1"
    assert cfg.nodes[0].partitions[0].reserved == 50 * 10**9
    text = example_config().read_text()
    for section in (
        "[db]",
        "[ssh]",
        "[[nodes]]",
        "[smtp]",
        "[release]",
        "[[releases]]",
        "[[grids]]",
        "[daemon]",
        "[console]",
        "known_hosts",
        "refresh_interval",
    ):
        assert section in text


def test_embedded_default_is_sqlite_in_user_data_dir(isolated_env: Path) -> None:
    cfg = load_config()
    assert cfg.source == "embedded default"
    assert cfg.db.url.startswith("sqlite:///")
    assert cfg.db.url.endswith("dbspica.sqlite")
    assert str(Path(os.environ["HOME"])) in cfg.db.url
    assert cfg.nodes == []


def test_lookup_order(isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user = Path(os.environ["XDG_CONFIG_HOME"]) / "spica" / "spica.toml"
    user.parent.mkdir(parents=True)
    user.write_text('cluster = "user"\n')
    assert load_config().cluster == "user"
    (isolated_env / "spica.toml").write_text('cluster = "cwd"\n')
    assert load_config().cluster == "cwd"
    env_file = tmp_path / "env.toml"
    env_file.write_text('cluster = "env"\n')
    monkeypatch.setenv("SPICA_CONFIG", str(env_file))
    assert load_config().cluster == "env"
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('cluster = "explicit"\n')
    assert load_config(explicit).cluster == "explicit"


def test_db_url_env_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(GOOD)
    monkeypatch.setenv("SPICA_DB_URL", "mysql+pymysql://spica:pw@db/dbspica")
    assert load_config(f).db.url == "mysql+pymysql://spica:pw@db/dbspica"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    f = tmp_path / "conf" / "spica.toml"
    f.parent.mkdir()
    f.write_text(GOOD + '\n[ssh]\nknown_hosts = "kh"\nclient_keys = ["keys/id"]\n')
    cfg = load_config(f)
    assert cfg.db.url == f"sqlite:///{tmp_path / 'conf' / 'dbspica.sqlite'}"
    assert cfg.ssh.known_hosts == str(tmp_path / "conf" / "kh")
    assert cfg.ssh.client_keys == [str(tmp_path / "conf" / "keys" / "id")]


def test_sizes() -> None:
    assert parse_size("652 GB") == 652 * 10**9
    assert parse_size("1.5TiB") == int(1.5 * 2**40)
    assert parse_size(123) == 123
    for bad in ("lots", -1, True, "12 parsecs"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_mask_url() -> None:
    assert (
        mask_url("mysql+pymysql://spica:s3cr3t@db:3306/x") == "mysql+pymysql://spica:***@db:3306/x"
    )
    assert mask_url("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert mask_url("mysql+pymysql://root@db/x") == "mysql+pymysql://root@db/x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[db\nurl = 1", "invalid TOML"),
        ("colour = 'red'", "key colour: unknown key"),
        ("[[nodes]]\nname = 'mix1'\nhost = 'h'\nroot = '/r'\nport = 'ssh'", "key nodes[0].port"),
        ("[[nodes]]\nname = 'mix1'\nhost = 'h'", "key nodes[0].root: required key is missing"),
        (
            "[[nodes]]\nname = 'x;y'\nhost = 'h'\nroot = '/r'",
            "key nodes[0].name: invalid node name",
        ),
        ("[console]\nrefresh_interval = -1", "key console.refresh_interval"),
        ("[daemon]\nrecover = 'maybe'", "key daemon.recover: expected 'pending' or 'failed'"),
        (GOOD + GOOD.split("\n", 4)[4], "node 'mix1' is defined twice"),
    ],
)
def test_validation_messages_name_file_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/spica/spica.toml")
    assert str(info.value).startswith("/etc/spica/spica.toml:")
    assert expected in str(info.value)


def test_smtp_password_is_never_shown(tmp_path: Path) -> None:
    cfg = parse_config("[smtp]\npassword = 'hunter2'\n", "f.toml")
    assert "hunter2" not in repr(cfg)
    assert cfg.smtp.password is not None and cfg.smtp.password.get_secret_value() == "hunter2"


BAD_FILES = {
    "syntax": ("[db\n", "invalid TOML"),
    "unknown-key": ("[db]\nurl = 'sqlite:///x.sqlite'\nuser = 'x'\n", "key db.user: unknown key"),
    "wrong-type": ("[console]\nrefresh_interval = 'soon'\n", "key console.refresh_interval"),
}


@pytest.mark.parametrize("case", [*BAD_FILES, "missing"])
@pytest.mark.parametrize("command", [["stacks"], ["db", "init"]])
def test_bad_config_exits_2_and_writes_nothing(
    case: str, command: list[str], tmp_path: Path
) -> None:
    work = tmp_path / "bad"
    work.mkdir()
    conf = work / "spica.toml"
    if case == "missing":
        conf = work / "nowhere.toml"
        expected = "does not exist"
    else:
        text, expected = BAD_FILES[case]
        conf.write_text(text)
    before = sorted(p.name for p in work.iterdir())
    result = invoke_spica("--config", str(conf), *command, cwd=work)
    assert result.returncode == 2, result.stderr
    assert str(conf) in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == before
    assert not any(p.suffix == ".sqlite" for p in Path(os.environ["HOME"]).rglob("*"))


def test_spica_config_env_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    result = run_spica("stacks", env={"SPICA_CONFIG": str(tmp_path / "gone.toml")})
    assert result.returncode == 2
    assert "gone.toml" in result.stderr and "SPICA_CONFIG" in result.stderr


def _node(root: str, partition: str = "") -> str:
    return f"[[nodes]]\nname = 'mix1'\nhost = 'h'\nroot = {json.dumps(root)}\n{partition}"


@pytest.mark.parametrize(
    ("root", "why"),
    [
        ("/", "the whole filesystem"),
        ("", "empty"),
        ("../../", "not absolute"),
        ("spica", "not absolute"),
        ("~/spica", "not absolute"),
        ("/data/../etc", "not normalized"),
        ("/data//spica", "not normalized"),
        ("/data/./spica", "not normalized"),
        ("//", "the whole filesystem"),
        ("/etc", "system directory"),
        ("/usr/local/spica", "system directory"),
        ("/proc/1", "system directory"),
        ("/home", "system directory"),
        ("/tmp", "system directory"),
        ("/data/spi\nca", "control character"),
    ],
)
def test_dangerous_node_roots_are_refused(root: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_node(root), "/etc/spica/spica.toml")
    message = str(info.value)
    assert message.startswith("/etc/spica/spica.toml: key nodes[0].root:"), message
    assert why in message


@pytest.mark.parametrize("root", ["/data/mix1/spica", "/data/mix1/spica/", "/r", "/tmp/x/root"])
def test_plain_node_roots_are_kept_normalized(root: str) -> None:
    cfg = parse_config(_node(root), "f.toml")
    assert cfg.nodes[0].root == root.rstrip("/")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ssh]\ncall_timeout = inf", "ssh.call_timeout"),
        ("[ssh]\nconnect_timeout = nan", "ssh.connect_timeout"),
        ("[ssh]\nagent_start_timeout = -5", "ssh.agent_start_timeout"),
        ("[ssh]\nmax_backoff = 1e300", "ssh.max_backoff"),
        ("[db]\nconnect_timeout = inf", "db.connect_timeout"),
        ("[smtp]\ntimeout = nan", "smtp.timeout"),
        ("[daemon]\nstop_grace = inf", "daemon.stop_grace"),
        ("[daemon]\nstop_grace = -1", "daemon.stop_grace"),
        ("[daemon]\npoll_interval = nan", "daemon.poll_interval"),
        ("[daemon]\nheartbeat_interval = inf", "daemon.heartbeat_interval"),
        ("[daemon]\ncheck_backoff_max = inf", "daemon.check_backoff_max"),
        ("[console]\nrefresh_interval = inf", "console.refresh_interval"),
    ],
)
def test_infinite_nan_and_negative_durations_are_refused(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f\.toml: key {key}: "):
        parse_config(text, "f.toml")


def test_reserved_or_min_free_over_a_partitions_capacity_is_refused() -> None:
    part = "[[nodes.partitions]]\nname = 'raid1'\ncapacity = '100 GB'\n"
    with pytest.raises(ConfigError) as info:
        parse_config(_node("/data/mix1", part + "reserved = '101 GB'\n"), "f.toml")
    assert str(info.value).startswith("f.toml: key nodes[0].partitions[0]: ")
    assert "reserved" in str(info.value) and "capacity" in str(info.value)
    with pytest.raises(ConfigError, match="min_free"):
        parse_config(_node("/data/mix1", part + "min_free = '1 TB'\n"), "f.toml")
    ok = parse_config(_node("/data/mix1", part + "reserved = '100 GB'\n"), "f.toml")
    assert ok.nodes[0].partitions[0].reserved == 100 * 10**9


def test_the_agent_refuses_a_dangerous_root(tmp_path: Path) -> None:
    """The agent is started with a root on the node: the same rule applies there, to the
    root as given and to where it really leads."""
    (tmp_path / "to-slash").symlink_to("/")
    (tmp_path / "to-etc").symlink_to("/etc")
    for root, why in (
        ("/", "the whole filesystem"),
        ("/etc", "system directory"),
        (str(tmp_path / "to-slash"), "the whole filesystem"),
        (str(tmp_path / "to-etc"), "system directory"),
        ("../..", "not absolute"),
    ):
        result = run_spica("node", "serve", "--root", root, input="", timeout=60)
        assert result.returncode == 2, (root, result)
        assert f"--root {root}" in result.stderr and why in result.stderr, result.stderr
        assert result.stdout == "" and "Traceback" not in result.stderr


def test_the_daemon_refuses_a_root_leading_to_a_system_directory(tmp_path: Path) -> None:
    (tmp_path / "spica").symlink_to("/proc")  # (/proc: nothing can be made there by mistake)
    conf = tmp_path / "spica.toml"
    conf.write_text(
        f"[db]\nurl = 'sqlite:///{tmp_path}/db.sqlite'\n" + _node(str(tmp_path / "spica"))
    )
    result = run_spica("--config", str(conf), "daemon", "--node", "mix1", timeout=60)
    assert result.returncode == 2, result
    assert "/proc is a system directory" in result.stderr and "Traceback" not in result.stderr
