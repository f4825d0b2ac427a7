"""Messages between node cores that are not consensus: forwarding, read indexes, WAIT.

A follower accepts any command. It forwards a write to the leader (ForwardRequest) and relays
the ForwardReply; a read that must run on the primary (read preference "primary" in passive
mode) is forwarded the same way. For a read it serves itself at linearizable or lease
consistency it asks the leader for a read index (ReadIndexRequest) and serves the read once it
has applied that far. WAIT asks the leader how many replicas hold an index (WaitRequest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replikv.concerns import DEFAULT_OPTIONS, RequestOptions


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    src: str
    req_id: int
    argv: tuple[bytes, ...]
    options: RequestOptions = DEFAULT_OPTIONS
    is_read: bool = False


@dataclass(frozen=True, slots=True)
class ForwardReply:
    src: str
    req_id: int
    # The command's reply value (see replikv.replies), or an ErrorReply.
    result: Any
    # True when the receiver was not the leader and did not propose the command: the origin may
    # safely send it elsewhere.
    not_leader: bool = False
    # The log index of a write (0 for reads and errors), so the origin's session can read its
    # own writes.
    index: int = 0


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    src: str
    req_id: int
    lease: bool = False  # the leader may answer from its lease, without a quorum round


@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    src: str
    req_id: int
    index: int | None  # None: the receiver could not confirm leadership


@dataclass(frozen=True, slots=True)
class WaitRequest:
    src: str
    req_id: int
    index: int  # the log index the origin's connection last wrote
    replicas: int  # answer as soon as this many replicas hold it
    timeout_ms: int  # 0: wait indefinitely, as Redis's WAIT


@dataclass(frozen=True, slots=True)
class WaitReply:
    src: str
    req_id: int
    count: int | None  # replicas holding the index; None: the receiver is not the leader


NodeMessage = (ForwardRequest | ForwardReply | ReadIndexRequest | ReadIndexReply | WaitRequest
               | WaitReply)
