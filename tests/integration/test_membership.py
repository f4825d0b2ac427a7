"""Membership at runtime with real processes: a 5-voter cluster losing 2, a new member catching
up from a snapshot, removing the leader, a standby promoted automatically, a graceful
switchover. Every acknowledged write is read back on every member at the end."""

from __future__ import annotations

import threading
import time

import redis

from replikv.config import default_cluster_id, parse_peers

from .cluster import HOST, MEASUREMENTS, Cluster, client_without_retries, wait_until

SNAPSHOT_ARGS = ["--snapshot-entries", "100", "--snapshot-keep-entries", "20"]
# A snapshot every 5 entries: write_keys's pipelines of 200 SETs go in batches, as few as one
# entry each (replikv.commands.transactions), so 2,000 keys may make only 10 entries.
SMALL_LOAD_SNAPSHOT_ARGS = ["--snapshot-entries", "5", "--snapshot-keep-entries", "2"]


def write_keys(cluster: Cluster, node_id: str, prefix: str, count: int) -> dict[str, str]:
    """SET count keys through `node_id` (pipelined, w=majority); returns what was acknowledged."""
    c = cluster.client(node_id, socket_timeout=10.0, decode_responses=True)
    written: dict[str, str] = {}
    try:
        for start in range(0, count, 200):
            pipe = c.pipeline(transaction=False)
            keys = [f"{prefix}:{i}" for i in range(start, min(count, start + 200))]
            for k in keys:
                pipe.set(k, f"v-{k}")
            for k, ok in zip(keys, pipe.execute(), strict=True):
                assert ok is True
                written[k] = f"v-{k}"
    finally:
        c.close()
    return written


def members(cluster: Cluster, node_id: str) -> tuple[list[str], list[str]]:
    s = cluster.status(node_id)
    return s["voters"], s["standbys"]


def wait_membership(cluster: Cluster, node_id: str, voters: list[str], standbys: list[str],
                    timeout_s: float = 30.0) -> None:
    wait_until(lambda: members(cluster, node_id) == (sorted(voters), sorted(standbys)),
               timeout_s=timeout_s, what=f"voters {voters}, standbys {standbys} on {node_id}")


def test_five_voters_survive_the_loss_of_two_including_the_leader(make_cluster):
    cluster = make_cluster(5)
    leader = cluster.leader()
    before = write_keys(cluster, leader, "before", 300)
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill9(leader)
    cluster.kill9(follower)
    survivors = [i for i in cluster.ids if i not in (leader, follower)]
    new_leader = cluster.leader(among=survivors)
    after = write_keys(cluster, new_leader, "after", 300)
    cluster.assert_values(survivors, {**before, **after})
    cluster.start(leader)
    cluster.start(follower)
    index = cluster.status(new_leader)["commit_index"]
    for node_id in cluster.ids:
        cluster.wait_applied(node_id, index, timeout_s=20)
    cluster.assert_values([leader, follower], {**before, **after})


def test_a_new_member_catches_up_from_a_snapshot_then_votes(make_cluster):
    cluster = make_cluster(4, joiners=1, extra_args=SMALL_LOAD_SNAPSHOT_ARGS)
    leader = cluster.leader(among=["n1", "n2", "n3"])
    # n4 joined with an empty data dir and no --cluster-id: it asked the members, and says so
    # even though the id its --peers give is the same (the README's example).
    cluster_id = cluster.status(leader)["cluster_id"]
    assert f"cluster id {cluster_id}, from member n" in cluster.log_text("n4")
    written = write_keys(cluster, leader, "k", 2000)
    wait_until(lambda: cluster.status(leader)["log_first_index"] > 1, timeout_s=20,
               what="the leader to compact its log")
    started = time.monotonic()
    done = cluster.cli("member", "add", *cluster.member_args("n4"))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "n4 promoted to voter" in done.stdout, done.stdout
    MEASUREMENTS.append(f"membership: n4 added, caught up from a snapshot and promoted in "
                        f"{time.monotonic() - started:.2f} s (2,000 keys)")
    wait_membership(cluster, leader, ["n1", "n2", "n3", "n4"], [])
    status = cluster.status("n4")
    assert status["snapshot"] is not None and status["snapshot"]["installed"] >= 1, status
    cluster.wait_applied("n4", cluster.status(leader)["commit_index"])
    cluster.assert_values(["n4"], written)
    # With 4 voters a majority is 3: n4 counts. Lose two of the original three: writes stop;
    # bring one back: they go on, through n4's vote.
    others = [i for i in ("n1", "n2", "n3") if i != leader]
    cluster.kill9(others[0])
    more = write_keys(cluster, leader, "more", 100)
    cluster.assert_values(["n4"], more)


