"""Node settings: from a TOML file, overridden by command-line flags, checked once.

Every setting has one name used in the TOML file, the flag (`--peer-listen` ↔ `peer_listen`)
and the README. Errors name the setting and say what a valid value looks like.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from replikv.concerns import (
    READ_CONSISTENCIES,
    READ_PREFERENCES,
    WRITE_CONCERNS,
    RequestOptions,
)
from replikv.limits import DEFAULT_LIMITS, Limits
from replikv.node import REPLICATION_MODES
from replikv.tls import TlsFiles

# When a node's log reaches the disk; see NodeSettings.fsync.
FSYNC_MODES = ("always", "batch", "never")
LOG_FORMATS = ("text", "json")
FSYNC_INTERVAL_MS_MAX = 10_000
DISK_FREE_BYTES_MAX = 1 << 60  # 1 EiB: the disk space thresholds
MAXMEMORY_MAX = 1 << 50  # 1 PiB
# Redis's maxmemory policies. replikv keeps the first: it never evicts (see NodeCore.maxmemory).
MAXMEMORY_POLICY = "noeviction"
_EVICTION_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru",
                      "volatile-lfu", "volatile-random", "volatile-ttl")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, setting: str) -> Address:
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{setting}: expected HOST:PORT such as 127.0.0.1:7001, got {text!r}")
    return Address(host.strip("[]"), int(port))


def parse_peers(text: str) -> dict[str, Address]:
    peers: dict[str, Address] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node_id, sep, addr = item.partition("=")
        if not sep or not node_id:
            raise ConfigError(f"peers: expected ID=HOST:PORT[,ID=HOST:PORT...], got {item!r}")
        if node_id in peers:
            raise ConfigError(f"peers: node id {node_id!r} appears twice")
        peers[node_id] = parse_address(addr, f"peers ({node_id})")
    return peers


@dataclass(frozen=True, slots=True)
class NodeSettings:
    id: str
    data_dir: Path
    listen: Address
    peer_listen: Address
    # Every voting member including this node, id -> peer address.
    peers: dict[str, Address]
    admin: Address | None = None
    # Nodes refuse peers from another cluster. Default: derived from the sorted member ids.
    cluster_id: str = ""
    # Set by validate(): cluster_id was not given, so it is the derived default. The node then
    # uses the id its data dir recorded instead, or, joining with an empty data dir, the one
    # the members answer with (see NodeServer.resolve_cluster_id).
    cluster_id_derived: bool = False
    tick_ms: int = 50
    heartbeat_ticks: int = 2
    election_ticks: int = 10
    request_timeout_ms: int = 5000
    log_level: str = "info"
    log_format: str = "text"  # "text" or "json" (one JSON object per line)
    # "always": the log is fsynced before anything that depends on it is acknowledged.
    # "batch": acknowledged once written; fsynced every fsync_interval_ms, so a power loss (not
    # a process crash) can lose that window of acknowledged writes. "never": left to the OS.
    # The term and vote are fsynced in both "always" and "batch".
    fsync: str = "always"
    fsync_interval_ms: int = 100
    # Cluster-wide, fixed when the data dir is first created: "passive" (the log carries the
    # primary's effects) or "active" (the log carries commands; every replica executes them).
    replication: str = "passive"
    # What a new client connection starts with (REPLIKV commands change it per connection).
    write_concern: str = "majority"
    read_preference: str = "primary"
    read_consistency: str = "linearizable"
    # This node joins a running cluster: it is not one of the members the cluster was created
    # with (`peers` lists the running members, so it can reach them, and itself). It serves
    # nothing until `replikv member add` makes it a standby, and votes once promoted.
    join: bool = False
    # Accept fault injection over the admin API (POST /faults): partitions and delays inside
    # the peer transport. `replikv cluster up` turns it on for its local clusters.
    fault_injection: bool = False
    # Log compaction: snapshot the state once the log since the last snapshot costs
    # `snapshot_log_ratio` of the keyspace's memory (and at least `snapshot_log_min_bytes`; see
    # NodeConfig), or holds `snapshot_log_bytes`, or every `snapshot_entries` applied entries
    # (0: no count rule), then keep only the last `snapshot_keep_entries` entries before it.
    snapshot_log_ratio: float = 0.25
    snapshot_log_min_bytes: int = 8 * 1024 * 1024
    snapshot_entries: int = 0
    snapshot_keep_entries: int = 5_000
    # ...and no more of them than hold this many bytes of entry data (0: no byte bound).
    snapshot_keep_bytes: int = 16 * 1024 * 1024
    # ...or once the entries applied since the last snapshot hold this many bytes (0: no limit).
    snapshot_log_bytes: int = 256 * 1024 * 1024
    # A snapshot sent to a follower travels in chunks of this size, one at a time.
    snapshot_chunk_bytes: int = 1024 * 1024
    # Automatic replacement (off when 0): the leader promotes a caught-up standby when a voter
    # has been unreachable for this long, and demotes the lost voter to standby.
    auto_replace_after_ms: int = 0
    # Point-in-time recovery (off when None): keep a copy of every log segment in this
    # directory (one per node, best on another disk), for `replikv restore --until`.
    archive_dir: Path | None = None
    # Scheduled backups (off when backup_every_ms is 0): the leader writes a backup into
    # backup_dir every backup_every_ms and keeps the newest backup_keep.
    backup_dir: Path | None = None
    backup_every_ms: int = 0
    backup_keep: int = 24
    # Disk space of the file system holding data_dir (sampled about once a second): below
    # disk_low_free_bytes the node reports its disk "low" (a WARNING, /status, /metrics,
    # `replikv status`); below disk_min_free_bytes it refuses to start, since a node whose log
    # write fails for want of space stops (fail-stop). 0 turns either off.
    disk_low_free_bytes: int = 512 * 1024 * 1024
    disk_min_free_bytes: int = 16 * 1024 * 1024
    # The cluster password (Redis's `requirepass`; empty: none). Clients must AUTH with it
    # before any other command, the admin API's backup and POST endpoints ask for it, and
    # members prove to each other that they know it when their peer links connect (every
    # member needs the same one). Given in the config file or read from `requirepass_file`,
    # whose first line is the password and whose other lines are earlier ones still accepted
    # while a new one is rolled out (`requirepass_previous`); the node reads the file again on
    # SIGHUP. Kept out of reprs so that it is never logged.
    requirepass: str = field(default="", repr=False)
    requirepass_previous: tuple[str, ...] = field(default=(), repr=False)
    requirepass_file: Path | None = None
    # TLS (all three files, or none; see replikv.tls): every port then speaks only TLS, peer
    # links with certificates on both sides signed by tls_ca_cert_file. With
    # tls_auth_clients, clients (and admin API callers) must present one too.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_cert_file: Path | None = None
    tls_auth_clients: bool = False
    # Redis's maxmemory (0: no limit): while the keyspace holds more than this many bytes
    # (INFO's used_memory), the leader refuses writes that can add data with Redis's OOM
    # error; reads and deletes still run. Every member should have the same, since the
    # leader's applies. The policy is always noeviction: replikv never evicts keys.
    maxmemory: int = 0
    maxmemory_policy: str = MAXMEMORY_POLICY
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)

    def validate(self) -> NodeSettings:
        if not self.id or len(self.id) > 64 or not self.id.replace("-", "").replace(
                "_", "").isalnum():
            raise ConfigError(f"id: use letters, digits, '-' or '_' (at most 64), got {self.id!r}")
        if self.id not in self.peers:
            raise ConfigError(f"peers must include this node ({self.id}); got "
                              f"{', '.join(self.peers) or 'nothing'}")
        if self.peers[self.id] != self.peer_listen and self.peers[self.id].port != \
                self.peer_listen.port:
            raise ConfigError(f"peers says {self.id} is at {self.peers[self.id]} but "
                              f"peer_listen is {self.peer_listen}")
        if not 1 <= self.tick_ms <= 1000:
            raise ConfigError("tick_ms: expected 1..1000")
        if self.election_ticks <= self.heartbeat_ticks * 2:
            raise ConfigError("election_ticks must be more than twice heartbeat_ticks")
        if self.request_timeout_ms < self.tick_ms:
            raise ConfigError("request_timeout_ms must be at least one tick")
        if self.fsync not in FSYNC_MODES:
            raise ConfigError(f"fsync: expected one of {', '.join(FSYNC_MODES)}, got "
                              f"{self.fsync!r}")
        if not 1 <= self.fsync_interval_ms <= FSYNC_INTERVAL_MS_MAX:
            raise ConfigError(f"fsync_interval_ms: expected 1..{FSYNC_INTERVAL_MS_MAX} "
                              f"(milliseconds), got {self.fsync_interval_ms}")
        if self.replication not in REPLICATION_MODES:
            raise ConfigError(f"replication: expected one of {', '.join(REPLICATION_MODES)}, "
                              f"got {self.replication!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: expected one of {', '.join(LOG_FORMATS)}, got "
                              f"{self.log_format!r}")
        for name, allowed in (("write_concern", WRITE_CONCERNS),
                              ("read_preference", READ_PREFERENCES),
                              ("read_consistency", READ_CONSISTENCIES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: expected one of {', '.join(allowed)}, got "
                                  f"{getattr(self, name)!r}")
        if not 0 <= self.snapshot_entries <= 1 << 40:
            raise ConfigError("snapshot_entries: expected 0 (no count rule) or a number of log "
                              "entries")
        if not 0 <= self.snapshot_log_ratio <= 100:
            raise ConfigError("snapshot_log_ratio: expected 0 (off) or a fraction of the "
                              "keyspace's memory such as 0.25 (at most 100)")
        if not 0 <= self.snapshot_log_min_bytes <= 1 << 50:
            raise ConfigError("snapshot_log_min_bytes: expected a number of bytes >= 0")
        if not 0 <= self.snapshot_keep_entries <= 1 << 40:
            raise ConfigError("snapshot_keep_entries: expected a number of log entries >= 0")
        if not 0 <= self.snapshot_keep_bytes <= 1 << 50:
            raise ConfigError("snapshot_keep_bytes: expected 0 (no limit) or a number of bytes")
        if not 0 <= self.snapshot_log_bytes <= 1 << 50:
            raise ConfigError("snapshot_log_bytes: expected 0 (no limit) or a number of bytes")
        chunk_max = self.limits.max_peer_frame_bytes // 2
        if not 4096 <= self.snapshot_chunk_bytes <= chunk_max:
            raise ConfigError(f"snapshot_chunk_bytes: expected 4096..{chunk_max} bytes")
        if self.auto_replace_after_ms and self.auto_replace_after_ms < 10 * self.tick_ms:
            raise ConfigError("auto_replace_after_ms: expected 0 (off) or at least ten ticks "
                              f"({10 * self.tick_ms} ms); a few election timeouts is sensible")
        if self.archive_dir is not None:
            archive, data = Path(self.archive_dir).resolve(), Path(self.data_dir).resolve()
            wal = data / "wal"
            if archive == data or archive == wal or wal in archive.parents:
                raise ConfigError(f"archive_dir: {self.archive_dir} would mix the archive with "
                                  "the node's own files; use a directory outside "
                                  f"{Path(self.data_dir) / 'wal'} (best on another disk)")
        if (self.backup_dir is None) != (self.backup_every_ms == 0):
            raise ConfigError("scheduled backups need both backup_dir and backup_every "
                              "(e.g. --backup-dir backups --backup-every 1h)")
        if self.backup_every_ms and self.backup_every_ms < 1000:
            raise ConfigError("backup_every: at least 1s")
        if not 1 <= self.backup_keep <= 100_000:
            raise ConfigError("backup_keep: expected 1..100000")
        for name, example in (("disk_low_free_bytes", "536870912 (512 MiB)"),
                              ("disk_min_free_bytes", "16777216 (16 MiB)")):
            if not 0 <= getattr(self, name) <= DISK_FREE_BYTES_MAX:
                raise ConfigError(f"{name}: expected 0 (off) or a number of bytes such as "
                                  f"{example}, got {getattr(self, name)}")
        if self.disk_min_free_bytes > self.disk_low_free_bytes:
            raise ConfigError(f"disk_min_free_bytes ({self.disk_min_free_bytes}) is above "
                              f"disk_low_free_bytes ({self.disk_low_free_bytes}): a node would "
                              "refuse to start on a disk it does not report low. Lower "
                              "disk_min_free_bytes as well (0 turns the start-up check off)")
        if not 0 <= self.maxmemory <= MAXMEMORY_MAX:
            raise ConfigError(f"maxmemory: expected 0 (no limit) or a size such as 512mb or "
                              f"2gb, at most 1 PiB; got {self.maxmemory}")
        check_maxmemory_policy(self.maxmemory_policy)
        for password in (self.requirepass, *self.requirepass_previous):
            check_password(password, "requirepass")
        tls = (self.tls_cert_file, self.tls_key_file, self.tls_ca_cert_file)
        if any(tls) and not all(tls):
            raise ConfigError("TLS needs all three of tls_cert_file, tls_key_file and "
                              "tls_ca_cert_file (the node's certificate, its key, and the CA "
                              "that signs every member's certificate)")
        if self.tls_auth_clients and not all(tls):
            raise ConfigError("tls_auth_clients needs TLS: give tls_cert_file, tls_key_file "
                              "and tls_ca_cert_file")
        cluster_id = self.cluster_id or default_cluster_id(self.bootstrap_peers())
        return replace(self, cluster_id=cluster_id,
                       cluster_id_derived=self.cluster_id_derived or not self.cluster_id)

    def bootstrap_peers(self) -> dict[str, Address]:
        """The members the cluster was created with: `peers`, without this node if it joins."""
        if self.join:
            return {k: v for k, v in self.peers.items() if k != self.id}
        return self.peers

    def tls_files(self) -> TlsFiles | None:
        """The node's TLS files, or None when it speaks plain TCP."""
        if self.tls_cert_file is None or self.tls_key_file is None or \
                self.tls_ca_cert_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_ca_cert_file)

    def default_options(self) -> RequestOptions:
        return RequestOptions(w=self.write_concern, read_preference=self.read_preference,
                              read_consistency=self.read_consistency)


