"""The smart client's decisions, without I/O: shared by the thread-based Client and the asyncio
AsyncClient, which only move bytes and sleep.

- `ClientCore` holds what the client knows: the topology, which members failed lately, the
  round-trip times reads measured, the pool of sessions. It orders the members a command may go
  to (`candidates`) and the members discovery asks (`discovery_order`).
- `CommandPlan` is one command's life: where each attempt goes, what is sent, and after a
  failure whether to retry (and after how long) or what to raise. Its rules are in
  replikv.client.errors.
- `Discovery` is one topology refresh: which member to ask next, and which answer to keep.
- `SessionPool` hands out retryable-write sessions, one write at a time per session. The
  cluster remembers only the last write of a session (replikv.sessions), so two writes of one
  session in flight together could overtake each other and the older one be refused as stale;
  concurrent writes therefore take different sessions, as MongoDB drivers do.

Everything here is safe to call from several threads: state changes happen under one lock and
no lock is held while a driver does I/O.
"""

from __future__ import annotations

import random
import secrets
import threading
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from replikv.client.errors import Failure, NoMemberAvailable, NotSent, OutcomeUnknown, classify
from replikv.client.routing import Kind, Route, route, wire_args
from replikv.client.topology import Topology, TopologyError, parse_seeds, parse_topology
from replikv.concerns import (
    READ_CONSISTENCIES,
    READ_PREFERENCES,
    TIMEOUT_MS_MAX,
    WRITE_CONCERNS,
)

SESSION_ID_HEX_BYTES = 16  # random bytes in a session id, sent as 32 hex digits
FREE_SESSIONS_MAX = 1024
RTT_SMOOTHING = 0.2  # weight of a new round-trip sample in the moving average


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The client's behaviour; see Client for what each means."""

    seeds: tuple[str, ...]
    read_preference: str = "primary"
    read_consistency: str | None = None
    max_staleness_ms: int | None = None
    write_concern: str | None = None
    wtimeout_ms: int | None = None
    retry_writes: bool = True
    max_retries: int = 30
    retry_deadline_s: float = 30.0
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    topology_refresh_s: float = 10.0
    member_down_s: float = 1.0  # a member that failed goes last for this long
    nearest_window_ms: float = 15.0  # "nearest": members within this of the fastest

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed address is needed")
        if self.read_preference not in READ_PREFERENCES:
            raise ValueError(f"read_preference must be one of {', '.join(READ_PREFERENCES)}")
        if self.read_consistency is not None and \
                self.read_consistency not in READ_CONSISTENCIES:
            raise ValueError(f"read_consistency must be None or one of "
                             f"{', '.join(READ_CONSISTENCIES)}")
        if self.write_concern is not None and self.write_concern not in WRITE_CONCERNS:
            raise ValueError(f"write_concern must be None or one of {', '.join(WRITE_CONCERNS)}")
        for name in ("max_staleness_ms", "wtimeout_ms"):
            value = getattr(self, name)
            if value is not None and not (type(value) is int and 0 < value <= TIMEOUT_MS_MAX):
                raise ValueError(f"{name} must be None or milliseconds in 1..{TIMEOUT_MS_MAX}")
        if self.wtimeout_ms is not None and self.write_concern is None:
            raise ValueError("wtimeout_ms needs a write_concern")
        if type(self.max_retries) is not int or self.max_retries < 0:
            raise ValueError("max_retries must be a non-negative integer")
        for name in ("retry_deadline_s", "backoff_base_s", "backoff_max_s",
                     "topology_refresh_s", "member_down_s", "nearest_window_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a non-negative number")


def normalize_choice(value: str | int | None, choices: tuple[str, ...], what: str) -> str | None:
    """`value` spelled as in `choices`, case-insensitively (1 for "1"); ValueError if not one."""
    if value is None:
        return None
    by_lower = {c.lower(): c for c in choices}
    found = by_lower.get(str(value).lower())
    if found is None:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return found


