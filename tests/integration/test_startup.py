"""Start-up checks that protect a data dir (replikv.storage.datadir): one process per data
dir, and a data dir only ever serves the node and cluster it was created for. A refused start
exits with status 1 and a message naming the problem, touches nothing, and the running
cluster does not notice.
"""

from __future__ import annotations

import subprocess

import pytest

from .cluster import HOST, PYTHON, pick_free_ports

pytestmark = pytest.mark.timeout(60)


def test_second_process_on_the_same_data_dir_refuses(make_cluster):
    cluster = make_cluster(3)
    holder = cluster.nodes["n1"]
    client_port, peer_port, admin_port = pick_free_ports(3)
    peers = ",".join(f"{n.id}={HOST}:{peer_port if n.id == 'n1' else n.peer_port}"
                     for n in cluster.nodes.values())
    argv = [PYTHON, "-m", "replikv", "node", "--id", "n1", "--data-dir", str(holder.data_dir),
            "--listen", f"{HOST}:{client_port}", "--peer-listen", f"{HOST}:{peer_port}",
            "--peers", peers, "--admin", f"{HOST}:{admin_port}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert (f"data dir {holder.data_dir} is in use by another replikv process "
            f"(pid {holder.pid})") in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout

    assert holder.alive
    leader = cluster.leader()
    assert cluster.client("n1").set("after-refusal", "yes") is True
    cluster.wait_applied("n1", cluster.status(leader)["commit_index"])
    cluster.assert_values(cluster.ids, {"after-refusal": "yes"})


def test_data_dir_of_another_cluster_or_node_refuses(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    victim = next(i for i in cluster.ids if i != leader)
    other = next(i for i in cluster.ids if i not in (leader, victim))
    assert cluster.client(leader).set("before", "1") is True
    own_cluster_id = cluster.status(victim)["cluster_id"]
    assert cluster.terminate(victim) == 0

    result = cluster.run_node_once(victim, extra=["--cluster-id", "another-cluster"])
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert (f"belongs to cluster {own_cluster_id!r}, but this node was started for cluster "
            f"'another-cluster'") in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr

    # The stopped node's data dir offered to a different node id (which is running, so its
    # ports are taken; the data dir check must come first and say so).
    result = cluster.run_node_once(other, data_dir=cluster.nodes[victim].data_dir)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert f"belongs to node {victim!r}" in result.stderr, result.stderr[-2000:]
    assert f"started as node {other!r}" in result.stderr, result.stderr[-2000:]

    # Nothing was changed: the node starts normally with its own settings and catches up.
    assert cluster.client(leader).set("during", "2") is True
    cluster.start(victim)
    cluster.wait_applied(victim, cluster.status(leader)["commit_index"])
    cluster.assert_values([victim], {"before": "1", "during": "2"})
