"""The pure parts of benchmarks/compare.py (HTTP response parsing, etcd requests, tables, the
issue's ratios) and of benchmarks/peers/pysyncobj_kv.py (RESP command handling with a fake
store). No cluster, no etcd, no PySyncObj needed."""

from __future__ import annotations

import base64
import json
import os
import socket

import pytest

from benchmarks.compare import (
    HttpError,
    HttpPlan,
    HttpResponseReader,
    _http_connection,
    combine_rounds,
    compute_ratios,
    etcd_put_body,
    etcd_range_body,
    etcd_requests,
    format_ratios,
    format_workload_table,
    http_post_request,
    other_cores_busy,
    parse_list,
    parse_machine_busy_s,
    parse_proc_stat_children_cpu_s,
    parse_response_head,
    processes_cpu_s,
    short_version,
    supports,
    system_order,
)
from benchmarks.peers.pysyncobj_kv import CommandHandler, OrderedReplies, RespProtocol

from .fake_http import fake_http_server

# ---- HTTP responses ------------------------------------------------------------------------------

OK_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nGrpc-Metadata-Content-Type: "
               b"application/grpc\r\nDate: Sun, 23 Nov 2025 05:00:00 GMT\r\nContent-Length: 18\r\n"
               b"\r\n{\"header\":{\"a\":1}}")
BAD_RESPONSE = (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 26\r\n\r\n"
                b"{\"error\":\"key is not set\"}")


def test_a_response_head_gives_status_and_length():
    assert parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 42") == (200, 42)
    assert parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nCONTENT-LENGTH:  0") == \
        (503, 0)
    assert parse_response_head(b"HTTP/1.1 204 No Content\r\nX: y") == (204, 0)


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain",  # no length: cannot find the next response
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
    b"SSH-2.0-OpenSSH\r\nContent-Length: 1",
    b"HTTP/1.1 abc OK\r\nContent-Length: 1",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1",
    b"HTTP/1.1 200 OK\r\nno colon here",
])
def test_unreadable_heads_are_refused(head):
    with pytest.raises(HttpError):
        parse_response_head(head)


def test_responses_fed_one_byte_at_a_time_come_out_whole_and_in_order():
    reader = HttpResponseReader()
    got = []
    for byte in OK_RESPONSE + BAD_RESPONSE + OK_RESPONSE:
        reader.feed(bytes([byte]))
        while (response := reader.gets()) is not None:
            got.append(response)
    assert got == [(200, b'{"header":{"a":1}}'),
                   (400, b'{"error":"key is not set"}'),
                   (200, b'{"header":{"a":1}}')]
    assert reader.gets() is None


def test_a_partial_body_waits_and_the_next_response_is_not_swallowed():
    reader = HttpResponseReader()
    reader.feed(OK_RESPONSE[:-5])
    assert reader.gets() is None
    reader.feed(OK_RESPONSE[-5:] + BAD_RESPONSE[:10])
    assert reader.gets() == (200, b'{"header":{"a":1}}')
    assert reader.gets() is None
    reader.feed(BAD_RESPONSE[10:])
    assert reader.gets()[0] == 400


def test_endless_headers_are_an_error():
    reader = HttpResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X-Junk: aaaaaaaaaaaaaaaa\r\n" * 2000)
    with pytest.raises(HttpError):
        reader.gets()


# ---- etcd requests -------------------------------------------------------------------------------


