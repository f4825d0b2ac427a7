"""Every limit in one place, with its unit in its name.

A limit bounds memory or work that a client or a peer could otherwise make unbounded. Defaults
can be overridden per node (see `replikv.config`); the README's "Limits" section lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    # Client protocol (RESP).
    max_bulk_bytes: int = 64 * MIB  # one argument of one command
    max_command_args: int = 1024 * 1024  # arguments in one command (including its name)
    max_inline_bytes: int = 64 * KIB  # one inline (telnet-style) command line
    max_pipeline_commands: int = 10_000  # commands parsed from one read before replying
    max_client_connections: int = 10_000
    # A subscriber's output not yet sent (Redis's `client-output-buffer-limit pubsub 32mb 8mb
    # 60`): over the hard limit, or over the soft one for soft_ms in a row, it is disconnected.
    # (Other clients cannot grow it: a client that does not read its replies is not read.)
    pubsub_output_hard_limit_bytes: int = 32 * MIB
    pubsub_output_soft_limit_bytes: int = 8 * MIB
    pubsub_output_soft_limit_ms: int = 60_000

    # Peers.
    max_peer_frame_bytes: int = 256 * MIB  # one peer message on the wire
    max_append_entries_bytes: int = 4 * MIB  # payload bytes of entries in one AppendEntries
    max_append_entries_count: int = 4096  # entries in one AppendEntries
    max_inflight_appends: int = 64  # unacknowledged AppendEntries per follower
    max_peer_send_queue_bytes: int = 512 * MIB  # queued outgoing bytes per peer before dropping

    # Node core.
    max_pending_requests: int = 100_000  # client requests waiting for commit or a read index
    max_entry_bytes: int = 80 * MIB  # one log entry (a command with its arguments)

    # Lua scripts (EVAL; replikv.scripting). A script runs on the event loop with nothing else
    # between its commands, so it is stopped, and everything it wrote undone, once it has run
    # this many Lua instructions (each redis.call counts as SCRIPT_CALL_COST_INSTRUCTIONS):
    # about a second of CPU here (see the README's Limits). Only the node that decides a
    # script's outcome applies these (the leader proposing it, a node serving EVAL_RO); a
    # replica applying a committed EVAL runs it to its end, as the leader did.
    script_max_instructions: int = 100_000_000
    script_max_memory_bytes: int = 64 * MIB  # one script's Lua heap
    script_max_body_bytes: int = 4 * MIB  # one script's source
    script_cache_max_scripts: int = 10_000  # the node's script cache (SCRIPT LOAD, EVAL)
    script_cache_max_bytes: int = 64 * MIB  # ...and the source bytes it holds

    # Storage.
    wal_segment_bytes: int = 64 * MIB  # a segment is closed after it grows past this
    # Space reserved ahead of the log's writes (0: none): an fdatasync then has no file size to
    # record, about 30% faster here.
    wal_preallocate_bytes: int = 4 * MIB


DEFAULT_LIMITS = Limits()
