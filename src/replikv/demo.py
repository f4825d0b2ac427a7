"""`replikv demo`: the seeds' scenarios on a real local cluster, one after another, each
measured in this run: how long writes were unavailable, and what happened to every write a
client was told had succeeded (survived, rolled back and saved in a rollback file, or lost).

It starts `replikv cluster up` in a temp dir on free ports (three voters and a standby, fault
injection on, automatic replacement of a voter lost for AUTO_REPLACE_MS), runs one writer (SET
demo:<scenario>:<n> through whichever node leads, no client retries, so a refused write is
counted as refused and never silently resent) during each scenario, and breaks the cluster
with the playground (replikv.playground):

  kill the primary      kill -9 of the leader; it is restarted afterwards
  partition the primary the leader alone on one side; healed afterwards
  w=1 vs w=majority     writes at w=1 sent to an isolated leader are acknowledged and then
                        rolled back when it rejoins (saved in its rollback file); writes at
                        w=majority to it are never acknowledged
  pause a follower      SIGSTOP of a follower: the majority keeps writing without a pause
  promote a standby     kill -9 of a follower voter: the leader promotes the standby in its
                        place; the dead node comes back as the new standby
  backup                an online backup from the standby, verified, while the writer runs
  restore               a mistaken FLUSHALL empties every node (replication copies mistakes
                        too); the cluster is stopped and started again from the backup (in a
                        new data dir, on the same ports), and every write acknowledged before
                        the backup is read back

After each scenario every acknowledged write is read back from the leader (linearizable) and
from the rollback files. On a terminal a live view (rich) shows the members, the writer and the
scenario as they go; the report is printed at the end (and returned as a dict for tests).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from replikv.local_cluster import free_base_port, stop_process_groups
from replikv.playground import blocked_by_node, post_faults, request_restart, signal_node
from replikv.status_view import query_status

NODES = ("n1", "n2", "n3", "n4")  # n4 starts as the standby
VOTERS = 3
WRITE_TIMEOUT_S = 1.0
STATUS_TIMEOUT_S = 0.5
# Longer than any earlier scenario keeps a voter away (a few seconds), so the standby is
# promoted only in its own scenario.
AUTO_REPLACE_MS = 8000

T = TypeVar("T")


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
        self._log: TextIO | None = None
        self.base = 0
        self.scenarios: list[Scenario] = []
        self.current: Scenario | None = None  # the scenario running now (for the live view)
        self.present: dict[bytes, bytes] = {}  # acknowledged writes read back after their scenario
        self.in_backup: dict[bytes, bytes] = {}  # acknowledged before the backup was taken
        self.backup_path = root / "demo.rkvsnap"

    # -- the cluster --------------------------------------------------------------------------

    def start(self) -> None:
        self.base = free_base_port(len(NODES))
        self.start_cluster()
        self.say(f"started 3 nodes and a standby (client ports {self.base}-"
                 f"{self.base + len(NODES) - 1}, dashboard http://127.0.0.1:{self.base + 200}/)")
        self.wait(lambda: self.leader() is not None, 30.0, "a leader")
        self.wait(lambda: (st := self.status(NODES[-1])) and st["role"] == "standby"
                  and st.get("leader"), 30.0, f"{NODES[-1]} added as a standby")

    def start_cluster(self, *args: str) -> None:
        self._log = open(self.root / "cluster-up.log", "a")  # noqa: SIM115 - closed in stop()
        self.up = subprocess.Popen(
            [sys.executable, "-m", "replikv", "cluster", "up", "--base-port", str(self.base),
             "--data-dir", str(self.data_dir), "--standbys", str(len(NODES) - VOTERS),
             "--auto-replace-after-ms", str(AUTO_REPLACE_MS), *args],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.up is not None:
            if self.up.poll() is None:
                self.up.send_signal(signal.SIGTERM)
                try:
                    self.up.wait(30.0)
                except subprocess.TimeoutExpired:
                    stop_process_groups([self.up], grace_s=1.0)
            self.up = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def status(self, node_id: str) -> dict | None:
        """The node's /status, or None if it does not answer."""
        port = self.base + 200 + NODES.index(node_id)
        return query_status(f"127.0.0.1:{port}", STATUS_TIMEOUT_S)[0]

    def leader(self, among: tuple[str, ...] | list[str] = NODES) -> str | None:
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

    def wait(self, condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
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
        saved: list[tuple[bytes, str]] = []  # (a rolled-back entry's data, whose file)
        for node_id in NODES:
            for info in list_rollback_files(self.data_dir / node_id):
                where = str(info.path.relative_to(self.data_dir))
                saved.extend((r.data, where) for r in read_rollback_file(info.path).records)
        found_in: set[str] = set()
        keys = list(scenario.acknowledged)
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            values = client.mget(chunk)
            for key, value in zip(chunk, values, strict=True):
                if value == scenario.acknowledged[key]:
                    scenario.survived += 1
                    self.present[key] = value
                elif saved_in := next((f for data, f in saved if key in data), None):
                    scenario.rolled_back += 1
                    found_in.add(saved_in)
                else:
                    scenario.lost += 1
        client.close()
        if found_in:
            scenario.notes.append("rolled-back writes saved in " + ", ".join(sorted(found_in))
                                  + " (under the data dir)")

    # -- the scenarios -----------------------------------------------------------------------------

    def run_scenario(self, name: str, what: str, act: Callable[[Scenario], None]) -> Scenario:
        scenario = Scenario(name, what)
        self.current = scenario
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
        old = self.wait(self.leader, 30.0, "a leader")
        signal_node(self.data_dir, old, "kill")
        new = self.wait(lambda: self.leader(tuple(n for n in NODES if n != old)), 30.0,
                        "new leader")
        s.notes.append(f"{old} killed; {new} took over")
        time.sleep(self.settle_s)
        request_restart(self.data_dir, old)
        self.wait(lambda: (st := self.status(old)) and st.get("leader") == new, 30.0,
                  f"{old} following again")

    def partition_primary(self, s: Scenario) -> None:
        old = self.wait(self.leader, 30.0, "a leader")
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
        old = self.wait(self.leader, 30.0, "a leader")
        port = self.base + NODES.index(old)
        others = [n for n in NODES if n != old]
        scenario = Scenario(f"isolated-w{w}", f"writes at w={w} to a leader cut off from the "
                            "others, then heal")
        self.current = scenario
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
        scenario.notes.insert(0, f"{old} isolated; {new} led the majority")
        self.scenarios.append(scenario)
        self.say(f"  {len(scenario.acknowledged):,} acknowledged, {scenario.refused:,} refused: "
                 f"{scenario.survived:,} survived, {scenario.rolled_back:,} rolled back (saved), "
                 f"{scenario.lost:,} lost")
        return scenario

    def members(self) -> tuple[str, list[str], list[str]]:
        """(leader, voters, standbys) as the leader sees them."""
        leader = self.wait(self.leader, 30.0, "a leader")
        st = self.wait(lambda: self.status(leader), 10.0, f"{leader}'s status")
        return leader, list(st["voters"]), list(st["standbys"])

    def pause_follower(self, s: Scenario) -> None:
        leader, voters, _ = self.members()
        follower = next(n for n in voters if n != leader)
        signal_node(self.data_dir, follower, "pause")
        s.notes.append(f"{follower} paused")
        time.sleep(self.settle_s)
        signal_node(self.data_dir, follower, "resume")

    def replace_voter(self, s: Scenario) -> None:
        leader, voters, _ = self.members()
        victim = next(n for n in voters if n != leader)
        started = time.monotonic()
        signal_node(self.data_dir, victim, "kill")
        s.notes.append(f"{victim} killed")

        def replaced() -> tuple[str, list[str], list[str]] | None:
            new_leader = self.leader()
            if new_leader is None:
                return None
            st = self.status(new_leader)
            if not st or victim not in st["standbys"] or victim in st["voters"]:
                return None
            return new_leader, st["voters"], st["standbys"]

        _, now_voters, _ = self.wait(replaced, AUTO_REPLACE_MS / 1000 + 30.0,
                                     f"a standby voting in place of {victim}")
        took_s = time.monotonic() - started
        promoted = ", ".join(sorted(set(now_voters) - set(voters))) or "?"
        s.notes[-1] = (f"{victim} killed; standby {promoted} voted in its place {took_s:.1f} s "
                       f"later (auto_replace_after_ms={AUTO_REPLACE_MS})")
        request_restart(self.data_dir, victim)
        self.wait(lambda: (st := self.status(victim)) and st["role"] == "standby"
                  and st.get("leader"), 30.0, f"{victim} back as a standby")
        s.notes.append(f"{victim} restarted: it is the standby now")

    def backup(self, s: Scenario) -> None:
        leader, voters, standbys = self.members()
        source = standbys[0] if standbys else next(n for n in voters if n != leader)
        # Everything acknowledged and read back so far, and this scenario's writes until now,
        # must be in the backup.
        self.in_backup = {**self.present, **dict(s.acknowledged)}
        path = self.backup_path
        done = subprocess.run(
            [sys.executable, "-m", "replikv", "backup", "create", "--from",
             f"127.0.0.1:{self.base + 200 + NODES.index(source)}", "--to", str(path)],
            capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise DemoError(f"backup failed: {done.stderr[-500:]}")
        verified = subprocess.run([sys.executable, "-m", "replikv", "backup", "verify",
                                   str(path), "--json"], capture_output=True, text=True,
                                  timeout=120, check=False)
        if verified.returncode != 0:
            raise DemoError(f"backup verify failed: {verified.stderr[-500:]}")
        summary = json.loads(verified.stdout)
        role = "the standby" if source in standbys else "a follower"
        s.notes.append(f"backup from {role} {source}: {summary['size_bytes']:,} bytes, "
                       f"{summary['key_count']:,} keys at index {summary['index']:,}, verified "
                       f"(digest checked: {summary['digest_checked']})")

    def restore(self) -> Scenario:
        """A mistake replication copies everywhere, undone from the backup."""
        import redis

        scenario = Scenario("restore", "a mistaken FLUSHALL reaches every node; restore the "
                            "backup")
        self.current = None  # no writer in this one
        self.say(f"- {scenario.what}")
        leader = self.wait(self.leader, 30.0, "a leader")
        with redis.Redis(port=self.base + NODES.index(leader), socket_timeout=5.0) as client:
            client.flushall()

        def sizes() -> dict[str, int | None]:
            out: dict[str, int | None] = {}
            for i, node_id in enumerate(NODES):
                try:
                    with redis.Redis(port=self.base + i, socket_timeout=1.0) as c:
                        out[node_id] = c.execute_command("REPLIKV", "WITH", "READPREF",
                                                         "nearest", "CONSISTENCY", "local",
                                                         "DBSIZE")
                except redis.RedisError:
                    out[node_id] = None
            return out

        self.wait(lambda: all(n == 0 for n in sizes().values()), 30.0,
                  "the FLUSHALL on every node")
        scenario.notes.append(f"FLUSHALL replicated: 0 keys on {', '.join(NODES)}")
        started = time.monotonic()
        self.stop()
        self.data_dir = self.root / "restored"  # the old data dirs stay for `rollback report`
        self.start_cluster("--restore", str(self.backup_path))
        self.wait(lambda: self.leader() is not None, 60.0, "a leader of the restored cluster")
        scenario.longest_gap_ms = (time.monotonic() - started) * 1000
        scenario.acknowledged = self.in_backup
        self.check(scenario)
        self.scenarios.append(scenario)
        scenario.notes.append(f"restored from {self.backup_path.name} into a new data dir on "
                              f"the same ports in {scenario.longest_gap_ms / 1000:.1f} s; "
                              "writes made after the backup are not in it (point-in-time "
                              "recovery, `replikv restore --archive`, covers those)")
        self.say(f"  down for {scenario.longest_gap_ms:,.0f} ms; {len(self.in_backup):,} "
                 f"writes acknowledged before the backup: {scenario.survived:,} back, "
                 f"{scenario.lost:,} lost")
        return scenario

    def run(self) -> dict:
        self.start()
        self.run_scenario("kill", "kill -9 the primary, restart it", self.kill_primary)
        self.run_scenario("partition", "partition the primary away, heal",
                          self.partition_primary)
        self.run_isolated("1")
        self.run_isolated("majority")
        self.run_scenario("pause", "pause a follower (SIGSTOP), resume it", self.pause_follower)
        self.run_scenario("standby", "kill -9 a follower: the standby is promoted in its place",
                          self.replace_voter)
        self.run_scenario("backup", "take an online backup from the standby and verify it",
                          self.backup)
        self.restore()
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
                 "scenario (restore: from stopping the cluster to a leader of the restored one; "
                 "its acked: the writes acknowledged before the backup). rolled back: "
                 "acknowledged at w=1, undone when the old leader rejoined, saved in its "
                 "rollback file (`replikv rollback report`).")
    return "\n".join(lines)


class LiveView:
    """The demo as it runs, on a terminal (rich): each member's role, term and log position,
    the writer's acknowledged and refused writes and its rate, and what has happened so far.
    The members are polled by a thread of their own, so a dead node never slows the redraw."""

    POLL_S = 0.3
    LINES = 14  # the last progress lines shown

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.lines: list[str] = []
        self.members: dict[str, dict | None] = {}
        self.rate = 0.0  # acknowledged writes per second over the last poll
        self._last: tuple[float, int] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def say(self, text: str) -> None:
        self.lines.append(text)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5.0)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            if self.demo.base:
                self.members = {n: self.demo.status(n) for n in NODES}
            current = self.demo.current
            acked = len(current.acknowledged) if current is not None else 0
            now = time.monotonic()
            if self._last is not None and now > self._last[0]:
                self.rate = max(0.0, (acked - self._last[1]) / (now - self._last[0]))
            self._last = (now, acked)
            self._stopping.wait(self.POLL_S)

    def render(self):  # -> rich renderable
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        colours = {"leader": "bold green", "standby": "cyan", "candidate": "yellow",
                   "pre-candidate": "yellow", "down": "bold red"}
        table = Table(title="members", title_justify="left", expand=False)
        for name, justify in (("ID", "left"), ("ROLE", "left"), ("TERM", "right"),
                              ("COMMIT", "right"), ("APPLIED", "right"), ("FAULTS", "left")):
            table.add_column(name, justify=justify)
        for node_id in NODES:
            st = self.members.get(node_id)
            if st is None:
                table.add_row(node_id, Text("down", colours["down"]), "-", "-", "-", "")
                continue
            faults = st.get("faults") or {}
            cut = ", ".join(faults.get("blocked") or [])
            table.add_row(node_id, Text(str(st["role"]), colours.get(st["role"], "")),
                          str(st["term"]), f"{st['commit_index']:,}", f"{st['applied_index']:,}",
                          f"cut off from {cut}" if cut else "")
        current = self.demo.current
        writer = Text("writer: idle")
        if current is not None:
            writer = Text.assemble(
                ("writer ", "bold"), f"SET demo:{current.name}:N  ",
                (f"{len(current.acknowledged):,} acknowledged", "green"), "  ",
                (f"{current.refused:,} refused", "red" if current.refused else ""),
                f"  {self.rate:,.0f} writes/s  longest gap {current.longest_gap_ms:,.0f} ms")
        dashboard = (f"dashboard: http://127.0.0.1:{self.demo.base + 200}/"
                     if self.demo.base else "")
        return Group(Text(f"replikv demo   {dashboard}", style="bold"), table, writer,
                     Text("\n".join(self.lines[-self.LINES:])))


def run_demo(*, quick: bool, keep: bool, say: Callable[[str], None],
             live: bool = False) -> dict:
    """Run every scenario and return the report. With `live`, a rich live view is drawn on
    the terminal while it runs (and `say`'s lines appear in it); otherwise each progress line
    goes to `say` as it happens."""
    root = Path(tempfile.mkdtemp(prefix="replikv-demo-"))
    view: LiveView | None = None
    demo = Demo(root, quick=quick, say=say)
    live_display = None
    if live:
        from rich.live import Live

        view = LiveView(demo)
        demo.say = view.say
        live_display = Live(get_renderable=view.render, refresh_per_second=4)
        view.start()
        live_display.start()
    try:
        return demo.run()
    finally:
        demo.stop()
        if view is not None:
            view.stop()
        if live_display is not None:
            live_display.stop()
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