def _split(request: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def test_put_requests_carry_base64_keys_and_values_with_the_right_length():
    requests = etcd_requests("set", ("127.0.0.1", 2379), keys=50, value_bytes=100)
    assert len(requests) == 50
    for i, request in enumerate(requests):
        lines, body = _split(request)
        assert lines[0] == b"POST /v3/kv/put HTTP/1.1"
        assert b"Host: 127.0.0.1:2379" in lines
        assert f"Content-Length: {len(body)}".encode() in lines
        payload = json.loads(body)
        assert base64.b64decode(payload["key"]) == b"bench:%d" % i
        assert base64.b64decode(payload["value"]) == b"v" * 100


def test_range_requests_are_linearizable_reads_of_one_key():
    lines, body = _split(etcd_requests("get", ("127.0.0.1", 1), keys=3, value_bytes=100)[2])
    assert lines[0] == b"POST /v3/kv/range HTTP/1.1"
    assert json.loads(body) == {"key": base64.b64encode(b"bench:2").decode()}  # no serializable
    assert json.loads(etcd_range_body(b"\xff\x00")) == {"key": "/wA="}
    assert json.loads(etcd_put_body(b"k", b"")) == {"key": "aw==", "value": ""}
    with pytest.raises(ValueError):
        etcd_requests("mset", ("127.0.0.1", 1), keys=1, value_bytes=1)


def test_requests_and_reader_work_against_a_real_http_server_on_one_connection():
    """Python's HTTP/1.1 server parses the prepared requests (so Content-Length is right) and the
    reader parses its keep-alive responses, pipelined, a 404 among them."""
    seen = []

    def answer(method, path, body):
        seen.append((path, body))
        return (200 if (method, path) == ("POST", "/v3/kv/put") else 404,
                json.dumps({"echo": len(body)}).encode())

    with fake_http_server(answer, keep_alive=True) as port:
        put = etcd_requests("set", ("127.0.0.1", port), keys=1, value_bytes=100)[0]
        other = http_post_request("127.0.0.1", port, "/nope", b"{}")
        reader, got = HttpResponseReader(), []
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(put + other + put)
            while len(got) < 3:
                data = s.recv(7)  # small reads: responses arrive in pieces
                assert data, "the server closed the connection"
                reader.feed(data)
                while (response := reader.gets()) is not None:
                    got.append(response)
    assert [status for status, _ in got] == [200, 404, 200]
    assert json.loads(got[0][1]) == {"echo": len(_split(put)[1])}
    assert [path for path, _ in seen] == ["/v3/kv/put", "/nope", "/v3/kv/put"]


def test_the_etcd_load_connection_counts_answers_and_errors_on_one_keep_alive_connection():
    """The etcd worker's connection (replikv.bench.LoadConnection with the HTTP reader) against
    a real HTTP/1.1 server: one request in flight, every answer counted, a non-200 an error."""
    import asyncio
    import random
    import threading
    import time

    from replikv.bench import WorkerReport

    answered, lock = [0], threading.Lock()

    def answer(method, path, body):
        with lock:
            answered[0] += 1
            n = answered[0]
        return (500, b'{"error":"planted"}') if n % 3 == 0 else (200, b"{}")

    with fake_http_server(answer, keep_alive=True) as port:
        plan = HttpPlan(("127.0.0.1", port), "set", 1, keys=5, value_bytes=10, seed=1)
        requests = etcd_requests("set", plan.address, plan.keys, plan.value_bytes)

        async def main() -> WorkerReport:
            report, go, deadline, connected = WorkerReport(), asyncio.Event(), [0.0], [0]
            task = asyncio.create_task(_http_connection(plan, requests, random.Random(1), go,
                                                        deadline, report, connected))
            while not connected[0]:
                await asyncio.sleep(0.01)
            deadline[0] = time.monotonic() + 0.3
            go.set()
            await asyncio.wait_for(task, 10)
            return report

        report = asyncio.run(main())
    assert report.ops + report.errors == answered[0] > 3
    assert report.errors == answered[0] // 3 and len(report.latencies_ns) == report.ops
    assert report.first_error == "HTTP 500: b'{\"error\":\"planted\"}'"


# ---- ratios and tables ---------------------------------------------------------------------------


def _result(ops_per_s, p99=10.0, **extra):
    return {"ops": 1000, "ops_per_s": ops_per_s, "errors": 0, "first_error": None,
            "latency_ms": {"p50": 1.0, "p99": p99, "p999": p99 * 2},
            "server_cpu_s_per_1k_ops": 0.1, "server_cores_busy": 1.0,
            "client_cpu_s_per_1k_ops": 0.02, "client_core_busy": 0.3, **extra}


def _systems():
    return {
        "replikv": {"workloads": {"set64": _result(9000, p99=12.0),
                                  "setp16": _result(40000), "get64": _result(20000)}},
        "etcd": {"workloads": {"set64": _result(3000, p99=11.0),
                               "setp16": {"skipped": "n/a: not sensible"},
                               "get64": _result(5000)}},
        "pysyncobj": {"workloads": {"set64": _result(2000)}},
        "redis-always": {"workloads": {"setp16": _result(100000)}},
    }


def test_ratios_compare_the_issues_targets():
    ratios = {r["label"]: r for r in compute_ratios(_systems())}
    assert len(ratios) == 5
    etcd_put = ratios["replikv set64 ops/s / etcd put ops/s"]
    assert etcd_put["ratio"] == pytest.approx(3.0) and etcd_put["verdict"] == "PASS"
    assert ratios["replikv set64 ops/s / PySyncObj set64 ops/s"]["verdict"] == "MISS"  # 4.5 < 5
    p99 = ratios["replikv set64 p99 / etcd put p99"]
    assert p99["ratio"] == pytest.approx(12 / 11) and p99["verdict"] == "MISS"  # higher p99
    assert ratios["replikv setp16 ops/s / Redis(always) setp16 ops/s"]["verdict"] == "MISS"
    assert ratios["replikv get64 ops/s / etcd range ops/s"]["verdict"] == "PASS"  # 4x


def test_a_lower_p99_passes_and_a_missing_side_has_no_verdict():
    systems = _systems()
    systems["replikv"]["workloads"]["set64"]["latency_ms"]["p99"] = 11.0  # equal: passes
    del systems["pysyncobj"]
    systems["redis-always"]["workloads"]["setp16"]["ops"] = 0  # ran, did nothing
    ratios = {r["label"]: r for r in compute_ratios(systems)}
    assert ratios["replikv set64 p99 / etcd put p99"]["verdict"] == "PASS"
    for label in ("replikv set64 ops/s / PySyncObj set64 ops/s",
                  "replikv setp16 ops/s / Redis(always) setp16 ops/s"):
        assert ratios[label]["ratio"] is None and ratios[label]["verdict"] == "-"
    text = format_ratios(list(ratios.values()))
    assert "PASS" in text and "<= 1" in text and ">= 0.5" in text


def test_the_workload_table_shows_na_and_a_saturated_client():
    systems = _systems()
    systems["replikv"]["workloads"]["setp16"]["client_core_busy"] = 0.97
    systems["replikv"]["workloads"]["setp16"]["leader_changed"] = True
    systems["redis-always"]["workloads"]["setp16"]["other_cores_busy"] = 0.5
    text = format_workload_table("setp16", systems)
    redis_row = next(line for line in text.splitlines() if line.startswith("redis-always"))
    assert redis_row.endswith("0.50!")
    lines = text.splitlines()
    assert lines[0].startswith("setp16:")
    etcd_row = next(line for line in lines if line.startswith("etcd"))
    assert etcd_row.split() == ["etcd", "n/a"]
    replikv_row = next(line for line in lines if line.startswith("replikv"))
    assert replikv_row.split()[0] == "replikv!" and replikv_row.split()[-2:] == ["97%*", "-"]
    assert "40,000" in replikv_row
    assert not any(line.startswith("pysyncobj") for line in lines)  # did not run setp16


def test_pipelined_workloads_are_na_for_etcd_only():
    assert supports("etcd", "setp16").startswith("n/a")
    assert supports("etcd", "set64") is None and supports("resp", "setp16") is None


def test_lists_of_names_are_checked():
    assert parse_list("etcd, replikv", ("replikv", "etcd"), "systems") == ["etcd", "replikv"]
    for bad in ("", "etcd,nope", "etcd,etcd"):
        with pytest.raises(ValueError):
            parse_list(bad, ("replikv", "etcd"), "systems")


def test_versions_come_out_short():
    etcd = ("etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n"
            "Go OS/Arch: linux/amd64\n")
    assert short_version(etcd) == "etcd 3.4.23 (go1.19.8)"
    redis = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d\n"
    assert short_version(redis) == "Redis v=7.0.15 malloc=jemalloc-5.3.0"


# ---- /proc -------------------------------------------------------------------------------------


def test_children_cpu_is_read_from_fields_16_and_17():
    # comm with a space and a parenthesis; utime 100, stime 50, cutime 30, cstime 20
    stat = ("1234 (redis (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 100 50 30 20 20 0 4 0 "
            "12345 1000 100")
    assert parse_proc_stat_children_cpu_s(stat, clk_tck=100) == pytest.approx(0.5)


def test_machine_busy_time_leaves_out_idle_and_iowait():
    stat = ("cpu  100 10 50 9000 300 5 7 3 0 0\n"
            "cpu0 50 5 25 4500 150 2 3 1 0 0\nintr 12345\n")
    assert parse_machine_busy_s(stat, clk_tck=100) == pytest.approx((100 + 10 + 50 + 5 + 7 + 3)
                                                                     / 100)
    with pytest.raises(ValueError):
        parse_machine_busy_s("intr 1\n")


def test_other_load_is_the_machines_busy_time_less_ours():
    # 10 s run: machine 15 core-s busy, servers 9, clients 3 -> 0.3 cores of someone else
    assert other_cores_busy(100.0, 115.0, 50.0, 59.0, 3.0, 10.0) == pytest.approx(0.3)
    assert other_cores_busy(100.0, 110.0, 50.0, 59.0, 3.0, 10.0) == 0.0  # never negative
    assert other_cores_busy(None, 110.0, 50.0, 59.0, 3.0, 10.0) is None


def test_process_cpu_of_live_and_gone_processes():
    mine = processes_cpu_s([os.getpid()])
    assert mine is not None and mine > 0
    assert processes_cpu_s([os.getpid(), 2**22 + 12345]) is None  # beyond pid_max


# ---- the PySyncObj server's RESP handling ---------------------------------------------------------


class FakeStore:
    """A Store whose writes complete when the test says so."""

    def __init__(self):
        self.data = {}
        self.pending = []  # (apply, done)
        self.state = "leader"

    def role(self):
        return self.state

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, done):
        self.pending.append((lambda: self.data.__setitem__(key, value), done))

    def mset(self, pairs, done):
        self.pending.append((lambda: self.data.update(pairs), done))

    def info(self):
        return {"role": self.state, "raft_term": 3}

    def complete(self, index=0, reason=0):
        apply, done = self.pending.pop(index)
        if reason == 0:
            apply()
        done(reason)