def build_options(seeds: object, *, read_preference: str, read_consistency: str | None,
                  max_staleness_ms: int | None, write_concern: str | int | None,
                  wtimeout_ms: int | None, retry_writes: bool, max_retries: int,
                  retry_deadline_s: float, topology_refresh_s: float,
                  backoff_base_s: float, backoff_max_s: float) -> ClientOptions:
    """ClientOptions from the Client's keyword arguments, spelled as users may spell them."""
    return ClientOptions(
        seeds=tuple(parse_seeds(seeds)),  # type: ignore[arg-type]
        read_preference=normalize_choice(read_preference, READ_PREFERENCES,
                                         "read_preference") or "primary",
        read_consistency=normalize_choice(read_consistency, READ_CONSISTENCIES,
                                          "read_consistency"),
        max_staleness_ms=max_staleness_ms,
        write_concern=normalize_choice(write_concern, WRITE_CONCERNS, "write_concern"),
        wtimeout_ms=wtimeout_ms, retry_writes=bool(retry_writes), max_retries=max_retries,
        retry_deadline_s=retry_deadline_s, topology_refresh_s=topology_refresh_s,
        backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s)


# -- sessions ---------------------------------------------------------------------------------

class ClientSession:
    """One retryable-write session: its id and the next sequence number to use."""

    __slots__ = ("id", "next_seq")

    def __init__(self, session_id: bytes) -> None:
        self.id = session_id
        self.next_seq = 1


class SessionPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[ClientSession] = []
        self.created = 0

    def checkout(self) -> tuple[ClientSession, int]:
        """A session no other write is using, and the sequence number for this write."""
        with self._lock:
            if self._free:
                session = self._free.pop()
            else:
                session = ClientSession(secrets.token_hex(SESSION_ID_HEX_BYTES).encode())
                self.created += 1
            seq = session.next_seq
            session.next_seq += 1
            return session, seq

    def checkin(self, session: ClientSession) -> None:
        with self._lock:
            if len(self._free) < FREE_SESSIONS_MAX:
                self._free.append(session)


# -- the client's knowledge ---------------------------------------------------------------------

