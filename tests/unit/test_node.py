"""The node core, driven message by message: routing, forwarding, ReadIndex, errors, expiry."""

from __future__ import annotations

from replikv.node import ENTRY_OVERHEAD_BYTES, ERR_NO_LEADER, ERR_NOT_APPLIED, ERR_UNKNOWN
from replikv.node_messages import ForwardRequest, ReadIndexRequest
from replikv.raft.messages import AppendRequest
from replikv.replies import OK, ErrorReply

from .node_harness import MISSING, TICK_MS, Cluster


def followers(c: Cluster, leader: str) -> list[str]:
    return [i for i in c.ids if i != leader]


def test_write_on_leader_is_answered_only_after_a_majority_has_it():
    c = Cluster()
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.partition({leader}, {f1, f2})
    req = c.submit(leader, "SET", "k", "v")
    c.deliver()
    c.tick(3)
    assert c.reply(leader, req) is MISSING  # no follower has it: no answer yet
    c.heal()
    c.tick(3)
    assert c.reply(leader, req) == OK


def test_write_on_follower_is_forwarded_and_the_reply_relayed():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    assert c.call(f, "SET", "k", "v1") == OK
    assert any(isinstance(m, ForwardRequest) for s, _t, m in c.sent_log if s == f)
    assert c.call(leader, "GET", "k") == b"v1"
    assert c.call(f, "INCR", "n") == 1
    assert c.call(f, "INCR", "n") == 2


def test_read_on_follower_asks_the_leader_and_sees_the_latest_write():
    # Active replication: a follower serves linearizable reads itself, by ReadIndex.
    c = Cluster(replication="active")
    leader = c.elect()
    f1, f2 = followers(c, leader)
    # f2 misses the write's commit: it must not answer from stale state.
    c.partition({leader, f1}, {f2})
    assert c.call(leader, "SET", "k", "new") == OK
    c.heal()
    req = c.submit(f2, "GET", "k")
    assert c.reply(f2, req) is MISSING  # needs a read index first
    c.deliver()
    c.tick(2)
    assert c.reply(f2, req) == b"new"
    assert any(isinstance(m, ReadIndexRequest) for s, _t, m in c.sent_log if s == f2)


def test_reads_before_one_ready_share_one_read_index_request():
    c = Cluster(replication="active")
    leader = c.elect()
    f = followers(c, leader)[0]
    c.call(leader, "SET", "k", "v")
    before = sum(1 for s, _t, m in c.sent_log if s == f and isinstance(m, ReadIndexRequest))
    node = c.nodes[f]
    for i in range(50):
        node.submit(10_000 + i, [b"GET", b"k"], c.now_ms)
    c.process(f)
    after = sum(1 for s, _t, m in c.sent_log if s == f and isinstance(m, ReadIndexRequest))
    assert after - before == 1
    c.tick(2)
    assert all(c.reply(f, 10_000 + i) == b"v" for i in range(50))


def test_reads_on_leader_share_one_heartbeat_round():
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "k", "v")
    c.deliver()
    n_before = len(c.sent_log)
    node = c.nodes[leader]
    for i in range(20):
        node.submit(20_000 + i, [b"GET", b"k"], c.now_ms)
    c.process(leader)
    appends = [m for s, _t, m in c.sent_log[n_before:] if isinstance(m, AppendRequest)]
    assert len(appends) == 2  # one per follower, carrying one confirmation round
    c.deliver()
    assert all(c.reply(leader, 20_000 + i) == b"v" for i in range(20))


def test_client_errors_are_answered_at_once_and_never_reach_the_log():
    c = Cluster()
    leader = c.elect()
    last = c.nodes[leader].raft.log.last_index
    assert c.call(leader, "GET") == ErrorReply(
        "ERR wrong number of arguments for 'get' command")
    assert isinstance(c.call(leader, "NOSUCH", "x"), ErrorReply)
    assert c.call(leader, "SET", "k", "v", "EX", "-1").message.startswith("ERR")
    assert c.nodes[leader].raft.log.last_index == last


def test_write_without_leader_waits_then_completes_when_one_is_elected():
    c = Cluster()
    req = c.submit("n1", "SET", "k", "v")
    assert c.reply("n1", req) is MISSING
    leader = c.elect()
    c.tick(3)
    assert c.reply("n1", req) == OK
    assert c.call(leader, "GET", "k") == b"v"


