"""Disk space on real node processes: a node whose data dir's file system has less free than
disk_low_free_bytes says so everywhere an operator looks (its log and start-up output, /status,
/metrics, /events, `replikv status`), and a node with less than disk_min_free_bytes refuses to
start with one line saying what to do. A real disk is not filled: the thresholds are set above
what any disk here has (1 PiB), which is the same to the node."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

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


@pytest.fixture
def small_file_system(tmp_path: Path) -> Iterator[Path]:
    """A 96 MiB tmpfs at tmp_path/small (mounting needs root, as CI runs), unmounted after
    the test's cluster is stopped (fixtures are torn down in reverse)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"this test mounts a small tmpfs (as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_cluster_whose_disks_fill_refuses_writes_instead_of_stopping(small_file_system,
                                                                        make_cluster):
    """The three nodes' data dirs share one small file system, as a cluster's disks fill
    together with the same log. Below disk_min_free_bytes the leader refuses writes that add
    data (MISCONF) instead of writing on until every node stops; reads and deletes go on, and
    writes come back once space is freed."""
    filler = small_file_system / "filler"
    filler.write_bytes(b"\0" * 32 * MIB)
    cluster = make_cluster(3, name="small", extra_args=[
        "--disk-min-free-bytes", str(24 * MIB), "--disk-low-free-bytes", str(40 * MIB),
        "--snapshot-log-min-bytes", str(1 << 30)])  # no snapshot fills the disk meanwhile
    leader = cluster.leader()
    follower = cluster.client(next(i for i in cluster.ids if i != leader))
    value = b"v" * (512 * 1024)  # 1.5 MiB of the file system per SET: three logs

    refused = None
    for n in range(60):  # at most 90 MiB: the file system cannot take that many
        try:
            follower.set(f"k{n}", value)
        except redis.exceptions.ResponseError as e:
            refused = str(e)
            break
        time.sleep(0.15)  # the nodes read their disk about once a second
    assert refused is not None, "60 SETs of 512 KiB and none refused on a 96 MiB disk"
    assert refused.startswith(f"MISCONF the disk of the leader {leader} is nearly full (less "
                              "than disk_min_free_bytes, 24.0 MiB, free in "), refused
    assert all(cluster.nodes[i].alive for i in cluster.ids)  # nobody stopped
    assert follower.get("k0") == value  # reads go on
    assert follower.delete("k0") == 1  # and deletes
    status = cluster.status(leader)["disk"]
    assert status["writes_refused"] is True and status["rejections"] >= 1, status
    assert scrape(cluster, leader)[("replikv_disk_full", ())] == 1
    assert any("is nearly full" in e["text"] for e in events(cluster, leader))

    filler.unlink()  # space freed: writes come back
    wait_until(lambda: not cluster.status(leader)["disk"]["writes_refused"], timeout_s=10,
               what="the leader to accept writes again")
    assert follower.set("after", "v") is True
    assert all(cluster.nodes[i].alive for i in cluster.ids)
