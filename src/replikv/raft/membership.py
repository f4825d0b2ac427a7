"""Cluster membership: who votes, who only follows, and how that changes one server at a time.

A `Membership` names the voters (they elect leaders and count toward every majority) and the
learners (standbys and new members catching up: they receive the log in real time and apply it,
but never vote, never campaign and never count toward a majority). It also carries an opaque
`context` that consensus never reads: the node layer keeps its address book there (each member's
peer, client and admin addresses), so every member learns where a new one lives from the same
replicated entry that adds it.

Changes are single-server changes (Ongaro's dissertation §4.1): each differs from the previous
configuration by at most one voter, so any majority of the old voters and any majority of the new
ones share a server and two leaders can never be elected in one term. A configuration takes
effect on each server as soon as its entry is in that server's log, committed or not, and a
truncation that removes the entry reverts to the previous one. The leader allows one
uncommitted change at a time, and only after it has committed an entry of its own term (the fix
to the single-server bug found after the dissertation: otherwise two changes made under
different leaders can each be committed by disjoint majorities).

Config entries are log entries whose data starts with CONFIG_ENTRY_PREFIX, a byte that can never
start a msgpack value, so the node layer's own entries (msgpack lists, or b"" for the no-op) can
never be mistaken for one. Format after the prefix: msgpack `[1, [voter, ...], [learner, ...],
context]` with ids as str and context as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

CONFIG_ENTRY_PREFIX = b"\xc1"  # 0xc1 is "never used" in msgpack
CONFIG_FORMAT = 1
MEMBER_ID_MAX_BYTES = 64

# Operations on a membership (`Membership.changed`).
ADD_LEARNER = "add-learner"  # a new member joins as a learner (a standby, or to catch up)
PROMOTE = "promote"  # a learner becomes a voter
DEMOTE = "demote"  # a voter becomes a learner
REMOVE = "remove"  # a voter or learner leaves the cluster
MEMBERSHIP_OPS = (ADD_LEARNER, PROMOTE, DEMOTE, REMOVE)


class MembershipError(ValueError):
    """A membership change that is not allowed; the message says why and what to do."""


def is_config_entry(data: bytes) -> bool:
    return data[:1] == CONFIG_ENTRY_PREFIX


def valid_member_id(node_id: object) -> bool:
    return (isinstance(node_id, str) and 0 < len(node_id.encode()) <= MEMBER_ID_MAX_BYTES
            and node_id.isprintable() and " " not in node_id and "," not in node_id
            and "=" not in node_id)


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    context: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", tuple(sorted(self.voters)))
        object.__setattr__(self, "learners", tuple(sorted(self.learners)))
        if len(set(self.voters)) != len(self.voters):
            raise MembershipError(f"duplicate voter ids in {self.voters}")
        if len(set(self.learners)) != len(self.learners):
            raise MembershipError(f"duplicate learner ids in {self.learners}")
        if set(self.voters) & set(self.learners):
            raise MembershipError(f"{sorted(set(self.voters) & set(self.learners))} cannot "
                                  "be both voter and learner")
        for m in self.voters + self.learners:
            if not valid_member_id(m):
                raise MembershipError(f"invalid member id {m!r}")
        if not isinstance(self.context, bytes):
            raise MembershipError("membership context must be bytes")

    @property
    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def role_of(self, node_id: str) -> str | None:
        if node_id in self.voters:
            return "voter"
        if node_id in self.learners:
            return "learner"
        return None

    def changed(self, op: str, node_id: str, context: bytes | None = None) -> Membership:
        """The membership after one single-server change (raises MembershipError if invalid)."""
        voters, learners = list(self.voters), list(self.learners)
        role = self.role_of(node_id)
        if op == ADD_LEARNER:
            if role is not None:
                raise MembershipError(f"{node_id} is already a member ({role})")
            learners.append(node_id)
        elif op == PROMOTE:
            if role != "learner":
                raise MembershipError(f"{node_id} is not a standby/learner "
                                      f"({role or 'not a member'}); only learners are promoted")
            learners.remove(node_id)
            voters.append(node_id)
        elif op == DEMOTE:
            if role != "voter":
                raise MembershipError(f"{node_id} is not a voter ({role or 'not a member'})")
            voters.remove(node_id)
            learners.append(node_id)
        elif op == REMOVE:
            if role is None:
                raise MembershipError(f"{node_id} is not a member")
            (voters if role == "voter" else learners).remove(node_id)
        else:
            raise MembershipError(f"unknown membership operation {op!r}; expected one of "
                                  f"{', '.join(MEMBERSHIP_OPS)}")
        if not voters:
            raise MembershipError("the change would leave the cluster without voters")
        return Membership(tuple(voters), tuple(learners),
                          self.context if context is None else context)

    def encode(self) -> bytes:
        return CONFIG_ENTRY_PREFIX + msgpack.packb(
            [CONFIG_FORMAT, list(self.voters), list(self.learners), self.context],
            use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Parse a config entry's data (raises MembershipError on anything malformed)."""
        if not is_config_entry(data):
            raise MembershipError("not a config entry")
        try:
            body = msgpack.unpackb(data[1:], raw=False, use_list=True,
                                   max_bin_len=len(data), max_str_len=len(data),
                                   max_array_len=len(data))
        except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError,
                msgpack.exceptions.StackError, UnicodeDecodeError) as exc:
            raise MembershipError(f"undecodable config entry: {exc}") from None
        if not (isinstance(body, list) and len(body) == 4 and body[0] == CONFIG_FORMAT
                and isinstance(body[1], list) and isinstance(body[2], list)
                and isinstance(body[3], bytes)
                and all(isinstance(x, str) for x in body[1] + body[2])):
            raise MembershipError("config entry has the wrong shape")
        return cls(tuple(body[1]), tuple(body[2]), body[3])
