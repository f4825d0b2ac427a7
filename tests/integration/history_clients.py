"""Client threads that record a history of get / set / cas / del / incr on real nodes.

Each client picks a random node per operation (connections without redis-py's retries), and
records every operation with the recorder: ok with its result, fail (TRYAGAIN: certainly not
applied), or unknown (UNKNOWN, a dropped connection, a timeout, or WTIMEOUT when writes ask
for w=all: it took effect with a reply we did not see). Any other error reply fails the test.
The history then goes to replikv.check for a linearizability verdict.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from replikv.check.history import HistoryRecorder

from .cluster import Cluster, client_without_retries

KINDS = ["get", "set", "cas", "del", "incr"]


@dataclass(frozen=True, slots=True)
class HistoryWorkload:
    keys: tuple[bytes, ...] = (b"h0", b"h1", b"h2")
    weights: tuple[int, ...] = (40, 20, 15, 10, 15)  # KINDS order
    write_prefix: tuple[str, ...] = ()  # e.g. ("REPLIKV", "WITH", "W", "all", "WTIMEOUT", "400")
    lease_read_share: float = 0.0  # reads sent with CONSISTENCY lease instead of a ReadIndex
    max_ops_per_client: int = 5000
    socket_timeout_s: float = 2.0

    @property
    def wtimeout_is_unknown(self) -> bool:
        return "all" in self.write_prefix


def run_history_clients(cluster: Cluster, recorder: HistoryRecorder, clients: int,
                        workload: HistoryWorkload, seed: int,
                        faults: Callable[[], None]) -> None:
    """Run `clients` history clients while `faults()` runs in this thread; stop them when it
    returns, and re-raise the first client's failure."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(c: int) -> None:
        try:
            _client(cluster, recorder, c, workload, stop, random.Random(seed * 100 + c))
        except BaseException as e:  # noqa: BLE001 - a thread's failure is re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    try:
        faults()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"
    assert not errors, errors[0]


def _client(cluster: Cluster, recorder: HistoryRecorder, client: int, w: HistoryWorkload,
            stop: threading.Event, rng: random.Random) -> None:
    conns = {i: client_without_retries(cluster.port(i), socket_timeout=w.socket_timeout_s)
             for i in cluster.ids}
    prefix = list(w.write_prefix)
    counter = 0
    try:
        for _ in range(w.max_ops_per_client):
            if stop.is_set():
                break
            kind = rng.choices(KINDS, w.weights)[0]
            key = rng.choice(w.keys)
            value = expected = None
            if kind in ("set", "cas"):
                counter += 1
                value = b"%d" % (client * 1_000_000 + counter)
            if kind == "cas":
                expected = b"%d" % rng.randint(0, 3)
                if rng.random() < 0.7:  # mostly the current value, so some CAS succeed
                    try:
                        expected = conns[rng.choice(cluster.ids)].get(key) or b"0"
                    except redis.RedisError:
                        pass
            r = conns[rng.choice(cluster.ids)]
            handle = recorder.invoke(client, key, kind, value, expected,
                                     now_ns=time.monotonic_ns())
            try:
                if kind == "get":
                    if rng.random() < w.lease_read_share:
                        result = r.execute_command("REPLIKV", "WITH", "CONSISTENCY", "lease",
                                                   "GET", key)
                    else:
                        result = r.get(key)
                elif kind == "set":
                    # redis-py turns a bare SET's OK into True; after REPLIKV WITH it is b"OK".
                    reply = r.execute_command(*prefix, "SET", key, value)
                    assert reply in (b"OK", True), reply
                    result = None
                elif kind == "cas":
                    reply = r.execute_command(*prefix, "SET", key, value, "IFEQ", expected)
                    assert reply in (b"OK", True, None), reply
                    result = reply is not None
                elif kind == "del":
                    result = r.execute_command(*prefix, "DEL", key)
                else:
                    result = r.execute_command(*prefix, "INCR", key)
            except redis.ResponseError as e:
                text = str(e)
                # redis-py raises TRYAGAIN as TryAgainError, whose text drops the code.
                if isinstance(e, redis.exceptions.TryAgainError) or text.startswith("TRYAGAIN"):
                    outcome, result = "fail", None
                elif text.startswith("UNKNOWN"):
                    outcome, result = "unknown", None
                elif text.startswith("WTIMEOUT") and w.wtimeout_is_unknown and kind != "get":
                    # Committed on a majority, but its reply (a count, a nil) is not known.
                    outcome, result = "unknown", "WTIMEOUT"
                else:
                    raise AssertionError(f"unexpected error reply to {kind}: {text}") from None
                recorder.complete(handle, outcome, result, time.monotonic_ns())
            except (redis.ConnectionError, redis.TimeoutError):
                # The command may or may not have reached the node: its outcome is unknown.
                recorder.complete(handle, "unknown", None, time.monotonic_ns())
                time.sleep(0.05)
            else:
                recorder.complete(handle, "ok", result, time.monotonic_ns())
    finally:
        for c in conns.values():
            c.close()
