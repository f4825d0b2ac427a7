"""The fsync setting: names, defaults, validation, and how it reaches each node of a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from replikv.cli import main
from replikv.config import ConfigError, load_settings
from replikv.local_cluster import LocalCluster

PEERS = "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
FLAGS = {"id": "n1", "data_dir": "d", "listen": "127.0.0.1:7001",
         "peer_listen": "127.0.0.1:7101", "peers": PEERS}


def test_default_is_always_every_100_ms():
    s = load_settings(None, FLAGS)
    assert (s.fsync, s.fsync_interval_ms) == ("always", 100)


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_each_mode_from_flags(mode: str):
    s = load_settings(None, {**FLAGS, "fsync": mode, "fsync_interval_ms": 250})
    assert (s.fsync, s.fsync_interval_ms) == (mode, 250)


def test_from_toml_with_dashes_or_underscores(tmp_path: Path):
    f = tmp_path / "n1.toml"
    f.write_text('fsync = "batch"\nfsync-interval-ms = 20\n')
    s = load_settings(f, FLAGS)
    assert (s.fsync, s.fsync_interval_ms) == ("batch", 20)
    assert load_settings(f, {**FLAGS, "fsync": "never"}).fsync == "never", "flags win"


@pytest.mark.parametrize("override, words", [
    ({"fsync": "sometimes"}, "fsync: expected one of always, batch, never, got 'sometimes'"),
    ({"fsync": "ALWAYS"}, "fsync: expected one of always, batch, never"),
    ({"fsync": 1}, "fsync: expected a string"),
    ({"fsync_interval_ms": 0}, r"fsync_interval_ms: expected 1\.\.10000 \(milliseconds\)"),
    ({"fsync_interval_ms": 10_001}, r"fsync_interval_ms: expected 1\.\.10000"),
    ({"fsync_interval_ms": "often"}, "fsync_interval_ms: expected an integer"),
])
def test_bad_values_name_the_setting(override, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(None, {**FLAGS, **override})


def test_node_flags():
    runner = CliRunner()
    help_text = runner.invoke(main, ["node", "--help"]).output
    assert "--fsync [always|batch|never]" in help_text and "--fsync-interval-ms" in help_text
    result = runner.invoke(main, ["node", "--id", "n1", "--fsync", "sometimes"])
    assert result.exit_code == 2 and "'sometimes' is not one of" in result.output
    result = runner.invoke(main, ["node", "--id", "n1", "--data-dir", "d", "--listen",
                                  "127.0.0.1:7001", "--peer-listen", "127.0.0.1:7101",
                                  "--peers", PEERS, "--fsync", "batch",
                                  "--fsync-interval-ms", "0"])
    assert result.exit_code == 2 and "fsync_interval_ms: expected 1..10000" in result.output
    assert "--fsync [always|batch|never]" in runner.invoke(main, ["cluster", "up",
                                                                  "--help"]).output


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_cluster_up_writes_the_mode_into_every_node_toml(tmp_path: Path, mode: str):
    cluster = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=tmp_path, fsync=mode)
    cluster.write_configs()
    for n in cluster.nodes:
        s = load_settings(n.config_path, {})
        assert (s.id, s.fsync) == (n.id, mode)
