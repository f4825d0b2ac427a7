"""What a client chooses per connection or per command: write concern, read preference, read
consistency. Plain values, parsed and validated here once, carried by the node core and over
the peer link with a forwarded request.

- Write concern `w`: when a write is acknowledged.
  "1"        once it is durable in the leader's log (asynchronous replication: a failover can
             lose it; the deposed leader then saves it in a rollback file);
  "majority" once a majority of voters have it durably and it is committed (the default);
  "all"      once every voter has it durably (fully synchronous). After `wtimeout_ms` without
             all copies the client gets WTIMEOUT: the write is committed on a majority, but not
             on every voter.
- Read preference: which node may execute a read ("primary" and "primaryPreferred" send it to
  the leader, "secondary" only to a follower, "secondaryPreferred" and "nearest" to whichever
  node the client is connected to). With `max_staleness_ms`, a follower further behind than
  that refuses a read that it would serve from its own, possibly stale, state.
- Read consistency: "linearizable" (ReadIndex: a quorum round confirms leadership), "lease"
  (the leader's lease replaces the round; safe while clocks run at the same rate within the
  margin described in raft/core.py), "local" (this node's applied state, no confirmation; may be
  stale).

A client sets them for its connection with `REPLIKV WRITECONCERN|READPREF|CONSISTENCY` or for
one command with `REPLIKV WITH <option> <value> ... <command>` (see server/local_commands.py).

Retryable writes (see replikv.sessions): `session` is the connection's session id (`REPLIKV
SESSION <id>`), `seq` one write's sequence number in it (`REPLIKV WITH SEQ <n> <write>`). A write
with a `seq` is executed at most once per (session, seq), however often it is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from replikv.replies import CommandError
from replikv.sessions import SEQ_MAX, check_seq, check_session_id, parse_seq

WRITE_CONCERNS = ("1", "majority", "all")
READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
READ_CONSISTENCIES = ("linearizable", "lease", "local")
# Preferences that let a follower serve the read from its own state.
FOLLOWER_MAY_SERVE = frozenset({"secondary", "secondaryPreferred", "nearest"})
TIMEOUT_MS_MAX = 24 * 3600 * 1000

_WRITE_CONCERN_BY_LOWER = {w.lower(): w for w in WRITE_CONCERNS}
_PREFERENCE_BY_LOWER = {p.lower(): p for p in READ_PREFERENCES}
_CONSISTENCY_BY_LOWER = {c.lower(): c for c in READ_CONSISTENCIES}


@dataclass(frozen=True, slots=True)
class RequestOptions:
    w: str = "majority"
    wtimeout_ms: int | None = None  # None: the node's request timeout
    read_preference: str = "primary"
    read_consistency: str = "linearizable"
    max_staleness_ms: int | None = None  # None: no bound
    session: bytes | None = None  # the connection's session id (REPLIKV SESSION)
    seq: int | None = None  # this write's sequence number in `session` (REPLIKV WITH SEQ)

    def as_fields(self) -> list:
        """The options as a flat list for INFO-style output and the peer wire: five fields, and
        the session and seq after them only when either is set (so options without them look
        exactly as they did before sessions existed)."""
        fields: list = [self.w, self.wtimeout_ms, self.read_preference, self.read_consistency,
                  self.max_staleness_ms]
        if self.session is not None or self.seq is not None:
            fields += [self.session, self.seq]
        return fields


DEFAULT_OPTIONS = RequestOptions()

# Connections' options, one object per distinct value: the runtime joins the plain writes of
# connections whose options are the same object into one log entry, and clients that all say
# REPLIKV WRITECONCERN majority should share one. Bounded; past it options stay unshared
# (still correct, only not joined).
INTERNED_OPTIONS_MAX = 1024
_interned: dict[RequestOptions, RequestOptions] = {DEFAULT_OPTIONS: DEFAULT_OPTIONS}


def interned(options: RequestOptions) -> RequestOptions:
    """The one shared object equal to `options` (a connection's settings after REPLIKV
    WRITECONCERN, CONSISTENCY, SESSION, ...), or `options` itself once INTERNED_OPTIONS_MAX
    distinct values are kept. Options naming a session are not kept: a session is one
    client's, so no other connection shares it."""
    shared = _interned.get(options)
    if shared is not None:
        return shared
    if options.session is None and len(_interned) < INTERNED_OPTIONS_MAX:
        _interned[options] = options
    return options


