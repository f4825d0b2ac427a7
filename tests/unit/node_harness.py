"""A tiny deterministic driver for several NodeCores: in-memory network, disk and clock.

It drives the node cores exactly as the asyncio runtime does (ready → deliver replies → send
early messages → persist → send messages → advance), so node-level behaviour can be tested
message by message. Messages are delivered only when the test says so, which lets a test
partition, drop or hold them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from replikv import features
from replikv.concerns import DEFAULT_OPTIONS, RequestOptions
from replikv.node import NodeConfig, NodeCore, RolledBack
from replikv.pubsub import Published
from replikv.raft.core import RaftConfig, RaftCore
from replikv.raft.messages import Entry
from replikv.state import KVState
from replikv.storage.hardstate import HardState

TICK_MS = 50


@dataclass
class Disk:
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    rolled_back: list[RolledBack] = field(default_factory=list)  # the rollback files

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        del self.entries[first - 1:]
        self.entries.extend(entries)


class Cluster:
    def __init__(self, ids=("n1", "n2", "n3"), *, seed: int = 1, request_timeout_ms: int = 2000,
                 replication: str = "passive", levels: dict[str, int] | None = None):
        self.ids = tuple(ids)
        self.levels = dict(levels or {})  # feature levels members advertise, if not this one's
        self.replication = replication
        self.seed = seed
        self.request_timeout_ms = request_timeout_ms
        self.now_ms = 1_000_000
        self.disks = {i: Disk() for i in self.ids}
        self.nodes: dict[str, NodeCore] = {}
        self.down: set[str] = set()
        self.queue: list[tuple[str, str, object]] = []  # (to, src, message)
        self.replies: dict[str, dict[int, object]] = {i: {} for i in self.ids}
        # What each node handed its driver to deliver to subscribers (NodeReady.published).
        self.published: dict[str, list[Published]] = {i: [] for i in self.ids}
        self.blocked: set[tuple[str, str]] = set()  # (src, to) pairs whose messages are dropped
        self.sent_log: list[tuple[str, str, object]] = []
        # deliver() sends a commit index nothing carried once the network is quiet, as the
        # server does after COMMIT_BROADCAST_DELAY_S; False: as if that delay never passed.
        self.broadcast_when_quiet = True
        self._req = 0
        for i in self.ids:
            self.start(i)

    def start(self, node_id: str) -> None:
        disk = self.disks[node_id]
        raft = RaftCore(RaftConfig(node_id=node_id, voters=self.ids),
                        hard_state=disk.hard_state, entries=list(disk.entries),
                        rng=random.Random(f"{self.seed}-{node_id}-{len(self.sent_log)}"))
        self.nodes[node_id] = NodeCore(
            NodeConfig(node_id=node_id, request_timeout_ms=self.request_timeout_ms,
                       replication=self.replication), raft, KVState(),
            rng=random.Random(f"node-{self.seed}-{node_id}"))
        # As the runtime's peer links would: every member has advertised its feature level
        # (this replikv's, unless a test says otherwise in `levels`).
        for other in self.ids:
            if other != node_id:
                self.nodes[node_id].peer_features(other, self.levels.get(other, features.FEATURE_LEVEL))
        self.down.discard(node_id)

    def crash(self, node_id: str) -> None:
        """Lose everything in memory; the disk keeps what was persisted."""
        self.down.add(node_id)
        self.queue = [m for m in self.queue if m[0] != node_id]

    # -- driving --------------------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.has_ready():
            rd = node.ready()
            for req_id, value in rd.replies:
                self.replies[node_id][req_id] = value
            self.published[node_id].extend(rd.published)
            for env in rd.early_messages:
                self._send(node_id, env.to, env.message)
            disk = self.disks[node_id]
            disk.rolled_back.extend(rd.rolled_back)
            disk.append(rd.raft.entries)
            if rd.raft.hard_state is not None:
                disk.hard_state = rd.raft.hard_state
            for env in rd.raft.messages:
                self._send(node_id, env.to, env.message)
            node.advance(rd)

    def _send(self, src: str, to: str, message: object) -> None:
        self.sent_log.append((src, to, message))
        if (src, to) not in self.blocked:
            self.queue.append((to, src, message))

    def deliver(self, max_messages: int = 100_000) -> None:
        """Deliver messages until the network is quiet. A leader's commit index that no
        AppendRequest carried is then sent, as the server does COMMIT_BROADCAST_DELAY_S later."""
        n = 0
        while n < max_messages:
            if not self.queue:
                lagging = [i for i, node in self.nodes.items() if self.broadcast_when_quiet
                           and i not in self.down and node.raft.commit_unsent]
                if not lagging:
                    break
                for i in lagging:
                    self.nodes[i].raft.broadcast_commit()
                    self.process(i)
                continue
            to, src, message = self.queue.pop(0)
            n += 1
            if to in self.down or (src, to) in self.blocked:
                continue
            self.nodes[to].step(src, message, self.now_ms)
            self.process(to)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.now_ms += TICK_MS
            for i in self.ids:
                if i not in self.down:
                    self.nodes[i].tick(self.now_ms)
                    self.process(i)
            self.deliver()

    def elect(self, max_ticks: int = 200) -> str:
        for _ in range(max_ticks):
            leaders = [i for i in self.ids if i not in self.down and self.nodes[i].raft.is_leader]
            if len(leaders) == 1 and self.nodes[leaders[0]].raft.committed_in_current_term():
                return leaders[0]
            self.tick()
        raise AssertionError("no leader elected")

    def partition(self, *groups: set[str]) -> None:
        self.blocked = {(a, b) for g1 in groups for g2 in groups if g1 is not g2
                        for a in g1 for b in g2}

    def heal(self) -> None:
        self.blocked = set()

    # -- clients --------------------------------------------------------------------------------

    def submit(self, node_id: str, *argv: bytes | str, options: RequestOptions = DEFAULT_OPTIONS,
               session: int | None = None) -> int:
        self._req += 1
        args = [a.encode() if isinstance(a, str) else a for a in argv]
        self.nodes[node_id].submit(self._req, args, self.now_ms, options, session)
        self.process(node_id)
        return self._req

    def reply(self, node_id: str, req_id: int) -> object:
        return self.replies[node_id].get(req_id, _MISSING)

    def call(self, node_id: str, *argv: bytes | str, max_ticks: int = 100,
             options: RequestOptions = DEFAULT_OPTIONS, session: int | None = None) -> object:
        req = self.submit(node_id, *argv, options=options, session=session)
        for _ in range(max_ticks):
            self.deliver()
            if req in self.replies[node_id]:
                return self.replies[node_id][req]
            self.tick()
        raise AssertionError(f"no reply to {argv} on {node_id}")


class _Missing:
    def __repr__(self) -> str:
        return "<no reply yet>"


_MISSING = _Missing()
MISSING = _MISSING
