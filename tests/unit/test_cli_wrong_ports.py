"""A client command pointed at the wrong kind of port (an admin HTTP port where a client port
belongs, or the reverse) says so, instead of a Python traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click
import pytest
from click.testing import CliRunner

from replikv import bench
from replikv.cli import _cluster_call, main
from replikv.status_view import query_status


@contextmanager
def answering(reply: bytes) -> Iterator[int]:
    """A server on a free loopback port that answers anything with `reply`, then closes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.recv(65536)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        server.close()


HTTP = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
RESP = b"-ERR wrong number of arguments for 'get' command\r\n"


def test_member_and_switchover_at_an_http_port() -> None:
    with answering(HTTP) as port, pytest.raises(click.ClickException,
                                                match="not a replikv client port"):
        _cluster_call(f"127.0.0.1:{port}", "REPLIKV", "TOPOLOGY", timeout_s=2.0)
    with pytest.raises(click.UsageError, match="HOST:PORT"):
        _cluster_call(" , ", "REPLIKV", "TOPOLOGY")
    with pytest.raises(click.UsageError, match="HOST:PORT"):
        _cluster_call("127.0.0.1:99999", "REPLIKV", "TOPOLOGY")


def test_status_at_a_client_port() -> None:
    with answering(RESP) as port:
        body, why = query_status(f"127.0.0.1:{port}", 2.0)
    assert body is None and why is not None and "not HTTP" in why


def test_bench_at_an_http_port_or_a_bad_address() -> None:
    with answering(HTTP) as port, pytest.raises(bench.BenchError,
                                                match="not a replikv client port"):
        bench.call(("127.0.0.1", port), "PING", timeout_s=2.0)
    with pytest.raises(bench.BenchError, match="HOST:PORT"):
        bench.parse_address("foo")


def test_cluster_up_checks_its_port_range() -> None:
    for base in ("65400", "0", "-5"):
        result = CliRunner().invoke(main, ["cluster", "up", "--base-port", base])
        assert result.exit_code == 2 and "1..65535" in result.output, result.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_a_closed_port_is_said_plainly_for_every_address() -> None:
    a, b = closed_port(), closed_port()
    result = CliRunner().invoke(main, ["member", "list", "--cluster",
                                       f"127.0.0.1:{a},127.0.0.1:{b}"])
    assert result.exit_code == 1
    assert (f"127.0.0.1:{a}: connection refused (nothing listens there: is the node running, "
            f"on that port?); 127.0.0.1:{b}: connection refused") in result.output
    assert "Error 111" not in result.output and "Traceback" not in result.output
    backup = CliRunner().invoke(main, ["backup", "create", "--from", f"127.0.0.1:{a}",
                                       "--to", "unused.rkvsnap"])
    assert backup.exit_code == 1
    assert f"no replikv node at 127.0.0.1:{a}: connection refused" in backup.output
    assert "Error 111" not in backup.output


def test_a_silent_port_is_a_timeout_said_plainly() -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = server.getsockname()[1]
        with pytest.raises(click.ClickException, match=r"no answer within 0\.5 s \(the node may "
                                                       r"be paused"):
            _cluster_call(f"127.0.0.1:{port}", "PING", timeout_s=0.5)
    finally:
        server.close()
