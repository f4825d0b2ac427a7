"""A cluster speaking TLS on every port, as a user meets it: redis-cli --tls, redis-py and the
smart client with the CA, replikv's own commands with REPLIKV_TLS_CA_CERT, `cluster up --tls`,
client certificates (tls_auth_clients), and a member whose certificate another CA signed,
which the others keep out (and which catches up once it has one the cluster's CA signed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import redis

import replikv
from replikv.tls import client_context, make_local_ca

from .cluster import (
    HOST,
    PYTHON,
    free_base_port,
    start_tls_cluster,
    stop_cluster_up,
    tls_args,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def env_with(**variables: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("REPLIKV_TLS")}
    out.update({k: v for k, v in variables.items() if v is not None})
    return out


def replikv_cmd(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "replikv", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env, check=False)


def test_every_port_speaks_tls_and_every_client_reaches_it_with_the_ca(make_cluster,
                                                                          tmp_path: Path) -> None:
    cluster, files = start_tls_cluster(make_cluster, tmp_path)
    ca = str(files["n1"].ca_cert_file)
    leader = cluster.leader()  # over https: the members linked up over mutual TLS
    follower = next(i for i in cluster.ids if i != leader)

    # Plain TCP is refused on the client port; TLS with the CA works, through a follower.
    with pytest.raises(redis.ConnectionError):
        cluster.client(follower, socket_timeout=3).ping()
    secure = cluster.client(follower, ssl=True, ssl_ca_certs=ca, ssl_check_hostname=False)
    assert secure.set("k", "v") is True
    assert cluster.client(leader, ssl=True, ssl_ca_certs=ca).get("k") == b"v"
    with pytest.raises(redis.ConnectionError):  # a certificate the client cannot verify
        cluster.client(leader, ssl=True, ssl_ca_certs=None, ssl_cert_reqs="required").ping()

    # redis-cli --tls --cacert.
    done = subprocess.run([REDIS_CLI, "-h", HOST, "-p", str(cluster.port(follower)), "--tls",
                           "--cacert", ca, "GET", "k"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.stdout == "v\n", done

    # The smart client.
    seeds = ",".join(f"{HOST}:{cluster.port(i)}" for i in cluster.ids)
    with replikv.Client(seeds, ssl=True, ssl_ca_certs=ca) as smart:
        assert smart.incr("n") == 1
        assert smart.get("k") == b"v"

    # replikv's commands with REPLIKV_TLS_CA_CERT: member list, status, backup, bench.
    env = env_with(REPLIKV_TLS_CA_CERT=ca)
    addresses = ",".join(f"{HOST}:{cluster.port(i)}" for i in cluster.ids)
    listed = replikv_cmd(cluster.root, env, "member", "list", "--cluster", addresses)
    assert listed.returncode == 0 and leader in listed.stdout, listed
    admins = ",".join(f"{HOST}:{n.admin_port}" for n in cluster.nodes.values())
    status = replikv_cmd(cluster.root, env, "status", "--nodes", admins, "--json")
    assert status.returncode == 0, status
    assert sorted(a["status"]["id"] for a in json.loads(status.stdout)) == cluster.ids
    plain = replikv_cmd(cluster.root, env_with(), "status", "--nodes", admins)
    assert "REPLIKV_TLS_CA_CERT" in plain.stdout + plain.stderr, plain
    backup = cluster.root / "b.rkvsnap"
    made = replikv_cmd(cluster.root, env, "backup", "create", "--from",
                       f"{HOST}:{cluster.port(leader)}", "--to", str(backup))
    assert made.returncode == 0 and backup.stat().st_size > 0, made
    bench = replikv_cmd(cluster.root, env, "bench", "--cluster", addresses, "--duration-s", "1",
                        "--workloads", "set1", "--keys", "100", "--redis-benchmark", "500",
                        "--json")
    assert bench.returncode == 0, bench.stderr[-3000:]
    report = json.loads(bench.stdout)
    assert report["workloads"][0]["ops"] > 0 and report["workloads"][0]["errors"] == 0
    assert all(r["rps"] > 0 for r in report["redis_benchmark"])


def test_a_member_whose_certificate_another_ca_signed_is_kept_out(make_cluster,
                                                                    tmp_path: Path) -> None:
    cluster, files = start_tls_cluster(make_cluster, tmp_path)
    ca = str(files["n1"].ca_cert_file)
    leader = cluster.leader()
    outsider = next(i for i in cluster.ids if i != leader)
    others = [i for i in cluster.ids if i != outsider]
    foreign = make_local_ca(tmp_path / "foreign", [outsider])[outsider]
    cluster.kill9(outsider)
    cluster.nodes[outsider].extra_args = tls_args(foreign)
    cluster.start(outsider)

    c = cluster.client(leader, ssl=True, ssl_ca_certs=ca)
    for i in range(20):
        assert c.set(f"after:{i}", i) is True
    commit = cluster.status(leader)["commit_index"]
    wait_until(lambda: "TLS handshake with peer" in cluster.log_text(outsider), timeout_s=10,
               what=f"{outsider} to say its TLS handshakes fail")
    time.sleep(1.0)  # heartbeats and reconnections: none may get through either way
    outsider_status = client_context(foreign.ca_cert_file)
    cluster.admin_tls, saved = outsider_status, cluster.admin_tls
    assert cluster.status(outsider)["applied_index"] < commit
    cluster.admin_tls = saved
    assert cluster.status(leader)["role"] == "leader"
    assert all(cluster.status(i)["leader"] == leader for i in others)

    cluster.kill9(outsider)
    cluster.nodes[outsider].extra_args = tls_args(files[outsider])
    cluster.start(outsider)
    wait_until(lambda: cluster.status(outsider)["applied_index"] >= commit, timeout_s=20,
               what=f"{outsider} to catch up")
    assert cluster.client(outsider, ssl=True, ssl_ca_certs=ca).get("after:19") == b"19"


def test_with_tls_auth_clients_a_client_needs_a_certificate_the_ca_signed(
        make_cluster, tmp_path: Path) -> None:
    client_files = make_local_ca(tmp_path / "tls", ["app"])["app"]  # the cluster's CA signs it
    cluster, files = start_tls_cluster(make_cluster, tmp_path, size=1,
                                       extra=("--tls-auth-clients",), client_cert=client_files)
    ca = str(files["n1"].ca_cert_file)
    with pytest.raises(redis.ConnectionError):
        cluster.client("n1", ssl=True, ssl_ca_certs=ca).ping()
    c = cluster.client("n1", ssl=True, ssl_ca_certs=ca, ssl_certfile=str(client_files.cert_file),
                       ssl_keyfile=str(client_files.key_file))
    assert c.set("k", "v") is True
    env = env_with(REPLIKV_TLS_CA_CERT=ca, REPLIKV_TLS_CERT=str(client_files.cert_file),
                   REPLIKV_TLS_KEY=str(client_files.key_file))
    listed = replikv_cmd(cluster.root, env, "member", "list", "--cluster",
                         f"{HOST}:{cluster.port('n1')}")
    assert listed.returncode == 0 and "n1" in listed.stdout, listed


def test_cluster_up_tls_makes_the_certificates_and_says_how_to_connect(tmp_path: Path) -> None:
    base = free_base_port(3)
    data_dir = tmp_path / "data"
    log_path = tmp_path / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen([PYTHON, "-m", "replikv", "cluster", "up", "--tls", "--base-port",
                               str(base), "--data-dir", str(data_dir)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                              start_new_session=True)
    pids: list[int] = []
    ca = data_dir / "tls" / "ca.pem"
    try:
        wait_until(lambda: up.poll() is not None or "try: redis-cli" in log_path.read_text(),
                   timeout_s=60, what="cluster up's banner")
        text = log_path.read_text()
        assert up.poll() is None, text
        assert f"export REPLIKV_TLS_CA_CERT={ca}" in text
        assert f"redis-cli -p {base} --tls --cacert {ca} SET greeting hello" in text
        assert (data_dir / "tls" / "n1-key.pem").stat().st_mode & 0o077 == 0
        pids = [n["pid"] for n in json.loads((data_dir / "cluster.json").read_text())
                ["nodes"].values()]

        def answered() -> bool:
            done = subprocess.run([REDIS_CLI, "-p", str(base + 1), "--tls", "--cacert", str(ca),
                                   "SET", "greeting", "hello"], capture_output=True, text=True,
                                  timeout=30, check=False)
            return done.stdout == "OK\n"

        wait_until(answered, timeout_s=30, what="a SET over TLS")
        # The playground commands find the CA in cluster.json.
        slowed = replikv_cmd(tmp_path, env_with(), "cluster", "slow", "n2", "--delay-ms", "1",
                             "--data-dir", str(data_dir))
        assert slowed.returncode == 0, slowed
    finally:
        stop_cluster_up(up, pids)
    assert up.returncode is not None and "cluster stopped" in log_path.read_text()


def test_sighup_takes_a_renewed_certificate_for_new_connections(make_cluster,
                                                                 tmp_path: Path) -> None:
    cluster, files = start_tls_cluster(make_cluster, tmp_path, size=1)
    ca = files["n1"].ca_cert_file
    cluster.leader()

    def served_certificate() -> bytes:
        with socket.create_connection((HOST, cluster.port("n1")), timeout=5) as raw, \
                client_context(ca).wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    before = served_certificate()
    # Renew: a new key and certificate from the same CA, written over the node's files.
    renewed = make_local_ca(tmp_path / "tls", ["renewed"])["renewed"]
    shutil.copy(renewed.cert_file, files["n1"].cert_file)
    shutil.copy(renewed.key_file, files["n1"].key_file)
    os.kill(cluster.nodes["n1"].pid, signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP): the TLS certificate" in cluster.log_text("n1"),
               timeout_s=10, what="n1 to reload its certificate")
    after = served_certificate()
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(renewed.cert_file.read_text())
    assert cluster.client("n1", ssl=True, ssl_ca_certs=str(ca)).set("k", "v") is True