def default_cluster_id(peers: Mapping[str, object]) -> str:
    digest = hashlib.sha256(",".join(sorted(peers)).encode()).hexdigest()[:12]
    return f"replikv-{digest}"


_SIMPLE = {f.name for f in fields(NodeSettings)} - {"limits", "cluster_id_derived",
                                                    "requirepass_previous"}

# A password is compared as UTF-8 bytes; this bounds what a client's AUTH makes us hash.
PASSWORD_BYTES_MAX = 512


def check_password(password: str, setting: str) -> None:
    """ConfigError unless `password` is empty (none) or a usable password."""
    if not password:
        return
    if len(password.encode()) > PASSWORD_BYTES_MAX:
        raise ConfigError(f"{setting}: at most {PASSWORD_BYTES_MAX} bytes")
    if any(c in password for c in "\r\n\0"):
        raise ConfigError(f"{setting}: a password cannot contain a line break or a NUL byte")
    if password != password.strip():
        raise ConfigError(f"{setting}: a password cannot begin or end with white space "
                          "(too easy to lose when it is copied or kept in a file)")


# Passwords one requirepass_file may hold: the current one and earlier ones still accepted.
PASSWORDS_MAX = 8


def read_passwords(path: Path | str, setting: str) -> tuple[str, ...]:
    """The passwords in the file `path`, one per line: the first is the one to use, the others
    are accepted as well (while a new password is rolled out, the old one on the next line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{setting}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e}") from None
    lines = text.removesuffix("\n").split("\n")
    passwords = tuple(line.removesuffix("\r") for line in lines)
    if not passwords[0]:
        raise ConfigError(f"{setting}: {path} is empty; put the password in it (one line)")
    if len(passwords) > PASSWORDS_MAX:
        raise ConfigError(f"{setting}: {path} holds {len(passwords)} lines; at most "
                          f"{PASSWORDS_MAX} passwords (the current one first)")
    for number, password in enumerate(passwords, 1):
        if not password:
            raise ConfigError(f"{setting}: line {number} of {path} is empty; one password "
                              "per line, the current one first")
        check_password(password, f"{setting} (line {number})")
    return passwords


def load_settings(config_file: Path | None, overrides: Mapping[str, object]) -> NodeSettings:
    """Settings from `config_file` (TOML) with `overrides` (flags that were given) on top."""
    raw: dict[str, object] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config_file}: {e}") from None
        raw = {k.replace("-", "_"): v for k, v in raw.items()}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("requirepass_file") is not None:
        raw.pop("requirepass", None)  # the flag overrides the file's password too
    unknown = set(raw) - _SIMPLE - {"max_bulk_bytes", "backup_every",
                                    "pubsub_output_buffer_limit_bytes"}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    for name in ("id", "data_dir", "listen", "peer_listen", "peers"):
        if name not in raw:
            raise ConfigError(f"{name} is required (flag --{name.replace('_', '-')} or "
                              f"'{name}' in the config file)")
    peers = raw["peers"]
    if isinstance(peers, str):
        peers = parse_peers(peers)
    elif isinstance(peers, dict):
        peers = {str(k): parse_address(str(v), f"peers ({k})") for k, v in peers.items()}
    else:
        raise ConfigError("peers: expected 'n1=HOST:PORT,...' or a table of id = \"HOST:PORT\"")
    passwords: tuple[str, ...] = (_str(raw.get("requirepass", ""), "requirepass"),)
    requirepass_file = _path(raw.get("requirepass_file"))
    if requirepass_file is not None:
        if passwords[0]:
            raise ConfigError("requirepass and requirepass_file both given: use one")
        passwords = read_passwords(requirepass_file, "requirepass_file")
    limits = DEFAULT_LIMITS
    if "max_bulk_bytes" in raw:
        limits = replace(limits, max_bulk_bytes=_int(raw.pop("max_bulk_bytes"), "max_bulk_bytes"))
    if "pubsub_output_buffer_limit_bytes" in raw:
        hard = _int(raw.pop("pubsub_output_buffer_limit_bytes"),
                    "pubsub_output_buffer_limit_bytes")
        if hard < 1:
            raise ConfigError("pubsub_output_buffer_limit_bytes: expected a positive number "
                              "of bytes")
        # The soft limit (Redis's 8mb for 60 s) stays at most the hard one.
        limits = replace(limits, pubsub_output_hard_limit_bytes=hard,
                         pubsub_output_soft_limit_bytes=min(
                             hard, limits.pubsub_output_soft_limit_bytes))
    settings = NodeSettings(
        id=str(raw["id"]),
        data_dir=Path(str(raw["data_dir"])),
        listen=parse_address(str(raw["listen"]), "listen"),
        peer_listen=parse_address(str(raw["peer_listen"]), "peer_listen"),
        peers=peers,
        admin=parse_address(str(raw["admin"]), "admin") if raw.get("admin") else None,
        cluster_id=str(raw.get("cluster_id", "")),
        tick_ms=_int(raw.get("tick_ms", 50), "tick_ms"),
        heartbeat_ticks=_int(raw.get("heartbeat_ticks", 2), "heartbeat_ticks"),
        election_ticks=_int(raw.get("election_ticks", 10), "election_ticks"),
        request_timeout_ms=_int(raw.get("request_timeout_ms", 5000), "request_timeout_ms"),
        log_level=str(raw.get("log_level", "info")),
        log_format=_str(raw.get("log_format", "text"), "log_format"),
        fsync=_str(raw.get("fsync", "always"), "fsync"),
        fsync_interval_ms=_int(raw.get("fsync_interval_ms", 100), "fsync_interval_ms"),
        replication=_str(raw.get("replication", "passive"), "replication"),
        write_concern=str(raw.get("write_concern", "majority")),
        read_preference=_str(raw.get("read_preference", "primary"), "read_preference"),
        read_consistency=_str(raw.get("read_consistency", "linearizable"), "read_consistency"),
        join=_bool(raw.get("join", False), "join"),
        fault_injection=_bool(raw.get("fault_injection", False), "fault_injection"),
        snapshot_log_ratio=_float(raw.get("snapshot_log_ratio", 0.25), "snapshot_log_ratio"),
        snapshot_log_min_bytes=_int(raw.get("snapshot_log_min_bytes", 8 * 1024 * 1024),
                                    "snapshot_log_min_bytes"),
        snapshot_entries=_int(raw.get("snapshot_entries", 0), "snapshot_entries"),
        snapshot_keep_entries=_int(raw.get("snapshot_keep_entries", 5_000),
                                   "snapshot_keep_entries"),
        snapshot_keep_bytes=_int(raw.get("snapshot_keep_bytes", 16 * 1024 * 1024),
                                 "snapshot_keep_bytes"),
        auto_replace_after_ms=_int(raw.get("auto_replace_after_ms", 0), "auto_replace_after_ms"),
        snapshot_log_bytes=_int(raw.get("snapshot_log_bytes", 256 * 1024 * 1024),
                                "snapshot_log_bytes"),
        snapshot_chunk_bytes=_int(raw.get("snapshot_chunk_bytes", 1024 * 1024),
                                  "snapshot_chunk_bytes"),
        archive_dir=Path(str(raw["archive_dir"])) if raw.get("archive_dir") else None,
        backup_dir=Path(str(raw["backup_dir"])) if raw.get("backup_dir") else None,
        backup_every_ms=parse_duration_ms(raw["backup_every"], "backup_every")
        if raw.get("backup_every") else 0,
        backup_keep=_int(raw.get("backup_keep", 24), "backup_keep"),
        disk_low_free_bytes=_int(raw.get("disk_low_free_bytes", 512 * 1024 * 1024),
                                 "disk_low_free_bytes"),
        disk_min_free_bytes=_int(raw.get("disk_min_free_bytes", 16 * 1024 * 1024),
                                 "disk_min_free_bytes"),
        requirepass=passwords[0], requirepass_previous=passwords[1:],
        requirepass_file=requirepass_file,
        tls_cert_file=_path(raw.get("tls_cert_file")),
        tls_key_file=_path(raw.get("tls_key_file")),
        tls_ca_cert_file=_path(raw.get("tls_ca_cert_file")),
        tls_auth_clients=_bool(raw.get("tls_auth_clients", False), "tls_auth_clients"),
        maxmemory=parse_memory(raw.get("maxmemory", 0), "maxmemory"),
        maxmemory_policy=_str(raw.get("maxmemory_policy", MAXMEMORY_POLICY),
                              "maxmemory_policy"),
        limits=limits,
    )
    return settings.validate()


def _int(v: object, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ConfigError(f"{name}: expected an integer, got {v!r}")
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {v!r}") from None


# Redis's memory units (redis.conf): k, m, g are powers of 1000; kb, mb, gb of 1024.
_MEMORY_UNITS = {"b": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2,
                 "g": 1000 ** 3, "gb": 1024 ** 3}


def parse_memory(v: object, name: str) -> int:
    """A size as Redis writes maxmemory: 1048576, "100mb", "2gb", "500k" (k/m/g: powers of
    1000; kb/mb/gb: of 1024), as bytes."""
    text = str(v).strip().lower() if isinstance(v, int | str) and not isinstance(v, bool) \
        else ""
    number = text.rstrip("bkmg")
    unit = text[len(number):]
    if number.isdigit() and len(number) <= 18 and unit in ("", *_MEMORY_UNITS):
        size = int(number) * _MEMORY_UNITS.get(unit, 1)
        if size <= MAXMEMORY_MAX:
            return size
    raise ConfigError(f"{name}: expected a size in bytes such as 104857600, 100mb or 2gb "
                      f"(k, m, g: powers of 1000; kb, mb, gb: of 1024; 0: no limit), got {v!r}")


def check_maxmemory_policy(policy: str) -> None:
    """ConfigError unless `policy` is noeviction, the one replikv has, saying why."""
    if policy.lower() == MAXMEMORY_POLICY:
        return
    why = ("replikv never evicts keys: over maxmemory it refuses writes that add data "
           "(noeviction), so that a store nobody told to forget forgets nothing")
    if policy.lower() in _EVICTION_POLICIES:
        raise ConfigError(f"maxmemory_policy {policy!r} is not available: {why}")
    raise ConfigError(f"maxmemory_policy: expected {MAXMEMORY_POLICY!r} ({why}), got "
                      f"{policy!r}")


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(v: object, name: str) -> int:
    """"90s", "30m", "1h", "1d", "500ms" (or a number of seconds) as milliseconds."""
    text = str(v).strip().lower()
    for unit in sorted(_DURATION_UNITS_MS, key=len, reverse=True):
        number = text.removesuffix(unit)
        if number != text and number.strip().isdigit():
            return int(number) * _DURATION_UNITS_MS[unit]
    if text.isdigit():
        return int(text) * 1000
    raise ConfigError(f"{name}: expected a duration such as 90s, 30m, 1h or 1d, got {v!r}")


def _float(v: object, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ConfigError(f"{name}: expected a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ConfigError(f"{name}: expected a finite number, got {v!r}")
    return f


def _bool(v: object, name: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0"):
        return v.lower() in ("true", "yes", "1")
    raise ConfigError(f"{name}: expected true or false, got {v!r}")


def _path(v: object) -> Path | None:
    return Path(str(v)) if v else None


def _str(v: object, name: str) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{name}: expected a string, got {v!r}")
    return v
