"""`replikv bench` end to end: a short run against the local cluster it starts itself."""

from __future__ import annotations

import json
import subprocess

from .cluster import PYTHON, REPO_ROOT


def test_bench_json_has_every_figure_for_each_workload(tmp_path):
    done = subprocess.run(
        [PYTHON, "-m", "replikv", "bench", "--duration-s", "1", "--workloads", "set1,get64",
         "--keys", "1000", "--redis-benchmark", "2000", "--json"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["settings"]["w"] == "majority"
    assert report["settings"]["read_consistency"] == "linearizable"
    assert report["settings"]["fsync"] == "always"
    assert report["node_ids"] == ["n1", "n2", "n3"]
    assert report["floor"]["fsync_4k_append_ms_p50"] > 0
    assert report["floor"]["loopback_rtt_ms_p50"] > 0
    assert [w["name"] for w in report["workloads"]] == ["set1", "get64"]
    for w in report["workloads"]:
        assert w["ops"] > 0 and w["ops_per_s"] > 0 and w["errors"] == 0, w
        assert 0 < w["latency_ms"]["p50"] <= w["latency_ms"]["p99"] <= w["latency_ms"]["p999"]
        assert sorted(w["nodes"]) == ["n1", "n2", "n3"]
        assert sum(n["leader"] for n in w["nodes"].values()) == 1
        for node in w["nodes"].values():
            assert node["cpu_s_per_1k_ops"] >= 0
            assert node["peak_rss_bytes"] > 0
    assert (REPO_ROOT / "src" / "replikv" / "bench.py").exists()
    # redis-benchmark, a tool nobody here wrote, against the same cluster.
    runs = report["redis_benchmark"]
    assert [(r["test"], r["pipeline"]) for r in runs] == [
        ("SET", 1), ("GET", 1), ("SET", 16), ("GET", 16)]
    for r in runs:
        assert r["rps"] > 0 and r["p50_latency_ms"] > 0, r
        assert r["command"].startswith("redis-benchmark ") and "-c 64" in r["command"]
