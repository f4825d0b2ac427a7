"""The pure parts of `benchmarks/memory.py`: the overhead arithmetic, the verdict, allocator
rounding, per-node summaries from /proc readings, the breakdown's summary and the report."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.memory import (
    REPO_ROOT,
    TARGET_OVERHEAD_BYTES,
    alloc_size,
    breakdown_worker,
    format_breakdown,
    format_cluster,
    key_len,
    node_args,
    node_summary,
    overhead_per_key,
    repo_frame,
    smaps_rss_kib,
    stored_bytes,
    summarize_breakdown,
    verdict,
)

MIB = 2**20


def test_loaded_keys_are_13_bytes_up_to_a_billion():
    assert key_len(1) == key_len(1_000_000) == key_len(10**9) == len(b"key:000000000")
    with pytest.raises(ValueError):
        key_len(0)


def test_stored_bytes_counts_key_and_value_of_every_key():
    assert stored_bytes(1_000_000, 13, 100) == 113_000_000
    assert stored_bytes(0, 13, 100) == 0


def test_overhead_subtracts_the_baseline_and_the_key_and_value_bytes():
    keys, klen, vlen = 1_000_000, 13, 100
    baseline = 30 * MIB
    rss = baseline + keys * (klen + vlen) + keys * 150
    assert overhead_per_key(rss, baseline, keys, klen, vlen) == 150.0
    # Forgetting the key and value bytes would give 263, forgetting the baseline 150 + 31.5.
    assert overhead_per_key(rss, baseline, keys, klen, vlen) != (rss - baseline) / keys
    assert overhead_per_key(rss, 0, keys, klen, vlen) == pytest.approx(150 + baseline / keys)
    # The key's bytes count as data too, not only the value's.
    assert overhead_per_key(rss, baseline, keys, 0, vlen) == 163.0


def test_overhead_can_be_negative_and_needs_keys():
    assert overhead_per_key(100, 100, 1, 10, 10) == -20.0
    with pytest.raises(ValueError):
        overhead_per_key(100, 0, 0, 1, 1)


def test_verdict_passes_at_the_target_and_misses_above():
    assert TARGET_OVERHEAD_BYTES == 200
    assert verdict(200) == "PASS"
    assert verdict(-5) == "PASS"
    assert verdict(200.1) == "MISS"
    assert verdict(150, target=100) == "MISS"


def test_alloc_size_rounds_like_pymalloc_then_like_glibc():
    assert alloc_size(0) == 0
    assert alloc_size(1) == 16
    assert alloc_size(46) == 48  # a 13-byte bytes object
    assert alloc_size(133) == 144  # a 100-byte bytes object
    assert alloc_size(512) == 512
    assert alloc_size(513) == 528  # malloc: 8 bytes of header, 16-byte chunks
    assert alloc_size(60_033) == 60_048


def test_node_args_turn_automatic_snapshots_off_and_set_the_kept_entries():
    from replikv.config import load_settings

    args = node_args(10)
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs == {"--snapshot-log-ratio": "0", "--snapshot-entries": "0",
                     "--snapshot-log-bytes": "0", "--snapshot-keep-entries": "10"}
    # As the node reads them: no rule left that would snapshot during the load.
    flags = {"id": "n1", "data_dir": "d", "listen": "127.0.0.1:7001",
             "peer_listen": "127.0.0.1:7101", "peers": "n1=127.0.0.1:7101",
             **{k.removeprefix("--").replace("-", "_"): v for k, v in pairs.items()}}
    s = load_settings(None, flags)
    assert (s.snapshot_log_ratio, s.snapshot_entries, s.snapshot_log_bytes) == (0, 0, 0)
    assert s.snapshot_keep_entries == 10
    # With the nodes' own rules, only the kept entries are set.
    assert node_args(10, "default") == ["--snapshot-keep-entries", "10"]


def kib(rss_mib: float, hwm_mib: float) -> dict[str, int]:
    return {"VmRSS": int(rss_mib * 1024), "VmHWM": int(hwm_mib * 1024)}


def test_node_summary_reads_kib_and_judges_each_moment():
    keys = 1_000_000
    data_mib = keys * 113 / MIB  # 107.8 MiB
    per_key_mib = keys / MIB
    s = node_summary("leader", kib(30, 31),
                     kib(30 + data_mib + 250 * per_key_mib, 30 + data_mib + 250 * per_key_mib),
                     kib(30 + data_mib + 120 * per_key_mib, 30 + data_mib + 260 * per_key_mib),
                     keys=keys, key_bytes=13, value_bytes=100)
    assert s["baseline_rss_bytes"] == 30 * MIB  # KiB turned into bytes
    assert s["overhead_loaded_bytes_per_key"] == pytest.approx(250, abs=0.1)
    assert s["overhead_compacted_bytes_per_key"] == pytest.approx(120, abs=0.1)
    assert s["overhead_hwm_bytes_per_key"] == pytest.approx(260, abs=0.1)
    assert (s["verdict_loaded"], s["verdict_compacted"], s["verdict_hwm"]) == (
        "MISS", "PASS", "MISS")


def cluster_result() -> dict:
    nodes = {}
    for n, role, over in (("n1", "leader", 250.0), ("n2", "follower", 190.0)):
        nodes[n] = {
            "role": role, "baseline_rss_bytes": 30 * MIB, "loaded_rss_bytes": 400 * MIB,
            "compacted_rss_bytes": 300 * MIB, "hwm_end_bytes": 420 * MIB,
            "log_entries_held_loaded": 2017, "log_entries_held_compacted": 10,
            "overhead_loaded_bytes_per_key": over, "verdict_loaded": verdict(over),
            "overhead_compacted_bytes_per_key": over - 100,
            "verdict_compacted": verdict(over - 100),
            "overhead_hwm_bytes_per_key": over + 20, "verdict_hwm": verdict(over + 20),
            "snapshot_index": 2017, "snapshot_bytes": 120 * MIB, "snapshot_seconds": 7.0,
        }
    return {
        "keys": 1_000_000, "key_bytes": 13, "value_bytes": 100, "stored_bytes": 113_000_000,
        "leader": "n1", "node_args": node_args(10), "node_env": {},
        "load": {"seconds": 20.0, "keys_per_s": 50_000, "batch_keys": 500,
                 "pipeline_depth": 8, "reconnects": 0},
        "target_bytes_per_key": 200,
        "worst": {"loaded": {"bytes_per_key": 250.0, "verdict": "MISS"},
                  "compacted": {"bytes_per_key": 150.0, "verdict": "PASS"},
                  "hwm": {"bytes_per_key": 270.0, "verdict": "MISS"}},
        "nodes": nodes,
    }


def test_cluster_report_shows_every_node_with_its_verdicts():
    text = format_cluster(cluster_result())
    assert "target <= 200 B" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("n")}
    assert "250 MISS" in lines["n1"] and "150 PASS" in lines["n1"]
    assert "190 PASS" in lines["n2"] and "90 PASS" in lines["n2"]
    assert "2,017 -> 10" in lines["n1"]
    assert "worst node: 250 B/key" in text and "150 B/key after the" in text


def worker(mode: str) -> dict:
    keys = 1000
    return {
        "mode": mode, "keys": keys, "value_bytes": 100, "build_s": 1.0,
        "rss_baseline_bytes": 10_000_000,
        "rss_loaded_bytes": 10_000_000 + keys * (113 + 240),
        "rss_compacted_bytes": 10_000_000 + keys * (113 + 210),
        "rss_trimmed_bytes": 10_000_000 + keys * (113 + 120),
        "structures_bytes": {"key_data": keys * 13, "value_data": keys * 100,
                             "key_objects": keys * 35, "value_objects": keys * 44,
                             "shard_dicts": keys * 38, "shard_list": 0, "expiry_index": 0},
        "log": {"entries": 2, "total": keys * 120, "data_bytes": keys * 119},
        "cow_worst_bytes": keys * 73, "cow_worst_rss_bytes": keys * 72,
        "snapshot_walk_rss_bytes": 0, "node_estimate_bytes_per_key": 104.0,
        "undo_bytes_per_key_in_flight": 89.0, "undo_keys_in_flight": 4000,
        "expiry_bytes_per_key_with_ttl": 156.0, "session_bytes_per_session": 373.0,
    }


def breakdown() -> dict:
    b = {"follower": worker("follower"), "leader": worker("leader"),
         "tracemalloc": {"keys": 200, "traced_loaded_bytes": 200 * 345,
                         "traced_compacted_bytes": 200 * 225,
                         "top_lines": [{"where": "src/replikv/entries.py:48",
                                        "bytes_per_key": 179.0, "blocks": 400}]}}
    b["summary"] = summarize_breakdown(b)
    return b


def test_breakdown_summary_separates_structures_log_and_allocator_slack():
    s = summarize_breakdown(breakdown())["follower"]
    assert s["state_total"] == 35 + 44 + 38  # the key and value bytes are not overhead
    assert s["log_entries_total"] == 120 and s["log_data_bytes"] == 119
    assert s["structures_with_log"] == 237
    assert s["rss_overhead_loaded"] == 240  # RSS growth less the key and value bytes
    assert s["slack_loaded"] == 240 - 237
    assert s["rss_overhead_compacted"] == 210
    assert s["slack_compacted"] == 210 - 117  # the freed log the allocator kept
    assert s["slack_trimmed"] == 120 - 117
    assert s["cow_worst"] == 73
    assert summarize_breakdown(breakdown())["tracemalloc"]["traced_loaded"] == 345


def test_breakdown_report_lists_the_structures_and_tracemalloc_lines():
    text = format_breakdown(breakdown())
    assert "key bytes objects" in text and "35.0" in text
    assert "allocator slack" in text and "93.0" in text
    assert "src/replikv/entries.py:48" in text
    assert "156 B" in text and "373 B per client session" in text


def test_cluster_report_adds_the_trimmed_column_only_when_measured():
    r = cluster_result()
    assert "trimmed" not in format_cluster(r)
    for v in r["nodes"].values():
        v.update(overhead_trimmed_bytes_per_key=120.0, verdict_trimmed="PASS")
    assert "120 PASS" in format_cluster(r)


SMAPS = """\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 123    /usr/bin/python3.11
Size:                  8 kB
Rss:                   8 kB
55d0c1000000-55d0c9000000 rw-p 00000000 00:00 0      [heap]
Size:             131072 kB
Rss:              100000 kB
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                4000 kB
7f0000800000-7f0004000000 ---p 00000000 00:00 0
Size:              57344 kB
Rss:                   0 kB
7f0004000000-7f0004900000 rw-p 00000000 00:00 0
Size:               9216 kB
Rss:                9216 kB
7f0004900000-7f0004a00000 rw-p 00000000 00:00 0
Size:               1024 kB
Rss:                1024 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
Size:                132 kB
Rss:                  12 kB
"""


def test_smaps_rss_is_split_by_kind_of_mapping():
    # The 64 MiB-aligned mapping followed by its reservation is a thread heap; the one at
    # 7f0004000000 is aligned too but not a thread heap (CPython arenas merged into one).
    assert smaps_rss_kib(SMAPS) == {"heap": 100000, "thread_heaps": 4000, "anon": 10240,
                                    "file": 8, "other": 12}


def test_repo_frame_skips_library_and_generated_frames():
    def frame(name: str, line: int) -> SimpleNamespace:
        return SimpleNamespace(filename=name, lineno=line)

    repo = str(REPO_ROOT)
    oldest_first = [frame(f"{repo}/src/replikv/node.py", 277),
                    frame(f"{repo}/.venv/lib/python3.11/site-packages/msgpack/__init__.py", 36)]
    assert repo_frame(oldest_first) == "src/replikv/node.py:277"
    assert repo_frame([frame("<string>", 1)]) == "<string>:1"


def test_the_breakdown_runs_on_the_current_structures() -> None:
    # The breakdown reads the state's and the log's internals: it must follow them (it read a
    # log layout that no longer existed, unnoticed, until this test).
    for mode in ("follower", "leader"):
        out = breakdown_worker(mode, 3_000, 100, 1)
        assert out["key_count"] == 3_000
        log = out["log"]
        assert log["entries"] >= 1 and log["data_bytes"] > 3_000 * 100
        assert log["total"] >= log["arena"] > 0 and out["structures_bytes"]["key_data"] > 0
