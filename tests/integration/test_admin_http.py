"""The admin HTTP endpoint (replikv.server.admin_http): /health and /status for load balancers
and monitoring, agreeing with INFO; bad requests get 4xx and never disturb the node."""

from __future__ import annotations

import json
import os
import socket

import pytest

from .cluster import HOST, Cluster, wait_until

pytestmark = pytest.mark.timeout(60)


def http(cluster: Cluster, node_id: str, request: bytes) -> tuple[int, dict]:
    with socket.create_connection((HOST, cluster.nodes[node_id].admin_port), timeout=8) as s:
        s.sendall(request)
        data = b""
        for _ in range(1000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"Content-Type: application/json" in head, head
    return status, json.loads(body)


def get(cluster: Cluster, node_id: str, path: str) -> tuple[int, dict]:
    return http(cluster, node_id, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_health_and_status_agree_with_info(shared_cluster):
    leader = shared_cluster.leader()
    for i in shared_cluster.ids:
        assert get(shared_cluster, i, "/health") == (200, {"status": "ok", "id": i})
        code, status = get(shared_cluster, i, "/status?verbose=1")
        assert code == 200
        info = shared_cluster.info(i)
        assert status["id"] == i
        assert status["role"] == info["raft_role"] == ("leader" if i == leader else "follower")
        assert status["leader"] == info["leader_id"] == leader
        assert status["term"] == int(info["term"])
        assert status["pid"] == shared_cluster.nodes[i].pid
        assert status["members"] == {n.id: f"{HOST}:{n.peer_port}"
                                     for n in shared_cluster.nodes.values()}
        assert status["leader_client_address"] == f"{HOST}:{shared_cluster.port(leader)}"
        disk = status["disk"]
        assert disk["path"] == str(shared_cluster.nodes[i].data_dir)
        assert disk["low_free_bytes"] == 512 * 1024 * 1024 and disk["state"] in ("ok", "low")
        st = os.statvfs(shared_cluster.nodes[i].data_dir)
        assert disk["total_bytes"] == st.f_blocks * st.f_frsize
    _, status = get(shared_cluster, leader, "/status")
    assert sorted(status["followers"]) == sorted(i for i in shared_cluster.ids if i != leader)
    assert all(f["connected"] for f in status["followers"].values())


def test_bad_admin_requests_get_4xx_and_change_nothing(shared_cluster):
    assert get(shared_cluster, "n1", "/nope")[0] == 404
    assert http(shared_cluster, "n1", b"POST /status HTTP/1.1\r\n\r\n")[0] == 405
    assert http(shared_cluster, "n1", b"GARBAGE\r\n\r\n")[0] == 400
    assert http(shared_cluster, "n1", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")[0] == 400
    assert get(shared_cluster, "n1", "/health")[0] == 200
    assert shared_cluster.client("n1").ping() is True


def test_primary_and_replica_answer_what_a_load_balancer_needs(shared_cluster):
    leader = shared_cluster.leader()
    followers = [i for i in shared_cluster.ids if i != leader]
    code, body = get(shared_cluster, leader, "/primary")
    assert code == 200 and body["role"] == "leader"
    code, body = get(shared_cluster, leader, "/replica")
    assert code == 503 and "leader" in body["reason"]
    for f in followers:
        code, body = get(shared_cluster, f, "/primary")
        assert code == 503 and body["leader"] == leader
        # Caught up as of the leader's last heartbeat (its staleness is unknown until the
        # first heartbeat sent under the new leader's lease arrives).
        wait_until(lambda f=f: get(shared_cluster, f, "/replica?max_lag_ms=2000")[0] == 200,
                   timeout_s=3.0, what=f"{f} to pass /replica")
        code, body = get(shared_cluster, f, "/replica?max_lag_ms=2000")
        assert code == 200 and body["staleness_ms"] <= 2000, body
    for bad in ("/replica?max_lag_ms=soon", "/replica?max_lag_ms=-1",
                f"/replica?max_lag_ms={10**12}"):
        code, body = get(shared_cluster, followers[0], bad)
        assert code == 400 and "max_lag_ms" in body["error"]


def test_a_cut_off_replica_and_a_cut_off_primary_fail_their_checks(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    reader, other = [i for i in cluster.ids if i != leader]
    cluster.pause(other)
    cluster.pause(reader)
    try:
        # The leader loses its quorum: within a lease it stops claiming to be the primary.
        wait_until(lambda: get(cluster, leader, "/primary")[0] == 503, timeout_s=3.0,
                   what="the isolated leader to fail /primary")
    finally:
        cluster.resume(reader)
    cluster.pause(leader)
    try:
        # The reader hears from no leader: past the bound it stops passing /replica.
        wait_until(lambda: get(cluster, reader, "/replica?max_lag_ms=300")[0] == 503,
                   timeout_s=3.0, what="the cut-off replica to fail /replica")
    finally:
        cluster.resume(leader)
        cluster.resume(other)
    new_leader = cluster.leader()
    wait_until(lambda: get(cluster, new_leader, "/primary")[0] == 200, timeout_s=5.0,
               what="the leader to pass /primary again")


def scrape(cluster: Cluster, node_id: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics, parsed with prometheus-client's own parser: {(sample name, labels): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://{HOST}:{cluster.nodes[node_id].admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=8) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_show_roles_indexes_commands_and_latencies(shared_cluster):
    leader = shared_cluster.leader()
    follower = next(i for i in shared_cluster.ids if i != leader)
    before = scrape(shared_cluster, leader)
    client = shared_cluster.client(leader)
    for i in range(25):
        client.set(f"metrics:{i}", "v")
    with pytest.raises(Exception, match="unknown command"):
        client.execute_command("NOSUCHCOMMAND", "x")
    client.get("metrics:1")
    m = scrape(shared_cluster, leader)
    status = shared_cluster.status(leader)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return m[key] - before.get(key, 0.0)

    assert m[("replikv_role", (("role", "leader"),))] == 1
    assert m[("replikv_role", (("role", "follower"),))] == 0
    assert m[("replikv_term", ())] == status["term"]
    assert m[("replikv_commit_index", ())] >= before[("replikv_commit_index", ())] + 25
    assert m[("replikv_applied_index", ())] >= m[("replikv_commit_index", ())]
    assert delta("replikv_commands_total", command="set", outcome="ok") == 25
    assert delta("replikv_commands_total", command="unknown", outcome="error") == 1
    assert delta("replikv_commands_total", command="get", outcome="ok") == 1
    assert delta("replikv_proposals_total") >= 25
    assert delta("replikv_write_commit_duration_seconds_count") >= 25
    assert delta("replikv_fsync_duration_seconds_count", file="wal") >= 1
    assert m[("replikv_fsync_duration_seconds_sum", (("file", "wal"),))] > 0
    assert delta("replikv_apply_duration_seconds_count") >= 1
    assert m[("replikv_client_connections", ())] >= 1
    assert m[("replikv_voters", ())] == len(shared_cluster.ids)
    for peer in shared_cluster.ids:
        if peer != leader:
            assert m[("replikv_follower_connected", (("peer", peer),))] == 1
            assert m[("replikv_follower_match_index", (("peer", peer),))] >= 1
    assert m[("replikv_elections_won_total", ())] >= 1
    assert m[("replikv_disk_total_bytes", ())] == status["disk"]["total_bytes"]
    assert m[("replikv_disk_free_bytes", ())] > 0
    assert m[("replikv_disk_low", ())] == (status["disk"]["state"] == "low")
    # A follower says it is one, knows no followers, and applies what the leader committed.
    f = scrape(shared_cluster, follower)
    assert f[("replikv_role", (("role", "follower"),))] == 1
    assert not any(name.startswith("replikv_follower_") for name, _ in f)
    (labels, value), = [(dict(k[1]), v) for k, v in f.items() if k[0] == "replikv_node_info"]
    assert value == 1
    assert labels["node_id"] == follower and labels["cluster_id"] == status["cluster_id"]
    assert (labels["replication"], labels["fsync"]) == ("passive", "always")


def test_json_logs_carry_the_node_term_and_indexes(make_cluster):
    cluster = make_cluster(3, extra_args=["--log-format", "json"])
    leader = cluster.leader()
    cluster.client(leader).set("logged", "1")
    term = cluster.status(leader)["term"]

    def records(node_id):
        lines = [line for line in cluster.log_text(node_id).splitlines()
                 if line.startswith("{")]
        assert lines, cluster.log_tail(node_id)
        return [json.loads(line) for line in lines]

    became = [r for r in records(leader) if r["msg"].startswith("became leader")]
    assert became, records(leader)
    r = became[-1]
    assert (r["node"], r["level"], r["logger"]) == (leader, "info", "replikv.node")
    assert (r["role"], r["term"], r["leader"]) == ("leader", term, leader)
    assert r["commit_index"] >= 0 and r["applied_index"] >= r["commit_index"]
    assert r["ts"].endswith("Z")
    for node_id in cluster.ids:
        assert all(rec["node"] == node_id for rec in records(node_id))


def test_replikv_status_on_a_real_cluster(shared_cluster):
    leader = shared_cluster.leader()
    shared_cluster.client(leader).set("status:probe", "1")
    admins = ",".join(f"{HOST}:{shared_cluster.nodes[i].admin_port}" for i in shared_cluster.ids)
    out = shared_cluster.cli("status", "--cluster", admins)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[1]: line for line in out.stdout.splitlines()[1:]
            if line.startswith(HOST)}
    assert sorted(rows) == sorted(shared_cluster.ids)
    cells = rows[leader].split()
    # FSYNC99 "0.52 ms", DISK "78.0 GiB" (the data dir's free space), HEALTH
    assert cells[2] == "leader" and cells[9] == "ms" and cells[12] == "ok", rows[leader]
    assert float(cells[8]) > 0  # the fsync p99 of a node that has written
    assert float(cells[10]) > 0 and cells[11] in ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    for node_id, line in rows.items():
        if node_id != leader:
            assert line.split()[2] == "follower" and " ok " in line, line
    assert out.stdout.splitlines()[-1] == "modes: replication passive, fsync always"