def test_write_without_quorum_times_out_as_not_applied():
    c = Cluster(request_timeout_ms=500)
    c.partition({"n1"}, {"n2"}, {"n3"})
    req = c.submit("n1", "SET", "k", "v")
    c.tick(20)
    assert c.reply("n1", req) == ERR_NO_LEADER


def test_a_request_times_out_at_the_first_tick_past_its_deadline():
    # Deadlines are filed in 100 ms buckets before an exact heap: neither may move a timeout.
    for timeout_ms in (537, 600, 2049):
        c = Cluster(request_timeout_ms=timeout_ms)
        c.partition({"n1"}, {"n2"}, {"n3"})
        c.tick(3)
        deadline = c.now_ms + timeout_ms
        req = c.submit("n1", "SET", "k", "v")
        while c.now_ms + TICK_MS < deadline:
            c.tick()
            assert c.reply("n1", req) is MISSING, (timeout_ms, c.now_ms, deadline)
        c.tick()
        assert c.now_ms >= deadline and c.reply("n1", req) == ERR_NO_LEADER


def test_finished_requests_leave_no_deadline_in_the_exact_heap():
    c = Cluster(request_timeout_ms=5000)
    leader = c.elect()
    for i in range(300):
        assert c.call(leader, "SET", f"k{i}", "v") == OK
    node = c.nodes[leader]
    c.tick()
    # White-box: the 300 deadlines wait in their buckets, and are dropped there once due;
    # the exact heap (searched on every tick) never holds a finished request's.
    assert node._deadlines == []
    assert sum(map(len, node._deadline_buckets.values())) == 300
    c.tick(5000 // TICK_MS + 2)
    assert node._deadlines == [] and node._deadline_buckets == {}


def test_forwarded_write_whose_leader_dies_is_reported_unknown():
    c = Cluster(request_timeout_ms=1000)
    leader = c.elect()
    f1, f2 = followers(c, leader)
    # The leader gets the forwarded write but cannot replicate it, then crashes.
    c.partition({leader}, {f2})
    c.blocked.add((leader, f1))
    req = c.submit(f1, "SET", "k", "v")
    c.deliver()
    c.crash(leader)
    c.heal()
    c.tick(40)
    assert c.reply(f1, req) == ERR_UNKNOWN


def test_a_write_forwarded_to_a_leader_that_died_is_unknown_soon_after_a_new_leader():
    c = Cluster(request_timeout_ms=60_000)
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.partition({leader}, {f2})
    c.blocked.add((leader, f1))
    req = c.submit(f1, "SET", "k", "v")
    c.deliver()  # the leader has it, alone, and dies
    c.crash(leader)
    c.heal()
    ticks = 0
    while c.nodes[f1].raft.leader_id in (None, leader):
        c.tick()
        ticks += 1
        assert ticks < 100, "no new leader"
    assert c.reply(f1, req) is MISSING
    # Not at the request's own deadline (60 s): one election timeout after f1 knew a new
    # leader, since the old one would have answered by then if it could.
    election_ms = c.nodes[f1].raft.config.election_ticks * TICK_MS
    c.tick(election_ms // TICK_MS - 1)
    assert c.reply(f1, req) is MISSING
    c.tick(3)
    assert c.reply(f1, req) == ERR_UNKNOWN


def test_a_deposed_leader_that_runs_still_gives_its_forwarded_writes_their_answer():
    c = Cluster(request_timeout_ms=60_000)
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.partition({leader}, {f2})
    c.blocked.add((leader, f1))  # the forward reaches it; its AppendRequests do not
    req = c.submit(f1, "SET", "k", "lost")
    c.deliver()
    c.partition({leader}, {f1, f2})
    for _ in range(100):
        c.tick()
        if c.nodes[f1].raft.leader_id not in (None, leader):
            break
    new_leader = c.nodes[f1].raft.leader_id
    assert new_leader in (f1, f2) and c.reply(f1, req) is MISSING
    assert c.call(new_leader, "SET", "k", "kept") == OK
    c.heal()  # the old leader hears of the new one, drops its entry and says so
    c.tick(2)
    assert c.reply(f1, req) == ERR_NOT_APPLIED


def test_uncommitted_write_overwritten_by_new_leader_is_reported_not_applied():
    c = Cluster(request_timeout_ms=60_000)
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.partition({leader}, {f1, f2})
    req = c.submit(leader, "SET", "k", "lost")
    c.deliver()
    # The majority elects a new leader and commits something else at that index.
    for _ in range(100):
        c.tick()
        if c.nodes[f1].raft.is_leader or c.nodes[f2].raft.is_leader:
            break
    new_leader = f1 if c.nodes[f1].raft.is_leader else f2
    assert c.call(new_leader, "SET", "k", "kept") == OK
    c.heal()
    c.tick(10)
    assert c.reply(leader, req) == ERR_NOT_APPLIED
    assert c.call(leader, "GET", "k") == b"kept"


def test_expiry_is_decided_in_the_log_and_identical_everywhere():
    c = Cluster()
    leader = c.elect()
    assert c.call(leader, "SET", "k", "v", "PX", "120") == OK
    assert c.call(leader, "GET", "k") == b"v"
    c.tick(6)  # 300 ms later: expired, and the leader has proposed its deletion
    for i in c.ids:
        assert c.call(i, "GET", "k") is None
    c.tick(4)
    assert {c.nodes[i].state.key_count() for i in c.ids} == {0}
    assert len({c.nodes[i].state.digest() for i in c.ids}) == 1


def test_entry_time_never_goes_backwards_when_a_new_leader_clock_is_behind():
    c = Cluster()
    leader = c.elect()
    c.call(leader, "SET", "k", "v", "PX", "100000")
    t = c.nodes[leader].state_time_ms
    c.now_ms -= 50_000  # every clock jumps back (as a new leader's might be behind)
    c.call(leader, "SET", "k2", "v2")
    assert c.nodes[leader].state_time_ms >= t


def test_restarted_follower_catches_up_from_the_log():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    c.crash(f)
    for i in range(20):
        assert c.call(leader, "SET", f"k{i}", f"v{i}") == OK
    c.start(f)
    c.tick(10)
    assert c.nodes[f].applied_index == c.nodes[leader].applied_index
    assert c.nodes[f].state.digest() == c.nodes[leader].state.digest()


def test_whole_cluster_restart_keeps_acknowledged_writes():
    c = Cluster()
    leader = c.elect()
    for i in range(10):
        assert c.call(leader, "SET", f"k{i}", f"v{i}") == OK
    for i in c.ids:
        c.crash(i)
    for i in c.ids:
        c.start(i)
    leader = c.elect()
    for i in c.ids:
        assert c.call(i, "GET", "k9") == b"v9"


def test_follower_read_is_answered_when_its_read_index_arrives_without_waiting_for_a_tick():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    c.call(leader, "SET", "k", "v")
    c.tick(1)  # the follower has applied the write
    req = c.submit(f, "GET", "k")
    c.deliver()  # ReadIndexRequest -> heartbeat round -> ReadIndexReply; no tick in between
    assert c.reply(f, req) == b"v"


def test_forward_that_could_not_be_sent_waits_for_the_next_leader_instead_of_unknown():
    c = Cluster(request_timeout_ms=10_000)
    leader = c.elect()
    f1, f2 = followers(c, leader)
    c.crash(leader)
    req = c.submit(f1, "SET", "k", "v")
    # The driver reports that the forward to the dead leader never left (its link was down).
    fwd = next(m for s, t, m in reversed(c.sent_log) if s == f1 and isinstance(m, ForwardRequest))
    c.queue = [q for q in c.queue if q[2] is not fwd]
    c.nodes[f1].undeliverable(leader, fwd)
    c.process(f1)
    for _ in range(100):
        c.tick()
        if c.reply(f1, req) is not MISSING:
            break
    assert c.reply(f1, req) == OK
    assert c.call(f2, "GET", "k") == b"v"


def test_duplicated_forward_is_proposed_once():
    c = Cluster()
    leader = c.elect()
    f = followers(c, leader)[0]
    req = c.submit(f, "INCR", "n")
    fwd = next(m for s, t, m in reversed(c.sent_log) if s == f and isinstance(m, ForwardRequest))
    c.queue.append((leader, f, fwd))  # the network delivers it twice
    c.deliver()
    c.tick(3)
    assert c.reply(f, req) == 1
    assert c.call(leader, "GET", "n") == b"1"


# ---- log compaction after a snapshot ----


def _snapshot_and_compact(cluster: Cluster, node_id: str, *, keep_entries: int,
                          keep_bytes: int) -> tuple[int, int]:
    """Force a snapshot on `node_id` with these retention settings; (snapshot index, the log's
    first kept index)."""
    from dataclasses import replace

    node = cluster.nodes[node_id]
    node.config = replace(node.config, snapshot_keep_entries=keep_entries,
                          snapshot_keep_bytes=keep_bytes)
    job = node.start_snapshot(force=True)
    while job.cursor.next_batch(100) is not None:
        pass
    assert node.snapshot_verdict(job) == "commit"
    offset = node.snapshot_saved(job, 100)
    return job.index, offset + 1


def test_compaction_keeps_the_last_entries_but_no_more_than_their_byte_bound() -> None:
    cluster = Cluster()
    leader = cluster.elect()
    for i in range(20):
        assert cluster.call(leader, "SET", f"small{i}", "v") == OK
    for i in range(10):
        assert cluster.call(leader, "SET", f"big{i}", "x" * 1000) == OK
    log = cluster.nodes[leader].raft.log
    size = {i: len(log.entry(i).data) for i in range(log.offset + 1, log.last_index + 1)}
    index, first_kept = _snapshot_and_compact(cluster, leader, keep_entries=25,
                                              keep_bytes=4500)
    assert log.offset + 1 == first_kept and log.term_at(first_kept) is not None
    kept = [size[i] for i in range(first_kept, index + 1)]
    assert len(kept) < 25 and sum(kept) <= 4500  # the byte bound cut it short
    assert sum(kept) + size[first_kept - 1] > 4500  # one more would not have fitted
    assert all(n > 1000 for n in kept)  # only some of the big SETs are kept
    # Within the byte bound the count decides; 0 means no byte bound.
    cluster2 = Cluster()
    leader2 = cluster2.elect()
    for i in range(30):
        assert cluster2.call(leader2, "SET", f"k{i}", "v") == OK
    index2, first_kept2 = _snapshot_and_compact(cluster2, leader2, keep_entries=10,
                                                keep_bytes=1 << 20)
    assert index2 - first_kept2 + 1 == 10
    cluster3 = Cluster()
    leader3 = cluster3.elect()
    for i in range(10):
        assert cluster3.call(leader3, "SET", f"k{i}", "x" * 1000) == OK
    index3, first_kept3 = _snapshot_and_compact(cluster3, leader3, keep_entries=5,
                                                keep_bytes=0)
    assert index3 - first_kept3 + 1 == 5


# ---- when a snapshot is due: the growth rule (snapshot_log_ratio) ----


def _finish(node, job) -> None:
    while job.cursor.next_batch(100) is not None:
        pass
    assert node.snapshot_verdict(job) == "commit"
    node.snapshot_saved(job, 100)


def _growth_cluster(ratio: float, min_bytes: int = 0, **config) -> tuple[Cluster, str]:
    from dataclasses import replace

    cluster = Cluster()
    leader = cluster.elect()
    node = cluster.nodes[leader]
    node.config = replace(node.config, snapshot_log_ratio=ratio,
                          snapshot_log_min_bytes=min_bytes, **config)
    node._new_snapshot_jitter()
    return cluster, leader


def _writes_until_due(cluster: Cluster, leader: str, limit: int = 5000) -> int:
    """SETs of one key with a 100-byte value until the leader says a snapshot is due; the
    snapshot is then taken. Checks that the rule fires exactly at its threshold."""
    node = cluster.nodes[leader]
    for n in range(1, limit + 1):
        assert cluster.call(leader, "SET", "hot", "v" * 100) == OK
        last = node.raft.snapshot.index if node.raft.snapshot else node.raft.log.offset
        cost, threshold = node.log_cost_since_snapshot(last), node.growth_threshold()
        job = node.start_snapshot()
        assert (job is not None) == (cost >= threshold), (n, cost, threshold)
        if job is not None:
            _finish(node, job)
            return n
    raise AssertionError(f"no snapshot due after {limit} writes")


def test_the_growth_rule_snapshots_in_proportion_to_the_keyspace() -> None:
    small, big = _growth_cluster(0.5), _growth_cluster(0.5)
    for cluster, keys in ((small, 20), (big, 200)):
        cluster_, leader = cluster
        for i in range(keys):
            assert cluster_.call(leader, "SET", f"k{i}", "x" * 1000) == OK
        node = cluster_.nodes[leader]
        _finish(node, node.start_snapshot(force=True))  # count from here
    # A keyspace ten times larger takes about ten times the writes before a snapshot is due
    # (a fixed count would make the large one snapshot as often as the small one).
    n_small = _writes_until_due(*small)
    n_big = _writes_until_due(*big)
    assert 6 * n_small <= n_big <= 14 * n_small, (n_small, n_big)
    # And then again, at the same rate: the counters restart at each snapshot.
    n_big_again = _writes_until_due(*big)
    assert 0.6 * n_big <= n_big_again <= 1.6 * n_big, (n_big, n_big_again)
    # Each write of a 100-byte value costs its data plus the entry's overhead: about half the
    # big keyspace's estimated memory (200 keys x ~1.1 KB) in log before the snapshot.
    node = big[0].nodes[big[1]]
    expected = 0.5 * node.state.used_bytes() / (100 + ENTRY_OVERHEAD_BYTES)
    assert 0.7 * expected <= n_big <= 1.5 * expected, (n_big, expected)


def test_the_growth_rule_waits_for_its_floor_and_is_off_at_zero() -> None:
    cluster, leader = _growth_cluster(0.5, min_bytes=20_000)
    # An empty keyspace: half of almost nothing, so the floor decides (20,000 bytes of log
    # cost, 0-25% later for this node's jitter).
    n = _writes_until_due(cluster, leader)
    node = cluster.nodes[leader]
    per_write = 100 + ENTRY_OVERHEAD_BYTES  # at least the value, at most about twice that
    assert 20_000 // (2 * per_write) <= n <= 25_000 // per_write + 1, n
    assert node.raft.snapshot is not None and node.raft.snapshot.index == node.applied_index
    off, leader_off = _growth_cluster(0.0)
    node_off = off.nodes[leader_off]
    assert node_off.growth_threshold() == 0
    for _ in range(300):
        assert off.call(leader_off, "SET", "hot", "v" * 100) == OK
    assert node_off.start_snapshot() is None  # no rule on: never due


def test_the_growth_jitter_spreads_nodes_by_at_most_a_quarter() -> None:
    thresholds = set()
    for seed in range(12):
        cluster = Cluster(seed=seed)
        leader = cluster.elect()
        node = cluster.nodes[leader]
        from dataclasses import replace
        node.config = replace(node.config, snapshot_log_ratio=1.0,
                              snapshot_log_min_bytes=100_000)
        node.rng.seed(seed)
        node._new_snapshot_jitter()
        t = node.growth_threshold()
        assert 100_000 <= t < 125_000, t
        thresholds.add(t)
    assert len(thresholds) > 6  # not all the same: nodes do not snapshot in lockstep


def test_what_is_applied_while_a_snapshot_is_written_counts_towards_the_next() -> None:
    """A large store's snapshot takes seconds to write, under load: the entries applied
    meanwhile are not in it, so the rules must weigh them (they were once forgotten at save)."""
    cluster, leader = _growth_cluster(0.0, snapshot_log_bytes=40_000)
    node = cluster.nodes[leader]
    for i in range(100):
        assert cluster.call(leader, "SET", f"k{i}", "x" * 200) == OK
    job = node.start_snapshot(force=True)
    assert job is not None
    for i in range(150):  # written while the job is being written: after its index
        assert cluster.call(leader, "SET", "hot", "v" * 300) == OK
    _finish(node, job)
    assert node.raft.snapshot is not None and node.raft.snapshot.index == job.index
    since = node.applied_index - job.index
    assert since >= 150
    cost = node.log_cost_since_snapshot()
    assert cost >= since * (300 + ENTRY_OVERHEAD_BYTES), (cost, since)
    # ...and by the byte rule (40,000 bytes of data) the next snapshot is already due.
    assert node.start_snapshot() is not None