def _handler():
    store, out = FakeStore(), []
    handler = CommandHandler(store, lambda fn, *args: fn(*args))  # the "loop" runs at once
    return store, handler, OrderedReplies(out.append), out


def test_set_replies_only_after_the_commit_and_later_replies_wait_for_it():
    store, handler, replies, out = _handler()
    handler.handle([b"SET", b"k", b"v1"], replies)
    handler.handle([b"GET", b"k"], replies)
    handler.handle([b"PING"], replies)
    assert out == [] and replies.waiting == 3
    store.complete()
    assert b"".join(out) == b"+OK\r\n$-1\r\n+PONG\r\n"  # the GET ran before the commit
    handler.handle([b"get", b"k"], replies)
    assert out[-1] == b"$2\r\nv1\r\n"
    assert replies.waiting == 0


def test_commits_completing_out_of_order_still_answer_in_order():
    store, handler, replies, out = _handler()
    handler.handle([b"SET", b"a", b"1"], replies)
    handler.handle([b"SET", b"b", b"2"], replies)
    store.complete(index=1, reason=0)  # the second first
    assert out == []
    store.complete(index=0, reason=2)  # the first fails: no leader
    assert b"".join(out) == b"-ERR pysyncobj: MISSING_LEADER\r\n+OK\r\n"
    assert store.data == {b"b": b"2"}


