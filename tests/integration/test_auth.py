"""A cluster with a password (`--requirepass-file`), as a user meets it: redis-cli, redis-py,
replikv's own commands and smart client, the admin API, and a member started with the wrong
password, which the others keep out (and which catches up once it has the right one)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

import replikv

from .cluster import HOST, Cluster, wait_until

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse battery"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def password_file(root: Path, text: str = PASSWORD) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"secret-{abs(hash(text))}.txt"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secured(make_cluster, tmp_path: Path) -> Cluster:
    secret = password_file(tmp_path / "secrets")
    return make_cluster(3, extra_args=["--requirepass-file", str(secret)])


def client(cluster: Cluster, node_id: str, **kwargs: object) -> redis.Redis:
    return cluster.client(node_id, **kwargs)  # type: ignore[arg-type]


def env(password: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("REPLIKV_PASSWORD", "REDISCLI_AUTH")}
    if password is not None:
        out["REPLIKV_PASSWORD"] = out["REDISCLI_AUTH"] = password
    return out


def run(argv: list[str], cwd: Path, password: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env(password), check=False)


def replikv_cli(cluster: Cluster, password: str | None, *args: str) -> subprocess.CompletedProcess:
    argv = [str(Path(os.sys.executable)), "-m", "replikv", *args]
    if args[0] == "member":
        argv += ["--cluster", ",".join(f"{HOST}:{cluster.port(i)}" for i in cluster.alive_ids())]
    return run(argv, cluster.root, password)


def post(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST",
                                                           headers=headers or {}), timeout=10):
            return 200
    except urllib.error.HTTPError as e:
        return e.code


def test_clients_need_the_password_and_get_everything_with_it(secured: Cluster) -> None:
    leader = secured.leader()  # /status needs no password: the members agreed on a leader
    follower = next(i for i in secured.ids if i != leader)

    # redis-py without the password: NOAUTH, and nothing is written.
    with pytest.raises(redis.AuthenticationError, match="authenticated"):  # NOAUTH
        client(secured, follower).set("k", "no")
    with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
        client(secured, follower, password="wrong").ping()

    # With it, on both protocols, through a follower (forwarded) and the leader.
    for protocol in (2, 3):
        c = client(secured, follower, password=PASSWORD, protocol=protocol)
        assert c.set(f"k{protocol}", "v") is True
        assert client(secured, leader, password=PASSWORD, protocol=protocol).get(
            f"k{protocol}") == b"v"
    assert client(secured, leader, password=PASSWORD).get("k") is None

    # redis-cli: REDISCLI_AUTH (or -a) gives the password.
    denied = run([REDIS_CLI, "-h", HOST, "-p", str(secured.port(follower)), "GET", "k2"],
                 secured.root, None)
    assert "NOAUTH" in denied.stdout + denied.stderr
    allowed = run([REDIS_CLI, "-h", HOST, "-p", str(secured.port(follower)), "GET", "k2"],
                  secured.root, PASSWORD)
    assert allowed.stdout == "v\n", allowed

    # The refusals are counted (INFO stats, /metrics).
    stats = client(secured, follower, password=PASSWORD).info("stats")
    assert stats["acl_access_denied_auth"] >= 1
    with urllib.request.urlopen(f"http://{HOST}:{secured.nodes[follower].admin_port}/metrics",
                                timeout=10) as response:
        assert b"replikv_auth_failures_total 1" in response.read()

    # The smart client: with the password it works; without, it says so at once instead of
    # retrying against every member until its deadline.
    seeds = ",".join(f"{HOST}:{secured.port(i)}" for i in secured.ids)
    with replikv.Client(seeds, password=PASSWORD) as smart:
        assert smart.set("smart", "yes") is True
        assert smart.get("smart") == b"yes"
    started = time.monotonic()
    with replikv.Client(seeds, retry_deadline_s=60) as smart, \
            pytest.raises(redis.AuthenticationError):
        smart.get("smart")
    assert time.monotonic() - started < 30, "the client retried an authentication error"


def test_replikv_commands_and_the_admin_api_take_the_password(secured: Cluster) -> None:
    leader = secured.leader()
    admin = f"http://{HOST}:{secured.nodes[leader].admin_port}"

    # replikv member list: a clear error without REPLIKV_PASSWORD, the list with it.
    denied = replikv_cli(secured, None, "member", "list")
    assert denied.returncode != 0 and "REPLIKV_PASSWORD" in denied.stderr, denied
    listed = replikv_cli(secured, PASSWORD, "member", "list")
    assert listed.returncode == 0 and leader in listed.stdout, listed

    # The admin API: POSTs and backups need it (HTTP Basic, user default); health does not.
    assert post(f"{admin}/switchover") == 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{admin}/backup", timeout=10)
    assert refused.value.code == 401
    with urllib.request.urlopen(f"{admin}/health", timeout=10) as response:
        assert response.status == 200
    backup = secured.root / "b.rkvsnap"
    made = replikv_cli(secured, PASSWORD, "backup", "create", "--from",
                       f"{HOST}:{secured.port(leader)}", "--to", str(backup))
    assert made.returncode == 0 and backup.stat().st_size > 0, made
    no_backup = replikv_cli(secured, None, "backup", "create", "--from",
                            f"{HOST}:{secured.port(leader)}", "--to",
                            str(secured.root / "c.rkvsnap"))
    assert no_backup.returncode != 0 and "REPLIKV_PASSWORD" in no_backup.stderr, no_backup


def test_a_member_with_the_wrong_password_is_kept_out_until_it_has_the_right_one(
        secured: Cluster, tmp_path: Path) -> None:
    leader = secured.leader()
    outsider = next(i for i in secured.ids if i != leader)
    others = [i for i in secured.ids if i != outsider]
    secured.kill9(outsider)
    right_args = list(secured.nodes[outsider].extra_args)
    wrong = password_file(tmp_path / "secrets", "not the password")
    secured.nodes[outsider].extra_args = ["--requirepass-file", str(wrong)]
    secured.start(outsider)

    # The two others go on as a majority; the outsider gets none of it.
    c = client(secured, leader, password=PASSWORD)
    for i in range(20):
        assert c.set(f"after:{i}", i) is True
    commit = secured.status(leader)["commit_index"]

    def refused_in_logs() -> bool:
        return any("did not prove that it knows this cluster's password" in
                   secured.log_text(i) for i in others)

    wait_until(refused_in_logs, timeout_s=10, what="the members to refuse the outsider's links")
    time.sleep(1.0)  # several heartbeats and retries: none may get through
    assert secured.status(outsider)["applied_index"] < commit
    assert secured.status(leader)["role"] == "leader"
    with pytest.raises(redis.AuthenticationError):
        client(secured, outsider, password=PASSWORD).ping()  # its own password is another

    # With the right password again it catches up.
    secured.kill9(outsider)
    secured.nodes[outsider].extra_args = right_args
    secured.start(outsider)
    wait_until(lambda: secured.status(outsider)["applied_index"] >= commit, timeout_s=20,
               what=f"{outsider} to catch up")
    assert client(secured, outsider, password=PASSWORD).get("after:19") == b"19"


def test_replikv_bench_and_redis_benchmark_authenticate_with_replikv_password(
        secured: Cluster) -> None:
    secured.leader()
    addresses = ",".join(f"{HOST}:{secured.port(i)}" for i in secured.ids)
    argv = [str(Path(os.sys.executable)), "-m", "replikv", "bench", "--cluster", addresses,
            "--duration-s", "1", "--workloads", "set1", "--keys", "100",
            "--redis-benchmark", "500", "--json"]
    done = run(argv, secured.root, PASSWORD)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["workloads"][0]["ops"] > 0 and report["workloads"][0]["errors"] == 0
    runs = report["redis_benchmark"]
    assert runs and all(r["rps"] > 0 for r in runs)
    assert all(PASSWORD not in r["command"] for r in runs)  # never printed or recorded
    denied = run(argv, secured.root, None)
    assert denied.returncode != 0 and "REPLIKV_PASSWORD" in denied.stderr, denied.stderr[-2000:]


def test_a_new_password_is_rolled_out_with_sighup_and_no_restart(make_cluster,
                                                                  tmp_path: Path) -> None:
    secret = password_file(tmp_path / "secrets", "old password")
    cluster = make_cluster(3, extra_args=["--requirepass-file", str(secret)])
    leader = cluster.leader()

    def reload_all(expected: str) -> None:
        for node_id in cluster.ids:
            os.kill(cluster.nodes[node_id].pid, signal.SIGHUP)
        for node_id in cluster.ids:
            wait_until(lambda n=node_id: expected in cluster.log_text(n), timeout_s=10,
                       what=f"{node_id} to reload")

    # 1. Every node accepts the new password as well, and gives peers the new one.
    secret.write_text("new password\nold password\n")
    reload_all("reload (SIGHUP): 2 password(s)")
    for password in ("new password", "old password"):
        assert client(cluster, leader, password=password).set(f"with {password}", 1) is True
    # A member that links up again gives the new one, which the others accept.
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill9(follower)
    cluster.start(follower)
    commit = cluster.status(leader)["commit_index"]
    wait_until(lambda: cluster.status(follower)["applied_index"] >= commit, timeout_s=20,
               what=f"{follower} to catch up")

    # 2. The old one is dropped: refused to clients; members keep linking with the new one.
    secret.write_text("new password\n")
    reload_all("reload (SIGHUP): 1 password(s)")
    with pytest.raises(redis.AuthenticationError):
        client(cluster, leader, password="old password").ping()
    c = client(cluster, cluster.leader(), password="new password")
    assert c.set("after", "x") is True
    other = next(i for i in cluster.ids if i not in (cluster.leader(), follower))
    cluster.kill9(other)
    cluster.start(other)
    commit = cluster.status(cluster.leader())["commit_index"]
    wait_until(lambda: cluster.status(other)["applied_index"] >= commit, timeout_s=20,
               what=f"{other} to catch up")

    # A file that cannot be used changes nothing, and says so.
    secret.write_text("\n")
    os.kill(cluster.nodes[other].pid, signal.SIGHUP)
    wait_until(lambda: "keeping the passwords the node had" in cluster.log_text(other),
               timeout_s=10, what=f"{other} to refuse the empty file")
    assert client(cluster, other, password="new password").ping() is True
