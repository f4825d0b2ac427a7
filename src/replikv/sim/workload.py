"""Simulated clients: concurrent get / set / compare-and-set / delete / incr through random nodes,
on string keys, on the fields of hash keys, on the heads of list keys and on the members of
sorted set keys.

Each client issues one operation at a time to a randomly chosen node, waits for the reply or
its timeout, thinks for a moment, and goes on. Every operation is recorded for the
linearizability checker with its invocation and completion times and an outcome:
- ok: the reply, as the checker models it;
- fail: certainly had no effect (TRYAGAIN, or the node refused the connection);
- unknown: no reply in time, or UNKNOWN: it may or may not have taken effect.
Written values are unique decimal integers, so a read names the write it saw and INCR works on
any key.

Hash operations (HGET, HSET, HDEL, HINCRBY of one field) go to keys of their own, never touched
by the string operations, so each field is a register of its own and the checker's model holds
for it unchanged: the history records them as get / set / del / incr on the key "<hash>/<field>".
A hash is deleted when its last field is, and recreated by the next HSET or HINCRBY: the
passive-mode effects, undo and snapshots of hashes are exercised, and every replica's digest,
which covers them, must agree at the end.

List operations come in two kinds. On keys of their own, the head of a list is a register:
LPUSH sets it, LINDEX 0 reads it, DEL empties it (recorded as set / get / del on the list's
key). An LTRIM 0 n of those lists keeps their head, so it is sent but not recorded (it bounds
their length and pops from the tail). On two more keys, a churn of RPUSH, LPOP and RPOP with
counts, LMOVE, RPOPLPUSH, LMPOP, LSET, LINSERT, LREM and LTRIM is sent and not recorded: it
exercises every list effect and undo, and the convergence check (every replica's digest covers
the lists) is its oracle.

Sorted set operations come in the same two kinds. On keys of their own, the score of one member
is a register: ZADD sets it (to the written value, an integer a double holds exactly), ZSCORE
reads it, ZREM deletes it and ZINCRBY 1 increments it (recorded as set / get / del / incr on
"<zset>/<member>", the scores as the integers they are). On two more keys, a churn of ZADD with
options, ZINCRBY, ZREM, ZPOPMIN, ZPOPMAX, ZMPOP, the ZREMRANGEBY commands, ZRANGESTORE and
ZUNIONSTORE is sent and not recorded, for every sorted set effect and undo.

Each operation also draws its write concern (majority, all, or 1) and its read options
(linearizable or lease consistency; primary or nearest preference), all of which promise
linearizable results except w=1: a w=1 write may be lost in a failover, so its "ok" is recorded
as unknown for the checker, and its value is kept in `acked_w1` so the runner can check that
every lost one was saved in a rollback file. A w=all write that answers WTIMEOUT took effect
with an unrecorded result: unknown as well.

One more client does retryable writes: INCR of its own counter, each tagged with its session and
the next sequence number, retried with the same number through any node after an error or a
timeout until it is answered. Exactly once means the k-th INCR answers exactly k, however many
attempts, failovers and snapshot transfers it took.

With transactions on (SimConfig.transactions), a share of the operations are sent as
transactions: MULTI, the operation, an INCR of a side key, EXEC (the node core's internal form,
replikv.commands.transactions). The operation's reply is EXEC's first and is checked like any
other; the side key is not in the history, but every replica must end with the same value for
it (the convergence check), which it does only if each transaction applied whole, once. Half of
the writes sent so go as a client connection batches a pipeline's writes (`EXEC PIPELINE ...`),
and half of the reads as it batches a pipeline's reads (`EXEC-READS`, the read and a GET of the
side key). Half of the batched compare-and-sets and increments go instead as EVAL of a Lua
script doing the same (SCRIPTED): one entry (its effects, or in active mode the script every
replica runs), checked like the command it stands for.

With publishes on (SimConfig.publishes), clients also send unrecorded PUBLISH and SPUBLISH,
alone, in a transaction with a SET of a side key, or in a pipeline's batch between writes, from
a generator of their own. Their oracle is the cluster's (SimCluster._check_published): every
node delivers each committed entry's messages once, in log order, and nothing else.

With newer commands on (SimConfig.newer), clients also send, from a generator of their own,
unrecorded stream commands (XADD with trimming, XGROUP CREATE, XREADGROUP, XAUTOCLAIM, XACK,
XTRIM, XDEL), HyperLogLog writes (PFADD, PFMERGE), SORT ... STORE, GEOADD and
GEOSEARCHSTORE, one attempt of a blocking pop (BLPOP, BZPOPMIN, BLMOVE) after the pushes that
feed them, and functions (FUNCTION LOAD REPLACE and DELETE of a library, FCALL of its function,
which draws from math.random). Their oracle is the convergence check: every replica ends with
the same state (streams with their groups, pending entries and consumers, HLL bytes, function
libraries), through leaders undoing what they applied ahead and snapshots carrying them.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass

from replikv.check.history import Op
from replikv.commands.transactions import encode_exec, encode_reads
from replikv.concerns import RequestOptions
from replikv.replies import ErrorReply, Status
from replikv.sim.cluster import START_MS, SimCluster

KINDS = ("get", "set", "cas", "del", "incr", "hget", "hset", "hdel", "hincr",
         "lindex", "lpush", "ldel", "lchurn", "zscore", "zadd", "zrem", "zincr", "zchurn")
WEIGHTS = (40, 20, 15, 10, 15, 16, 10, 5, 6, 10, 8, 3, 12, 10, 8, 3, 4, 10)
# What each list operation is, for the checker: the head of a list is one register.
LIST_KINDS = {"lindex": "get", "lpush": "set", "ldel": "del"}
LIST_KEYS = (b"list0", b"list1")
LIST_LENGTH_MAX = 8  # LTRIM 0 7 after a push, now and then
CHURN_KEYS = (b"queue0", b"queue1")
# What each hash operation is, for the checker: one field of a hash is one register.
HASH_KINDS = {"hget": "get", "hset": "set", "hdel": "del", "hincr": "incr"}
HASH_KEYS = (b"hash0", b"hash1")
HASH_FIELDS = (b"f0", b"f1", b"f2")
# What each sorted set operation is, for the checker: one member's score is one register.
ZSET_KINDS = {"zscore": "get", "zadd": "set", "zrem": "del", "zincr": "incr"}
ZSET_KEYS = (b"zset0", b"zset1")
ZSET_MEMBERS = (b"m0", b"m1", b"m2")
ZSET_CHURN_KEYS = (b"ranked0", b"ranked1")
ZSET_CHURN_SCORES = (b"1", b"2.5", b"-1", b"inf", b"0", b"-0", b"1e20")
WRITE_CONCERNS = (("majority", 60), ("all", 15), ("1", 25))
SESSION_THINK_MS = (10, 60)  # between a pinned connection's reads
READ_OPTIONS = ((("primary", "linearizable"), 40), (("nearest", "linearizable"), 30),
                (("primary", "lease"), 15), (("nearest", "lease"), 15))
TRANSACTION_SHARE = 0.3  # of the operations, when transactions are on
# With transactions on, some operations go as EVAL of a script doing the same (KEYS[1] the key;
# for a compare-and-set ARGV[1] the new value, ARGV[2] the expected one).
SCRIPTED = {
    b"SET IFEQ": (b"if redis.call('get', KEYS[1]) == ARGV[2] then "
            b"return redis.call('set', KEYS[1], ARGV[1]) end return false"),
    b"INCR": b"return redis.call('incr', KEYS[1])",
}
TRANSACTION_SIDE_KEY = b"tx-side"
PUBLISH_SHARE = 0.15  # of the operations, when publishes are on: one PUBLISH is sent as well
PUBLISH_CHANNELS = (b"news", b"news.sport", b"alerts")
PUBLISH_SIDE_KEY = b"pub-side"
NEWER_SHARE = 0.2  # of the operations, when newer commands are on: one of them is sent as well
STREAM_KEY, HLL_KEYS, QUEUE_KEY, ZQUEUE_KEY = b"sx", (b"hx", b"hy"), b"lq", b"zq"
FUNCTION_KEY = b"fx"
FUNCTION_SHARE = 0.3  # of the newer commands: a function's load, call or delete
SIM_LIBRARY = (b"#!lua name=simlib\n"
               b"redis.register_function('sim_bump', function(keys, args)\n"
               b"  redis.call('sadd', keys[1] .. ':drawn', math.random(1000))\n"
               b"  return redis.call('incrby', keys[1], args[1]) end)\n")


@dataclass(slots=True)
class _Call:
    client: int
    kind: str  # the checker's kind: a hash operation is recorded as the register operation
    key: bytes  # for a hash operation: "<hash>/<field>"
    value: bytes | None
    expected: bytes | None
    node: str
    req_id: int
    call_ms: int
    options: RequestOptions
    done: bool = False
    transaction: bool = False  # sent inside MULTI ... EXEC


class Workload:
    def __init__(self, cluster: SimCluster, rng: random.Random, *, clients: int = 5,
                 keys: int = 4, timeout_ms: int = 3000, think_ms: tuple[int, int] = (0, 30),
                 kinds: tuple[str, ...] = KINDS,
                 transactions: random.Random | None = None,
                 publishes: random.Random | None = None,
                 newer: random.Random | None = None) -> None:
        self.cluster = cluster
        self.rng = rng
        # With a generator of their own (so that the other draws stay as they were), a share
        # of the operations go as transactions: MULTI, the operation, INCR of a side key, EXEC.
        self._tx_rng = transactions
        self.transactions_sent = 0
        self._pub_rng = publishes  # its own generator too (see the module docstring)
        self.publishes_sent = 0
        self._newer_rng = newer  # its own generator too (see the module docstring)
        self.newer_sent = 0
        self.scripts_sent = 0  # of those, operations sent as a Lua script (SCRIPTED)
        self.clients = clients
        self.keys = [f"k{i}".encode() for i in range(keys)]
        self.timeout_ms = timeout_ms
        self.think_ms = think_ms
        self.kinds = kinds
        self.weights = [WEIGHTS[KINDS.index(k)] for k in kinds]
        self.ops: list[Op] = []
        self.unexpected: list[str] = []
        self._pending: dict[tuple[str, int], _Call] = {}
        self._next_req = 0
        self._counter = 0
        self._seen: dict[bytes, bytes] = {}  # last value observed per key, for CAS
        self.stop_at_ms = 0
        # Writes (SET, CAS, HSET, LPUSH, ZADD) acknowledged at w=1: the values their log entry
        # holds, any of them (a ZADD's passive effect holds its score as a double).
        self.acked_w1: list[tuple[bytes | float, ...]] = []
        # (node, req) -> (incarnation, MAXSTALENESS of the read or None, when it was sent)
        self._session_reads: dict[tuple[str, int], tuple[int, int | None, int]] = {}
        self._incr_pending: set[tuple[str, int]] = set()
        self._churn_pending: set[tuple[str, int]] = set()  # unrecorded list operations
        self.churn_sent = 0
        self._incr_acked: list[tuple[int, int]] = []  # (time acked, highest value acked by then)
        # A follower's staleness is measured from when it processed news from the leader: the
        # news is at most one network delay old.
        faults = cluster.network.faults
        self.staleness_slack_ms = faults.delay_ms_max + (
            faults.delay_spike_ms if faults.spike else 0)
        self._floors: dict[str, int] = {}  # per pinned node: the highest counter read
        self._retry_seq = 0
        self._retry_req: tuple[str, int] | None = None  # the attempt whose answer counts
        self.retried_attempts = 0
        self._incarnations: dict[str, int] = {}
        cluster.on_reply = self._on_reply

    def start(self, until_ms: int, session_readers: int = 0) -> None:
        self.stop_at_ms = until_ms
        for c in range(self.clients):
            self._after(self.rng.randint(0, 50), lambda c=c: self._issue(c))
        for r in range(session_readers):
            node = self.cluster.ids[r % len(self.cluster.ids)]
            self._after(self.rng.randint(0, 50), lambda node=node: self._session_read(node))
        self._after(self.rng.randint(0, 50), self._next_retryable)

    # -- retryable writes: exactly-once INCR through failovers ----------------------------------

    RETRY_KEY = b"exactly-once"
    RETRY_SESSION = b"sim-retrying-client"

    def _next_retryable(self) -> None:
        if self.cluster.now_ms >= self.stop_at_ms:
            return
        self._retry_seq += 1
        self._attempt_retryable()

    def _attempt_retryable(self) -> None:
        if self.cluster.now_ms >= self.stop_at_ms + self.timeout_ms:
            return
        self._next_req += 1
        node = self.rng.choice(self.cluster.ids)
        key = self._retry_req = (node, self._next_req)
        options = RequestOptions(w=self.rng.choice(("majority", "all")), wtimeout_ms=1000,
                                 session=self.RETRY_SESSION, seq=self._retry_seq)
        self.cluster.submit(node, key[1], [b"INCR", self.RETRY_KEY], options)
        self._after(self.timeout_ms, lambda: self._retry_if_unanswered(key))

    def _retry_if_unanswered(self, key: tuple[str, int]) -> None:
        if self._retry_req == key:
            self.retried_attempts += 1
            self._attempt_retryable()

    def _on_retryable_reply(self, value: object) -> None:
        self._retry_req = None
        if type(value) is int:
            if value != self._retry_seq:
                self.unexpected.append(f"exactly-once: retryable INCR #{self._retry_seq} "
                                       f"answered {value}")
            self._after(self.rng.randint(0, 30), self._next_retryable)
            return
        if isinstance(value, ErrorReply) and value.code in ("TRYAGAIN", "UNKNOWN", "WTIMEOUT"):
            # WTIMEOUT: applied, but not yet on every voter; the retry is answered from the
            # session table with the reply it had.
            self.retried_attempts += 1
            self._after(self.rng.randint(10, 100), self._attempt_retryable)
            return
        self.unexpected.append(f"exactly-once: retryable INCR #{self._retry_seq} got {value!r}")

    # -- monotonic reads: one connection pinned to a node reads a counter at local consistency

    MONOTONIC_KEY = b"mono"
    LOCAL_NEAREST = RequestOptions(read_preference="nearest", read_consistency="local")

    def _session_read(self, node_id: str) -> None:
        """One read at a time per session, as a connection's replies come back in order."""
        if self.cluster.now_ms >= self.stop_at_ms:
            return
        node = self.cluster.nodes[node_id]
        if node.incarnation != self._incarnations.get(node_id):
            self._incarnations[node_id] = node.incarnation  # a restart closes the connection
            self._floors[node_id] = 0
        self._next_req += 1
        key = (node_id, self._next_req)
        options = self.LOCAL_NEAREST
        if self.rng.random() < 0.5:  # half the reads bound the replica's staleness
            options = RequestOptions(read_preference="nearest", read_consistency="local",
                                     max_staleness_ms=self.rng.choice((200, 600)))
        self._session_reads[key] = (node.incarnation, options.max_staleness_ms,
                                    self.cluster.now_ms)
        if self.rng.random() < 0.5:
            self._session_incr()
        if not self.cluster.submit(node_id, key[1], [b"GET", self.MONOTONIC_KEY], options):
            del self._session_reads[key]
            self._after(self.rng.randint(*SESSION_THINK_MS), lambda: self._session_read(node_id))
            return
        self._after(self.timeout_ms, lambda: self._session_timeout(key))

    def _session_timeout(self, key: tuple[str, int]) -> None:
        if self._session_reads.pop(key, None) is not None:
            self._session_read(key[0])

    def _session_incr(self) -> None:
        self._next_req += 1
        node = self.rng.choice(self.cluster.ids)
        self._incr_pending.add((node, self._next_req))
        self.cluster.submit(node, self._next_req, [b"INCR", self.MONOTONIC_KEY])

    def _on_incr_reply(self, value: object) -> None:
        if type(value) is int:  # acknowledged: committed by now
            best = max(value, self._incr_acked[-1][1]) if self._incr_acked else value
            self._incr_acked.append((self.cluster.now_ms, best))

    def _on_session_read(self, node_id: str, req_id: int, value: object) -> None:
        incarnation, bound_ms, sent_ms = self._session_reads.pop((node_id, req_id))
        node = self.cluster.nodes[node_id]
        if incarnation == node.incarnation and not isinstance(value, ErrorReply):
            seen = int(value) if isinstance(value, bytes) else 0  # GET: bytes or None
            floor = self._floors.get(node_id, 0)
            if seen < floor:
                self.unexpected.append(f"monotonic reads: a session on {node_id} read {seen} "
                                       f"after {floor}")
            self._floors[node_id] = max(floor, seen)
            if bound_ms is not None:
                self._check_staleness(node_id, seen, bound_ms, sent_ms)
        self._after(self.rng.randint(*SESSION_THINK_MS), lambda: self._session_read(node_id))

    def _check_staleness(self, node_id: str, seen: int, bound_ms: int, sent_ms: int) -> None:
        """A read that MAXSTALENESS let through must include every increment acknowledged
        more than bound + one network delay before it was sent (it ran at or after that; its
        reply may leave later, after a slow fsync). A node that was just resumed from a pause
        judges its staleness by news it processed late: the README documents that gap, and
        such reads are not judged here."""
        now = self.cluster.now_ms
        node = self.cluster.nodes[node_id]
        if now - node.resumed_at_ms < bound_ms + self.staleness_slack_ms + 1000:
            return
        cutoff = sent_ms - bound_ms - self.staleness_slack_ms
        pos = bisect_right(self._incr_acked, (cutoff, float("inf")))
        required = self._incr_acked[pos - 1][1] if pos else 0
        if seen < required:
            self.unexpected.append(
                f"max staleness: {node_id} answered {seen} under MAXSTALENESS {bound_ms} ms, "
                f"but {required} was acknowledged {now - self._incr_acked[pos - 1][0]} ms "
                f"before")

    def _after(self, delay_ms: int, fn) -> None:
        self.cluster.schedule(self.cluster.now_ms + delay_ms, ("call", fn))

    def _issue(self, client: int) -> None:
        if self.cluster.now_ms >= self.stop_at_ms:
            return
        if self._pub_rng is not None and self._pub_rng.random() < PUBLISH_SHARE:
            self._publish(self._pub_rng)
        if self._newer_rng is not None and self._newer_rng.random() < NEWER_SHARE:
            self._newer(self._newer_rng)
        kind = self.rng.choices(self.kinds, self.weights)[0]
        if kind == "lchurn" or kind == "zchurn":
            self._churn() if kind == "lchurn" else self._zset_churn()
            lo, hi = self.think_ms
            self._after(self.rng.randint(lo, hi), lambda: self._issue(client))
            return
        if kind in LIST_KINDS:
            key = self.rng.choice(LIST_KEYS)
            if kind == "lpush" and self.rng.random() < 0.3:
                self._send_unrecorded([b"LTRIM", key, b"0", str(LIST_LENGTH_MAX - 1).encode()])
        elif kind in HASH_KINDS:
            hash_key, field = self.rng.choice(HASH_KEYS), self.rng.choice(HASH_FIELDS)
            key = hash_key + b"/" + field
        elif kind in ZSET_KINDS:
            zset_key, member = self.rng.choice(ZSET_KEYS), self.rng.choice(ZSET_MEMBERS)
            key = zset_key + b"/" + member
        else:
            key = self.rng.choice(self.keys)
        value = expected = None
        if kind in ("set", "cas", "hset", "lpush", "zadd"):
            self._counter += 1
            value = str(client * 1_000_000 + self._counter).encode()
        if kind == "cas":
            expected = self._seen.get(key) or str(self.rng.randint(0, 5)).encode()
        if kind in HASH_KINDS:
            argv = {
                "hget": [b"HGET", hash_key, field],
                "hset": [b"HSET", hash_key, field, value or b""],
                "hdel": [b"HDEL", hash_key, field],
                "hincr": [b"HINCRBY", hash_key, field, b"1"],
            }[kind]
            kind = HASH_KINDS[kind]
        elif kind in LIST_KINDS:
            argv = {
                "lindex": [b"LINDEX", key, b"0"],
                "lpush": [b"LPUSH", key, value or b""],
                "ldel": [b"DEL", key],
            }[kind]
            kind = LIST_KINDS[kind]
        elif kind in ZSET_KINDS:
            argv = {
                "zscore": [b"ZSCORE", zset_key, member],
                "zadd": [b"ZADD", zset_key, value or b"0", member],
                "zrem": [b"ZREM", zset_key, member],
                "zincr": [b"ZINCRBY", zset_key, b"1", member],
            }[kind]
            kind = ZSET_KINDS[kind]
        else:
            argv = {
                "get": [b"GET", key],
                "set": [b"SET", key, value or b""],
                "cas": [b"SET", key, value or b"", b"IFEQ", expected or b""],
                "del": [b"DEL", key],
                "incr": [b"INCR", key],
            }[kind]
        node = self.rng.choice(self.cluster.ids)
        self._next_req += 1
        if kind == "get":
            (preference, consistency), = self.rng.choices(
                [o for o, _ in READ_OPTIONS], [w for _, w in READ_OPTIONS])
            options = RequestOptions(read_preference=preference, read_consistency=consistency)
        else:
            w, = self.rng.choices([o for o, _ in WRITE_CONCERNS], [w for _, w in WRITE_CONCERNS])
            options = RequestOptions(w=w, wtimeout_ms=1000)
        call = _Call(client, kind, key, value, expected, node, self._next_req, self.cluster.now_ms,
                     options)
        if self._tx_rng is not None and self._tx_rng.random() < TRANSACTION_SHARE:
            # The operation's reply is the first of EXEC's; the side key is never checked, but
            # the transaction must apply whole at one place in the log for the first to be
            # linearizable, and every replica must agree on both keys (the convergence check).
            # Half the writes go as a batch of a pipeline's writes instead (the same entry but
            # for its mark, as a client connection batches them).
            # Half the reads go as a batch of a pipeline's reads (EXEC-READS, with a GET of
            # the side key), with their own read options: a read, never in the log.
            batch = self._tx_rng.random() < 0.5
            script = SCRIPTED.get(b" ".join(argv[:1] + argv[3:4])) if batch else None
            if script is not None and self._tx_rng.random() < 0.5:
                # A quarter of the compare-and-sets and increments go as a Lua script that
                # does the same (EVAL: one entry, effects or the script itself).
                argv = [b"EVAL", script, b"1", *argv[1:2], *argv[2:3], *argv[4:5]]
                self.scripts_sent += 1
            elif kind == "get" and batch:
                argv = encode_reads([argv, [b"GET", TRANSACTION_SIDE_KEY]])
                call.transaction = True
            else:
                argv = encode_exec([argv, [b"INCR", TRANSACTION_SIDE_KEY]], pipeline=batch)
                options = RequestOptions(w=options.w, wtimeout_ms=1000)
                call.transaction = True
            self.transactions_sent += 1
        self._pending[(node, call.req_id)] = call
        if not self.cluster.submit(node, call.req_id, argv, options):
            self._complete(call, "fail", None)  # connection refused: nothing was sent
            return
        self._after(self.timeout_ms, lambda: self._timeout(call))

    def _churn(self) -> None:
        """One unrecorded list operation on the churn keys (see the module docstring)."""
        rng = self.rng
        key, other = rng.sample(CHURN_KEYS, 2)
        self._counter += 1
        element = str(self._counter % 7).encode()  # few distinct values: LREM and LPOS match
        end = rng.choice((b"LEFT", b"RIGHT"))
        count = str(rng.randint(1, 3)).encode()
        argv = rng.choice((
            [b"RPUSH", key, element, element + b"x"],
            [b"LPUSH", key, element],
            [b"RPUSH", key, element],
            [b"LPOP", key, count],
            [b"RPOP", key],
            [b"LMOVE", key, other, end, rng.choice((b"LEFT", b"RIGHT"))],
            [b"RPOPLPUSH", key, key],
            [b"LMPOP", b"2", key, other, end, b"COUNT", count],
            [b"LSET", key, rng.choice((b"0", b"-1", b"2")), element],
            [b"LINSERT", key, rng.choice((b"BEFORE", b"AFTER")), element, element + b"i"],
            [b"LREM", key, rng.choice((b"0", b"1", b"-2")), element],
            [b"LTRIM", key, b"0", b"9"],
            [b"LTRIM", key, b"1", b"-1"],
        ))
        self._send_unrecorded(argv)

    def _zset_churn(self) -> None:
        """One unrecorded sorted set operation on the churn keys (see the module docstring)."""
        rng = self.rng
        key, other = rng.sample(ZSET_CHURN_KEYS, 2)
        self._counter += 1
        member = b"m%d" % (self._counter % 9)
        score = rng.choice(ZSET_CHURN_SCORES)
        count = str(rng.randint(1, 3)).encode()
        argv = rng.choice((
            [b"ZADD", key, score, member, rng.choice(ZSET_CHURN_SCORES), member + b"x"],
            [b"ZADD", key, rng.choice((b"NX", b"XX", b"GT", b"LT", b"CH")), score, member],
            [b"ZINCRBY", key, rng.choice((b"1", b"-0.5")), member],
            [b"ZREM", key, member, member + b"x"],
            [rng.choice((b"ZPOPMIN", b"ZPOPMAX")), key, count],
            [b"ZMPOP", b"2", key, other, rng.choice((b"MIN", b"MAX")), b"COUNT", count],
            [b"ZREMRANGEBYRANK", key, b"0", b"-6"],
            [b"ZREMRANGEBYSCORE", key, b"(1", b"inf"],
            [b"ZRANGESTORE", other, key, b"0", b"4"],
            [b"ZUNIONSTORE", other, b"2", key, other, b"AGGREGATE", b"MAX"],
        ))
        self._send_unrecorded(argv)

    def _send_unrecorded(self, argv: list[bytes]) -> None:
        self._next_req += 1
        node = self.rng.choice(self.cluster.ids)
        self._churn_pending.add((node, self._next_req))
        self.churn_sent += 1
        self.cluster.submit(node, self._next_req, argv,
                            RequestOptions(w="majority", wtimeout_ms=1000))

    def _publish(self, rng: random.Random) -> None:
        """One unrecorded PUBLISH or SPUBLISH: alone, in MULTI ... EXEC, or in a pipeline's
        batch of writes."""
        self.publishes_sent += 1
        message = b"m%d" % self.publishes_sent
        channel = rng.choice(PUBLISH_CHANNELS)
        publish = [rng.choice((b"PUBLISH", b"PUBLISH", b"SPUBLISH")), channel, message]
        form = rng.random()
        if form < 0.5:
            argv = publish
        elif form < 0.75:
            argv = encode_exec([publish, [b"SET", PUBLISH_SIDE_KEY, message]])
        else:
            argv = encode_exec([[b"SET", PUBLISH_SIDE_KEY, message], publish,
                                [b"PUBLISH", channel, message + b"+"]], pipeline=True)
        self._next_req += 1
        node = rng.choice(self.cluster.ids)
        self._churn_pending.add((node, self._next_req))
        self.cluster.submit(node, self._next_req, argv,
                            RequestOptions(w=rng.choice(("majority", "1")), wtimeout_ms=1000))

    def _newer(self, rng: random.Random) -> None:
        """One unrecorded stream, HyperLogLog, blocking-pop or function command (see the
        docstring)."""
        self.newer_sent += 1
        n = b"%d" % self.newer_sent
        group, consumer = b"g", b"c%d" % rng.randint(1, 3)
        choices = [
            [b"XADD", STREAM_KEY, b"MAXLEN", b"~", b"40", b"*", b"f", n],
            [b"XADD", STREAM_KEY, b"*", b"f", n, b"g", n + n],
            [b"XGROUP", b"CREATE", STREAM_KEY, group, b"0", b"MKSTREAM"],
            [b"XREADGROUP", b"GROUP", group, consumer, b"COUNT", b"3", b"STREAMS", STREAM_KEY,
             b">"],
            [b"XAUTOCLAIM", STREAM_KEY, group, consumer, b"0", b"0-0", b"COUNT", b"2"],
            [b"XACK", STREAM_KEY, group, b"%d-0" % rng.randint(0, 9)],
            [b"XTRIM", STREAM_KEY, b"MINID", b"%d" % (START_MS + rng.randint(0, 30_000))],
            [b"XDEL", STREAM_KEY, b"0-1"],
            [b"PFADD", rng.choice(HLL_KEYS), *(b"e%d" % rng.randint(0, 5000) for _ in range(3))],
            [b"PFMERGE", b"hm", *HLL_KEYS],
            [b"RPUSH", QUEUE_KEY, n], [b"BLPOP", QUEUE_KEY, b"0"],
            [b"BLMOVE", QUEUE_KEY, QUEUE_KEY + b"2", b"LEFT", b"RIGHT", b"1"],
            [b"ZADD", ZQUEUE_KEY, n, n], [b"BZPOPMIN", ZQUEUE_KEY, b"0.5"],
            [b"SORT", QUEUE_KEY, b"ALPHA", b"DESC", b"LIMIT", b"0", b"5", b"STORE", b"sorted"],
            [b"SORT", ZQUEUE_KEY, b"BY", b"nosort", b"GET", b"#", b"STORE", b"zsorted"],
            [b"GEOADD", b"places", b"%d.%d" % (rng.randint(-179, 179), rng.randint(0, 99)),
             b"%d.%d" % (rng.randint(-85, 84), rng.randint(0, 99)), b"p%d" % rng.randint(0, 30)],
            [b"GEOSEARCHSTORE", b"near", b"places", b"FROMLONLAT", b"0", b"0", b"BYRADIUS",
             b"%d" % rng.randint(100, 20000), b"km", b"ASC", b"COUNT", b"5", b"STOREDIST"],
        ]
        if rng.random() < FUNCTION_SHARE:
            # Loads often enough that most calls find the function, a delete now and then.
            choices = [[b"FUNCTION", b"LOAD", b"REPLACE", SIM_LIBRARY],
                       *[[b"FCALL", b"sim_bump", b"1", FUNCTION_KEY, n]] * 4,
                       [b"FUNCTION", b"DELETE", b"simlib"]]
        self._next_req += 1
        node = rng.choice(self.cluster.ids)
        self._churn_pending.add((node, self._next_req))
        self.cluster.submit(node, self._next_req, rng.choice(choices),
                            RequestOptions(w=rng.choice(("majority", "1")), wtimeout_ms=1000))

    def _on_churn_reply(self, node: str, value: object) -> None:
        if (isinstance(value, ErrorReply)
                and value.code not in ("TRYAGAIN", "UNKNOWN", "WTIMEOUT", "BUSYGROUP",
                                       "NOGROUP")
                and value.message not in ("ERR no such key", "ERR index out of range",
                                          "ERR resulting score is not a number (NaN)",
                                          "ERR Function not found", "ERR Library not found")):
            self.unexpected.append(f"churn on {node}: unexpected error {value.message!r}")

    def _timeout(self, call: _Call) -> None:
        if not call.done:
            self._complete(call, "unknown", None)

    def _on_reply(self, node: str, req_id: int, value: object) -> None:
        if (node, req_id) == self._retry_req:
            self._on_retryable_reply(value)
            return
        if (node, req_id) in self._incr_pending:
            self._incr_pending.discard((node, req_id))
            self._on_incr_reply(value)
            return
        if (node, req_id) in self._churn_pending:
            self._churn_pending.discard((node, req_id))
            self._on_churn_reply(node, value)
            return
        if (node, req_id) in self._session_reads:
            self._on_session_read(node, req_id, value)
            return
        call = self._pending.get((node, req_id))
        if call is None or call.done:
            return
        if call.transaction and isinstance(value, list):
            value = value[0]  # EXEC's reply: the operation's, then the side key's
        if isinstance(value, float):  # ZSCORE, ZINCRBY: the integer the register holds
            value = b"%d" % value if call.kind == "get" else int(value)
        if isinstance(value, ErrorReply):
            if value.code == "TRYAGAIN":
                self._complete(call, "fail", None)
            elif value.code in ("UNKNOWN", "WTIMEOUT"):
                self._complete(call, "unknown", None)
            else:
                self.unexpected.append(f"client {call.client} {call.kind} {call.key!r} on "
                                       f"{node}: unexpected error {value.message!r}")
                self._complete(call, "fail", None)
            return
        # SET and CAS always carry a value: the `is not None` tests only tell the type checker.
        if call.kind == "get":
            result = value
            if isinstance(value, bytes):  # GET: bytes or None
                self._seen[call.key] = value
        elif call.kind == "cas":
            result = value == Status("OK")
            if result and call.value is not None:
                self._seen[call.key] = call.value
        elif call.kind == "set":
            result = None
            if call.value is not None:
                self._seen[call.key] = call.value
        else:
            result = value
        if call.options.w == "1" and call.kind != "get":
            # Acknowledged once durable on the leader only: a failover may undo it.
            if call.value is not None and (call.kind == "set" or (call.kind == "cas" and result)):
                scored = call.key.partition(b"/")[0] in ZSET_KEYS
                self.acked_w1.append((call.value, float(call.value)) if scored else (call.value,))
            self._complete(call, "unknown", None)
            return
        self._complete(call, "ok", result)

    def _complete(self, call: _Call, outcome: str, result: object) -> None:
        call.done = True
        self._pending.pop((call.node, call.req_id), None)
        now = self.cluster.now_ms
        self.ops.append(Op(
            client=call.client, key=call.key, kind=call.kind, value=call.value,
            expected=call.expected, call_ns=call.call_ms * 1_000_000,
            return_ns=None if outcome == "unknown" else now * 1_000_000,
            outcome=outcome, result=result))
        lo, hi = self.think_ms
        self._after(self.rng.randint(lo, hi), lambda: self._issue(call.client))

    def finish(self) -> None:
        """Operations still waiting when the run ends have an unknown outcome."""
        for call in list(self._pending.values()):
            if not call.done:
                call.done = True
                self.ops.append(Op(
                    client=call.client, key=call.key, kind=call.kind, value=call.value,
                    expected=call.expected, call_ns=call.call_ms * 1_000_000, return_ns=None,
                    outcome="unknown", result=None))
        self._pending.clear()