def confirmed_read(options: RequestOptions) -> RequestOptions:
    """The options of a read a node makes for a client that must see every write acknowledged
    before it (a blocking command looking for its keys): linearizable, or by the leader's lease
    if the client chose that, and served by the node the client is connected to."""
    consistency = "lease" if options.read_consistency == "lease" else "linearizable"
    return interned(replace(options, read_preference="nearest", read_consistency=consistency,
                            max_staleness_ms=None))


def _choice(raw: bytes, table: dict[str, str], what: str) -> str:
    value = table.get(raw.decode("latin-1").lower())
    if value is None:
        raise CommandError(f"ERR unknown {what} '{raw.decode('utf-8', 'replace')[:64]}', "
                           f"expected one of: {', '.join(table.values())}")
    return value


def _timeout_ms(raw: bytes, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= TIMEOUT_MS_MAX:
        raise CommandError(f"ERR {what} must be a number of milliseconds in "
                           f"0..{TIMEOUT_MS_MAX}")
    return value


def parse_write_concern(raw: bytes) -> str:
    return _choice(raw, _WRITE_CONCERN_BY_LOWER, "write concern")


def parse_read_preference(raw: bytes) -> str:
    return _choice(raw, _PREFERENCE_BY_LOWER, "read preference")


def parse_read_consistency(raw: bytes) -> str:
    return _choice(raw, _CONSISTENCY_BY_LOWER, "read consistency")


# Option names accepted by REPLIKV WITH (and their setters), upper case as clients write them.
def apply_option(options: RequestOptions, name: bytes, value: bytes) -> RequestOptions:
    """`options` with the option `name` set from `value`; CommandError if either is invalid."""
    key = name.upper()
    if key == b"W":
        return replace(options, w=parse_write_concern(value))
    if key == b"WTIMEOUT":
        return replace(options, wtimeout_ms=_timeout_ms(value, "WTIMEOUT") or None)
    if key == b"READPREF":
        return replace(options, read_preference=parse_read_preference(value))
    if key == b"MAXSTALENESS":
        return replace(options, max_staleness_ms=_timeout_ms(value, "MAXSTALENESS") or None)
    if key == b"CONSISTENCY":
        return replace(options, read_consistency=parse_read_consistency(value))
    if key == b"SEQ":
        return replace(options, seq=parse_seq_arg(value))
    raise CommandError(f"ERR unknown option '{name.decode('utf-8', 'replace')[:32]}', expected "
                       "W, WTIMEOUT, READPREF, MAXSTALENESS, CONSISTENCY or SEQ")


OPTION_NAMES = frozenset({b"W", b"WTIMEOUT", b"READPREF", b"MAXSTALENESS", b"CONSISTENCY",
                          b"SEQ"})


def parse_seq_arg(raw: bytes) -> int:
    try:
        return parse_seq(raw)
    except ValueError:
        raise CommandError(f"ERR SEQ must be an integer in 1..{SEQ_MAX}") from None


def parse_session_arg(raw: bytes) -> bytes:
    try:
        return check_session_id(raw)
    except ValueError:
        raise CommandError("ERR a session id is 1 to 64 bytes") from None


def options_from_fields(fields: list) -> RequestOptions:
    """The inverse of RequestOptions.as_fields for values from a peer; ValueError if invalid."""
    if not isinstance(fields, list) or len(fields) not in (5, 7):
        raise ValueError("options must be a list of 5 or 7 fields")
    w, wtimeout_ms, preference, consistency, staleness_ms = fields[:5]
    session, seq = fields[5:] if len(fields) == 7 else (None, None)
    if w not in WRITE_CONCERNS or preference not in READ_PREFERENCES \
            or consistency not in READ_CONSISTENCIES:
        raise ValueError("unknown option value")
    for v in (wtimeout_ms, staleness_ms):
        if v is not None and (type(v) is not int or not 0 < v <= TIMEOUT_MS_MAX):
            raise ValueError("bad timeout")
    if len(fields) == 7:
        if session is None and seq is None:
            raise ValueError("session and seq both absent in the 7-field form")
        if session is not None:
            check_session_id(session)
        if seq is not None:
            check_seq(seq)
            if session is None:
                raise ValueError("a seq without a session")
    return RequestOptions(w, wtimeout_ms, preference, consistency, staleness_ms, session, seq)
