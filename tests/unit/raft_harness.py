"""Drivers for testing the Raft core: one core message by message, or a few by hand.

Two levels, both deterministic:

- Single-core helpers (`make_core`, `make_leader`, `append_request`, `sent`, ...) build a core in
  a given state (term, vote, log given as a list of terms) and feed it hand-written messages, so
  a test reads like one rule of the paper's Figure 2.
- `Cluster` holds several cores, an in-memory disk per node, and a network that is a plain list
  of envelopes the test delivers, drops, duplicates or reorders by hand. `flush(node)` drives a
  core exactly as the runtime does (ready -> send early messages -> persist -> send messages ->
  apply -> advance) and, at the moment each message leaves, checks that what it promises is
  already on disk ("persist before you speak"). `begin_ready`/`finish_ready` split that cycle
  so a test can step the core while its write is in flight, as the runtime's disk thread allows. `crash(node)` loses memory and keeps the disk;
  `restart(node)` builds a new core from that disk.

`SafetyMonitor` watches a Cluster after every step of a schedule and fails on the first
violation of Raft's safety properties (one leader per term, one vote per term, log matching,
committed entries never changing, applied sequences agreeing, reads not going back in time;
and, for runs whose clocks tick together, no leader elected while an older one holds a lease).
Each Disk also checks that no entry is overwritten without first reaching its rollback file.
(A rolled-back entry may still be committed later, from other nodes' copies: Figure 8.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from replikv.raft.core import RaftConfig, RaftCore, ReadState, Ready, Role
from replikv.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Envelope,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from replikv.storage.hardstate import HardState

IDS3 = ("n1", "n2", "n3")
IDS5 = ("n1", "n2", "n3", "n4", "n5")


# -- single-core helpers --------------------------------------------------------------------------


def entry(index: int, term: int) -> Entry:
    """A client entry whose data names its index and term, so different entries never compare
    equal by accident."""
    return Entry(index, term, f"{index}@{term}".encode())


def log_of(terms: list[int] | tuple[int, ...], start: int = 1) -> list[Entry]:
    return [entry(start + i, t) for i, t in enumerate(terms)]


def make_core(node_id: str = "n1", *, voters: tuple[str, ...] = IDS3, term: int = 0,
              voted_for: str | None = None, log: list[int] | tuple[int, ...] = (),
              seed: int = 0, **config: object) -> RaftCore:
    """A core restarted from disk: hard state (term, voted_for) and a log given by its terms."""
    cfg = RaftConfig(node_id=node_id, voters=voters, **config)  # type: ignore[arg-type]
    return RaftCore(cfg, hard_state=HardState(term, voted_for), entries=log_of(log),
                    rng=random.Random(seed))


def persist(core: RaftCore) -> Ready:
    """Take one Ready and report it durable (the driver's fsync)."""
    rd = core.ready()
    core.advance(rd)
    return rd


def settle(core: RaftCore) -> list[Ready]:
    """Take and persist Ready batches until the core has nothing more to hand out."""
    out = []
    while core.has_ready():
        out.append(persist(core))
    return out


def sent(rd: Ready | list[Ready], kind: type | None = None, to: str | None = None) -> list:
    """Messages of a Ready (early and late) of one kind, optionally to one peer."""
    batches = rd if isinstance(rd, list) else [rd]
    return [env.message for b in batches for env in (*b.early_messages, *b.messages)
            if (kind is None or isinstance(env.message, kind)) and (to is None or env.to == to)]


def time_out(core: RaftCore) -> None:
    """Tick until the election timer fires (it is random in [election_ticks, 2*election_ticks))."""
    before = core.role
    for _ in range(2 * core.config.election_ticks):
        core.tick()
        if core.role is not before:
            return
    raise AssertionError(f"{core.id} did not time out (role {core.role})")


def wait_out_start_up_window(core: RaftCore) -> RaftCore:
    """Tick a just-started core through the election_ticks ticks in which it refuses votes
    (answers it gave before a restart may still hold up a leader's lease), without its own
    election timer firing. For tests of vote rules that have nothing to do with restarts."""
    for _ in range(core.config.election_ticks):
        core.tick()
    assert core.role is Role.FOLLOWER, "the election timer fired: pick another seed"
    return core


def make_leader(node_id: str = "n1", *, voters: tuple[str, ...] = IDS3, term: int = 0,
                log: list[int] | tuple[int, ...] = (), **config: object) -> RaftCore:
    """A core that has just won the election for term+1 with every peer's vote, its no-op
    appended and persisted; its first AppendRequests have been taken (and dropped)."""
    core = make_core(node_id, voters=voters, term=term, log=log, **config)
    time_out(core)
    if core.role is Role.PRE_CANDIDATE:
        for p in core.peers:
            core.step(VoteResponse(term + 1, p, True, pre_vote=True))
    for p in core.peers:
        if core.role is Role.CANDIDATE:
            core.step(VoteResponse(term + 1, p, True))
    assert core.role is Role.LEADER and core.term == term + 1
    settle(core)
    return core


def append_request(term: int, src: str, prev_index: int, prev_term: int,
                   entries: list[Entry] | tuple[Entry, ...] = (), commit: int = 0,
                   seq: int = 0) -> AppendRequest:
    return AppendRequest(term, src, prev_index, prev_term, tuple(entries), commit, seq)


def log_terms(core: RaftCore) -> list[int]:
    return [e.term for e in core.log.slice(1, core.log.last_index + 1)]


def log_entries(core: RaftCore) -> list[Entry]:
    return core.log.slice(1, core.log.last_index + 1)


# -- a hand-driven cluster ------------------------------------------------------------------------


@dataclass
class Disk:
    """What a node has made durable: the hard state file, the write-ahead log, and the rollback
    file (entries the node dropped from its log because a newer leader overwrote them)."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    rolled_back: list[Entry] = field(default_factory=list)

    def write(self, rd: Ready) -> None:
        self.rolled_back.extend(rd.rolled_back)  # saved before they vanish from the log
        if rd.entries:
            # A write that starts below the end replaces the suffix (the WAL's recovery rule).
            replaced = self.entries[rd.entries[0].index - 1:]
            lost = [e for e in replaced if e not in rd.rolled_back]
            assert not lost, f"entries overwritten on disk without a rollback copy: {lost}"
            del self.entries[rd.entries[0].index - 1:]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state


class Cluster:
    """Cores, disks and a hand-delivered network. Nothing moves unless the test says so."""

    def __init__(self, ids: tuple[str, ...] = IDS3, *, seed: int = 0, **config: object) -> None:
        self.ids = tuple(ids)
        self.seed = seed
        self.config = config
        self.disks = {i: Disk() for i in self.ids}
        self.cores: dict[str, RaftCore] = {}
        self.down: set[str] = set()
        self.network: list[Envelope] = []
        self.sent: list[Envelope] = []  # everything ever sent, for replaying stale duplicates
        self.blocked: set[tuple[str, str]] = set()  # (src, to) links that lose messages
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.in_flight: dict[str, Ready] = {}  # a Ready whose write has not completed yet
        self.read_states: dict[str, list[ReadState]] = {i: [] for i in self.ids}
        self.restarts = 0
        for i in self.ids:
            self._boot(i)

    def _boot(self, node_id: str) -> None:
        disk = self.disks[node_id]
        cfg = RaftConfig(node_id=node_id, voters=self.ids, **self.config)  # type: ignore[arg-type]
        self.cores[node_id] = RaftCore(
            cfg, hard_state=disk.hard_state, entries=list(disk.entries),
            rng=random.Random(f"{self.seed}/{node_id}/{self.restarts}"))
        self.applied[node_id] = []  # the state machine is rebuilt from the log
        self.down.discard(node_id)

    def __getitem__(self, node_id: str) -> RaftCore:
        return self.cores[node_id]

    @property
    def live(self) -> list[str]:
        return [i for i in self.ids if i not in self.down]

    # -- the driver loop ---------------------------------------------------------------------------

    def flush(self, *node_ids: str, crash_before_persist: bool = False) -> None:
        """Drive the Ready cycle of the given nodes (default: all live ones) until idle.

        With crash_before_persist the node sends its early messages, then crashes before its
        write reaches the disk (the one window where a leader's entries are on the wire but not
        durable)."""
        for node_id in node_ids or tuple(self.live):
            if node_id in self.down:
                continue
            self.finish_ready(node_id)
            while self.begin_ready(node_id):
                if crash_before_persist:
                    self.crash(node_id)
                    break
                self.finish_ready(node_id)

    def begin_ready(self, node_id: str) -> bool:
        """First half of the Ready cycle: take a Ready and send its early messages. Its write is
        then in flight until finish_ready; meanwhile the core may be stepped and ticked, as the
        runtime does while the fsync runs in its disk thread. Returns whether there was one."""
        if node_id in self.down or node_id in self.in_flight:
            return False
        core = self.cores[node_id]
        if not core.has_ready():
            return False
        rd = self.in_flight[node_id] = core.ready()
        for env in rd.early_messages:
            self._send(node_id, env)
        return True

    def finish_ready(self, node_id: str) -> bool:
        """Second half: the write is durable; send the messages, apply, advance."""
        rd = self.in_flight.pop(node_id, None)
        if rd is None:
            return False
        self.disks[node_id].write(rd)
        for env in rd.messages:
            self._send(node_id, env)
        self.applied[node_id].extend(rd.committed)
        self.read_states[node_id].extend(rd.read_states)
        self.cores[node_id].advance(rd)
        return True

    def _send(self, src: str, env: Envelope) -> None:
        check_durable_before_sent(self.disks[src], env)
        self.sent.append(env)
        if (src, env.to) not in self.blocked:
            self.network.append(env)

    def deliver(self, *, to: str | None = None, kind: type | None = None,
                src: str | None = None, max_messages: int = 100_000) -> int:
        """Deliver queued messages in order (and whatever they cause) until none match.
        Each receiver runs its Ready cycle after each message. Returns how many were delivered."""
        n = 0
        while (i := self._find(to, kind, src)) is not None:
            assert n < max_messages, f"message storm: {max_messages} deliveries without quiet"
            self.deliver_at(i)
            n += 1
        return n

    def deliver_at(self, i: int, *, keep: bool = False, flush: bool = True) -> None:
        """Deliver network[i]; with keep=True it stays queued (a duplicate will follow)."""
        env = self.network[i] if keep else self.network.pop(i)
        src = env.message.src  # type: ignore[attr-defined]
        if env.to in self.down or (src, env.to) in self.blocked:
            return
        self.cores[env.to].step(env.message)
        if flush:
            self.flush(env.to)

    def drop(self, *, to: str | None = None, kind: type | None = None,
             src: str | None = None) -> list[object]:
        """Remove matching messages from the network and return them."""
        keep, dropped = [], []
        for env in self.network:
            (dropped if self._matches(env, to, kind, src) else keep).append(env)
        self.network = keep
        return [env.message for env in dropped]

    def queued(self, *, to: str | None = None, kind: type | None = None,
               src: str | None = None) -> list[object]:
        return [env.message for env in self.network if self._matches(env, to, kind, src)]

    def _find(self, to: str | None, kind: type | None, src: str | None) -> int | None:
        for i, env in enumerate(self.network):
            if self._matches(env, to, kind, src):
                return i
        return None

    @staticmethod
    def _matches(env: Envelope, to: str | None, kind: type | None, src: str | None) -> bool:
        return ((to is None or env.to == to) and (kind is None or isinstance(env.message, kind))
                and (src is None or env.message.src == src))  # type: ignore[attr-defined]

    def tick(self, *node_ids: str, times: int = 1) -> None:
        """Advance the clock of the given nodes (default: every live one), running their Ready
        cycle after each tick; messages stay queued."""
        for _ in range(times):
            for node_id in node_ids or tuple(self.live):
                if node_id not in self.down:
                    self.cores[node_id].tick()
                    self.flush(node_id)

    def run(self, ticks: int) -> None:
        """A calm network: every tick, all nodes tick and every message is delivered."""
        for _ in range(ticks):
            self.tick()
            self.deliver()

    # -- faults ------------------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        """Lose the node's memory (its unpersisted entries, its queued messages); keep its disk."""
        self.down.add(node_id)
        self.in_flight.pop(node_id, None)  # the write in flight never completes
        self.network = [env for env in self.network if env.to != node_id]

    def restart(self, node_id: str) -> None:
        self.restarts += 1
        self._boot(node_id)

    def partition(self, *groups: set[str] | frozenset[str]) -> None:
        """Cut every link between different groups (nodes in no group are cut from all)."""
        group_of = {n: gi for gi, g in enumerate(groups) for n in g}
        self.blocked = {(a, b) for a in self.ids for b in self.ids
                        if a != b and (a not in group_of or b not in group_of
                                       or group_of[a] != group_of[b])}

    def isolate(self, node_id: str) -> None:
        self.partition(set(self.ids) - {node_id})

    def heal(self) -> None:
        self.blocked = set()

    # -- scripted elections ------------------------------------------------------------------------

    def elect(self, node_id: str) -> RaftCore:
        """Time `node_id` out (no other clock moves) and deliver everything until it leads with
        its no-op committed."""
        core = self.cores[node_id]
        for _ in range(4 * core.config.election_ticks):
            self.tick(node_id)
            self.deliver()
            if core.is_leader and core.committed_in_current_term():
                return core
        raise AssertionError(f"{node_id} did not become leader: role {core.role}")

    def run_until_leader(self, among: set[str] | None = None, max_ticks: int = 500) -> RaftCore:
        """Let every clock run (calm network) until a node of `among` leads, its no-op
        committed."""
        for _ in range(max_ticks):
            for i in self.leaders():
                if (among is None or i in among) and self.cores[i].committed_in_current_term():
                    return self.cores[i]
            self.run(1)
        raise AssertionError(f"no leader among {among}")

    def leaders(self) -> list[str]:
        return [i for i in self.live if self.cores[i].is_leader]


def random_fault(c: Cluster, rng: random.Random, action: str) -> bool:
    """The fault actions random schedules share: drop or replay a message, crash or restart a
    node, partition or heal, start a leadership transfer. False if `action` is none of them
    (or has nothing to act on)."""
    live = c.live
    if action == "drop" and c.network:
        c.network.pop(rng.randrange(len(c.network)))
    elif action == "replay" and c.sent:
        # A long-delayed duplicate of any message sent so far.
        c.network.append(c.sent[rng.randrange(len(c.sent))])
    elif action == "crash" and live:
        c.crash(rng.choice(live))
    elif action == "restart" and c.down:
        c.restart(rng.choice(sorted(c.down)))
    elif action == "partition":
        if c.blocked or rng.random() < 0.3:
            c.heal()
        else:
            nodes = list(c.ids)
            rng.shuffle(nodes)
            cut = rng.randrange(1, len(nodes))
            c.partition(set(nodes[:cut]), set(nodes[cut:]))
    elif action == "transfer" and live:
        c[rng.choice(live)].transfer_leadership(rng.choice(c.ids))
    else:
        return False
    return True


def check_durable_before_sent(disk: Disk, env: Envelope) -> None:
    """A vote or an acknowledgement must not leave before what it promises is on disk.

    (A promise made at a term the node has since left, durably, is harmless: the node can never
    act in that term again, so a newer durable term also counts.)"""
    m = env.message
    hs = disk.hard_state or HardState(0, None)
    if isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
        assert hs.term > m.term or hs == HardState(m.term, env.to), (
            f"{m.src} granted its vote to {env.to} at term {m.term} but its disk says {hs}")
    elif isinstance(m, VoteRequest) and not m.pre_vote:
        assert hs.term > m.term or hs == HardState(m.term, m.src), (
            f"{m.src} asks for votes at term {m.term} before persisting its own vote ({hs})")
    elif isinstance(m, AppendResponse) and m.success:
        assert len(disk.entries) >= m.index, (
            f"{m.src} acknowledged index {m.index} with only {len(disk.entries)} entries on disk")
        assert m.index == 0 or disk.entries[m.index - 1].term <= m.term, (
            f"{m.src} acknowledged index {m.index} at term {m.term} but its disk holds "
            f"{disk.entries[m.index - 1]} there, from a later leader")
        assert hs.term >= m.term, (
            f"{m.src} answers at term {m.term} before persisting that term ({hs})")


# -- safety invariants over a whole run -----------------------------------------------------------


class SafetyMonitor:
    """Checks Raft's safety properties on a Cluster; call `check()` after every step."""

    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.leader_of_term: dict[int, str] = {}
        self.vote_of: dict[tuple[str, int], str] = {}  # (node, term) -> durable vote
        self.last_term: dict[str, int] = {}
        self.committed: list[Entry] = []  # every entry any node ever considered committed
        self.commit_term: list[int] = []  # for each: a term at or after the one it committed in
        self.read_floor: dict[object, int] = {}  # read context -> commit index when requested
        self.reads_confirmed = 0
        self.timeout_nows: set[TimeoutNow] = set()  # every TimeoutNow ever sent
        self.sent_seen = 0  # how much of Cluster.sent check_leases has looked at

    def request_read(self, node_id: str, ctx: object, *, lease: bool = False) -> None:
        self.read_floor[ctx] = len(self.committed)
        self.c[node_id].request_read(ctx, lease=lease)

    def check_leases(self) -> None:
        """While a leader holds a lease, no leader of a later term has been elected, and fewer
        than a quorum of nodes would vote for a new one (so none can be elected before the
        lease ends). Holds only when the nodes' clocks run at the same rate: call it only for
        such runs."""
        c = self.c
        self.timeout_nows.update(env.message for env in c.sent[self.sent_seen:]
                                 if isinstance(env.message, TimeoutNow))
        self.sent_seen = len(c.sent)
        newest = max(self.leader_of_term, default=0)
        # A crashed node with a durable term refuses votes when it restarts; one still at term 0
        # would vote at once.
        willing = [i for i in c.live if not c[i].refuses_votes()] + [
            i for i in c.down if (c.disks[i].hard_state or HardState(0, None)).term == 0]
        for i in c.live:
            core = c[i]
            remaining = core.lease_remaining_ticks()
            if remaining == 0:
                continue
            assert newest <= core.term, (
                f"{i} holds a lease of term {core.term} for {remaining} more ticks, but a "
                f"leader of term {newest} ({self.leader_of_term[newest]}) was elected")
            assert len(willing) < core.quorum, (
                f"{i} holds a lease for {remaining} more ticks, but {willing} would vote for a "
                f"new leader")
            # Votes asked on the leader's behalf are granted regardless: a TimeoutNow it sent
            # in this term (which the network may deliver, or replay, at any time) rules out
            # a lease.
            assert TimeoutNow(core.term, i) not in self.timeout_nows, (
                f"{i} holds a lease for {remaining} more ticks after sending TimeoutNow")

    def check(self) -> None:
        c = self.c
        live = c.live
        for i in live:
            core = c[i]
            # Election safety: at most one leader per term.
            if core.is_leader:
                other = self.leader_of_term.setdefault(core.term, i)
                assert other == i, f"two leaders in term {core.term}: {other} and {i}"
                # Leader completeness: a leader holds every entry committed in an earlier term.
                # (A stale leader of an old term need not: it will be deposed.)
                need = max((k + 1 for k, t in enumerate(self.commit_term) if t < core.term),
                           default=0)
                have = core.log.slice(1, need + 1)
                assert have == self.committed[:need], (
                    f"leader {i} (term {core.term}) lacks committed entries: "
                    f"{first_difference(have, self.committed[:need])}")
            # Committed entries: record new ones; old ones must never change on any node.
            ci = core.commit_index
            assert ci <= core.log.last_index, f"{i} commit {ci} beyond its log {core.log.last_index}"
            mine = core.log.slice(1, ci + 1)
            n = min(ci, len(self.committed))
            assert mine[:n] == self.committed[:n], (
                f"{i} changed a committed entry: {first_difference(mine[:n], self.committed[:n])}")
            if ci > len(self.committed):
                # The entry was committed at this node's term or an earlier one.
                self.commit_term.extend([core.term] * (ci - len(self.committed)))
                self.committed.extend(mine[len(self.committed):])
        for i in c.ids:
            # One durable vote per term, and the durable term never goes back.
            hs = c.disks[i].hard_state
            if hs is not None:
                assert hs.term >= self.last_term.get(i, 0), f"{i}'s durable term went back"
                self.last_term[i] = hs.term
                if hs.voted_for is not None:
                    prior = self.vote_of.setdefault((i, hs.term), hs.voted_for)
                    assert prior == hs.voted_for, (
                        f"{i} voted twice in term {hs.term}: {prior} then {hs.voted_for}")
            # Applied entries: a gap-free prefix of the committed sequence on every node.
            applied = c.applied[i]
            assert applied == self.committed[:len(applied)], (
                f"{i} applied {first_difference(applied, self.committed)}")
            for rs in c.read_states[i]:
                floor = self.read_floor.pop(rs.context, None)
                if rs.index is not None:
                    self.reads_confirmed += 1
                if rs.index is not None and floor is not None:
                    assert rs.index >= floor, (
                        f"stale read on {i}: index {rs.index} but {floor} was already committed "
                        f"when the read was requested")
            c.read_states[i].clear()
        # Log matching: same index and term => same entry and same prefix.
        logs = [(i, c[i].log.slice(1, c[i].log.last_index + 1)) for i in live]
        for a in range(len(logs)):
            for b in range(a + 1, len(logs)):
                check_log_matching(*logs[a], *logs[b])


def check_log_matching(a_id: str, a: list[Entry], b_id: str, b: list[Entry]) -> None:
    top = 0  # highest index at which both hold the same term
    for k in range(min(len(a), len(b)) - 1, -1, -1):
        if a[k].term == b[k].term:
            top = k + 1
            break
    assert a[:top] == b[:top], (
        f"log matching broken between {a_id} and {b_id} below index {top}: "
        f"{first_difference(a[:top], b[:top])}")


def first_difference(a: list[Entry], b: list[Entry]) -> str:
    for x, y in zip(a, b):
        if x != y:
            return f"at index {x.index}: {x} vs {y}"
    return f"lengths {len(a)} vs {len(b)}"
