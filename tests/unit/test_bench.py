"""The pure parts of `replikv bench`: workload names, connection split, percentiles, /proc
parsing, CPU arithmetic and the table; and its load connection against a server in the test."""

from __future__ import annotations

import asyncio
import random
import time

import hiredis  # a test dependency (pyproject's test extra), not a skip
import pytest

from replikv.bench import (
    WORKLOADS,
    BenchError,
    Floor,
    LoadConnection,
    NodeCost,
    WorkerReport,
    WorkloadResult,
    command_maker,
    cpu_s_per_1k_ops,
    elections_between,
    encode_command,
    format_elections,
    format_floor,
    format_table,
    latency_summary_ms,
    parse_proc_stat_cpu_s,
    parse_vm_hwm_bytes,
    parse_workloads,
    percentile,
    resp_error_text,
    run_load_connection,
    split_clients,
)


def test_workloads_parse_in_the_order_given():
    assert [w.name for w in parse_workloads("get64, set1")] == ["get64", "set1"]
    setp16 = parse_workloads("setp16")[0]
    assert (setp16.kind, setp16.clients, setp16.pipeline) == ("set", 64, 16)
    assert set(WORKLOADS) == {"set1", "set64", "set256", "setp16", "get64", "mix90", "mset10"}


@pytest.mark.parametrize("text", ["", " , ", "set1,nope", "set1,set1"])
def test_bad_workload_lists_are_refused(text):
    with pytest.raises(ValueError):
        parse_workloads(text)


def test_clients_split_evenly_and_no_worker_is_idle():
    assert split_clients(64, 2) == [32, 32]
    assert split_clients(5, 2) == [3, 2]
    assert split_clients(1, 2) == [1]


def test_nearest_rank_percentiles():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99  # not 100: 0.99 * 100 is 99.00000000000001
    assert percentile(values, 0.999) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([], 0.5) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_latency_summary_is_in_milliseconds_whatever_the_input_order():
    latencies_ns = [i * 1_000_000 for i in range(1000, 0, -1)]  # 1..1000 ms, reversed
    assert latency_summary_ms(latencies_ns) == {"p50": 500.0, "p99": 990.0, "p999": 999.0}


def test_proc_stat_cpu_counts_fields_after_the_command_name():
    # A command name with spaces and a ')' must not shift the fields.
    stat = ("4242 (python (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
            "250 50 0 0 20 0 3 0 12345 0 0")
    assert parse_proc_stat_cpu_s(stat, clk_tck=100) == pytest.approx(3.0)


def test_vm_hwm_is_read_in_bytes():
    status = "Name:\tpython\nVmPeak:\t  99999 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n"
    assert parse_vm_hwm_bytes(status) == 51200 * 1024
    assert parse_vm_hwm_bytes("Name:\tx\n") is None


def test_cpu_per_thousand_operations():
    assert cpu_s_per_1k_ops(10.0, 12.5, 5000) == pytest.approx(0.5)
    assert cpu_s_per_1k_ops(1.0, 1.0, 0) is None
    with pytest.raises(ValueError):
        cpu_s_per_1k_ops(5.0, 4.0, 10)


def test_commands_are_valid_resp_with_keys_in_range():
    for kind, name in (("set", b"SET"), ("get", b"GET"), ("mset", b"MSET")):
        make = command_maker(kind, 10, b"v" * 5, random.Random(1))
        reader = hiredis.Reader()
        reader.feed(make())
        argv = reader.gets()
        assert argv[0] == name
        keys = argv[1::2] if kind == "mset" else argv[1:2]
        assert all(0 <= int(k.split(b":")[1]) < 10 for k in keys)
        if kind == "mset":
            assert len(argv) == 21 and set(argv[2::2]) == {b"vvvvv"}


def test_mix_is_mostly_reads():
    make = command_maker("mix", 100, b"v", random.Random(7))
    gets = sum(make().startswith(b"*2\r\n$3\r\nGET") for _ in range(2000))
    assert 1700 < gets < 1900


def _result(name: str, **kw) -> WorkloadResult:
    base = {"name": name, "clients": 64, "pipeline": 1, "client_processes": 1, "ops": 1000,
            "errors": 0, "duration_s": 1.0, "ops_per_s": 1234.5,
            "latency_ms": {"p50": 1.0, "p99": 2.5, "p999": 10.25},
            "nodes": {"n1": NodeCost(0.1234, 50 * 2**20, leader=True),
                      "n2": NodeCost(0.05, 40 * 2**20)},
            "client_cpu_s_per_1k_ops": 0.02}
    return WorkloadResult(**{**base, **kw})


def test_table_has_one_aligned_row_per_workload_and_marks_the_leader():
    table = format_table([_result("set64"), _result("setp16", pipeline=16, ops_per_s=20000.0)],
                         ["n1", "n2", "n3"])
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["workload", "clients", "ops/s"]
    assert rows[0].split()[:7] == ["set64", "64", "1,234", "1.00", "2.50", "10.25", "0"]
    assert "0.123*" in rows[0] and "64x16" in rows[1] and "20,000" in rows[1]
    assert rows[0].split()[-3:] == ["50", "40", "-"]  # n3: nothing known
    assert len({len(line) for line in table.splitlines()}) <= 2  # aligned columns


