"""One simulated run per seed: a safety phase with faults, then a liveness phase after healing.

    safety phase   clients run while a nemesis injects the seed's faults (at random moments,
                   and in half the seeds aimed at every new leader as it is elected or first
                   commits); invariants are checked after every event
    heal           partitions healed, paused nodes resumed, crashed nodes restarted
    liveness phase within a bounded simulated time a leader is elected and a write through
                   every node commits
    converge       every node's log catches up with the leader's
    check          the recorded client history must be linearizable, and every write
                   acknowledged at w=1 is either committed or saved in a rollback file

A failure reports the seed, what broke, and the last events before it; `replikv sim --seed N
--trace` replays that exact run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TypedDict

import msgpack

from replikv.check.linearizability import check_history, format_result
from replikv.invariants import InvariantViolation
from replikv.node import REPLICATION_MODES
from replikv.raft.membership import is_config_entry
from replikv.replies import ErrorReply
from replikv.sim.cluster import START_MS, DriverOptions, SimCluster, SimViolation
from replikv.sim.network import NetworkFaults
from replikv.sim.workload import Workload

FAULT_CLASSES = ("all", "network", "crash", "disk", "none")
LIVENESS_BUDGET_MS = 30_000


@dataclass(slots=True)
class SimConfig:
    nodes: int = 3
    faults: str = "all"
    duration_ms: int = 8_000
    clients: int = 5
    keys: int = 4
    nemesis_interval_ms: tuple[int, int] = (100, 800)
    options: DriverOptions = field(default_factory=DriverOptions)
    trace_all: bool = False
    replication: str | None = None  # "passive" or "active"; None: the seed picks one
    session_readers: int = 2  # connections pinned to a node reading at local consistency
    # Membership changes (a spare node joins as a standby, members are promoted, demoted,
    # removed, leadership is switched over) and log compaction with snapshot transfers. None:
    # each seed decides (from its own generator, so the other draws of a seed stay as they
    # were before these existed).
    membership: bool | None = None
    snapshots: bool | None = None
    # A share of the client operations sent as MULTI ... EXEC transactions (off by default, so
    # that the seeds kept as regression tests replay as they were found).
    transactions: bool = False
    # Unrecorded PUBLISH and SPUBLISH among the operations (off by default for the same reason;
    # `replikv sim` turns it on).
    publishes: bool = False
    # Unrecorded streams, HyperLogLog, blocking-pop and function commands among the operations
    # (off by default for the same reason; `replikv sim` turns it on).
    newer: bool = False


@dataclass(slots=True)
class SeedResult:
    seed: int
    ok: bool
    failure: str | None = None
    trace: list[str] = field(default_factory=list)
    ops: int = 0
    transactions: int = 0  # client operations sent as MULTI ... EXEC
    newer: int = 0  # stream, HyperLogLog, blocking-pop and function commands sent (.newer)
    faults: int = 0
    events: int = 0
    sim_ms: int = 0
    wall_s: float = 0.0
    leaders: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    membership_changes: int = 0  # config entries committed
    auto_replacements: int = 0


class _SnapshotSettings(TypedDict, total=False):
    """The snapshot arguments of SimCluster a seed sets (the others keep their defaults)."""

    snapshot_entries: int
    snapshot_keep_entries: int
    snapshot_chunk_bytes: int
    snapshot_log_ratio: float


def run_seed(seed: int, config: SimConfig | None = None) -> SeedResult:
    config = config or SimConfig()
    started = time.perf_counter()
    rng = random.Random(seed)
    enabled = _fault_set(config.faults)
    net = NetworkFaults()
    if "network" in enabled:
        net = NetworkFaults(delay_ms_min=1, delay_ms_max=rng.choice((5, 10, 30)),
                            loss=rng.choice((0.0, 0.01, 0.05)),
                            duplicate=rng.choice((0.0, 0.01, 0.05)),
                            spike=rng.choice((0.0, 0.02)))
    disk = "disk" in enabled
    extra = random.Random(f"{seed}/membership-and-snapshots")
    membership = (extra.random() < 0.4) if config.membership is None else config.membership
    snapshots = (extra.random() < 0.5) if config.snapshots is None else config.snapshots
    voters = tuple(f"n{i + 1}" for i in range(config.nodes))
    ids = voters + ((f"n{config.nodes + 1}",) if membership else ())
    auto_replace_ms = extra.choice((0, 1000)) if membership else 0
    snapshot_settings: _SnapshotSettings = {}
    if snapshots:
        snapshot_settings = {"snapshot_entries": extra.choice((5, 20, 60)),
                             "snapshot_keep_entries": extra.choice((0, 3, 30)),
                             "snapshot_chunk_bytes": extra.choice((64, 700, 1 << 16))}
        # The growth rule too (the keyspace here is a few KB, so a ratio of 1-3 is a
        # snapshot every ten to forty entries), in a third of the runs alone.
        ratio = extra.choice((0.0, 1.0, 3.0))
        if ratio:
            snapshot_settings["snapshot_log_ratio"] = ratio
            if extra.random() < 0.5:
                snapshot_settings["snapshot_entries"] = 0
    replication = config.replication or rng.choice(REPLICATION_MODES)
    cluster = SimCluster(ids, seed=rng.getrandbits(64), network=net, replication=replication,
                         voters=voters, auto_replace_after_ms=auto_replace_ms,
                         **snapshot_settings,
                         disk_latency_ms=(1, 20) if disk else (1, 5),
                         disk_spike=0.02 if disk else 0.0,
                         clock_skew_ms=200 if enabled else 0,
                         options=config.options, trace_all=config.trace_all,
                         max_append_entries_count=rng.choice((1, 2, 4096)),
                         max_inflight_appends=rng.choice((1, 4, 64)))
    workload = Workload(cluster, random.Random(rng.getrandbits(64)), clients=config.clients,
                        keys=config.keys,
                        transactions=(random.Random(f"{seed}/transactions")
                                      if config.transactions else None),
                        publishes=(random.Random(f"{seed}/publishes")
                                   if config.publishes else None),
                        newer=random.Random(f"{seed}/newer") if config.newer else None)
    result = SeedResult(seed=seed, ok=False)
    end_ms = START_MS + config.duration_ms
    try:
        workload.start(until_ms=end_ms, session_readers=config.session_readers)
        nemesis = _Nemesis(cluster, random.Random(rng.getrandbits(64)), enabled, end_ms,
                           config.nemesis_interval_ms)
        nemesis.start()
        if membership:
            _MembershipNemesis(cluster, random.Random(extra.getrandbits(64)), end_ms).start()
        cluster.run_until(end_ms)
        # Heal everything, then let the last client operations finish or time out.
        cluster.heal()
        for node_id in ids:
            cluster.resume(node_id)
            cluster.restart(node_id)
        cluster.run_until(cluster.now_ms + workload.timeout_ms + 100)
        workload.finish()
        _check_liveness(cluster)
        _converge(cluster)
        _check_rollbacks(cluster, workload.acked_w1)
        if workload.unexpected:
            raise SimViolation("unexpected replies: " + "; ".join(workload.unexpected[:3]),
                               list(cluster.trace))
        check = check_history(workload.ops, timeout_s=60)
        if check.ok is not True:
            raise SimViolation("history is not linearizable:\n" + format_result(check),
                               list(cluster.trace))
        result.ok = True
    except SimViolation as v:
        result.failure = str(v)
        result.trace = v.trace
    except InvariantViolation as v:  # a core stopped itself: report it with the seed
        result.failure = f"t={cluster.now_ms - START_MS}ms: a node's invariant failed: {v}"
        result.trace = list(cluster.trace)
    if config.trace_all and not result.trace:
        result.trace = list(cluster.trace)
    result.ops = len(workload.ops)
    result.faults = cluster.faults_injected
    result.events = cluster.events
    result.sim_ms = cluster.now_ms - START_MS
    result.leaders = len(cluster.leader_of_term)
    result.snapshots_taken = cluster.snapshots_taken
    result.snapshots_installed = cluster.snapshots_installed
    result.auto_replacements = sum(n.core.auto_replacements for n in cluster.nodes.values()
                                   if n.up)
    result.membership_changes = sum(1 for d in cluster.committed_data if is_config_entry(d))
    result.transactions = workload.transactions_sent
    result.newer = workload.newer_sent
    result.wall_s = time.perf_counter() - started
    return result


def _fault_set(faults: str) -> set[str]:
    if faults not in FAULT_CLASSES:
        raise ValueError(f"faults must be one of {', '.join(FAULT_CLASSES)}")
    return {"network", "crash", "disk"} if faults == "all" else (
        set() if faults == "none" else {faults})


def _check_liveness(cluster: SimCluster) -> None:
    """After healing: a leader, and a write through every node, within a bounded time."""
    deadline = cluster.now_ms + LIVENESS_BUDGET_MS
    replies: dict[tuple[str, int], object] = {}
    previous = cluster.on_reply
    cluster.on_reply = lambda node, req, value: replies.__setitem__((node, req), value)
    try:
        for attempt in range(1, 1000):
            pending = {}
            for i, node_id in enumerate(cluster.members()):
                req = 10**9 + attempt * 100 + i
                cluster.submit(node_id, req, [b"SET", b"liveness", f"{attempt}".encode()])
                pending[(node_id, req)] = node_id

            def replied(pending: dict[tuple[str, int], str] = pending) -> bool:
                return all(k in replies for k in pending)

            cluster.run_until(min(deadline, cluster.now_ms + 3000), stop=replied)
            if all(k in replies and not isinstance(replies[k], ErrorReply) for k in pending):
                return
            if cluster.now_ms >= deadline:
                break
    finally:
        cluster.on_reply = previous
    raise SimViolation(f"liveness: no write committed through every node within "
                       f"{LIVENESS_BUDGET_MS} ms after healing (leaders: {cluster.leaders()})",
                       list(cluster.trace))


def _converge(cluster: SimCluster) -> None:
    """Run until every node's log holds everything the leader's log does (bounded)."""
    deadline = cluster.now_ms + LIVENESS_BUDGET_MS

    def converged() -> bool:
        leaders = cluster.leaders()
        if len(leaders) != 1:
            return False
        last = cluster.nodes[leaders[0]].core.raft.log.last_index
        return all(n.core.raft.log.last_index == last and n.core.raft.log.persisted_index == last
                   and n.core.raft.commit_index == last
                   for n in cluster.nodes.values() if n.id in cluster.members())

    cluster.run_until(deadline, stop=converged)
    if not converged():
        raise SimViolation(f"logs did not converge within {LIVENESS_BUDGET_MS} ms after healing",
                           list(cluster.trace))


def _check_rollbacks(cluster: SimCluster, acked_w1: list[tuple[bytes | float, ...]]) -> None:
    """Every w=1 write a client was told succeeded is committed, or was saved by the node
    that discarded it, as acknowledged (or unknown, if that node restarted since)."""
    committed = cluster.committed_data  # every committed entry, compacted or not
    saved = [r.entry.data for n in cluster.nodes.values() for r in n.disk.rolled_back
             if r.acknowledged is not False]
    # A node removed from the cluster keeps its log as it was (nothing ever overwrites it, so
    # nothing is rolled back): an entry only it holds is still there on its disk.
    members = cluster.members()
    saved += [e.data for n in cluster.nodes.values() if n.id not in members
              for e in n.disk.entries]
    for forms in acked_w1:  # what the entry may hold of the write, in either mode
        needles = [msgpack.packb(form, use_bin_type=True) for form in forms]
        if not any(needle in data for data in committed for needle in needles) and not any(
                needle in data for data in saved for needle in needles):
            raise SimViolation(f"the w=1 write of {forms[0]!r} was acknowledged, then lost "
                               f"without a rollback record", list(cluster.trace))


class _Nemesis:
    """Injects the enabled fault classes at random moments of the safety phase, and faults
    aimed at leaders at the instants a random moment almost never hits (see _on_leader)."""

    def __init__(self, cluster: SimCluster, rng: random.Random, enabled: set[str],
                 end_ms: int, interval_ms: tuple[int, int]) -> None:
        self.interval_ms = interval_ms
        self.cluster = cluster
        self.rng = rng
        self.enabled = enabled
        self.end_ms = end_ms
        # Leader-targeted faults: a third of the seeds strike every new leader, the others none;
        # each seed strikes with a random non-empty subset of the faults its classes allow.
        self.strike_every_leader = rng.random() < 1 / 3
        strikes = (["cut"] if "network" in enabled else []) + (
            ["crash"] if "crash" in enabled else [])
        self.strikes = [f for f in strikes if rng.random() < 0.5] or strikes
        self.trap: tuple[str, str] | None = None  # (leader, fault) due at its first commit
        # The random faults hold off until then, so a strike's consequences (an election or
        # two, a few hundred ms each after the vote-refusal window) can play out.
        self.quiet_until = 0

    def start(self) -> None:
        if self.enabled:
            self.cluster.on_leader = self._on_leader
            self._again()

    def _on_leader(self, leader: str, event: str) -> None:
        """A node just won an election, or as leader just advanced its commit index; the
        messages that would tell the followers have not left yet. Strike the new leader there
        and then, or at its first commit: cut it into a minority of the cluster, or crash it
        (and restart it a little later). So a new leader's no-op reaches no one and stays an
        orphan entry of its term, or its first commit is known to it alone, and entries of
        earlier terms it was re-sending reached some followers and not others: the moments of
        Raft's Figure 8 (§5.4.2), which faults at random times almost never hit, since every
        election waits out the vote-refusal windows and random faults come in between."""
        c, rng = self.cluster, self.rng
        if event == "committed":
            if self.trap is not None and self.trap[0] == leader:
                fault, self.trap = self.trap[1], None
                self._strike(leader, fault)
            return
        self.trap = None
        if not (self.strike_every_leader and self.strikes) or c.now_ms >= self.end_ms:
            return
        fault = rng.choice(self.strikes)
        if rng.random() < 0.5:
            self._strike(leader, fault)
        else:
            self.trap = (leader, fault)
            self.quiet_until = max(self.quiet_until, c.now_ms + rng.randint(1000, 3000))

    def _strike(self, leader: str, fault: str) -> None:
        c, rng = self.cluster, self.rng
        if c.now_ms >= self.end_ms:
            return
        self.quiet_until = max(self.quiet_until, c.now_ms + rng.randint(1000, 3000))
        if fault == "crash":
            c.crash(leader)
            c.schedule(c.now_ms + rng.randint(0, 2000), ("call", lambda: c.restart(leader)))
            return
        others = [i for i in c.ids if i != leader]
        rng.shuffle(others)
        size = rng.randint(1, max(1, (len(c.ids) - 1) // 2))
        minority = {leader, *others[:size - 1]}
        c.partition(minority, set(c.ids) - minority)

    def _again(self) -> None:
        delay = self.rng.randint(*self.interval_ms)
        if self.cluster.now_ms + delay < self.end_ms:
            self.cluster.schedule(self.cluster.now_ms + delay, ("call", self._act))

    def _act(self) -> None:
        c, rng = self.cluster, self.rng
        if c.now_ms < self.quiet_until:
            self._again()
            return
        actions = []
        if "network" in self.enabled:
            actions += ["partition", "isolate_leader", "one_way", "heal", "heal"]
        if "crash" in self.enabled:
            actions += ["crash", "crash_leader", "restart", "restart", "pause", "resume"]
        if "disk" in self.enabled:
            actions += ["crash_persisting", "restart"]
        action = rng.choice(actions)
        ids = list(c.ids)
        if action == "partition":
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            c.partition(set(ids[:cut]), set(ids[cut:]))
        elif action == "isolate_leader":
            leaders = c.leaders()
            if leaders:
                c.partition({leaders[0]}, set(ids) - {leaders[0]})
        elif action == "one_way":
            a, b = rng.sample(ids, 2)
            c.block_one_way(a, b)
        elif action == "heal":
            c.heal()
        elif action == "crash":
            c.crash(rng.choice(ids))
        elif action == "crash_leader":
            leaders = c.leaders()
            if leaders:
                c.crash(leaders[0])
        elif action == "crash_persisting":
            busy = [n.id for n in c.nodes.values() if n.up and n.persisting is not None]
            c.crash(rng.choice(busy) if busy else rng.choice(ids))
        elif action == "restart":
            down = [n.id for n in c.nodes.values() if not n.up]
            if down:
                c.restart(rng.choice(down))
        elif action == "pause":
            node_id = rng.choice(ids)
            c.pause(node_id)
            c.schedule(c.now_ms + rng.randint(100, 2500), ("call", lambda: c.resume(node_id)))
        elif action == "resume":
            for node_id in ids:
                c.resume(node_id)
        self._again()


class _MembershipNemesis:
    """Changes the membership at random moments of the safety phase, through whichever node:
    the spare joins as a standby, standbys are promoted, voters demoted or removed (removed
    nodes may join again later), and leadership is switched over. The node core refuses what
    Raft's rules do not allow (a second change before the first commits, a change leaving no
    reachable majority); the run checks nothing breaks either way."""

    REQ_BASE = 3 * 10**9

    def __init__(self, cluster: SimCluster, rng: random.Random, end_ms: int) -> None:
        self.cluster = cluster
        self.rng = rng
        self.end_ms = end_ms
        self.req = self.REQ_BASE

    def start(self) -> None:
        self._again()

    def _again(self) -> None:
        delay = self.rng.randint(200, 1500)
        if self.cluster.now_ms + delay < self.end_ms:
            self.cluster.schedule(self.cluster.now_ms + delay, ("call", self._act))

    def _act(self) -> None:
        c, rng = self.cluster, self.rng
        m = c.latest_membership()
        outsiders = [i for i in c.ids if i not in m.members]
        options = [("switchover", "")]  # its target, if any, is picked below
        options += [("add", i) for i in outsiders]
        options += [("promote", i) for i in m.learners]
        options += [("demote", i) for i in m.voters if len(m.voters) > 2]
        options += [("remove", i) for i in m.learners]
        options += [("remove", i) for i in m.voters if len(m.voters) > 2]
        op, target = rng.choice(options)
        if op == "switchover":
            argv = [b"REPLIKV", b"SWITCHOVER"]
            if rng.random() < 0.5 and len(m.voters) > 1:
                argv.append(rng.choice(m.voters).encode())
        else:
            argv = [b"REPLIKV", b"MEMBER", op.upper().encode(), target.encode()]
            if op == "add":
                argv += [b"PEER", f"sim-{target}:7000".encode()]
        live = c.live()
        if live:
            self.req += 1
            c.submit(rng.choice(live), self.req, argv)
        self._again()
