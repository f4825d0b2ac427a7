"""GET /metrics: the node's state and counters in Prometheus's text format (prometheus-client).

Most figures already live in the node as plain numbers (the term, the indexes, counters the
cores keep); a collector reads them when Prometheus scrapes, so serving requests costs nothing
extra for them. Three things are measured as they happen: fsync durations and the time the
cores spend in a Ready cycle that applies entries (histograms), and the commit latency of the
writes this node proposed as leader, from proposal to commit (a histogram fed from
NodeCore.commit_latencies_ms). Client commands are counted by name and outcome in the
connection code (`count_command`); only known command names become labels, so a client cannot
grow the label set.

Names follow Prometheus's conventions: a `replikv_` prefix, base units (seconds, bytes),
`_total` on counters. Each node has its own registry (tests run several nodes in one process).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from replikv import __version__
from replikv.storage.disk_space import DISK_LOW

if TYPE_CHECKING:
    from replikv.server.runtime import NodeServer

CONTENT_TYPE = CONTENT_TYPE_LATEST
ERROR_CODES_MAX = 128  # error codes INFO errorstats tells apart, as Redis's (later new ones: none)
ROLES = ("leader", "follower", "candidate", "pre-candidate", "standby", "not a member")
# Seconds. fsync: a fast SSD's 0.1 ms to a struggling disk's second.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5)
APPLY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 1.0)
# The cores count in whole milliseconds, so the first bucket is 1 ms.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """A histogram kept as plain counts (observing is a bisect and two additions, no lock:
    one is observed per committed write on the leader's hot path) and rendered at scrape
    time. Observed from the loop and from the disk thread: a lost increment under a race
    would only blur a statistic, never the data."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class NodeMetrics:
    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=False)
        self.fsync_seconds = {"wal": Buckets(FSYNC_BUCKETS), "hardstate": Buckets(FSYNC_BUCKETS)}
        self.apply_seconds = Buckets(APPLY_BUCKETS)
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.commands: Counter[tuple[str, bool]] = Counter()
        # INFO commandstats and errorstats (replikv.server.slowlog says what a command's time
        # is): microseconds by command name, and error replies by code (at most
        # ERROR_CODES_MAX codes, as Redis keeps). CONFIG RESETSTAT keeps the counts as they
        # were then in `_stats_base`, and INFO shows what came since; /metrics counts on.
        self.command_usec: defaultdict[str, float] = defaultdict(float)
        self.errors: Counter[str] = Counter()
        self._stats_base: tuple[Counter[tuple[str, bool]], dict[str, float], Counter[str]] = (
            Counter(), {}, Counter())
        # Pipelined writes a client connection batched into one request and log entry, and
        # pipelined reads batched into one request.
        self.pipeline_batches = 0
        self.pipeline_batched_commands = 0
        self.pipeline_read_batches = 0
        self.pipeline_batched_reads = 0
        # Log entries that joined the plain writes of several connections (runtime.py,
        # NodeServer._submit_gathered), and the requests in them.
        self.joined_write_batches = 0
        self.joined_write_requests = 0
        self.registry.register(_NodeCollector(self))

    def count_command(self, name: str, ok: bool, usec: float = 0.0) -> None:
        self.commands[(name, ok)] += 1
        if usec:
            self.command_usec[name] += usec

    def count_error(self, code: str) -> None:
        """An error reply of this code (its first word: ERR, WRONGTYPE, ...)."""
        errors = self.errors
        if code in errors or len(errors) < ERROR_CODES_MAX:
            errors[code] += 1

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT: INFO commandstats and errorstats count from now."""
        self._stats_base = (Counter(self.commands), dict(self.command_usec),
                            Counter(self.errors))

    def commandstats(self) -> list[tuple[str, object]]:
        """INFO commandstats: Redis's line for each command answered since the last RESETSTAT
        (rejected_calls is always 0: a command refused before it ran counts as failed)."""
        base_commands, base_usec, _ = self._stats_base
        calls: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for (name, ok), n in self.commands.items():
            n -= base_commands[(name, ok)]
            if n:
                calls[name] += n
                if not ok:
                    failed[name] += n
        out: list[tuple[str, object]] = []
        for name in sorted(calls):
            usec = int(self.command_usec.get(name, 0.0) - base_usec.get(name, 0.0))
            line = (f"calls={calls[name]},usec={usec},usec_per_call={usec / calls[name]:.2f},"
                    f"rejected_calls=0,failed_calls={failed[name]}")
            out.append((f"cmdstat_{name}", line))
        return out

    def errorstats(self) -> list[tuple[str, object]]:
        """INFO errorstats: error replies by code since the last RESETSTAT."""
        base = self._stats_base[2]
        return [(f"errorstat_{code}", f"count={n - base[code]}")
                for code, n in sorted(self.errors.items()) if n - base[code]]

    def count_pipeline_batch(self, commands: int, kind: str = "write") -> None:
        if kind == "write":
            self.pipeline_batches += 1
            self.pipeline_batched_commands += commands
        else:
            self.pipeline_read_batches += 1
            self.pipeline_batched_reads += commands

    def count_joined_batch(self, requests: int) -> None:
        self.joined_write_batches += 1
        self.joined_write_requests += requests

    def observe_commits(self, latencies_ms: list[int]) -> None:
        observe = self.commit_seconds.observe
        for ms in latencies_ms:
            observe(ms / 1000)

    def histograms(self) -> Iterator[Metric]:
        fsync = HistogramMetricFamily(
            "replikv_fsync_duration_seconds", "Time one fsync of the log (wal) or of the hard "
            "state (hardstate) took.", labels=["file"])
        for label, b in self.fsync_seconds.items():
            fsync.add_metric([label], b.cumulative(), b.sum)
        yield fsync
        for name, doc, b in (
                ("replikv_apply_duration_seconds", ("Time the cores spent on one Ready cycle "
                 "that applied committed entries (applying them, answering their clients, "
                 "routing reads)."), self.apply_seconds),
                ("replikv_write_commit_duration_seconds", ("Leader: time from proposing a "
                 "client write to its commit (milliseconds resolution)."),
                 self.commit_seconds)):
            yield HistogramMetricFamily(name, doc, buckets=b.cumulative(), sum_value=b.sum)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector:
    """The node's current state, read at scrape time."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        server = self.metrics.server
        node, raft, s = server.node, server.node.raft, server.settings
        status = server.status()

        def gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value, unit=unit)

        info = GaugeMetricFamily("replikv_node_info", "This node: always 1, with its identity "
                                 "in labels.", labels=["node_id", "cluster_id", "version",
                                                       "replication", "fsync"])
        info.add_metric([server.node_id, s.cluster_id, __version__, s.replication, s.fsync], 1)
        yield info
        role = GaugeMetricFamily("replikv_role", "1 for the role this node has now (standby: a "
                                 "non-voting member).", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1 if status["role"] == name else 0)
        yield role
        yield gauge("replikv_term", "The current Raft term.", raft.term)
        yield gauge("replikv_commit_index", "The highest log index known committed.",
                    raft.commit_index)
        yield gauge("replikv_applied_index", "The highest log index applied to the state "
                    "(a leader's may run ahead of the commit index).", node.applied_index)
        yield gauge("replikv_last_log_index", "The last index in this node's log.",
                    raft.log.last_index)
        yield gauge("replikv_log_first_index", "The first index the log still holds (earlier "
                    "ones are in the snapshot).", raft.log.offset + 1)
        yield gauge("replikv_voters", "Voting members in the current configuration.",
                    len(raft.membership.voters))
        yield gauge("replikv_standbys", "Non-voting members (standbys) in the current "
                    "configuration.", len(raft.membership.learners))
        followers = status.get("followers") or {}
        per_follower = (
            ("replikv_follower_match_index",
             "Leader: the highest index known replicated on each follower.", "match_index", 1),
            ("replikv_follower_lag_entries", "Leader: entries each follower lacks.",
             "lag_entries", 1),
            ("replikv_follower_lag_seconds",
             "Leader: each follower's lag in time (age of the oldest entry it lacks).",
             "lag_ms", 0.001),
            ("replikv_follower_connected", "Leader: 1 while the link to each follower is up.",
             "connected", 1))
        for name, doc, key, scale in per_follower:
            family = GaugeMetricFamily(name, doc, labels=["peer"])
            for peer, f in followers.items():
                family.add_metric([peer], float(f[key]) * scale)
            yield family
        stats = server.disk_stats
        counters = (
            ("replikv_proposals_total", "Entries this node proposed as leader.",
             node.proposals_total),
            ("replikv_entries_applied_total", "Committed entries applied to the state.",
             node.entries_applied),
            ("replikv_commands_executed_total",
             "Commands executed (by the leader, or by every replica in active replication).",
             node.commands_executed),
            ("replikv_elections_started_total",
             ("Elections this node started as a candidate (PreVote rounds that went no further "
             "excluded)."), raft.elections_started),
            ("replikv_elections_won_total", "Terms this node became leader in.",
             node.terms_led),
            ("replikv_leader_changes_total", "Times this node saw the leader change.",
             raft.leader_changes),
            ("replikv_rolled_back_entries_total",
             ("Uncommitted log entries discarded because a new leader replaced them (saved in "
             "rollback files)."), node.rolled_back_entries),
            ("replikv_rolled_back_acknowledged_total",
             "Of those, writes that had been acknowledged at w=1.",
             node.rolled_back_acknowledged),
            ("replikv_write_timeouts_total", "Writes answered with a write-concern timeout.",
             node.wtimeouts),
            ("replikv_writes_forwarded_total", "Writes this node forwarded to the leader.",
             node.forwarded_total),
            ("replikv_unknown_outcomes_total",
             "Requests answered UNKNOWN (the outcome could not be learnt in time).",
             node.unknown_outcomes),
            ("replikv_fsyncs_total", "fsyncs of the log and the hard state.", stats.fsyncs),
            ("replikv_log_entries_written_total", "Entries written to the log.",
             stats.entries_written),
            ("replikv_event_loop_stalls_total",
             ("Times the event loop was held for half an election timeout or more (a slow "
              "command, a long GC or fsync, a paused process): peers and clients went "
              "unanswered meanwhile."), server.loop_stalls),
            ("replikv_auth_failures_total",
             "AUTH and HELLO ... AUTH refused: a wrong password or an unknown user.",
             server.auth_failures),
            ("replikv_large_replies_total",
             "Client replies large enough to be encoded off the event loop.",
             server.large_replies),
            ("replikv_pipeline_batches_total",
             ("Batches of a pipeline's writes that a client connection submitted as one "
              "request and one log entry."), self.metrics.pipeline_batches),
            ("replikv_pipeline_batched_commands_total",
             "Client writes that went in such batches.", self.metrics.pipeline_batched_commands),
            ("replikv_pipeline_read_batches_total",
             "Batches of a pipeline's reads that a client connection submitted as one request.",
             self.metrics.pipeline_read_batches),
            ("replikv_pipeline_batched_reads_total", "Client reads that went in such batches.",
             self.metrics.pipeline_batched_reads),
            ("replikv_joined_write_batches_total",
             ("Log entries that joined the plain writes of several client connections sent in "
              "one event-loop turn (with the same options: write concern, read settings)."),
             self.metrics.joined_write_batches),
            ("replikv_joined_write_requests_total",
             "Client requests (a write, or a pipeline's batch of writes) in such entries.",
             self.metrics.joined_write_requests),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield gauge("replikv_client_connections", "Client connections open now.",
                    len(server.clients))
        pubsub = status["pubsub"]
        yield gauge("replikv_pubsub_subscribers", "Client connections with at least one "
                    "subscription (channel, pattern or shard channel) on this node.",
                    pubsub["subscribers"])
        yield gauge("replikv_pubsub_channels", "Channels (and patterns, shard channels) with a "
                    "subscriber on this node.", pubsub["channels"] + pubsub["patterns"]
                    + pubsub["shard_channels"])
        yield CounterMetricFamily("replikv_pubsub_messages_published_total", "Messages of "
                                  "committed PUBLISH and SPUBLISH entries this node applied.",
                                  value=pubsub["messages_published"])
        yield CounterMetricFamily("replikv_pubsub_messages_delivered_total", "Message frames "
                                  "written to this node's subscribers.",
                                  value=pubsub["messages_delivered"])
        yield CounterMetricFamily("replikv_pubsub_output_limit_disconnections_total",
                                  "Subscribers disconnected for leaving more unsent messages "
                                  "than the pub/sub output limits allow.",
                                  value=pubsub["output_limit_disconnections"])
        blocking = status["blocking"]
        yield gauge("replikv_blocked_clients", "Clients of this node waiting in a blocking "
                    "command (BLPOP, BZPOPMIN, XREAD BLOCK, ...).", blocking["clients"])
        yield CounterMetricFamily("replikv_blocked_served_total", "Blocking commands of this "
                                  "node's clients answered with what an attempt took.",
                                  value=blocking["served"])
        yield CounterMetricFamily("replikv_blocked_timeouts_total", "Blocking commands of this "
                                  "node's clients ended by their timeout or CLIENT UNBLOCK.",
                                  value=blocking["timeouts"])
        commands = CounterMetricFamily("replikv_commands", "Client commands answered, by "
                                       "command and outcome (error: an error reply).",
                                       labels=["command", "outcome"])
        for (name, ok), n in sorted(self.metrics.commands.items()):
            commands.add_metric([name, "ok" if ok else "error"], n)
        yield commands
        yield from self.metrics.histograms()
        snap = status.get("snapshot") or {}
        yield gauge("replikv_snapshot_bytes", "Size of the latest snapshot.",
                    snap.get("bytes", 0))
        yield gauge("replikv_snapshot_index", "Log index the latest snapshot covers.",
                    snap.get("index", 0))
        snapshots = server.snapshots
        yield CounterMetricFamily("replikv_snapshots_taken_total", "Snapshots this node wrote.",
                                  value=snapshots.taken if snapshots else 0)
        yield CounterMetricFamily("replikv_snapshots_installed_total", "Snapshots received "
                                  "from a leader and installed.",
                                  value=snapshots.installed if snapshots else 0)
        yield gauge("replikv_keys", "Keys in the state.", node.state.key_count())
        disk = status.get("disk") or {}
        if disk:
            yield gauge("replikv_disk_free_bytes", "Free space on the file system holding the "
                        "data dir that this node may use (the blocks reserved for root count "
                        "only for a root that may write into them).",
                        disk["free_bytes"])
            yield gauge("replikv_disk_total_bytes", "Size of the file system holding the data "
                        "dir.", disk["total_bytes"])
            yield gauge("replikv_disk_low", "1 while the data dir's file system has less free "
                        "space than disk_low_free_bytes (a node whose disk fills stops).",
                        1 if disk["state"] == DISK_LOW else 0)
            yield gauge("replikv_disk_full", "1 while the data dir's file system has less free "
                        "space than disk_min_free_bytes: as leader, the node refuses writes "
                        "that add data.", 1 if disk["writes_refused"] else 0)
            yield CounterMetricFamily("replikv_disk_full_rejections_total", "Writes this node "
                                      "refused as leader because its disk was nearly full.",
                                      value=disk["rejections"])
        memory = status["memory"]
        yield gauge("replikv_memory_used_bytes", "The keyspace's memory as INFO's used_memory "
                    "estimates it (what maxmemory limits).", memory["used_bytes"])
        yield gauge("replikv_memory_rss_bytes", "The node process's resident memory.",
                    memory["rss_bytes"])
        yield gauge("replikv_maxmemory_bytes", "maxmemory (0: no limit).", memory["maxmemory"])
        yield gauge("replikv_memory_full", "1 while the keyspace is over maxmemory: writes "
                    "that add data are refused with OOM.", 1 if memory["full"] else 0)
        yield CounterMetricFamily("replikv_oom_rejections_total", "Writes this node refused as "
                                  "leader because the keyspace was over maxmemory.",
                                  value=memory["oom_rejections"])
        features = status["features"]
        yield gauge("replikv_feature_level", "The feature level this node's replikv can apply "
                    "(replikv.features).", features["this_node"])
        yield gauge("replikv_cluster_feature_level", "The cluster's feature level as this node "
                    "has applied it: what its log's entries need.", features["cluster_level"])
        yield CounterMetricFamily("replikv_feature_level_rejections_total", "Writes this node "
                                  "refused as leader because a member could not apply them.",
                                  value=features["rejections"])
