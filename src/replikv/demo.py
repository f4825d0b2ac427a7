"""`replikv demo`: the seeds' scenarios on a real local cluster, one after another, each
measured in this run: how long writes were unavailable, and what happened to every write a
client was told had succeeded (survived, rolled back and saved in a rollback file, or lost).

It starts `replikv cluster up` in a temp dir on free ports (three nodes, fault injection on),
runs one writer (SET demo:<scenario>:<n> through whichever node leads, no client retries, so a
refused write is counted as refused and never silently resent) during each scenario, and
breaks the cluster with the playground (replikv.playground):

  kill the primary      kill -9 of the leader; it is restarted afterwards
  partition the primary the leader alone on one side; healed afterwards
  w=1 vs w=majority     writes at w=1 sent to an isolated leader are acknowledged and then
                        rolled back when it rejoins (saved in its rollback file); writes at
                        w=majority to it are never acknowledged
  pause a follower      SIGSTOP of a follower: the majority keeps writing without a pause
  backup                an online backup from a follower, verified, while the writer runs

After each scenario every acknowledged write is read back from the leader (linearizable) and
from the rollback files. The report is printed at the end (and returned as a dict for tests).
Everything started is stopped in a `finally`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from replikv.local_cluster import stop_process_groups
from replikv.playground import blocked_by_node, post_faults, request_restart, signal_node

NODES = ("n1", "n2", "n3")
WRITE_TIMEOUT_S = 1.0
STATUS_TIMEOUT_S = 0.5


class DemoError(RuntimeError):
    pass


@dataclass
class Scenario:
    name: str
    what: str
    acknowledged: dict[bytes, bytes] = field(default_factory=dict)  # key -> value
    refused: int = 0
    longest_gap_ms: float = 0.0
    survived: int = 0
    rolled_back: int = 0  # acknowledged, gone from the data, in a rollback file
    lost: int = 0  # acknowledged, gone from the data, in no rollback file
    notes: list[str] = field(default_factory=list)


class Writer(threading.Thread):
    """SETs through the current leader until stopped; remembers each acknowledged write and
    the longest time between two acknowledgements."""

    def __init__(self, demo: Demo, scenario: Scenario, *, w: str = "majority",
                 target: Callable[[], int | None] | None = None) -> None:
        super().__init__(daemon=True)
        self.demo, self.scenario, self.w = demo, scenario, w
        self.target = target or demo.leader_port
        self.stopping = threading.Event()

    def run(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        n, last_ack = 0, time.monotonic()
        client, port = None, None
        while not self.stopping.is_set():
            want = port if port is not None else self.target()  # look again after a refusal
            if want is None:
                time.sleep(0.02)
                continue
            if want != port or client is None:
                if client is not None:
                    client.close()
                # No retries inside redis-py: a resent write could have been applied once
                # already, and a refusal must stay a refusal.
                client, port = redis.Redis(port=want, socket_timeout=WRITE_TIMEOUT_S,
                                           socket_connect_timeout=WRITE_TIMEOUT_S,
                                           retry=Retry(NoBackoff(), 0)), want
            n += 1
            key = f"demo:{self.scenario.name}:{n}".encode()
            try:
                ok = client.execute_command("REPLIKV", "WITH", "W", self.w, "SET", key, str(n))
            except Exception:  # noqa: BLE001 - refused, timed out, connection gone: not acked
                self.scenario.refused += 1
                port = None  # look for the leader again
                time.sleep(0.02)
                continue
            if ok in (b"OK", "OK", True):
                now = time.monotonic()
                self.scenario.longest_gap_ms = max(self.scenario.longest_gap_ms,
                                                   (now - last_ack) * 1000)
                last_ack = now
                self.scenario.acknowledged[key] = str(n).encode()
            time.sleep(0.005)
        if client is not None:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10.0)


class Demo:
    def __init__(self, root: Path, *, quick: bool, say: Callable[[str], None]) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.quick = quick
        self.say = say
        self.up: subprocess.Popen | None = None
        self.base = 0
        self.scenarios: list[Scenario] = []

    # -- the cluster --------------------------------------------------------------------------

    def start(self) -> None:
        from replikv.local_cluster import free_ports

        for base in free_ports(40):
            if base + 202 < 32000 and self._ports_free(base):
                self.base = base
                break
        else:
            raise DemoError("no free block of ports for a local cluster")
        log = open(self.root / "cluster-up.log", "w")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.up = subprocess.Popen(
            [sys.executable, "-m", "replikv", "cluster", "up", "--base-port", str(self.base),
             "--data-dir", str(self.data_dir)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.say(f"started a 3-node cluster (client ports {self.base}-{self.base + 2}, "
                 f"dashboard http://127.0.0.1:{self.base + 200}/)")
        self.wait(lambda: self.leader() is not None, 30.0, "a leader")

    @staticmethod
    def _ports_free(base: int) -> bool:
        import socket

        for port in [base + d for d in (0, 1, 2, 100, 101, 102, 200, 201, 202)]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
        return True

    def stop(self) -> None:
        if self.up is not None:
            if self.up.poll() is None:
                self.up.send_signal(signal.SIGTERM)
                try:
                    self.up.wait(30.0)
                except subprocess.TimeoutExpired:
                    stop_process_groups([self.up], grace_s=1.0)
            self._log.close()

    def status(self, node_id: str) -> dict | None:
        port = self.base + 200 + NODES.index(node_id)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status",
                                        timeout=STATUS_TIMEOUT_S) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def leader(self, among: tuple[str, ...] = NODES) -> str | None:
        for node_id in among:
            s = self.status(node_id)
            # A leader cut off from the others keeps its role until CheckQuorum; its lease
            # has run out by then, so it is not taken for the leader.
            if s is not None and s["role"] == "leader" and s["lease_remaining_ms"] > 0:
                return node_id
        return None

    def leader_port(self) -> int | None:
        leader = self.leader()
        return None if leader is None else self.base + NODES.index(leader)

    def wait(self, condition: Callable[[], object], timeout_s: float, what: str) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise DemoError(f"no {what} within {timeout_s:.0f} s (see {self.root}/cluster-up.log)")

    # -- checking what survived ------------------------------------------------------------------

    def check(self, scenario: Scenario) -> None:
        import redis

        from replikv.storage.rollback import list_rollback_files, read_rollback_file

        leader = self.wait(self.leader, 30.0, "leader to read back from")
        client = redis.Redis(port=self.base + NODES.index(leader), socket_timeout=5.0)
        saved: set[bytes] = set()
        for node_id in NODES:
            for info in list_rollback_files(self.data_dir / node_id):
                for r in read_rollback_file(info.path).records:
                    saved.add(r.data)
        keys = list(scenario.acknowledged)
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            values = client.mget(chunk)
            for key, value in zip(chunk, values, strict=True):
                if value == scenario.acknowledged[key]:
                    scenario.survived += 1
                elif any(key in data for data in saved):
                    scenario.rolled_back += 1
                else:
                    scenario.lost += 1
        client.close()

    # -- the scenarios -----------------------------------------------------------------------------

    def run_scenario(self, name: str, what: str, act: Callable[[Scenario], None]) -> Scenario:
        scenario = Scenario(name, what)
        self.say(f"- {what}")
        w = Writer(self, scenario)
        w.start()
        try:
            time.sleep(self.settle_s)
            act(scenario)
            time.sleep(self.settle_s)
        finally:
            w.stop()
        self.check(scenario)
        self.scenarios.append(scenario)
        self.say(f"  unavailable for at most {scenario.longest_gap_ms:,.0f} ms; "
                 f"{len(scenario.acknowledged):,} acknowledged: {scenario.survived:,} survived, "
                 f"{scenario.rolled_back:,} rolled back (saved), {scenario.lost:,} lost")
        return scenario

    @property
    def settle_s(self) -> float:
        return 0.5 if self.quick else 2.0

    def kill_primary(self, s: Scenario) -> None:
        old = self.leader()
        signal_node(self.data_dir, old, "kill")
        new = self.wait(lambda: self.leader(tuple(n for n in NODES if n != old)), 30.0,
                        "new leader")
        s.notes.append(f"{old} killed; {new} took over")
        time.sleep(self.settle_s)
        request_restart(self.data_dir, old)
        self.wait(lambda: (st := self.status(old)) and st.get("leader") == new, 30.0,
                  f"{old} following again")

    def partition_primary(self, s: Scenario) -> None:
        old = self.leader()
        others = [n for n in NODES if n != old]
        for node_id, blocked in blocked_by_node([[old], others]).items():
            post_faults(self.data_dir, node_id, "block=" + ",".join(blocked))
        new = self.wait(lambda: self.leader(tuple(others)), 30.0, "leader on the majority side")
        s.notes.append(f"{old} cut off; {new} took over")
        time.sleep(self.settle_s)
        self.heal()
        self.wait(lambda: (st := self.status(old)) and st.get("leader") == new, 30.0,
                  f"{old} following again")

    def heal(self) -> None:
        for node_id in NODES:
            post_faults(self.data_dir, node_id, "clear")

    def run_isolated(self, w: str) -> Scenario:
        """Cut the leader off, then write to it (and only it) at write concern `w`."""
        old = self.leader()
        port = self.base + NODES.index(old)
        others = [n for n in NODES if n != old]
        scenario = Scenario(f"isolated-w{w}", f"writes at w={w} to a leader cut off from the "
                            "others, then heal")
        self.say(f"- {scenario.what}")
        for node_id, blocked in blocked_by_node([[old], others]).items():
            post_faults(self.data_dir, node_id, "block=" + ",".join(blocked))
        writer = Writer(self, scenario, w=w, target=lambda: port)
        writer.start()
        try:
            time.sleep(self.settle_s)
        finally:
            writer.stop()
        new = self.wait(lambda: self.leader(tuple(others)), 30.0, "leader on the majority side")
        self.heal()
        self.wait(lambda: (st := self.status(old)) and st.get("leader") == new, 30.0,
                  f"{old} following again")
        time.sleep(0.5)
        self.check(scenario)
        scenario.longest_gap_ms = 0.0
        scenario.notes.append(f"{old} isolated; {new} led the majority")
        self.scenarios.append(scenario)
        self.say(f"  {len(scenario.acknowledged):,} acknowledged, {scenario.refused:,} refused: "
                 f"{scenario.survived:,} survived, {scenario.rolled_back:,} rolled back (saved), "
                 f"{scenario.lost:,} lost")
        return scenario

    def pause_follower(self, s: Scenario) -> None:
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        signal_node(self.data_dir, follower, "pause")
        s.notes.append(f"{follower} paused")
        time.sleep(self.settle_s)
        signal_node(self.data_dir, follower, "resume")

    def backup(self, s: Scenario) -> None:
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        path = self.root / "demo.rkvsnap"
        done = subprocess.run(
            [sys.executable, "-m", "replikv", "backup", "create", "--from",
             f"127.0.0.1:{self.base + 200 + NODES.index(follower)}", "--to", str(path)],
            capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise DemoError(f"backup failed: {done.stderr[-500:]}")
        verified = subprocess.run([sys.executable, "-m", "replikv", "backup", "verify",
                                   str(path), "--json"], capture_output=True, text=True,
                                  timeout=120, check=False)
        if verified.returncode != 0:
            raise DemoError(f"backup verify failed: {verified.stderr[-500:]}")
        summary = json.loads(verified.stdout)
        s.notes.append(f"backup from {follower}: {summary['size_bytes']:,} bytes, "
                       f"{summary['key_count']:,} keys at index {summary['index']:,}, verified "
                       f"(digest checked: {summary['digest_checked']})")

    def run(self) -> dict:
        self.start()
        self.run_scenario("kill", "kill -9 the primary, restart it", self.kill_primary)
        self.run_scenario("partition", "partition the primary away, heal",
                          self.partition_primary)
        self.run_isolated("1")
        self.run_isolated("majority")
        self.run_scenario("pause", "pause a follower (SIGSTOP), resume it", self.pause_follower)
        self.run_scenario("backup", "take an online backup from a follower and verify it",
                          self.backup)
        return self.report()

    def report(self) -> dict:
        return {"scenarios": [{
            "name": s.name, "what": s.what, "acknowledged": len(s.acknowledged),
            "refused": s.refused, "longest_gap_ms": round(s.longest_gap_ms),
            "survived": s.survived, "rolled_back": s.rolled_back, "lost": s.lost,
            "notes": s.notes} for s in self.scenarios]}


def format_report(report: dict) -> str:
    lines = [(f"{'scenario':<58} {'unavail ms':>10} {'acked':>7} {'survived':>8} "
             f"{'rolled back':>11} {'lost':>5}")]
    for s in report["scenarios"]:
        gap = "-" if s["name"].startswith("isolated") else f"{s['longest_gap_ms']:,}"
        lines.append(f"{s['what'][:58]:<58} {gap:>10} {s['acknowledged']:>7,} "
                     f"{s['survived']:>8,} {s['rolled_back']:>11,} {s['lost']:>5,}")
        for note in s["notes"]:
            lines.append(f"    {note}")
    lines.append("unavail ms: the longest time between two acknowledged writes during the "
                 "scenario. rolled back: acknowledged at w=1, undone when the old leader "
                 "rejoined, saved in its rollback file (`replikv rollback report`).")
    return "\n".join(lines)


def run_demo(*, quick: bool, keep: bool, say: Callable[[str], None]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="replikv-demo-"))
    demo = Demo(root, quick=quick, say=say)
    try:
        return demo.run()
    finally:
        demo.stop()
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
