"""Disk space on real node processes: a node whose data dir's file system has less free than
disk_low_free_bytes says so everywhere an operator looks (its log and start-up output, /status,
/metrics, /events, `replikv status`), and a node with less than disk_min_free_bytes refuses to
start with one line saying what to do. A real disk is not filled: the thresholds are set above
what any disk here has (1 PiB), which is the same to the node."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from replikv.storage.disk_space import this_process_uses_reserved_blocks

from .cluster import HOST, Cluster, wait_until
from .test_admin_http import scrape

pytestmark = pytest.mark.timeout(60)

PIB = 1 << 50
MIB = 1 << 20


def events(cluster: Cluster, node_id: str) -> list[dict]:
    url = f"http://{HOST}:{cluster.nodes[node_id].admin_port}/events"
    with urllib.request.urlopen(url, timeout=8) as resp:
        return json.loads(resp.read())["events"]


def free_bytes_now(path: os.PathLike) -> int:
    st = os.statvfs(path)
    # Root's reserved blocks count for a process that may use them (as the node decides).
    return (st.f_bfree if this_process_uses_reserved_blocks() else st.f_bavail) * st.f_frsize


def test_a_node_on_a_low_disk_says_so_everywhere(make_cluster):
    cluster = make_cluster(1, extra_args=["--disk-low-free-bytes", str(PIB)])
    node = cluster.nodes["n1"]
    leader = cluster.leader()
    assert cluster.client(leader).set("still", "serving") is True  # low is a warning, no more

    status = cluster.status("n1")
    disk = status["disk"]
    assert disk["state"] == "low", disk
    assert disk["path"] == str(node.data_dir) and disk["low_free_bytes"] == PIB
    st = os.statvfs(node.data_dir)
    assert disk["total_bytes"] == st.f_blocks * st.f_frsize
    # Read about a second apart while other processes write: close, not equal.
    assert abs(disk["free_bytes"] - free_bytes_now(node.data_dir)) < 256 * MIB, disk

    metrics = scrape(cluster, "n1")
    assert metrics[("replikv_disk_low", ())] == 1
    assert metrics[("replikv_disk_total_bytes", ())] == disk["total_bytes"]
    assert abs(metrics[("replikv_disk_free_bytes", ())] - disk["free_bytes"]) < 256 * MIB

    (event,) = [e for e in events(cluster, "n1") if e["kind"] == "disk"]
    assert event["node"] == "n1" and "n1's disk is low" in event["text"], event
    assert "below disk_low_free_bytes (1.0 PiB)" in event["text"]

    log = cluster.log_text("n1")
    warnings = [line for line in log.splitlines() if "disk space low" in line]
    assert len(warnings) == 1, warnings  # once, not once a second
    assert "WARNING" in warnings[0]
    assert f"the file system holding {node.data_dir} has " in warnings[0]
    assert "below disk_low_free_bytes (1.0 PiB)" in warnings[0]
    assert "stops (fail-stop" in warnings[0] and "move the data dir" in warnings[0]
    assert "WARNING: disk space low" in node.stdout_path.read_text()  # next to "ready"

    admin = f"{HOST}:{node.admin_port}"
    out = cluster.cli("status", "--nodes", admin)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [line for line in out.stdout.splitlines() if line.startswith(admin)]
    assert "(low)" in row, out.stdout
    assert out.stdout.splitlines()[-1].startswith(
        f"WARNING: the disk of n1 ({admin}) is low: "), out.stdout

    # Still once after more samples (the tick loop reads the disk about once a second).
    first = status["uptime_s"]
    wait_until(lambda: cluster.status("n1")["uptime_s"] >= first + 2, timeout_s=10,
               what="two more seconds of uptime")
    assert len([e for e in events(cluster, "n1") if e["kind"] == "disk"]) == 1
    assert cluster.log_text("n1").count("disk space low") == 1


def test_a_node_on_a_nearly_full_disk_refuses_to_start(make_cluster):
    cluster = make_cluster(1, start=False)
    node = cluster.nodes["n1"]

    result = cluster.run_node_once("n1", extra=["--disk-low-free-bytes", str(PIB),
                                                "--disk-min-free-bytes", str(PIB)])

    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if "disk_min_free_bytes" in line]
    assert line.startswith("replikv node n1: cannot start: the file system holding data dir "
                           f"{node.data_dir} has "), line
    assert "free, below disk_min_free_bytes (1.0 PiB)" in line
    assert "Free space on that file system or move the data dir" in line
    assert "lower disk_min_free_bytes" in line and "at the risk" in line
    assert not node.data_dir.exists()  # refused before anything was written
    assert not node.alive
