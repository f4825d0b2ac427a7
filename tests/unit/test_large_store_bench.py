"""benchmarks/large_store.py without a cluster: its policies, its bench command, its report."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.large_store import POLICIES, bench_command, format_report, parse_policies
from replikv.config import load_settings

FLAGS = {"id": "n1", "data_dir": "d", "listen": "127.0.0.1:7001",
         "peer_listen": "127.0.0.1:7101", "peers": "n1=127.0.0.1:7101"}


def settings_for(args: list[str]):
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    return load_settings(None, {**FLAGS, **{k.removeprefix("--").replace("-", "_"): v
                                            for k, v in pairs.items()}})


def test_each_policy_is_the_rule_it_names():
    growth, count, off = (settings_for(POLICIES[p]) for p in ("growth", "count", "off"))
    assert growth.snapshot_log_ratio > 0 and growth.snapshot_entries == 0  # the defaults
    assert (count.snapshot_log_ratio, count.snapshot_entries) == (0, 50_000)
    assert (off.snapshot_log_ratio, off.snapshot_entries, off.snapshot_log_bytes) == (0, 0, 0)


def test_policies_are_parsed_in_order_and_unknown_ones_refused():
    assert parse_policies("off, growth") == ["off", "growth"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown policies"):
        parse_policies("growth,fast")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_policies(" , ")


class FakeCluster:
    ids = ("n1", "n2", "n3")

    def port(self, node_id: str) -> int:
        return {"n1": 7001, "n2": 7002, "n3": 7003}[node_id]


def test_the_bench_targets_the_running_cluster_as_json():
    cmd = bench_command(FakeCluster(), "set64", 30.0)
    i = cmd.index("--cluster")
    assert cmd[i + 1] == "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    assert cmd[cmd.index("--workloads") + 1] == "set64" and "--json" in cmd


def policy(name: str, ops: float, snapshots: int, backups: int = 0) -> dict:
    return {"policy": name, "ops_per_s": ops, "errors": 0,
            "latency_ms": {"p50": 4.0, "p99": 20.0, "p999": 50.0},
            "nodes": {n: {"leader": n == "n1", "cpu_s_per_1k_ops": 0.05,
                          "snapshots_during_workload": snapshots,
                          "scheduled_backups_during_workload": backups if n == "n1" else 0,
                          "overhead_bytes_per_key": 150.0,
                          "gc_full_collections_during_workload": 4,
                          "gc_full_pause_ms_max": 12.4} for n in ("n1", "n2", "n3")}}


def test_the_report_gives_each_policy_and_the_ratios():
    text = format_report({"policies": [policy("growth", 12_000, 2), policy("count", 8_000, 6),
                                       policy("off", 15_000, 0), policy("backups", 9_000, 3, 2)]})
    lines = text.splitlines()
    assert lines[1].split()[:2] == ["growth", "12,000"]
    assert "0.050* 0.050 0.050" in lines[1] and lines[2].split()[-12:-9] == ["6", "6", "6"]
    assert lines[4].split()[-12:-6] == ["3", "3", "3", "2", "0", "0"]  # snapshots, backups
    assert lines[1].split()[-3:] == ["4(12)", "4(12)", "4(12)"]
    # A report from before the backups column (benchmarks/results/*.json) still prints.
    old = policy("growth", 12_000, 2)
    for node in old["nodes"].values():
        del node["scheduled_backups_during_workload"]
    assert format_report({"policies": [old]}).splitlines()[1].split()[-9:-6] == ["?"] * 3
    assert "growth / count: 1.50 of the throughput" in text
    assert "growth / off: 0.80 of the throughput" in text
