"""redis-cli (the real binary) as a user would run it against a 3-node cluster.

Covers one-shot commands through different nodes, --raw / --no-raw output, INFO and ROLE,
RESP3 mode (-3), an unknown command, --pipe mass insertion of raw RESP, and --bigkeys and
--memkeys (which scan the keyspace with SCAN, TYPE, STRLEN, SCARD and MEMORY USAGE).
Note: redis-cli 7.0 exits with status 0 even when the server answers with an error, so errors
are recognised by their output line.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .cluster import Cluster

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _redis_cli_installed() -> None:
    # Not a skip: scripts/install.sh --test installs it, and CI runs these.
    assert shutil.which(REDIS_CLI), "redis-cli is missing: run scripts/install.sh --test"


def cli(cluster: Cluster, node_id: str, *args: str, stdin: bytes | None = None,
        timeout_s: float = 30.0) -> str:
    proc = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(cluster.port(node_id)),
                           *args], input=stdin, capture_output=True, timeout=timeout_s,
                          check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout.decode()


def test_set_through_one_node_get_through_another(shared_cluster):
    assert cli(shared_cluster, "n1", "SET", "cli:a", "b") == "OK\n"
    assert cli(shared_cluster, "n2", "GET", "cli:a") == "b\n"
    assert cli(shared_cluster, "n3", "EXISTS", "cli:a") == "1\n"
    assert cli(shared_cluster, "n3", "--no-raw", "GET", "cli:missing") == "(nil)\n"


def test_raw_and_formatted_output_of_a_value_with_a_newline(shared_cluster):
    assert cli(shared_cluster, "n2", "SET", "cli:nl", "line1\nline2") == "OK\n"
    assert cli(shared_cluster, "n3", "--raw", "GET", "cli:nl") == "line1\nline2\n"
    assert cli(shared_cluster, "n3", "--no-raw", "GET", "cli:nl") == '"line1\\nline2"\n'
    assert cli(shared_cluster, "n1", "--no-raw", "INCRBY", "cli:n", "5") == "(integer) 5\n"
    assert cli(shared_cluster, "n1", "--no-raw", "APPEND", "cli:nl", "!") == "(integer) 12\n"


def test_info_replication_and_role(shared_cluster):
    leader = shared_cluster.leader()
    follower = next(i for i in shared_cluster.ids if i != leader)
    info = cli(shared_cluster, follower, "INFO", "replication")
    lines = dict(line.split(":", 1) for line in info.replace("\r", "").splitlines()
                 if ":" in line)
    assert info.startswith("# Replication")
    assert lines["role"] == "slave" and lines["raft_role"] == "follower"
    assert lines["leader_id"] == leader
    assert lines["master_port"] == str(shared_cluster.port(leader))
    assert lines["master_link_status"] == "up"

    role = cli(shared_cluster, leader, "ROLE").splitlines()
    assert role[0] == "master"
    follower_ports = sorted(str(shared_cluster.port(i)) for i in shared_cluster.ids
                            if i != leader)
    # master, offset, then host/port/offset for each follower.
    assert len(role) == 2 + 3 * 2, role
    assert sorted(role[3::3]) == follower_ports
    frole = cli(shared_cluster, follower, "--no-raw", "ROLE").splitlines()
    assert frole[0] == '1) "slave"'
    assert frole[1] == '2) "127.0.0.1"'
    assert frole[2] == f"3) (integer) {shared_cluster.port(leader)}"
    assert frole[3] == '4) "connected"'


def test_resp3_mode(shared_cluster):
    hello = cli(shared_cluster, "n3", "-3", "--no-raw", "HELLO", "3")
    assert '"server" => "replikv"' in hello
    assert '"proto" => (integer) 3' in hello
    assert cli(shared_cluster, "n3", "-3", "--no-raw", "GET", "cli:resp3-missing") == "(nil)\n"
    assert cli(shared_cluster, "n1", "-3", "SET", "cli:r3", "v") == "OK\n"
    assert cli(shared_cluster, "n2", "-3", "--no-raw", "MGET", "cli:r3", "cli:nope") == (
        '1) "v"\n2) (nil)\n')
    config = cli(shared_cluster, "n2", "-3", "--no-raw", "CONFIG", "GET", "databases")
    assert config == '1# "databases" => "1"\n'


def test_unknown_command_gives_an_error_line(shared_cluster):
    out = cli(shared_cluster, "n1", "--no-raw", "NOSUCHCMD", "x")
    assert out.startswith("(error) ERR unknown command 'NOSUCHCMD'"), out
    out = cli(shared_cluster, "n1", "--no-raw", "GET")
    assert out == "(error) ERR wrong number of arguments for 'get' command\n", out


def test_pipe_mass_insertion_of_10000_sets(shared_cluster):
    assert cli(shared_cluster, "n1", "FLUSHALL") == "OK\n"
    payload = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(k), k, len(v), v)
        for k, v in ((b"mass:%d" % i, b"value-%d" % i) for i in range(10_000)))
    out = cli(shared_cluster, "n2", "--pipe", stdin=payload, timeout_s=60)
    assert "errors: 0, replies: 10000" in out, out
    assert cli(shared_cluster, "n3", "DBSIZE") == "10000\n"
    assert cli(shared_cluster, "n1", "DBSIZE") == "10000\n"
    assert cli(shared_cluster, "n1", "GET", "mass:9999") == "value-9999\n"
    assert cli(shared_cluster, "n3", "GET", "mass:0") == "value-0\n"


def test_bigkeys_and_memkeys_scan_a_node_as_they_scan_redis(shared_cluster):
    # --bigkeys sends SCAN, TYPE and STRLEN / SCARD; --memkeys MEMORY USAGE key SAMPLES 0.
    # They run against a follower: every one of those is a read at its consistency.
    leader = shared_cluster.leader()
    follower = next(i for i in shared_cluster.ids if i != leader)
    assert cli(shared_cluster, leader, "FLUSHALL") == "OK\n"
    assert cli(shared_cluster, leader, "SET", "bk:str", "x" * 300) == "OK\n"
    assert cli(shared_cluster, leader, "SET", "bk:small", "1") == "OK\n"
    assert cli(shared_cluster, leader, "SADD", "bk:set", "a", "b", "c", "d", "e") == "5\n"
    assert cli(shared_cluster, leader, "SADD", "bk:s2", "a") == "1\n"

    big = cli(shared_cluster, follower, "--bigkeys")
    assert "Sampled 4 keys in the keyspace!" in big, big
    assert "Biggest string found '\"bk:str\"' has 300 bytes" in big, big
    assert "Biggest    set found '\"bk:set\"' has 5 members" in big, big
    assert "2 strings with 301 bytes" in big and "2 sets with 6 members" in big, big

    usage = {key: int(cli(shared_cluster, follower, "MEMORY", "USAGE", key))
             for key in ("bk:str", "bk:small", "bk:set", "bk:s2")}
    mem = cli(shared_cluster, follower, "--memkeys")
    assert "Sampled 4 keys in the keyspace!" in mem, mem
    assert f"Biggest string found '\"bk:str\"' has {usage['bk:str']} bytes" in mem, mem
    assert f"Biggest    set found '\"bk:set\"' has {usage['bk:set']} bytes" in mem, mem
    assert f"2 strings with {usage['bk:str'] + usage['bk:small']} bytes" in mem, mem
    assert cli(shared_cluster, follower, "--no-raw", "MEMORY", "USAGE", "bk:none") == "(nil)\n"
    assert cli(shared_cluster, follower, "OBJECT", "ENCODING", "bk:small") == "int\n"
    assert cli(shared_cluster, follower, "OBJECT", "ENCODING", "bk:set") == "listpack\n"
