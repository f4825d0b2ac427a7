"""Real processes, real faults, checked for linearizability.

Six client threads run get / set / compare-and-set / delete / incr on a few keys through random
nodes while the leader is killed with kill -9 and restarted and a follower is paused with
SIGSTOP. Every operation is recorded (ok, failed for certain, or outcome unknown) and the whole
history must be linearizable.
"""

from __future__ import annotations

import time

from replikv.check.history import HistoryRecorder
from replikv.check.linearizability import check_history, format_result

from .history_clients import HistoryWorkload, run_history_clients

CLIENTS = 6
RUN_S = 7.0


def test_history_under_kill_and_pause_is_linearizable(make_cluster):
    cluster = make_cluster(3)
    recorder = HistoryRecorder()

    def faults() -> None:
        started = time.monotonic()
        time.sleep(1.5)
        leader = cluster.leader()
        cluster.kill9(leader)
        time.sleep(1.5)
        cluster.start(leader)
        time.sleep(1.0)
        follower = next(i for i in cluster.ids if i != cluster.leader())
        cluster.pause(follower)
        time.sleep(1.0)
        cluster.resume(follower)
        time.sleep(max(0.0, RUN_S - (time.monotonic() - started)))

    run_history_clients(cluster, recorder, CLIENTS, HistoryWorkload(max_ops_per_client=3000),
                        seed=10, faults=faults)
    ops = recorder.ops()
    outcomes = {o: sum(1 for op in ops if op.outcome == o) for o in ("ok", "fail", "unknown")}
    print(f"\nhistory: {len(ops)} operations {outcomes}")
    assert outcomes["ok"] > 200, "too few operations completed to mean anything"
    result = check_history(ops, timeout_s=120)
    assert result.ok is True, format_result(result)
