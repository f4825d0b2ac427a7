"""Real processes, real faults, checked for linearizability.

Six client threads run get / set / compare-and-set / delete / incr on a few keys through random
nodes while the leader is killed with kill -9 and restarted and a follower is paused with
SIGSTOP. Every operation is recorded (ok, failed for certain, or outcome unknown) and the whole
history must be linearizable.
"""

from __future__ import annotations

import random
import threading
import time

import redis

from replikv.check.history import HistoryRecorder
from replikv.check.linearizability import check_history, format_result

from .cluster import client_without_retries

CLIENTS = 6
KEYS = [b"h0", b"h1", b"h2"]
RUN_S = 7.0
MAX_OPS_PER_CLIENT = 3000


def _client_loop(cluster, recorder: HistoryRecorder, client: int, stop: threading.Event,
                 seed: int) -> None:
    rng = random.Random(seed)
    conns = {i: client_without_retries(cluster.port(i), socket_timeout=2.0) for i in cluster.ids}
    counter = 0
    for _ in range(MAX_OPS_PER_CLIENT):
        if stop.is_set():
            break
        kind = rng.choices(["get", "set", "cas", "del", "incr"], [40, 20, 15, 10, 15])[0]
        key = rng.choice(KEYS)
        value = expected = None
        if kind in ("set", "cas"):
            counter += 1
            value = str(client * 1_000_000 + counter).encode()
        if kind == "cas":
            expected = str(rng.randint(0, 3)).encode() if rng.random() < 0.3 else None
            if expected is None:
                try:
                    expected = conns[rng.choice(cluster.ids)].get(key) or b"0"
                except redis.RedisError:
                    expected = b"0"
        node = rng.choice(cluster.ids)
        handle = recorder.invoke(client, key, kind, value, expected, now_ns=time.monotonic_ns())
        try:
            r = conns[node]
            if kind == "get":
                result = r.get(key)
            elif kind == "set":
                r.set(key, value)
                result = None
            elif kind == "cas":
                result = r.execute_command("SET", key, value, "IFEQ", expected) is not None
            elif kind == "del":
                result = r.delete(key)
            else:
                result = r.incr(key)
        except redis.ResponseError as e:
            text = str(e)
            outcome = "fail" if text.startswith("TRYAGAIN") else "unknown"
            if not text.startswith(("TRYAGAIN", "UNKNOWN")):
                raise AssertionError(f"unexpected error reply for {kind}: {text}") from None
            recorder.complete(handle, outcome, None, time.monotonic_ns())
        except (redis.ConnectionError, redis.TimeoutError):
            # The command may or may not have reached the node: its outcome is unknown.
            recorder.complete(handle, "unknown", None, time.monotonic_ns())
            time.sleep(0.05)
        else:
            recorder.complete(handle, "ok", result, time.monotonic_ns())


def test_history_under_kill_and_pause_is_linearizable(make_cluster):
    cluster = make_cluster(3)
    recorder = HistoryRecorder()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(c: int) -> None:
        try:
            _client_loop(cluster, recorder, c, stop, seed=1000 + c)
        except BaseException as e:  # noqa: BLE001 - a thread's failure is re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
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
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[0]
    ops = recorder.ops()
    outcomes = {o: sum(1 for op in ops if op.outcome == o) for o in ("ok", "fail", "unknown")}
    print(f"\nhistory: {len(ops)} operations {outcomes}")
    assert outcomes["ok"] > 200, "too few operations completed to mean anything"
    result = check_history(ops, timeout_s=120)
    assert result.ok is True, format_result(result)
