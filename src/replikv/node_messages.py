"""Messages between node cores that are not consensus: forwarding and remote read indexes.

A follower accepts any command. It forwards a write to the leader (ForwardRequest) and relays
the ForwardReply; for a linearizable read it asks the leader for a read index
(ReadIndexRequest) and serves the read itself once it has applied that far.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    src: str
    req_id: int
    argv: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ForwardReply:
    src: str
    req_id: int
    # The command's reply value (see replikv.replies), or an ErrorReply.
    result: object
    # True when the receiver was not the leader and did not propose the command: the origin may
    # safely send it elsewhere.
    not_leader: bool = False


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    src: str
    req_id: int


@dataclass(frozen=True, slots=True)
class ReadIndexReply:
    src: str
    req_id: int
    index: int | None  # None: the receiver could not confirm leadership


NodeMessage = ForwardRequest | ForwardReply | ReadIndexRequest | ReadIndexReply