def test_mset_role_info_and_errors():
    store, handler, replies, out = _handler()
    handler.handle([b"MSET", b"a", b"1", b"b", b"2"], replies)
    store.complete()
    assert out.pop() == b"+OK\r\n" and store.data == {b"a": b"1", b"b": b"2"}
    handler.handle([b"ROLE"], replies)
    assert out.pop() == b"*1\r\n$6\r\nleader\r\n"
    store.state = "follower"
    handler.handle([b"ROLE"], replies)
    assert out.pop() == b"*1\r\n$8\r\nfollower\r\n"
    handler.handle([b"INFO"], replies)
    assert b"raft_term:3\r\n" in out.pop()
    handler.handle([b"PING", b"hi"], replies)
    assert out.pop() == b"$2\r\nhi\r\n"
    for argv in ([b"SET", b"k"], [b"SET", b"k", b"v", b"EX", b"1"], [b"GET"],
                 [b"MSET", b"a"], [b"FLUSHALL"], []):
        handler.handle(argv, replies)
        assert out.pop().startswith(b"-ERR"), argv
    assert store.pending == []


class FakeTransport:
    def __init__(self):
        self.written = []
        self.closed = False

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True


def test_the_protocol_parses_requests_split_anywhere():
    store, handler, _, _ = _handler()
    protocol, transport = RespProtocol(handler), FakeTransport()
    protocol.connection_made(transport)
    wire = (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
            b"*1\r\n$4\r\nPING\r\n")
    for i in range(0, len(wire), 5):
        protocol.data_received(wire[i:i + 5])
    assert transport.written == [] and len(store.pending) == 1
    store.complete()
    assert b"".join(transport.written) == b"+OK\r\n$-1\r\n+PONG\r\n"
    protocol.data_received(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    assert transport.written[-1] == b"$3\r\nabc\r\n"
    protocol.data_received(b"$-2\r\n")  # not RESP: the connection is closed with an error
    assert transport.closed and transport.written[-1].startswith(b"-ERR protocol")


def test_the_compiled_trial_gets_the_same_targets_only_when_it_ran():
    systems = _systems()
    assert not any(r["label"].startswith("replikv-compiled") for r in compute_ratios(systems))
    systems["replikv-compiled"] = {"workloads": {"set64": _result(12000, p99=9.0),
                                                 "get64": _result(25000)}}
    ratios = {r["label"]: r for r in compute_ratios(systems)}
    assert len(ratios) == 10
    put = ratios["replikv-compiled set64 ops/s / etcd put ops/s"]
    assert put["numerator"] == 12000 and put["ratio"] == pytest.approx(4.0)
    assert put["verdict"] == "PASS"
    assert ratios["replikv-compiled set64 p99 / etcd put p99"]["verdict"] == "PASS"  # 9 <= 11
    assert ratios["replikv-compiled setp16 ops/s / Redis(always) setp16 ops/s"]["verdict"] == "-"
    assert ratios["replikv set64 ops/s / etcd put ops/s"]["numerator"] == 9000  # unchanged


def test_the_settings_go_into_the_json_report_as_they_are():
    from dataclasses import asdict

    from benchmarks.compare import parse_args

    settings, args = parse_args(["--systems", "replikv,replikv-compiled", "--compiled-dir",
                                 "/tmp/x/../build", "--duration-s", "2"])
    assert settings.systems == ["replikv", "replikv-compiled"]
    assert settings.compiled_dir == "/tmp/build" and settings.duration_s == 2.0
    assert json.loads(json.dumps(asdict(settings)))["compiled_dir"] == "/tmp/build"
    assert args.out is None
    with pytest.raises(SystemExit):
        parse_args(["--systems", "replikv,nosuch"])


# ---- several rounds ---------------------------------------------------------------------------


def test_rounds_alternate_the_order_of_the_systems():
    systems = ["replikv", "etcd", "redis-always"]
    assert system_order(systems, 1) == systems
    assert system_order(systems, 2) == ["redis-always", "etcd", "replikv"]
    assert system_order(systems, 3) == systems


def _round(replikv_set64: float, etcd_set64: float) -> list[dict]:
    systems = _systems()
    systems["replikv"]["workloads"]["set64"]["ops_per_s"] = replikv_set64
    systems["etcd"]["workloads"]["set64"]["ops_per_s"] = etcd_set64
    return compute_ratios(systems)


def test_the_targets_are_judged_by_the_median_of_the_rounds():
    # One fast round (4x) and one slow one (2x) around a 2.9x one: the median decides, MISS.
    rounds = [_round(12000, 3000), _round(5800, 2000), _round(6000, 3000)]
    combined = {r["label"]: r for r in combine_rounds(rounds)}
    put = combined["replikv set64 ops/s / etcd put ops/s"]
    assert put["per_round"] == [pytest.approx(4.0), pytest.approx(2.9), pytest.approx(2.0)]
    assert put["ratio"] == pytest.approx(2.9) and put["verdict"] == "MISS"
    assert put["numerator"] == 6000 and put["denominator"] == 3000  # each figure's own median
    # Unchanged targets keep their ratio and verdict.
    get = combined["replikv get64 ops/s / etcd range ops/s"]
    assert get["ratio"] == pytest.approx(4.0) and get["verdict"] == "PASS"
    text = format_ratios(list(combined.values()))
    assert "median of 3 rounds" in text
    row = next(line for line in text.splitlines() if "etcd put ops/s" in line and "p99" not in line)
    assert row.split()[-9:] == ["4.00", "2.90", "2.00", "6,000", "3,000", "2.90", ">=", "3",
                                "MISS"]


def test_a_round_where_a_side_did_not_run_is_left_out_of_the_median():
    missing = _systems()
    del missing["pysyncobj"]
    rounds = [compute_ratios(_systems()), compute_ratios(missing), compute_ratios(_systems())]
    combined = {r["label"]: r for r in combine_rounds(rounds)}
    pysyncobj = combined["replikv set64 ops/s / PySyncObj set64 ops/s"]
    assert pysyncobj["per_round"] == [pytest.approx(4.5), None, pytest.approx(4.5)]
    assert pysyncobj["ratio"] == pytest.approx(4.5) and pysyncobj["verdict"] == "MISS"
    never = combine_rounds([compute_ratios(missing)] * 2)
    assert {r["label"]: r["verdict"] for r in never}[
        "replikv set64 ops/s / PySyncObj set64 ops/s"] == "-"


def test_a_run_of_rounds_reports_each_round_and_the_medians(monkeypatch):
    from benchmarks import compare

    orders = []
    speeds = iter([9000, 6000, 7500])

    def fake_round(settings, root, order, log):
        orders.append(list(order))
        systems = _systems()
        systems["replikv"]["workloads"]["set64"]["ops_per_s"] = next(speeds)
        systems["etcd"]["error"] = "boom" if len(orders) == 2 else None
        if systems["etcd"]["error"] is None:
            del systems["etcd"]["error"]
        return systems, {"replikv": {"rps": 1.0, "p50_latency_ms": 1.0, "p99_latency_ms": 2.0}}

    monkeypatch.setattr(compare, "run_round", fake_round)
    monkeypatch.setattr(compare, "measure_fsync_ms", lambda root: 0.1)
    monkeypatch.setattr(compare, "measure_loopback_rtt_ms", lambda: 0.05)
    settings, _ = compare.parse_args(["--systems", "replikv,etcd", "--rounds", "3"])
    report = compare.run_compare(settings, lambda text: None, "bash benchmarks/compare.sh")
    assert orders == [["replikv", "etcd"], ["etcd", "replikv"], ["replikv", "etcd"]]
    assert len(report["rounds"]) == 3 and report["settings"]["rounds"] == 3
    put = {r["label"]: r for r in report["ratios"]}["replikv set64 ops/s / etcd put ops/s"]
    assert put["ratio"] == pytest.approx(2.5)  # median of 3.0, 2.0, 2.5
    text = compare.format_report(report)
    assert "round 2 of 3 (systems in this order: etcd, replikv; set1's floor 0.150 ms)" in text
    assert "replikv (round 3)" in text  # the redis-benchmark cross-check of every round
    json.dumps(report)  # the JSON report holds every round
    # The exit status sees a failure in any round, not only the first.
    monkeypatch.setattr(compare, "run_compare", lambda *a: report)
    assert compare.main(["--systems", "replikv,etcd", "--rounds", "3"]) == 1


def test_rounds_are_checked():
    from benchmarks.compare import parse_args

    assert parse_args([])[0].rounds == 1
    for bad in ("0", "10"):
        with pytest.raises(SystemExit):
            parse_args(["--rounds", bad])


def test_set1_is_judged_against_the_floor_measured_in_the_run():
    systems = _systems()
    systems["replikv"]["workloads"]["set1"] = _result(1200)  # p50 1.0 ms
    ratios = {r["label"]: r for r in compute_ratios(systems, floor_ms=0.5)}
    floor = ratios["replikv set1 p50 / floor (append+fsync + loopback round trip)"]
    assert (floor["numerator"], floor["denominator"]) == (1.0, 0.5)
    assert floor["ratio"] == pytest.approx(2.0) and floor["verdict"] == "MISS"  # > 1.5
    assert floor["target"] == "<= 1.5"
    assert {r["label"]: r for r in compute_ratios(systems, floor_ms=0.8)}[
        floor["label"]]["verdict"] == "PASS"  # 1.25x
    assert len(compute_ratios(systems)) == 5  # no floor measured: no such row
    text = format_ratios(list(ratios.values()))
    row = next(line for line in text.splitlines() if "floor" in line)
    assert row.split()[-8:] == ["1.000", "ms", "0.500", "ms", "2.00", "<=", "1.5", "MISS"]
    del systems["replikv"]["workloads"]["set1"]
    assert {r["label"]: r for r in compute_ratios(systems, floor_ms=0.5)}[
        floor["label"]]["verdict"] == "-"
