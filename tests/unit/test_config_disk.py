"""The disk space settings: disk_low_free_bytes and disk_min_free_bytes, their defaults, the
flags and TOML names, and errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from replikv.cli import main
from replikv.config import ConfigError, load_settings

PEERS = "n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
FLAGS = {"id": "n1", "data_dir": "d", "listen": "127.0.0.1:7001",
         "peer_listen": "127.0.0.1:7101", "peers": PEERS}
MIB = 1024 * 1024


def test_defaults_are_512_mib_low_and_16_mib_to_start():
    s = load_settings(None, FLAGS)
    assert (s.disk_low_free_bytes, s.disk_min_free_bytes) == (512 * MIB, 16 * MIB)


def test_from_toml_with_flags_overriding(tmp_path: Path):
    f = tmp_path / "n1.toml"
    f.write_text("disk_low_free_bytes = 1073741824\ndisk-min-free-bytes = 0\n")
    s = load_settings(f, FLAGS)
    assert (s.disk_low_free_bytes, s.disk_min_free_bytes) == (1024 * MIB, 0)
    s = load_settings(f, {**FLAGS, "disk_min_free_bytes": "1048576"})
    assert s.disk_min_free_bytes == MIB, "flags win"
    both_off = load_settings(None, {**FLAGS, "disk_low_free_bytes": 0, "disk_min_free_bytes": 0})
    assert (both_off.disk_low_free_bytes, both_off.disk_min_free_bytes) == (0, 0)
    huge = load_settings(None, {**FLAGS, "disk_low_free_bytes": 1 << 50})
    assert huge.disk_low_free_bytes == 1 << 50


@pytest.mark.parametrize("override, words", [
    ({"disk_low_free_bytes": -1},
     (r"disk_low_free_bytes: expected 0 \(off\) or a number of bytes such as 536870912 "
      r"\(512 MiB\), got -1")),
    ({"disk_min_free_bytes": -5, "disk_low_free_bytes": 0},
     r"disk_min_free_bytes: expected 0 \(off\) or a number of bytes"),
    ({"disk_low_free_bytes": 1 << 61}, "disk_low_free_bytes: expected 0"),
    ({"disk_low_free_bytes": "lots"}, "disk_low_free_bytes: expected an integer, got 'lots'"),
    ({"disk_min_free_bytes": 1.5}, "disk_min_free_bytes: expected an integer"),
    ({"disk_min_free_bytes": True}, "disk_min_free_bytes: expected an integer"),
    ({"disk_min_free_bytes": 2 * MIB, "disk_low_free_bytes": MIB},
     r"disk_min_free_bytes \(2097152\) is above disk_low_free_bytes \(1048576\)"),
    # Turning the low report off alone leaves the default start-up check above it.
    ({"disk_low_free_bytes": 0}, "Lower disk_min_free_bytes as well"),
])
def test_bad_values_name_the_setting(override, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(None, {**FLAGS, **override})


def test_node_flags():
    runner = CliRunner()
    help_text = runner.invoke(main, ["node", "--help"]).output
    assert "--disk-low-free-bytes" in help_text and "--disk-min-free-bytes" in help_text
    result = runner.invoke(main, ["node", "--id", "n1", "--data-dir", "d", "--listen",
                                  "127.0.0.1:7001", "--peer-listen", "127.0.0.1:7101",
                                  "--peers", PEERS, "--disk-min-free-bytes", "-1"])
    assert result.exit_code == 2 and "disk_min_free_bytes: expected 0" in result.output
    result = runner.invoke(main, ["node", "--id", "n1", "--disk-low-free-bytes", "much"])
    assert result.exit_code == 2 and "'much' is not a valid integer" in result.output