def test_removing_the_leader_hands_over(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    written = write_keys(cluster, leader, "a", 200)
    follower = next(i for i in cluster.ids if i != leader)
    done = cluster.cli("member", "remove", leader)
    assert done.returncode == 0, done.stderr + done.stdout
    rest = [i for i in cluster.ids if i != leader]
    new_leader = cluster.leader(among=rest)
    assert new_leader != leader
    wait_membership(cluster, follower, rest, [])
    assert cluster.status(leader)["role"] in ("not a member", "follower")
    more = write_keys(cluster, new_leader, "b", 200)
    cluster.assert_values(rest, {**written, **more})


def test_a_standby_takes_over_from_a_dead_voter_automatically(make_cluster):
    cluster = make_cluster(4, joiners=1, extra_args=["--auto-replace-after-ms", "1500"])
    leader = cluster.leader(among=["n1", "n2", "n3"])
    done = cluster.cli("member", "add", "--standby", *cluster.member_args("n4"))
    assert done.returncode == 0, done.stderr + done.stdout
    wait_membership(cluster, leader, ["n1", "n2", "n3"], ["n4"])
    written = write_keys(cluster, leader, "s", 200)
    victim = next(i for i in ("n1", "n2", "n3") if i != leader)
    killed_at = time.monotonic()
    cluster.kill9(victim)
    survivors = sorted({"n1", "n2", "n3", "n4"} - {victim})
    wait_membership(cluster, leader, survivors, [victim], timeout_s=30)
    MEASUREMENTS.append(f"auto-replacement: standby n4 voted in place of {victim} "
                        f"{time.monotonic() - killed_at:.2f} s after kill -9 (auto_replace_after_ms 1.5 s)")
    # The cluster keeps three working voters: losing one more still leaves a majority.
    third = next(i for i in survivors if i not in (leader, "n4"))
    cluster.kill9(third)
    more = write_keys(cluster, leader, "t", 100)
    cluster.assert_values([leader, "n4"], {**written, **more})


def test_switchover_loses_no_acknowledged_write(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.leader()
    target = next(i for i in cluster.ids if i != leader)
    acked: dict[str, str] = {}
    errors: list[str] = []
    stop = threading.Event()
    gaps: list[float] = []

    def writer() -> None:
        c = client_without_retries(cluster.port(target), socket_timeout=5.0)
        i, last_ok = 0, time.monotonic()
        try:
            while not stop.is_set() and i < 20_000:
                key = f"w:{i}"
                try:
                    c.set(key, str(i))
                except redis.ResponseError as e:
                    errors.append(str(e))
                    continue
                now = time.monotonic()
                gaps.append(now - last_ok)
                last_ok = now
                acked[key] = str(i)
                i += 1
        finally:
            c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        done = cluster.cli("switchover", "--to", target)
        assert done.returncode == 0, done.stderr + done.stdout
        assert f"{target} leads now" in done.stdout
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(timeout=30)
    assert cluster.leader() == target
    assert not [e for e in errors if not e.startswith("TRYAGAIN")], errors[:3]
    MEASUREMENTS.append(f"switchover {leader} -> {target}: longest pause between acknowledged "
                        f"writes {max(gaps) * 1000:.0f} ms; {len(acked)} writes")
    cluster.assert_values(cluster.ids, acked)


def test_membership_through_the_admin_api(make_cluster):
    from .test_admin_http import get, http

    def post(node_id: str, path: str) -> tuple[int, dict]:
        return http(cluster, node_id, f"POST {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    cluster = make_cluster(4, joiners=1)
    leader = cluster.leader(among=["n1", "n2", "n3"])
    follower = next(i for i in ("n1", "n2", "n3") if i != leader)
    n4 = cluster.nodes["n4"]
    code, body = post(follower, f"/members/n4/add?peer=127.0.0.1:{n4.peer_port}"
                                f"&client=127.0.0.1:{n4.client_port}")
    assert code == 200 and "added as a standby" in body["result"], body

    def promoted() -> bool:
        code, body = post(follower, "/members/n4/promote")
        assert code in (200, 409), body
        return code == 200

    wait_until(promoted, timeout_s=20, what="n4 to be promoted", interval_s=0.2)
    code, body = get(cluster, leader, "/members")
    assert code == 200
    assert {m["id"]: m["voter"] for m in body["members"]} == {"n1": 1, "n2": 1, "n3": 1, "n4": 1}
    # Refusals say why, and change nothing.
    code, body = post(follower, "/members/n9/promote")
    assert code == 409 and "not a member" in body["error"], body
    assert post(follower, "/members/n4/bogus")[0] == 404
    assert post(follower, "/status")[0] == 405
    code, body = post(leader, f"/switchover?to={follower}")
    assert code == 200, body
    assert cluster.leader() == follower
    code, body = post(leader, "/members/n4/remove")
    assert code == 200 and "removed" in body["result"], body
    wait_membership(cluster, follower, ["n1", "n2", "n3"], [])


def test_a_snapshot_transfer_cut_by_kill_9_resumes_where_it_stopped(make_cluster):
    """The receiving node is stopped (SIGSTOP) once part of the snapshot is on its disk, then
    killed; restarted, it asks the leader to go on from the bytes it kept."""
    # About 1,100 chunks of 4 KiB, one round trip each: seconds, so the test can stop the
    # receiver part-way however fast the machine.
    cluster = make_cluster(4, joiners=1, extra_args=[
        *SNAPSHOT_ARGS, "--snapshot-chunk-bytes", "4096"])
    leader = cluster.leader(among=["n1", "n2", "n3"])
    written = write_keys(cluster, leader, "r", 40_000)
    wait_until(lambda: cluster.status(leader)["log_first_index"] > 1, timeout_s=20,
               what="the leader to compact its log")
    snapshots = cluster.nodes["n4"].data_dir / "snapshots"
    code = cluster.cli("member", "add", "--standby", *cluster.member_args("n4"))
    assert code.returncode == 0, code.stderr

    def partial_size() -> int:
        sizes = [p.stat().st_size for p in snapshots.glob("recv-*.partial")]
        return sizes[0] if sizes and sizes[0] >= 3 * 4096 else 0

    kept = wait_until(partial_size, timeout_s=20, what="part of the snapshot on n4's disk",
                      interval_s=0.002)
    cluster.pause("n4")
    kept = partial_size() or kept
    cluster.kill9("n4")
    cluster.start("n4")
    status = wait_until(lambda: (s := cluster.status("n4"))["snapshot"] and s, timeout_s=30,
                        what="n4 to install the snapshot")
    assert status["snapshot"]["installed"] == 1
    started = cluster.log_text("n4").rsplit("===== harness", 1)[-1]
    resumed = [line for line in started.splitlines() if "receiving snapshot" in line]
    assert resumed, "n4 never logged receiving a snapshot after its restart"
    offset = int(resumed[0].rsplit("from byte ", 1)[1])
    assert offset > 0, f"the transfer started over instead of resuming: {resumed}"
    MEASUREMENTS.append(f"snapshot transfer resumed after kill -9 at byte {offset} "
                        f"({kept} bytes were on disk when the receiver was stopped)")
    cluster.wait_applied("n4", cluster.status(leader)["commit_index"])
    keys = list(written)[::97]
    c = cluster.client("n4", decode_responses=True)
    c.execute_command("REPLIKV", "READPREF", "nearest")
    c.execute_command("REPLIKV", "CONSISTENCY", "local")
    assert [c.get(k) for k in keys] == [written[k] for k in keys]
    c.close()


def test_a_node_joins_and_a_member_restarts_after_the_members_changed_without_cluster_ids(
        make_cluster):
    # The default cluster id is derived from --peers, which stops matching once the members
    # change: a joining node then asks the members, a restarting one reads its data dir.
    cluster = make_cluster(4, joiners=1, start=False)
    for node_id in ("n1", "n2", "n3"):
        cluster.start(node_id, wait=False)
    cluster.wait_ready(["n1", "n2", "n3"])
    cluster_id = cluster.status(cluster.leader(among=["n1", "n2", "n3"]))["cluster_id"]
    done = cluster.cli("member", "remove", "n1")
    assert done.returncode == 0, done.stderr + done.stdout
    leader = cluster.leader(among=["n2", "n3"])
    wait_membership(cluster, leader, ["n2", "n3"], [])
    cluster.terminate("n1")
    written = write_keys(cluster, leader, "before", 200)

    # n4 joins with --peers naming only the members it can reach now (n2, n3) and itself.
    cluster.peers = ",".join(f"{i}={HOST}:{cluster.nodes[i].peer_port}" for i in ("n2", "n3"))
    assert default_cluster_id(parse_peers(cluster.peers)) != cluster_id
    cluster.start("n4")
    assert cluster.status("n4")["cluster_id"] == cluster_id
    assert f"cluster id {cluster_id}, from member n" in cluster.log_text("n4")
    done = cluster.cli("member", "add", *cluster.member_args("n4"))
    assert done.returncode == 0, done.stderr + done.stdout
    wait_membership(cluster, leader, ["n2", "n3", "n4"], [])
    written.update(write_keys(cluster, leader, "after", 200))
    cluster.wait_applied("n4", cluster.status(leader)["commit_index"])
    cluster.assert_values(["n4"], written)

    # A member restarted with the new --peers (and no --cluster-id) keeps its data dir's id.
    follower = next(i for i in ("n2", "n3") if i != leader)
    cluster.terminate(follower)
    cluster.peers = ",".join(f"{i}={HOST}:{cluster.nodes[i].peer_port}"
                             for i in ("n2", "n3", "n4"))
    cluster.start(follower)
    assert cluster.status(follower)["cluster_id"] == cluster_id
    assert f"cluster id {cluster_id}, from its data dir" in cluster.log_text(follower)
    more = write_keys(cluster, leader, "restarted", 200)
    cluster.wait_applied(follower, cluster.status(leader)["commit_index"])
    cluster.assert_values([follower], {**written, **more})