class ClientCore:
    def __init__(self, options: ClientOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self.rng = rng or random.Random()
        self.sessions = SessionPool()
        self._lock = threading.Lock()
        self.topology: Topology | None = None
        self.generation = 0  # bumped by every accepted topology
        self._fetched_at: float | None = None
        self._stale = True
        self._down_until: dict[str, float] = {}
        self._rtt_ms: dict[str, float] = {}
        self._rr = 0

    # -- topology ---------------------------------------------------------------------------------

    def refresh_due(self, now: float) -> bool:
        return self._stale or self._fetched_at is None \
            or now - self._fetched_at >= self.options.topology_refresh_s

    def mark_stale(self) -> None:
        self._stale = True

    def accept(self, topology: Topology | None, now: float) -> None:
        """The outcome of a discovery: a view, or None if no member answered."""
        with self._lock:
            if topology is None:
                return  # keep what we had; stay stale so the next attempt asks again
            self.topology = topology
            self.generation += 1
            self._fetched_at = now
            self._stale = False

    def discovery_order(self, now: float) -> list[str]:
        """Whom to ask for the topology: the leader we know, the other members, the seeds;
        members that failed lately last."""
        order: list[str] = []
        topo = self.topology
        if topo is not None:
            leader = topo.leader
            if leader is not None and leader.address:
                order.append(leader.address)
            order += topo.addresses()
        order += self.options.seeds
        return self._healthy_first(_unique(order), now)

    def known_addresses(self) -> set[str]:
        topo = self.topology
        return set(self.options.seeds) | (set(topo.addresses()) if topo else set())

    # -- member health ----------------------------------------------------------------------------

    def note_failure(self, address: str | None, now: float) -> None:
        with self._lock:
            if address is not None:
                self._down_until[address] = now + self.options.member_down_s
            self._stale = True

    def note_success(self, address: str, rtt_s: float | None) -> None:
        with self._lock:
            self._down_until.pop(address, None)
            if rtt_s is not None:
                sample = rtt_s * 1000
                old = self._rtt_ms.get(address)
                self._rtt_ms[address] = sample if old is None else \
                    old + RTT_SMOOTHING * (sample - old)

    def _healthy_first(self, addresses: list[str], now: float) -> list[str]:
        down = self._down_until
        healthy = [a for a in addresses if down.get(a, 0.0) <= now]
        return healthy + [a for a in addresses if down.get(a, 0.0) > now]

    # -- routing ----------------------------------------------------------------------------------

    def candidates(self, kind: Kind, now: float) -> list[str]:
        """The members a command of `kind` may go to, best first."""
        topo = self.topology
        if topo is None or not topo.addresses():
            return self._healthy_first(self._rotate(list(self.options.seeds))
                                       if kind is Kind.READ else list(self.options.seeds), now)
        leader = topo.leader.address if topo.leader is not None else None
        everyone = topo.addresses()
        others = [a for a in everyone if a != leader]
        preference = self.options.read_preference
        if kind is not Kind.READ or preference in ("primary", "primaryPreferred"):
            # Any member forwards to the leader; the leader itself saves a hop. The seeds come
            # last, in case the addresses members advertise are not reachable from here.
            order = _unique(([leader] if leader else []) + others + list(self.options.seeds))
        elif preference == "secondary":
            order = self._rotate(others)
        elif preference == "secondaryPreferred":
            order = self._rotate(others) + ([leader] if leader else [])
        else:  # nearest
            order = self._nearest(everyone)
        return self._healthy_first(order, now)

    def _rotate(self, addresses: list[str]) -> list[str]:
        if not addresses:
            return addresses
        with self._lock:
            self._rr += 1
            k = self._rr % len(addresses)
        return addresses[k:] + addresses[:k]

    def _nearest(self, addresses: list[str]) -> list[str]:
        rtt = self._rtt_ms
        known = [rtt[a] for a in addresses if a in rtt]
        if not known:
            return self._rotate(addresses)
        limit = min(known) + self.options.nearest_window_ms
        near = [a for a in addresses if rtt.get(a, 0.0) <= limit]  # unmeasured ones too
        far = sorted((a for a in addresses if a not in near), key=lambda a: rtt[a])
        return self._rotate(near) + far

    def wire(self, routed: Route, seq: int | None = None) -> tuple:
        """What to send for a command routed as `routed`, with this client's options."""
        o = self.options
        return wire_args(routed, seq=seq, write_concern=o.write_concern,
                         wtimeout_ms=o.wtimeout_ms, read_preference=o.read_preference,
                         read_consistency=o.read_consistency,
                         max_staleness_ms=o.max_staleness_ms)

    def backoff_s(self, attempt: int) -> float:
        """The pause before retry number `attempt` (1, 2, ...): exponential, with jitter."""
        o = self.options
        ceiling = min(o.backoff_max_s, o.backoff_base_s * (2 ** min(attempt - 1, 30)))
        return ceiling * (0.5 + 0.5 * self.rng.random())


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


# -- one command ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Attempt:
    address: str
    wire: tuple  # what to send
    session: ClientSession | None  # set REPLIKV SESSION to this on the connection first


class CommandPlan:
    """One command (or one batch of reads) from its first attempt to its result or error."""

    def __init__(self, core: ClientCore, args: tuple, now: float, *,
                 routed: Route | None = None) -> None:
        self.core = core
        self.args = args
        self.route = routed if routed is not None else route(args)
        options = core.options
        self.deadline = now + options.retry_deadline_s
        self.attempts = 0
        self.maybe_applied = False
        self.session: ClientSession | None = None
        self.seq: int | None = None
        if self.route.kind is Kind.WRITE and options.retry_writes:
            self.session, self.seq = core.sessions.checkout()

    def next_attempt(self, now: float) -> Attempt | None:
        """Where to send the next attempt; None if there is no member to send it to."""
        candidates = self.core.candidates(self.route.kind, now)
        if not candidates:
            return None
        return Attempt(candidates[0], self.core.wire(self.route, self.seq), self.session)

    def on_success(self, address: str, rtt_s: float) -> None:
        kind = self.route.kind
        self.core.note_success(address, rtt_s if kind is Kind.READ else None)

    def on_failure(self, error: BaseException, *, sent: bool, address: str | None,
                   now: float) -> float:
        """After a failed attempt: the pause before the next one, or raise what the caller
        gets (the command's own error, OutcomeUnknown, or the last member error)."""
        failure = classify(error, sent=sent)
        if failure is Failure.COMMAND:
            raise error
        kind = self.route.kind
        if failure is Failure.MAYBE_APPLIED and kind in (Kind.WRITE, Kind.OTHER):
            if self.seq is None:
                raise OutcomeUnknown(self.args, error) from error
            self.maybe_applied = True
        if _is_connection_level(error) or _is_code(error, "STALE"):
            self.core.note_failure(address, now)
        else:
            self.core.note_failure(None, now)  # the topology may have changed: ask again
        self.attempts += 1
        if self.attempts > self.core.options.max_retries or now >= self.deadline:
            if self.maybe_applied:
                raise OutcomeUnknown(self.args, error) from error
            raise error
        return max(0.0, min(self.core.backoff_s(self.attempts), self.deadline - now))

    def on_attempt_error(self, error: BaseException, *, address: str, now: float) -> float:
        """on_failure for an attempt that raised `error`: NotSent if nothing was sent, a
        redis-py error or OSError if the command may have been."""
        if isinstance(error, NotSent):
            return self.on_failure(error.cause, sent=False, address=address, now=now)
        return self.on_failure(error, sent=True, address=address, now=now)

    def on_no_member(self, now: float) -> float:
        """on_failure when there is no member to send the next attempt to."""
        return self.on_failure(self.no_member_error(), sent=False, address=None, now=now)

    def no_member_error(self) -> NoMemberAvailable:
        o = self.core.options
        return NoMemberAvailable(
            f"no member of the cluster is reachable for a {self.route.kind.value} with read "
            f"preference {o.read_preference} (seeds: {', '.join(o.seeds)})")

    def close(self) -> None:
        """Give the session back (its next write gets the next sequence number)."""
        if self.session is not None:
            self.core.sessions.checkin(self.session)
            self.session = None


def _is_connection_level(error: BaseException) -> bool:
    return isinstance(error, RedisConnectionError | RedisTimeoutError | OSError)


def _is_code(error: BaseException, code: str) -> bool:
    return str(error).startswith(code + " ")


# -- one topology refresh -----------------------------------------------------------------------

class Discovery:
    """Ask members for REPLIKV TOPOLOGY until the leader answers or everyone was asked."""

    def __init__(self, core: ClientCore, now: float) -> None:
        self.core = core
        self.now = now
        self.queue = core.discovery_order(now)
        self.asked: set[str] = set()
        self.best: Topology | None = None
        self.done = False

    def next_address(self) -> str | None:
        while self.queue and not self.done:
            address = self.queue.pop(0)
            if address not in self.asked:
                self.asked.add(address)
                return address
        return None

    def on_view(self, view: Topology) -> None:
        if view.answered_by_leader:
            self.best, self.done = view, True
            return
        if self.best is None or (view.term, view.leader is not None) > \
                (self.best.term, self.best.leader is not None):
            self.best = view
        leader = view.leader
        if leader is not None and leader.address and leader.address not in self.asked:
            self.queue.insert(0, leader.address)  # the leader knows every address: ask it next
        # Members the answer names that we did not know of are worth asking too.
        for address in view.addresses():
            if address not in self.asked and address not in self.queue:
                self.queue.append(address)

    def on_reply(self, address: str, reply: object) -> None:
        """`address` answered REPLIKV TOPOLOGY with `reply`; one that is not a topology counts
        as an error of that member."""
        try:
            view = parse_topology(reply, address)
        except TopologyError as e:
            self.on_error(address, e)
            return
        self.on_view(view)

    def on_error(self, address: str, error: BaseException) -> None:
        self.core.note_failure(address, self.now)

    def finish(self, now: float) -> Topology | None:
        self.core.accept(self.best, now)
        return self.best


__all__ = ["Attempt", "ClientCore", "ClientOptions", "ClientSession", "CommandPlan",
           "Discovery", "SessionPool", "build_options", "normalize_choice"]
