"""`replikv demo --quick` end to end on real processes: every scenario runs, and the report
tells the truth the guarantees predict (no acknowledged w=majority write is lost across a
crash, a partition, a pause or a standby's promotion; w=1 writes to an isolated leader are
rolled back and saved, not lost; w=majority writes to it are never acknowledged; a backup
restored after a FLUSHALL brings back every write acknowledged before it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .cluster import PYTHON, REPO_ROOT

pytestmark = pytest.mark.timeout(240)


def test_demo_runs_every_scenario_and_reports_what_survived() -> None:
    done = subprocess.run([PYTHON, "-m", "replikv", "demo", "--quick", "--json", "--keep"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=220,
                          check=False)
    kept = re.search(r"kept (\S+)", done.stderr)
    try:
        check_demo(done)
        assert kept, done.stderr[-2000:]
        check_rollback_report(Path(kept.group(1)) / "data", json.loads(done.stdout))
    finally:
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)


def check_rollback_report(data_dir: Path, demo_report: dict) -> None:
    """`replikv rollback report` on the demo's real data dirs names exactly the w=1 writes the
    demo saw acknowledged and then undone."""
    done = subprocess.run([PYTHON, "-m", "replikv", "rollback", "report", "--data-dir",
                           str(data_dir), "--json"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    w1 = next(s for s in demo_report["scenarios"] if s["name"] == "isolated-w1")
    assert report["acknowledged_undone"] == w1["rolled_back"]
    keys = {k for w in report["writes"] for k in w["keys"]}
    assert len(keys) == w1["rolled_back"]
    assert all(k.startswith("demo:isolated-w1:") for k in keys), sorted(keys)[:5]


def check_demo(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    report = {s["name"]: s for s in json.loads(done.stdout)["scenarios"]}
    assert list(report) == ["kill", "partition", "isolated-w1", "isolated-wmajority", "pause",
                            "standby", "backup", "restore"]
    for name in ("kill", "partition", "pause", "standby", "backup", "restore"):
        s = report[name]
        assert s["acknowledged"] > 10, s
        assert s["survived"] == s["acknowledged"] and s["lost"] == 0, s
        assert s["rolled_back"] == 0, s
    # Failovers cost a pause of writes; a paused follower or a backup does not.
    assert report["kill"]["longest_gap_ms"] > report["pause"]["longest_gap_ms"]
    assert report["pause"]["longest_gap_ms"] < 1000, report["pause"]
    w1 = report["isolated-w1"]
    assert w1["acknowledged"] > 0, w1
    assert w1["rolled_back"] == w1["acknowledged"] and w1["lost"] == 0, w1
    assert any(re.fullmatch(r"rolled-back writes saved in n\d/\S+ \(under the data dir\)", note)
               for note in w1["notes"]), w1["notes"]
    majority = report["isolated-wmajority"]
    assert majority["acknowledged"] == 0 and majority["refused"] >= 1, majority
    assert any("verified" in note for note in report["backup"]["notes"]), report["backup"]
    assert any("from the standby" in note for note in report["backup"]["notes"])
    # The standby took a killed voter's place, and the voter came back as the standby.
    notes = " ".join(report["standby"]["notes"])
    assert "voted in its place" in notes and "it is the standby now" in notes, notes
    assert report["standby"]["longest_gap_ms"] < 1000, report["standby"]
    # Every write acknowledged (and read back) before the backup came back after the FLUSHALL
    # and the restore: the earlier scenarios' survivors (not the rolled-back w=1 writes) and
    # the backup scenario's first writes.
    restore = report["restore"]
    earlier = sum(report[n]["survived"] for n in ("kill", "partition", "pause", "standby"))
    assert earlier < restore["acknowledged"] < earlier + report["backup"]["acknowledged"]
    assert any("0 keys on n1, n2, n3, n4" in note for note in restore["notes"]), restore
    # The progress lines went to stderr, the report to stdout.
    assert "kill -9 the primary" in done.stderr
