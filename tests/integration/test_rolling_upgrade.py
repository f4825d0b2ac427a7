"""A rolling upgrade from a real older replikv: the cluster keeps serving, and loses nothing.

Three nodes start on the code of LEGACY_COMMIT (the last commit before feature levels, its
`src/` kept as a tarball beside this test, run with PYTHONPATH pointing at it), hold strings,
hashes, lists and sorted sets, and are upgraded one at a time to this checkout's code, as the
README's "Upgrading" section says: the followers first, then a switchover to an upgraded
node, then the old leader. After each step every node must hold every acknowledged write, and
writes (through any node) must still be acknowledged. Meanwhile the mixed cluster must show
what it is: each upgraded node's /status names the older members' advertised levels (an older
replikv advertises none, so it counts as FEATURE_LEVEL_LEGACY).

The older nodes are real processes of real older code: the handshake, the peer messages, the
log entries and the snapshots they exchange with the newer ones are the real formats.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import redis

from replikv.features import FEATURE_LEVEL, FEATURE_LEVEL_LEGACY

from .cluster import HOST, Cluster, wait_until
from .test_admin_http import scrape
from .test_hashes import LOCAL_READ
from .test_zsets import flat_pairs

pytestmark = pytest.mark.timeout(180)

# The newest commit without feature levels (stop 25's last): its nodes advertise no level.
# Its src/ is kept in the repository, so that the test needs no history (CI may clone
# shallowly): made with `git archive --format=tar 6aa012a src | xz -9e > <LEGACY_ARCHIVE>`.
LEGACY_COMMIT = "6aa012a6df0bd45930f858859cb6a725ce882e69"
LEGACY_ARCHIVE = Path(__file__).parent / "data" / "replikv-6aa012a-src.tar.xz"


def legacy_src(tmp_path: Path) -> Path:
    """That commit's src/, from LEGACY_ARCHIVE."""
    out = tmp_path / "legacy"
    with tarfile.open(LEGACY_ARCHIVE) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(out, filter="data")
        else:  # our own archive, of plain files
            tar.extractall(out)
    return out / "src"


def write_round(cluster: Cluster, node_id: str, n: int, expected: dict) -> None:
    """Writes of every type through `node_id`, recorded in `expected` once acknowledged."""
    c = cluster.client(node_id, decode_responses=True)
    assert c.set(f"s{n}", f"v{n}") is True
    assert c.hset("h", f"f{n}", n) == 1
    assert c.rpush("l", f"e{n}") == n + 1
    assert c.zadd("z", {f"m{n}": n}) == 1
    expected[f"s{n}"] = f"v{n}"
    expected["h"] = {f"f{i}": str(i) for i in range(n + 1)}
    expected["l"] = [f"e{i}" for i in range(n + 1)]
    expected["z"] = [(f"m{i}", float(i)) for i in range(n + 1)]


def assert_everywhere(cluster: Cluster, expected: dict) -> None:
    """Every live node's own copy (a local read once it has applied the leader's last index)
    holds exactly `expected`."""
    leader = cluster.leader()
    index = cluster.status(leader)["last_log_index"]
    for node_id in cluster.alive_ids():
        cluster.wait_applied(node_id, index)
        c = cluster.client(node_id, decode_responses=True)
        for key, value in expected.items():
            if key == "h":
                got = c.execute_command(*LOCAL_READ, "HGETALL", key)
                got = dict(zip(got[0::2], got[1::2])) if isinstance(got, list) else got
            elif key == "l":
                got = c.execute_command(*LOCAL_READ, "LRANGE", key, 0, -1)
            elif key == "z":
                got = flat_pairs(c.execute_command(*LOCAL_READ, "ZRANGE", key, 0, -1,
                                                   "WITHSCORES"))
            else:
                got = c.execute_command(*LOCAL_READ, "GET", key)
            assert got == value, f"{node_id}: {key} holds {got!r}, not {value!r}"


def admin_addresses(cluster: Cluster) -> str:
    return ",".join(f"{HOST}:{n.admin_port}" for n in cluster.nodes.values())


def upgrade(cluster: Cluster, node_id: str) -> None:
    """Stop the node cleanly and start this checkout's replikv on its data dir."""
    assert cluster.terminate(node_id) == 0, cluster.log_tail(node_id)
    cluster.nodes[node_id].env = {}
    cluster.start(node_id)