def test_elections_under_load_are_reported_and_none_is_said_plainly():
    quiet = [_result("set64", term_before=3, term_after=3, elections=0),
             _result("get64", term_before=3, term_after=3, elections=0)]
    assert format_elections(quiet).startswith("elections: none started")
    # An election that left the leader's term alone still counts; so does a changed term.
    noisy = [_result("set64", term_before=3, term_after=3, elections=1),
             _result("get64", term_before=3, term_after=4, elections=2)]
    text = format_elections(noisy)
    assert text.startswith("warning:") and "set64 1" in text and "get64 2" in text
    assert "term changed during get64" in text
    assert "not known for set64" in format_elections([_result("set64", elections=None)])
    assert elections_between(5, 7) == 2 and elections_between(None, 7) is None


def test_floor_line_compares_set1_with_fsync_plus_round_trip():
    floor = Floor(fsync_4k_append_ms_p50=0.3, loopback_rtt_ms_p50=0.1, fsync_dir="/tmp/x")
    text = format_floor(floor, _result("set1", latency_ms={"p50": 0.8, "p99": 1, "p999": 2}))
    assert "0.400 ms" in text and "2.00x the floor" in text
    assert "x the floor" not in format_floor(floor, None)


REDIS_BENCHMARK_CSV = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
    '"p99_latency_ms","max_latency_ms"\n'
    '"SET","9940.36","6.283","1.496","6.103","9.047","11.471","14.887"\n')


def test_redis_benchmark_csv_is_parsed_into_numbers():
    from replikv.bench import parse_redis_benchmark_csv

    (row,) = parse_redis_benchmark_csv(REDIS_BENCHMARK_CSV)
    assert row["test"] == "SET" and row["rps"] == 9940.36
    assert row["p50_latency_ms"] == 6.103 and row["p99_latency_ms"] == 11.471


def test_redis_benchmark_output_that_is_not_a_table_is_a_clear_error():
    from replikv.bench import BenchError, parse_redis_benchmark_csv

    with pytest.raises(BenchError, match="no CSV table"):
        parse_redis_benchmark_csv("Could not connect to Redis at 127.0.0.1:1: Connection refused")


# ---- the load connection ---------------------------------------------------------------------


async def _resp_server(replies_before_close: int | None = None):
    """A RESP server on loopback that answers every command byte by byte (so replies arrive in
    pieces): +OK, or an error for every fifth; it closes after `replies_before_close`."""
    answered = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(4096):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                answered[0] += 1
                if answered[0] == replies_before_close:
                    writer.close()
                    return
                reply = b"-ERR planted\r\n" if answered[0] % 5 == 0 else b"+OK\r\n"
                for i in range(len(reply)):
                    writer.write(reply[i:i + 1])
                    await writer.drain()
                assert command[0] in (b"SET", b"PING")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2], answered


def _load(pipeline: int, duration_s: float, replies_before_close: int | None = None):
    async def main():
        server, address, answered = await _resp_server(replies_before_close)
        report = WorkerReport()
        go, deadline, connected = asyncio.Event(), [0.0], [0]
        make = command_maker("set", 100, b"v" * 10, random.Random(1))
        task = asyncio.create_task(run_load_connection(
            address, LoadConnection(hiredis.Reader(), False, resp_error_text),
            [encode_command(b"PING")], make, pipeline, go, deadline, report, connected))
        try:
            while not connected[0]:
                await asyncio.sleep(0.01)
            deadline[0] = time.monotonic() + duration_s
            go.set()
            await asyncio.wait_for(task, 10)
        finally:
            server.close()
        return report, answered[0]
    return asyncio.run(main())


def test_the_load_connection_counts_every_reply_pieced_together_and_each_error():
    report, answered = _load(pipeline=4, duration_s=0.3)
    # The set-up PING was the first command answered; the load sent whole batches of 4.
    assert report.ops + report.errors == answered - 1 and (answered - 1) % 4 == 0
    assert report.errors == answered // 5 and report.first_error == "ERR planted"
    assert len(report.latencies_ns) == report.ops > 0
    assert all(ns > 0 for ns in report.latencies_ns)


def test_the_load_connection_stops_sending_at_the_deadline():
    started = time.monotonic()
    report, _ = _load(pipeline=1, duration_s=0.2)
    assert report.ops > 10 and time.monotonic() - started < 5


def test_a_server_that_closes_mid_load_ends_the_run_with_a_clear_error():
    with pytest.raises(BenchError, match="closed a client connection"):
        _load(pipeline=2, duration_s=5, replies_before_close=7)


def test_a_missing_redis_benchmark_is_said_before_any_workload_runs(monkeypatch):
    """--redis-benchmark without redis-benchmark installed: refused at once, not after every
    workload has run (whose results were then never printed)."""
    import replikv.bench as bench_module

    monkeypatch.setattr(bench_module.shutil, "which", lambda _name: None)
    started = []
    monkeypatch.setattr(bench_module, "local_cluster", lambda *a, **k: started.append(1))
    settings = bench_module.BenchSettings(
        workloads=bench_module.parse_workloads("set1"), duration_s=1.0, keys=10, value_bytes=1,
        w="majority", read_consistency="linearizable", fsync="always", replication="passive",
        client_processes=1, redis_benchmark_requests=10)
    with pytest.raises(bench_module.BenchError, match="redis-benchmark is not installed"):
        bench_module.run_bench(settings, None, progress=None, log=lambda _text: None)
    assert started == []
