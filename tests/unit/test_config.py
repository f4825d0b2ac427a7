"""Node settings: flags over TOML, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from replikv.cli import main
from replikv.config import Address, ConfigError, load_settings

PEERS = "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
FLAGS = {"id": "n1", "data_dir": "d", "listen": "127.0.0.1:7001",
         "peer_listen": "127.0.0.1:7101", "peers": PEERS}


def test_flags_alone():
    s = load_settings(None, FLAGS)
    assert s.id == "n1" and s.listen == Address("127.0.0.1", 7001)
    assert set(s.peers) == {"n1", "n2", "n3"}
    assert s.cluster_id.startswith("replikv-")


def test_snapshots_are_due_by_the_growth_rule_by_default(tmp_path: Path):
    s = load_settings(None, FLAGS)
    assert (s.snapshot_log_ratio, s.snapshot_log_min_bytes, s.snapshot_entries) == (
        0.25, 8 * 1024 * 1024, 0)
    f = tmp_path / "n1.toml"
    f.write_text("snapshot_log_ratio = 0.5\nsnapshot_entries = 1000\n")
    s = load_settings(f, {**FLAGS, "snapshot_log_min_bytes": "1024"})
    assert (s.snapshot_log_ratio, s.snapshot_log_min_bytes, s.snapshot_entries) == (
        0.5, 1024, 1000)
    assert load_settings(None, {**FLAGS, "snapshot_log_ratio": 1}).snapshot_log_ratio == 1.0


def test_cluster_id_default_depends_on_members_only():
    a = load_settings(None, FLAGS)
    b = load_settings(None, {**FLAGS, "id": "n2", "peer_listen": "127.0.0.1:7102",
                             "listen": "127.0.0.1:7002"})
    c = load_settings(None, {**FLAGS, "peers": PEERS + ",n4=127.0.0.1:7104"})
    assert a.cluster_id == b.cluster_id != c.cluster_id


def test_toml_file_with_flags_overriding(tmp_path: Path):
    f = tmp_path / "n1.toml"
    f.write_text('id = "n1"\ndata_dir = "x"\nlisten = "127.0.0.1:7001"\n'
                 'peer-listen = "127.0.0.1:7101"\n'
                 '[peers]\nn1 = "127.0.0.1:7101"\nn2 = "127.0.0.1:7102"\n'
                 'n3 = "127.0.0.1:7103"\n')
    s = load_settings(f, {"listen": "127.0.0.1:9999", "tick_ms": None})
    assert s.listen.port == 9999 and str(s.data_dir) == "x" and len(s.peers) == 3


@pytest.mark.parametrize("override, words", [
    ({"listen": "localhost"}, "listen: expected HOST:PORT"),
    ({"listen": "h:99999"}, "listen: expected HOST:PORT"),
    ({"peers": "n1=127.0.0.1:7101,n1=127.0.0.1:7102"}, "appears twice"),
    ({"peers": "n2=127.0.0.1:7102"}, "peers must include this node"),
    ({"peers": "garbage"}, "expected ID=HOST:PORT"),
    ({"id": "n 1"}, "id: use letters"),
    ({"election_ticks": 3}, "election_ticks"),
    ({"tick_ms": "fast"}, "tick_ms: expected an integer"),
    ({"snapshot_log_ratio": "half"}, "snapshot_log_ratio: expected a number"),
    ({"snapshot_log_ratio": "nan"}, "snapshot_log_ratio: expected a finite number"),
    ({"snapshot_log_ratio": -0.5}, "snapshot_log_ratio: expected 0 .off. or a fraction"),
    ({"snapshot_log_ratio": True}, "snapshot_log_ratio: expected a number"),
    ({"snapshot_log_min_bytes": -1}, "snapshot_log_min_bytes: expected a number of bytes"),
])
def test_bad_settings_name_what_is_wrong(override, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(None, {**FLAGS, **override})


def test_missing_and_unknown_settings(tmp_path: Path):
    with pytest.raises(ConfigError, match="data_dir is required"):
        load_settings(None, {k: v for k, v in FLAGS.items() if k != "data_dir"})
    f = tmp_path / "x.toml"
    f.write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        load_settings(f, FLAGS)
    f.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="x.toml"):
        load_settings(f, FLAGS)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", FLAGS)


def test_cli_help_has_examples_and_bad_flags_are_usage_errors():
    runner = CliRunner()
    for args in (["--help"], ["node", "--help"], ["cluster", "--help"],
                 ["cluster", "up", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    assert "replikv node --id n1" in runner.invoke(main, ["node", "--help"]).output
    assert "replikv cluster up" in runner.invoke(main, ["cluster", "up", "--help"]).output
    result = runner.invoke(main, ["node", "--id", "n1"])
    assert result.exit_code == 2 and "is required" in result.output


@pytest.mark.parametrize(("given", "size"), [
    (0, 0), ("0", 0), (1048576, 1048576), ("100mb", 100 * 1024 ** 2), ("100MB", 100 * 1024 ** 2),
    ("2gb", 2 * 1024 ** 3), ("2g", 2 * 1000 ** 3), ("500k", 500_000), ("12kb", 12 * 1024),
    ("64b", 64)])
def test_maxmemory_takes_redis_memory_units(tmp_path: Path, given, size):
    assert load_settings(None, {**FLAGS, "maxmemory": given}).maxmemory == size
    f = tmp_path / "n1.toml"
    f.write_text(f"maxmemory = {given!r}\n".replace("'", '"'))
    assert load_settings(f, FLAGS).maxmemory == size


@pytest.mark.parametrize("given", ["-1", "1.5gb", "10 mb", "mb", "1tb", "lots", True, 2 ** 60])
def test_a_bad_maxmemory_says_what_a_size_looks_like(given):
    with pytest.raises(ConfigError, match="maxmemory: expected a size"):
        load_settings(None, {**FLAGS, "maxmemory": given})


def test_maxmemory_policy_is_noeviction_and_an_eviction_policy_says_why_not():
    assert load_settings(None, FLAGS).maxmemory_policy == "noeviction"
    with pytest.raises(ConfigError, match="never evicts"):
        load_settings(None, {**FLAGS, "maxmemory_policy": "allkeys-lru"})
    with pytest.raises(ConfigError, match="expected 'noeviction'"):
        load_settings(None, {**FLAGS, "maxmemory_policy": "sometimes"})
