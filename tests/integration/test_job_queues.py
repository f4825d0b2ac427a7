"""Job queue libraries, unchanged, on a real 3-node cluster: Kombu's Redis transport (what
Celery uses) and RQ. Each library's worker waits on one follower, blocked in its own BRPOP or
BLPOP, while jobs are sent through the other follower: every job reaches the worker once, and
the library's own bookkeeping (Kombu's unacked messages, RQ's results) ends as it should.
scripts/install.sh --test installs both libraries (the project's test extras).
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from kombu import Connection, Exchange, Queue
from rq import Queue as RQueue
from rq import SimpleWorker

from .cluster import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

JOBS = 20


def url(cluster: Cluster, node_id: str) -> str:
    return f"redis://127.0.0.1:{cluster.port(node_id)}/0"


def blocked_clients(cluster: Cluster, node_id: str) -> int:
    return int(cluster.info(node_id, "clients")["blocked_clients"])


def test_kombu_delivers_every_message_once_through_a_follower(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    leader = cluster.leader()
    consumer_node, producer_node = [n for n in cluster.ids if n != leader]
    exchange = Exchange("replikv-tasks", type="direct")
    queue = Queue("replikv-tasks", exchange, routing_key="replikv-tasks")
    got: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def consume() -> None:
        try:
            with Connection(url(cluster, consumer_node)) as conn:
                def on_message(body: dict, message: object) -> None:
                    got.append(body["n"])
                    message.ack()  # type: ignore[attr-defined]

                with conn.Consumer(queue, callbacks=[on_message]):
                    deadline = time.monotonic() + 60
                    while not stop.is_set() and time.monotonic() < deadline:
                        try:
                            conn.drain_events(timeout=1)
                        except TimeoutError:
                            pass
        except Exception as e:  # noqa: BLE001 - reported by the test, not lost in the thread
            errors.append(e)

    with Connection(url(cluster, producer_node)) as conn:
        conn.Producer().publish({"n": -1}, exchange=exchange, routing_key="replikv-tasks",
                                declare=[queue])  # declares the queue and its binding
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        wait_until(lambda: -1 in got, timeout_s=20, what="the consumer's first message")
        wait_until(lambda: blocked_clients(cluster, consumer_node) >= 1, timeout_s=20,
                   what="the consumer blocked in BRPOP on its follower")
        with Connection(url(cluster, producer_node)) as conn:
            producer = conn.Producer(serializer="json")
            for n in range(JOBS):
                producer.publish({"n": n}, exchange=exchange, routing_key="replikv-tasks")
        wait_until(lambda: len(got) >= JOBS + 1, timeout_s=30, what="every message consumed")
        time.sleep(0.3)  # nothing more arrives
    finally:
        stop.set()
        consumer.join(timeout=15)
    assert not errors, errors
    assert sorted(got) == list(range(-1, JOBS)), "a message was lost or delivered twice"
    check = cluster.client(producer_node)
    # Every message was acknowledged: Kombu's unacked hash and index are empty.
    assert check.hlen("unacked") == 0 and check.zcard("unacked_index") == 0
    assert check.llen("replikv-tasks") == 0


def test_an_rq_worker_runs_every_job_once_through_a_follower(shared_cluster: Cluster) -> None:
    cluster = shared_cluster
    leader = cluster.leader()
    worker_node, producer_node = [n for n in cluster.ids if n != leader]
    # RQ's worker blocks in BLPOP for minutes: its connection must wait as long.
    worker_conn = redis.Redis(port=cluster.port(worker_node), socket_timeout=None)
    producer_conn = redis.Redis(port=cluster.port(producer_node), socket_timeout=10)
    jobs: list = []

    def enqueue() -> None:
        wait_until(lambda: blocked_clients(cluster, worker_node) >= 1, timeout_s=20,
                   what="the RQ worker blocked in BLPOP on its follower")
        queue = RQueue("replikv-jobs", connection=producer_conn)
        jobs.extend(queue.enqueue("operator.mul", n, 3) for n in range(JOBS))

    producer = threading.Thread(target=enqueue, daemon=True)
    producer.start()
    try:
        # The worker must run in the main thread (it installs signal handlers); max_jobs ends
        # it once it has run them all.
        worker = SimpleWorker([RQueue("replikv-jobs", connection=worker_conn)],
                              connection=worker_conn)
        worker.work(burst=False, max_jobs=JOBS, logging_level="WARNING")
    finally:
        producer.join(timeout=30)
        worker_conn.close()
    assert len(jobs) == JOBS
    results = [job.latest_result() for job in jobs]
    assert all(r is not None and r.type == r.Type.SUCCESSFUL for r in results), results
    assert [r.return_value for r in results] == [3 * n for n in range(JOBS)]
    assert producer_conn.llen("rq:queue:replikv-jobs") == 0
    producer_conn.close()
