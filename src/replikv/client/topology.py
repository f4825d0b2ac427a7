"""What the client knows of the cluster: members, their roles and client addresses.

A view comes from one member's answer to `REPLIKV TOPOLOGY` (see
server/local_commands.py): an array of maps, RESP3 maps or RESP2 flat arrays, with bytes or
str keys depending on the connection's decoding. The leader's own view is the one to trust
(every follower talks to it, so it knows every address); a follower's view can lack the address
of a member it has not heard from, and names the leader it last followed.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("leader", "follower", "candidate", "standby", "unknown")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


class TopologyError(ValueError):
    """A REPLIKV TOPOLOGY answer the client cannot read."""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    role: str  # one of ROLES, as the answering node sees it
    voter: bool
    address: str | None  # client address "host:port"; None if the answering node lacks it
    admin: str | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    members: tuple[Member, ...]
    answered_by: str  # the address that answered
    self_id: str  # the answering member's id
    term: int  # the answering member's term

    @property
    def leader(self) -> Member | None:
        for m in self.members:
            if m.role == "leader":
                return m
        return None

    @property
    def answered_by_leader(self) -> bool:
        leader = self.leader
        return leader is not None and leader.id == self.self_id

    @property
    def followers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "follower")

    def addresses(self) -> list[str]:
        return [m.address for m in self.members if m.address]

    def member_at(self, address: str) -> Member | None:
        for m in self.members:
            if m.address == address:
                return m
        return None


def parse_address(value: str | tuple) -> str:
    """ "host:port" from "host:port" or (host, port); ValueError if neither."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"expected (host, port), got {value!r}")
        host, port = value
    else:
        host, sep, port = str(value).strip().rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {value!r}")
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"bad port in {value!r}") from None
    if not host or not 0 < port_number < 65536:
        raise ValueError(f"bad address {value!r}")
    return f"{host}:{port_number}"


def parse_seeds(seeds: str | list | tuple) -> list[str]:
    """Seeds as "host:port,host:port" or a list of "host:port" / (host, port)."""
    if isinstance(seeds, str):
        items: list = [s for s in seeds.split(",") if s.strip()]
    else:
        items = list(seeds)
    out: list[str] = []
    for item in items:
        address = parse_address(item)
        if address not in out:
            out.append(address)
    if not out:
        raise ValueError("at least one seed address (host:port) is needed")
    return out


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _as_map(item: object) -> dict[str, object]:
    if isinstance(item, dict):
        pairs = list(item.items())
    elif isinstance(item, list | tuple) and len(item) % 2 == 0:
        pairs = [(item[i], item[i + 1]) for i in range(0, len(item), 2)]
    else:
        raise TopologyError(f"a member is not a map: {item!r}"[:200])
    return {_text(k) or "": v for k, v in pairs}


def parse_topology(reply: object, answered_by: str) -> Topology:
    """The answer to REPLIKV TOPOLOGY from `answered_by` as a Topology; TopologyError if it is
    not one. A wildcard host in the answering member's own address (a node listening on
    0.0.0.0) is replaced by the host the client reached it at."""
    if not isinstance(reply, list | tuple) or not reply:
        raise TopologyError(f"REPLIKV TOPOLOGY answer is not a list of members: {reply!r}"[:200])
    members = []
    self_id = None
    term = 0
    for item in reply:
        fields = _as_map(item)
        member_id = _text(fields.get("id"))
        role = _text(fields.get("role")) or "unknown"
        if not member_id:
            raise TopologyError("a member without an id")
        if role not in ROLES:
            role = "unknown"
        address = _text(fields.get("client"))
        is_self = _int(fields.get("self")) == 1
        if address is not None:
            try:
                address = parse_address(address)
            except ValueError:
                address = None
        if is_self:
            self_id = member_id
            term = _int(fields.get("term")) or 0
            if address is None or split_address(address)[0] in _WILDCARD_HOSTS:
                address = _with_port_of(answered_by, address)
        members.append(Member(member_id, role, _int(fields.get("voter")) == 1, address,
                              _text(fields.get("admin"))))
    if self_id is None:
        raise TopologyError("REPLIKV TOPOLOGY answer names no member as self")
    return Topology(tuple(members), answered_by, self_id, term)


def _with_port_of(answered_by: str, address: str | None) -> str:
    if address is None:
        return answered_by
    host, _ = split_address(answered_by)
    _, port = split_address(address)
    return f"{host}:{port}"


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


__all__ = ["Member", "Topology", "TopologyError", "parse_address", "parse_seeds",
           "parse_topology", "split_address"]
