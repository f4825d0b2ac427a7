"""The dashboard (GET / on the admin port) in a real headless Chromium (Debian's chromium): it
shows the leader; after the leader is killed (kill -9) a page opened on a survivor shows the new
leader, the old one down, and the failover in the timeline. A screenshot is saved as an artifact
(in the test's tmp dir, and in $REPLIKV_TEST_ARTIFACTS if set).

Chromium is a real dependency here: without it the test fails (scripts/install.sh --test
installs it), because CI must not pass by skipping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .cluster import HOST, Cluster, start_tls_cluster, wait_until

pytestmark = pytest.mark.timeout(180)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed; run scripts/install.sh --test (it installs "
                    "Debian's chromium)")
    return exe


def browse(url: str, profile: Path, *extra: str, budget_ms: int = 6000) -> str:
    """Open `url` in a fresh headless Chromium, let its scripts run for `budget_ms` of virtual
    time, and return what it printed (the DOM with --dump-dom)."""
    done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           f"--virtual-time-budget={budget_ms}", *extra, url],
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dashboard(cluster: Cluster, node_id: str, tmp_path: Path, tag: str) -> str:
    url = f"http://{HOST}:{cluster.nodes[node_id].admin_port}/"
    dom = browse(url, tmp_path / f"profile-{tag}", "--dump-dom")
    assert 'data-ready="1"' in dom, dom[:3000]
    return dom


def member_role(dom: str, node_id: str) -> str | None:
    m = re.search(rf'data-node="{node_id}" data-role="([^"]+)"', dom)
    return m.group(1) if m else None


def test_the_dashboard_shows_the_leader_and_records_a_failover(make_cluster,
                                                                tmp_path: Path) -> None:
    cluster = make_cluster(3)
    old = cluster.leader()
    client = cluster.client(old)
    for i in range(20):
        client.set(f"dash:{i}", "v")
    wait_until(lambda: all(cluster.status(i)["keys"] == 20 for i in cluster.ids), timeout_s=10,
               what="every member to apply the 20 writes")

    dom = dashboard(cluster, old, tmp_path, "before")
    assert member_role(dom, old) == "leader"
    assert f"{old} ★" in dom
    assert f"leader {old}, term" in dom
    assert dom.count("20 keys · ") == 3  # every member's card: its keys and their memory
    for other in cluster.ids:
        if other != old:
            assert member_role(dom, other) == "follower"

    cluster.kill9(old)
    survivors = [i for i in cluster.ids if i != old]
    new = cluster.leader(among=survivors)
    def shows_new_leader() -> str | None:
        d = dashboard(cluster, survivors[0], tmp_path, "after")
        return d if member_role(d, new) == "leader" else None

    dom = wait_until(shows_new_leader, timeout_s=60.0, what="the dashboard showing the new leader")
    assert member_role(dom, old) == "down"  # unreachable, known by name from /members
    assert f"leader {new}, term" in dom
    timeline = re.findall(r'<li data-kind="([^"]+)">(.*?)</li>', dom)
    failovers = [text for kind, text in timeline if kind == "failover"]
    assert any(f"{old} → {new}" in text for text in failovers), timeline
    assert any(kind == "leader" and f"{new} became leader" in text for kind, text in timeline)

    shot = tmp_path / "dashboard-after-failover.png"
    browse(f"http://{HOST}:{cluster.nodes[survivors[0]].admin_port}/", tmp_path / "profile-shot",
           f"--screenshot={shot}", "--window-size=1200,860")
    assert shot.exists() and shot.stat().st_size > 10_000
    artifacts = os.environ.get("REPLIKV_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)


def test_the_dashboard_of_tls_nodes_reads_every_member_over_https(make_cluster,
                                                                   tmp_path: Path) -> None:
    """Served over HTTPS, the page asks the other members over HTTPS too (a browser blocks
    plain-HTTP requests from an HTTPS page). Chromium is told to accept the local CA's
    certificates, as a user's browser would once it trusts that CA."""
    cluster, _files = start_tls_cluster(make_cluster, tmp_path)
    leader = cluster.leader()
    follower = next(i for i in cluster.ids if i != leader)
    url = f"https://{HOST}:{cluster.nodes[follower].admin_port}/"
    dom = browse(url, tmp_path / "profile-tls", "--dump-dom", "--ignore-certificate-errors")
    assert 'data-ready="1"' in dom, dom[:3000]
    assert member_role(dom, leader) == "leader"
    roles = {i: member_role(dom, i) for i in cluster.ids}
    assert roles == {i: "leader" if i == leader else "follower" for i in cluster.ids}, roles