def test_a_rolling_upgrade_from_the_last_release_without_feature_levels(make_cluster, tmp_path):
    old = str(legacy_src(tmp_path))
    cluster = make_cluster(3, start=False, extra_args=["--snapshot-entries", "40"])
    for n in cluster.nodes.values():
        n.env = {"PYTHONPATH": old}
    cluster.start_all()
    version = cluster.info("n1", "server")
    assert "feature_level" not in version  # really the older code
    expected: dict = {}
    rounds = 0

    def step(through: str) -> None:
        nonlocal rounds
        for _ in range(15):  # enough entries for snapshots (every 40) on the way
            write_round(cluster, through, rounds, expected)
            rounds += 1
        assert_everywhere(cluster, expected)

    step("n1")
    leader = cluster.leader()
    followers = [i for i in cluster.ids if i != leader]
    # The followers first, one at a time.
    for node_id in followers:
        upgrade(cluster, node_id)
        step(node_id)
        status = cluster.status(node_id)
        assert status["features"]["this_node"] == FEATURE_LEVEL
        # Each older member is seen at the legacy level (it advertises none).
        wait_until(lambda node_id=node_id: cluster.status(node_id)["features"]["members"]
                   .get(leader) == FEATURE_LEVEL_LEGACY, timeout_s=10,
                   what=f"{node_id} to learn {leader}'s feature level")
    # The older leader cannot apply a publish entry (level 2), and says nothing of levels: an
    # upgraded follower forwards PUBLISH to it, which answers its own unknown-command error.
    # Once an upgraded node leads, it refuses PUBLISH while the older member remains, naming
    # it; `replikv status` notes the mixed levels.
    publisher = cluster.client(followers[0], decode_responses=True)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        publisher.publish("news", "early")
    shown = cluster.cli("status", "--nodes", admin_addresses(cluster))
    assert "NOTE: the members run replikv of different feature levels" in shown.stdout, \
        shown.stdout + shown.stderr
    # Then hand leadership to an upgraded node, and upgrade the old leader.
    switched = cluster.cli("switchover", "--to", followers[0])
    assert switched.returncode == 0, switched.stdout + switched.stderr
    wait_until(lambda: cluster.leader() == followers[0], timeout_s=10,
               what=f"{followers[0]} to lead")
    step(leader)
    with pytest.raises(redis.ResponseError, match=(
            f"PUBLISH needs every member of the cluster at feature level 2 or later, and "
            f"{leader} runs a replikv at level 1: upgrade it first")):
        publisher.publish("news", "too soon")
    upgrade(cluster, leader)
    step(followers[1])
    # Every member runs level 2 now (the leader learns the old leader's as it reconnects):
    # PUBLISH raises the cluster's level through the log, then goes through.
    wait_until(lambda: publisher.publish("news", "now") == 0, timeout_s=10,
               what="PUBLISH to be accepted once every member runs level 2")
    for node_id in cluster.ids:
        wait_until(lambda node_id=node_id: cluster.status(node_id)["features"]["cluster_level"]
                   == FEATURE_LEVEL, timeout_s=10, what=f"{node_id} at the cluster's new level")
    # Every member now runs this replikv and says so to the leader (which is the one that
    # decides; a follower hears only from members that send it something: the leader, and
    # candidates); nothing of the older code's log or snapshots was lost or refused.
    leader = cluster.leader()
    wait_until(lambda: all(level == FEATURE_LEVEL for level in
                           cluster.status(leader)["features"]["members"].values()),
               timeout_s=10, what=f"{leader} to see every member at level {FEATURE_LEVEL}")
    for node_id in cluster.ids:
        features = cluster.status(node_id)["features"]
        assert features["this_node"] == FEATURE_LEVEL
        assert set(features["members"].values()) <= {FEATURE_LEVEL, None}
        assert "ERROR" not in cluster.log_text(node_id), cluster.log_tail(node_id)
    # The leader refused the PUBLISH made while the older member remained, and says so.
    metrics = scrape(cluster, cluster.leader())
    assert metrics[("replikv_feature_level", ())] == FEATURE_LEVEL
    assert metrics[("replikv_cluster_feature_level", ())] == FEATURE_LEVEL
    assert metrics[("replikv_feature_level_rejections_total", ())] >= 1
    shown = cluster.cli("status", "--nodes", admin_addresses(cluster))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "different feature levels" not in shown.stdout
