"""The `replikv` command."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Container
from pathlib import Path
from typing import TypedDict

import click

from replikv import __version__
from replikv.concerns import READ_CONSISTENCIES, READ_PREFERENCES, WRITE_CONCERNS
from replikv.config import FSYNC_MODES, REPLICATION_MODES, ConfigError, load_settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="replikv")
def main() -> None:
    """replikv: a replicated, fault-tolerant key-value store that speaks the Redis protocol.

    \b
    Start a local 3-node cluster and talk to it with redis-cli:
      replikv cluster up
      redis-cli -p 7001 SET greeting hello
      redis-cli -p 7003 GET greeting
    """


def _add_backup_commands() -> None:
    from replikv.backup.cli import archive, backup, restore

    main.add_command(backup)
    main.add_command(restore)
    main.add_command(archive)


_add_backup_commands()


@main.command(context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with any of the settings below (flags override it).")
@click.option("--id", "node_id", help="This node's id, one of the ids in --peers.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where this node keeps its log and state. Restarting with the same dir "
                   "resumes where it left off.")
@click.option("--listen", help="HOST:PORT for clients (Redis protocol).")
@click.option("--peer-listen", help="HOST:PORT for the other nodes.")
@click.option("--peers", help="Every member, this node included: n1=HOST:PORT,n2=HOST:PORT,... "
                              "(their --peer-listen addresses).")
@click.option("--admin", help="HOST:PORT for the admin HTTP endpoints (/health, /status).")
@click.option("--cluster-id", help="Refuse peers from other clusters. Default: the one the "
                                   "data dir recorded; else, with --join, the one the members "
                                   "answer with; else derived from the member ids.")
@click.option("--tick-ms", type=int, help="Length of one logical tick. [default: 50]")
@click.option("--heartbeat-ticks", type=int, help="Leader heartbeat interval in ticks. "
                                                  "[default: 2]")
@click.option("--election-ticks", type=int,
              help="Election timeout in ticks, randomized up to twice this. [default: 10]")
@click.option("--request-timeout-ms", type=int,
              help="How long a command may wait for a leader or a commit. [default: 5000]")
@click.option("--max-bulk-bytes", type=int,
              help="Largest single argument a client may send. [default: 67108864]")
@click.option("--fsync", type=click.Choice(FSYNC_MODES),
              help="When the log reaches the disk. always: fsync before acknowledging; "
                   "batch: acknowledge at once, fsync every --fsync-interval-ms (a power loss "
                   "can lose that window); never: leave it to the OS. [default: always]")
@click.option("--fsync-interval-ms", type=int,
              help="With --fsync batch, the longest time between fsyncs (1..10000). "
                   "[default: 100]")
@click.option("--replication", type=click.Choice(REPLICATION_MODES),
              help="passive: the log carries the primary's effects and backups replay them; "
                   "active: the log carries commands and every replica executes them. Fixed "
                   "when the data dir is created. [default: passive]")
@click.option("--write-concern", type=click.Choice(WRITE_CONCERNS),
              help="A new connection's write concern (REPLIKV WRITECONCERN changes it). "
                   "[default: majority]")
@click.option("--read-preference", type=click.Choice(READ_PREFERENCES),
              help="A new connection's read preference. [default: primary]")
@click.option("--read-consistency", type=click.Choice(READ_CONSISTENCIES),
              help="A new connection's read consistency. [default: linearizable]")
@click.option("--join", is_flag=True, default=None,
              help="Join a running cluster instead of creating one: --peers lists its members "
                   "and this node; then run `replikv member add` for it.")
@click.option("--snapshot-log-ratio", type=float,
              help="Snapshot the state (and compact the log) once the log since the last "
                   "snapshot costs this fraction of the keyspace's memory; 0: off. "
                   "[default: 0.25]")
@click.option("--snapshot-log-min-bytes", type=int,
              help="...but not before the log since holds this many bytes. "
                   "[default: 8388608]")
@click.option("--snapshot-entries", type=int,
              help="Also snapshot every N applied entries; 0: no count rule. [default: 0]")
@click.option("--snapshot-keep-entries", type=int,
              help="Log entries kept before a snapshot, for followers slightly behind. "
                   "[default: 5000]")
@click.option("--snapshot-keep-bytes", type=int,
              help="...but no more of them than hold this many bytes; 0: no byte bound. "
                   "[default: 16777216]")
@click.option("--archive-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep a copy of every log segment here, for point-in-time recovery "
                   "(`replikv restore --archive DIR --until ...`).")
@click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Scheduled backups: where the leader writes them (with --backup-every).")
@click.option("--backup-every", help="Scheduled backups: how often, e.g. 30m, 1h, 1d.")
@click.option("--backup-keep", type=int, help="Scheduled backups: how many to keep. "
                                                "[default: 24]")
@click.option("--snapshot-log-bytes", type=int,
              help="Also snapshot once the entries since the last snapshot hold this many "
                   "bytes; 0: no limit. [default: 268435456]")
@click.option("--snapshot-chunk-bytes", type=int,
              help="Chunk size when sending a snapshot to a follower. [default: 1048576]")
@click.option("--auto-replace-after-ms", type=int,
              help="Promote a caught-up standby when a voter has been unreachable this long "
                   "(the lost voter is demoted). 0: off. [default: 0]")
@click.option("--disk-low-free-bytes", type=int,
              help="Report the disk low (a WARNING, /status, /metrics, `replikv status`) while "
                   "the data dir's file system has less free than this; 0: never. "
                   "[default: 536870912]")
@click.option("--disk-min-free-bytes", type=int,
              help="Refuse to start while the data dir's file system has less free than this "
                   "(a node whose disk fills stops); 0: no check. [default: 16777216]")
@click.option("--maxmemory",
              help="Redis's maxmemory: while the keyspace holds more than this (INFO's "
                   "used_memory), writes that add data are refused with OOM; reads and "
                   "deletes still run. A size such as 512mb or 2gb; give every member the "
                   "same. [default: 0, no limit]")
@click.option("--requirepass-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file holding the cluster password (one line): clients must AUTH with "
                   "it, and members prove to each other that they know it. Every member needs "
                   "the same one. (Or requirepass = \"...\" in the config file.)")
@click.option("--tls-cert-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TLS: this node's certificate (PEM). With --tls-key-file and "
                   "--tls-ca-cert-file every port speaks only TLS.")
@click.option("--tls-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TLS: the certificate's private key (PEM).")
@click.option("--tls-ca-cert-file", type=click.Path(dir_okay=False, path_type=Path),
              help="TLS: the CA that signs every member's certificate; peer links accept "
                   "only certificates it signed.")
@click.option("--tls-auth-clients", is_flag=True, default=None,
              help="TLS: clients and admin API callers must present a certificate signed by "
                   "the CA too. [default: off]")
@click.option("--pubsub-output-buffer-limit-bytes", type=int,
              help="Disconnect a subscriber whose unsent messages exceed this many bytes "
                   "(Redis's client-output-buffer-limit pubsub hard limit). "
                   "[default: 33554432]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="[default: info]")
@click.option("--fault-injection", is_flag=True, default=None,
              help="Accept POST /faults on the admin port (partitions, delays; what `replikv "
                   "cluster partition|heal|slow` use). Never on a production node.")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="json: one object per line with the node id, role, term, commit and "
                   "applied index on every line. [default: text]")
def node(config_file: Path | None, node_id: str | None, data_dir: Path | None,
         listen: str | None, peer_listen: str | None, peers: str | None, admin: str | None,
         cluster_id: str | None, tick_ms: int | None, heartbeat_ticks: int | None,
         election_ticks: int | None, request_timeout_ms: int | None,
         max_bulk_bytes: int | None, fsync: str | None, fsync_interval_ms: int | None,
         replication: str | None, write_concern: str | None, read_preference: str | None,
         read_consistency: str | None, join: bool | None, snapshot_log_ratio: float | None,
         snapshot_log_min_bytes: int | None, snapshot_entries: int | None,
         snapshot_keep_entries: int | None, snapshot_keep_bytes: int | None,
         snapshot_log_bytes: int | None,
         snapshot_chunk_bytes: int | None, auto_replace_after_ms: int | None,
         archive_dir: Path | None, backup_dir: Path | None, backup_every: str | None,
         backup_keep: int | None, disk_low_free_bytes: int | None,
         disk_min_free_bytes: int | None, maxmemory: str | None,
         requirepass_file: Path | None, tls_cert_file: Path | None, tls_key_file: Path | None,
         tls_ca_cert_file: Path | None, tls_auth_clients: bool | None,
         pubsub_output_buffer_limit_bytes: int | None,
         fault_injection: bool | None, log_level: str | None,
         log_format: str | None) -> None:
    """Run one replikv node in the foreground.

    \b
    Example, node n1 of three on one machine:
      replikv node --id n1 --data-dir data/n1 --listen 127.0.0.1:7001 \\
        --peer-listen 127.0.0.1:7101 \\
        --peers n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103 \\
        --admin 127.0.0.1:7201

    \b
    The same settings from a file (flags given as well win):
      replikv node --config n1.toml
    where n1.toml holds lines such as  id = "n1"  and  peers = "n1=127.0.0.1:7101,..."
    """
    from replikv.server.runtime import run_node
    from replikv.storage.errors import StorageError
    from replikv.tls import TlsError

    overrides = {"id": node_id, "data_dir": data_dir, "listen": listen,
                 "peer_listen": peer_listen, "peers": peers, "admin": admin,
                 "cluster_id": cluster_id, "tick_ms": tick_ms,
                 "heartbeat_ticks": heartbeat_ticks, "election_ticks": election_ticks,
                 "request_timeout_ms": request_timeout_ms, "max_bulk_bytes": max_bulk_bytes,
                 "fsync": fsync, "fsync_interval_ms": fsync_interval_ms,
                 "replication": replication, "write_concern": write_concern,
                 "read_preference": read_preference, "read_consistency": read_consistency,
                 "join": join, "snapshot_log_ratio": snapshot_log_ratio,
                 "snapshot_log_min_bytes": snapshot_log_min_bytes,
                 "snapshot_entries": snapshot_entries,
                 "snapshot_keep_entries": snapshot_keep_entries,
                 "snapshot_keep_bytes": snapshot_keep_bytes,
                 "snapshot_log_bytes": snapshot_log_bytes,
                 "snapshot_chunk_bytes": snapshot_chunk_bytes,
                 "archive_dir": archive_dir, "backup_dir": backup_dir,
                 "backup_every": backup_every, "backup_keep": backup_keep,
                 "disk_low_free_bytes": disk_low_free_bytes,
                 "disk_min_free_bytes": disk_min_free_bytes, "maxmemory": maxmemory,
                 "requirepass_file": requirepass_file,
                 "tls_cert_file": tls_cert_file, "tls_key_file": tls_key_file,
                 "tls_ca_cert_file": tls_ca_cert_file, "tls_auth_clients": tls_auth_clients,
                 "auto_replace_after_ms": auto_replace_after_ms, "log_level": log_level,
                 "log_format": log_format, "fault_injection": fault_injection,
                 "pubsub_output_buffer_limit_bytes": pubsub_output_buffer_limit_bytes}
    try:
        settings = load_settings(config_file, overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    from replikv.server.logs import configure_logging

    configure_logging(settings)
    from replikv.server.runtime import NodeFailed

    try:
        run_node(settings)
    except NodeFailed as e:
        click.echo(f"replikv node {settings.id}: {e}", err=True)
        sys.exit(1)
    except (StorageError, TlsError) as e:
        click.echo(f"replikv node {settings.id}: cannot start: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"replikv node {settings.id}: cannot start: {e}", err=True)
        sys.exit(1)


@main.group(context_settings=CONTEXT)
def cluster() -> None:
    """Run a local cluster of node processes on this machine."""


@cluster.command("up", context_settings=CONTEXT)
@click.option("--nodes", type=click.Choice(["1", "3", "5"]), default="3", show_default=True,
              help="How many nodes.")
@click.option("--base-port", type=int, default=7001, show_default=True,
              help="Client ports are BASE, BASE+1, ...; peer ports BASE+100+i; admin BASE+200+i.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("replikv-data"), show_default=True,
              help="Each node keeps its data in DATA_DIR/<id>; an existing dir is resumed.")
@click.option("--fsync", type=click.Choice(FSYNC_MODES), default="always", show_default=True,
              help="Every node's fsync mode (see `replikv node --help`).")
@click.option("--replication", type=click.Choice(REPLICATION_MODES), default="passive",
              show_default=True,
              help="passive (primary-backup: the log carries effects) or active (state-machine "
                   "replication: the log carries commands). Fixed when the cluster is created.")
@click.option("--restore", "restore_file", type=click.Path(dir_okay=False, path_type=Path),
              help="First seed every node's data dir from this backup (see `replikv restore`); "
                   "the replication mode is the backup's.")
@click.option("--force", is_flag=True,
              help="With --restore: replace the nodes' existing data dirs (only once each new "
                   "one is complete and verified).")
@click.option("--standbys", type=click.IntRange(0, 4), default=0, show_default=True,
              help="Also start this many standbys (non-voting mirrors, passive redundancy), "
                   "numbered after the voters; they are added once a leader is elected.")
@click.option("--auto-replace-after-ms", type=click.IntRange(0, None), default=0,
              show_default=True,
              help="Every node's auto_replace_after_ms: the leader promotes a caught-up standby "
                   "when a voter has been unreachable this long. 0: off.")
@click.option("--archive-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep every node's log segments in ARCHIVE_DIR/<id> (its archive_dir), for "
                   "point-in-time recovery (`replikv archive`, `replikv restore --archive`). "
                   "Outside DATA_DIR; best on another disk.")
@click.option("--restore-archive", type=click.Path(file_okay=False, path_type=Path),
              help="With --restore and --until: point-in-time recovery; replay this log "
                   "archive (one node's, such as ARCHIVE_DIR/n1) on top of the backup first, as "
                   "`replikv restore --archive` does.")
@click.option("--until", help="With --restore-archive: the last log index to replay, or a time "
                              "(ISO 8601, UTC if no zone); `replikv archive find` prints one.")
@click.option("--requirepass-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Give the cluster the password in this file (one line): every node's "
                   "requirepass_file. Clients then AUTH with it (REDISCLI_AUTH for redis-cli, "
                   "REPLIKV_PASSWORD for replikv's commands).")
@click.option("--maxmemory",
              help="Every node's maxmemory: over it, writes that add data are refused with "
                   "OOM (a size such as 100mb; default: no limit).")
@click.option("--tls", is_flag=True,
              help="Every port speaks TLS: a local CA and a certificate per node are made in "
                   "DATA_DIR/tls (kept for later starts). Clients verify the nodes with "
                   "DATA_DIR/tls/ca.pem (redis-cli --tls --cacert; REPLIKV_TLS_CA_CERT for "
                   "replikv's commands).")
def cluster_up(nodes: str, base_port: int, host: str, data_dir: Path, fsync: str,
               replication: str, restore_file: Path | None, force: bool, standbys: int,
               auto_replace_after_ms: int, archive_dir: Path | None,
               restore_archive: Path | None, until: str | None,
               requirepass_file: Path | None, maxmemory: str | None, tls: bool) -> None:
    """Start a local cluster in the foreground; Ctrl-C stops every node cleanly.

    \b
    Each node's log lines are prefixed with its id. Each node's settings are written to
    DATA_DIR/<id>.toml, so a node you killed can be started again by hand with
      replikv node --config DATA_DIR/<id>.toml

    \b
    With --restore FILE, every node's data dir is first seeded from the backup FILE (the
    nodes keep their ids and ports; the cluster takes the local cluster's id), and the cluster
    starts from the backup's state. Existing data dirs are replaced only with --force.

    \b
    Examples:
      replikv cluster up
      replikv cluster up --nodes 5 --base-port 8001 --data-dir /tmp/rkv
      replikv cluster up --restore backup.rkvsnap --force
      replikv cluster up --standbys 1 --auto-replace-after-ms 5000
      replikv cluster up --archive-dir archive
      replikv cluster up --requirepass-file secret.txt --tls
      replikv cluster up --restore backup.rkvsnap --restore-archive archive/n1 --until 41234 \\
        --force --archive-dir archive
    """
    from replikv.local_cluster import ClusterError, LocalCluster

    if force and restore_file is None:
        raise click.UsageError("--force only applies with --restore FILE")
    last_port = base_port + 200 + int(nodes) + standbys - 1  # the last node's admin port
    if base_port < 1 or last_port > 65535:
        raise click.BadParameter(f"the ports from {base_port} to {last_port} must be in "
                                 "1..65535", param_hint="--base-port")
    if 0 < auto_replace_after_ms < 500:  # ten of the nodes' 50 ms ticks (see NodeSettings)
        raise click.BadParameter("expected 0 (off) or at least 500 ms; a few election "
                                 "timeouts (e.g. 5000) is sensible",
                                 param_hint="--auto-replace-after-ms")
    if archive_dir is not None and archive_dir.resolve() == data_dir.resolve():
        raise click.BadParameter("the archive must be outside the data dir (best on another "
                                 "disk), e.g. --archive-dir archive", param_hint="--archive-dir")
    if (restore_archive is None) != (until is None):
        raise click.UsageError("--restore-archive and --until go together")
    if restore_archive is not None and restore_file is None:
        raise click.UsageError("--restore-archive replays an archive on top of a backup: give "
                               "the backup with --restore FILE")
    if restore_file is not None:
        replication = _backup_replication_mode(restore_file, replication)
    try:
        cluster = LocalCluster(int(nodes), base_port=base_port, host=host, data_dir=data_dir,
                               fsync=fsync, replication=replication, standbys=standbys,
                               auto_replace_after_ms=auto_replace_after_ms,
                               archive_dir=archive_dir, requirepass_file=requirepass_file,
                               tls=tls, maxmemory=maxmemory)
        if restore_archive is not None and restore_file is not None and until is not None:
            import tempfile

            from replikv.backup.cli import replay_to_point

            cluster.lock()
            cluster.check_ports_free()
            cluster.data_dir.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".replikv-pitr-",
                                             dir=cluster.data_dir.parent) as work:
                replayed = replay_to_point(restore_file, restore_archive, until, Path(work))
                cluster.restore(replayed, force=force,
                                source=f"{restore_file} and {restore_archive} to {until}")
            cluster.run(force=force, restored=True)
        else:
            cluster.run(restore_from=restore_file, force=force)
    except ClusterError as e:
        raise click.ClickException(str(e)) from None


_DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    default=Path("replikv-data"), show_default=True,
    help="The --data-dir the cluster was started with.")


_PLAYGROUND_HELP = {
    "kill": ("Crash a node of the local cluster: SIGKILL, nothing flushed or closed.",
             "replikv cluster kill n1"),
    "pause": (("Freeze a node (SIGSTOP): no heartbeats, no answers, sockets left open, as in a "
              "long GC pause or a stalled VM."), "replikv cluster pause n1"),
    "resume": ("Unfreeze a paused node (SIGCONT).", "replikv cluster resume n1"),
    "restart": (("Stop a node if it runs and start it again (its output stays in `cluster up`'s "
                "terminal)."), "replikv cluster restart n1"),
}


def _playground_command(action: str) -> None:
    doc, example = _PLAYGROUND_HELP[action]

    @cluster.command(action, context_settings=CONTEXT,
                     help=f"{doc}\n\nActs on the cluster `replikv cluster up` runs from "
                          f"--data-dir. Watch what happens with `replikv status --watch`."
                          f"\n\n\b\nExample:\n  {example}")
    @click.argument("node_id", metavar="NODE")
    @_DATA_DIR_OPTION
    def command(node_id: str, data_dir: Path) -> None:
        from replikv.playground import PlaygroundError, request_restart, signal_node

        try:
            if action == "restart":
                pid = request_restart(data_dir, node_id)
                click.echo(f"{node_id} restarted (pid {pid})")
            else:
                pid = signal_node(data_dir, node_id, action)
                done = {"kill": "killed (SIGKILL)", "pause": "paused (SIGSTOP)",
                        "resume": "resumed (SIGCONT)"}[action]
                click.echo(f"{node_id} {done}, pid {pid}"
                           + (f"; `replikv cluster resume {node_id}` wakes it"
                              if action == "pause" else "")
                           + (f"; `replikv cluster restart {node_id}` brings it back"
                              if action == "kill" else ""))
        except PlaygroundError as e:
            raise click.ClickException(str(e)) from None


for _action in _PLAYGROUND_HELP:
    _playground_command(_action)


@cluster.command("partition", context_settings=CONTEXT)
@click.argument("groups", nargs=-1, required=True)
@_DATA_DIR_OPTION
def cluster_partition(groups: tuple[str, ...], data_dir: Path) -> None:
    """Cut the local cluster into groups that cannot reach each other.

    Groups are separated by `/` (or a quoted `|`); one group alone is cut off from all the
    others. Messages between groups are dropped inside each node's peer transport, both ways
    (clients still reach every node). `replikv cluster heal` undoes it.

    \b
    Examples:
      replikv cluster partition n1                # n1 alone; n2 and n3 together
      replikv cluster partition n1 / n2 n3        # the same, spelled out
      replikv cluster partition "n1 | n2 | n3"    # nobody reaches anybody
    """
    from replikv.playground import (
        PlaygroundError,
        blocked_by_node,
        load_state,
        post_faults,
        split_groups,
    )

    try:
        members = sorted(load_state(data_dir).get("nodes") or {})
        parts = split_groups(list(groups), members)
        for node_id, blocked in blocked_by_node(parts).items():
            post_faults(data_dir, node_id, "block=" + ",".join(blocked))
    except PlaygroundError as e:
        raise click.ClickException(str(e)) from None
    click.echo("partitioned: " + " | ".join(" ".join(g) for g in parts)
               + "   (replikv cluster heal undoes it)")


@cluster.command("heal", context_settings=CONTEXT)
@_DATA_DIR_OPTION
def cluster_heal(data_dir: Path) -> None:
    """Remove every injected partition and delay from the local cluster's nodes.

    \b
    Example:
      replikv cluster heal
    """
    from replikv.playground import PlaygroundError, load_state, post_faults

    try:
        members = sorted(load_state(data_dir).get("nodes") or {})
    except PlaygroundError as e:
        raise click.ClickException(str(e)) from None
    failed = []
    for node_id in members:
        try:
            post_faults(data_dir, node_id, "clear")
        except PlaygroundError as e:
            failed.append(str(e))
    if failed:
        raise click.ClickException("; ".join(failed))
    click.echo(f"healed: {', '.join(members)} reach each other again, with no added delay")


@cluster.command("slow", context_settings=CONTEXT)
@click.argument("node_id", metavar="NODE")
@click.option("--delay-ms", type=click.IntRange(0, 60_000), required=True,
              help="Added to every message NODE sends to its peers; 0 removes it.")
@_DATA_DIR_OPTION
def cluster_slow(node_id: str, delay_ms: int, data_dir: Path) -> None:
    """Slow down what one node sends to its peers (a congested or distant link).

    \b
    Example:
      replikv cluster slow n2 --delay-ms 50
    """
    from replikv.playground import PlaygroundError, post_faults

    try:
        post_faults(data_dir, node_id, f"delay_ms={delay_ms}")
    except PlaygroundError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{node_id}: every message to its peers now waits {delay_ms} ms"
               + ("   (replikv cluster heal undoes it)" if delay_ms else ""))


@main.command(context_settings=CONTEXT)
@click.option("--quick", is_flag=True, help="Shorter scenarios (about 30 s in all).")
@click.option("--keep", is_flag=True, help="Keep the demo's data dir (printed at the end).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo(quick: bool, keep: bool, as_json: bool) -> None:
    """Break a real local cluster in the seeds' ways and report what happened.

    Starts three nodes and a standby on free ports in a temp dir and, while a writer keeps
    writing, kills the primary, partitions it away, writes to an isolated primary at w=1 and at
    w=majority, pauses a follower, kills a follower so the standby is promoted in its place,
    takes an online backup, and restores it after a mistaken FLUSHALL has emptied every node.
    Every figure is measured in this run: how long writes were unavailable, and for every
    acknowledged write whether it survived, was rolled back (and saved in a rollback file) or
    was lost. On a terminal it shows the members and the writer live; open the dashboard URL
    it prints to watch there too.

    \b
    Examples:
      replikv demo
      replikv demo --quick --json
    """
    import json

    from replikv.demo import DemoError, format_report, run_demo

    def say(text: str) -> None:
        click.echo(text, err=as_json)

    try:
        report = run_demo(quick=quick, keep=keep, say=say,
                          live=not as_json and sys.stdout.isatty())
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report, indent=2) if as_json else "\n" + format_report(report))


def _backup_replication_mode(backup_file: Path, replication: str) -> str:
    """The replication mode of the backup `cluster up --restore` starts from; an explicit
    --replication must agree with it."""
    from replikv.backup import BackupError
    from replikv.backup.restore import BackupFileSeed
    from replikv.backup.verify import explain
    from replikv.storage.snapshot import CorruptSnapshotError

    try:
        mode = BackupFileSeed(backup_file).describe().manifest["replication_mode"]
    except (BackupError, CorruptSnapshotError) as e:
        raise click.ClickException(explain(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read {backup_file}: {e.strerror or e}") from None
    source = click.get_current_context().get_parameter_source("replication")
    if source is not click.core.ParameterSource.DEFAULT and replication != mode:
        raise click.UsageError(f"--replication {replication}: the backup was taken in "
                               f"{mode} mode, and a restored cluster keeps it")
    return mode


@main.command(context_settings=CONTEXT)
@click.option("--seeds", type=click.IntRange(1, 10**7), default=100, show_default=True,
              help="How many seeds to run (seeds FIRST .. FIRST+N-1).")
@click.option("--first", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--seed", type=int, default=None, help="Run this one seed only.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--faults", type=click.Choice(["all", "network", "crash", "disk", "none"]),
              default="all", show_default=True, help="Which faults to inject.")
@click.option("--duration-ms", type=int, default=8000, show_default=True,
              help="Simulated time of the safety phase of each seed.")
@click.option("--replication", type=click.Choice(["seed", *REPLICATION_MODES]), default="seed",
              show_default=True,
              help="passive or active replication; 'seed' lets each seed pick one.")
@click.option("--membership", type=click.Choice(["seed", "on", "off"]), default="seed",
              show_default=True,
              help="Membership changes (a spare node joins, promotions, demotions, removals, "
                   "switchovers); 'seed' lets each seed decide (40% of them).")
@click.option("--snapshots", type=click.Choice(["seed", "on", "off"]), default="seed",
              show_default=True,
              help="Snapshots every few entries, log compaction and snapshot transfers; "
                   "'seed' lets each seed decide (half of them).")
@click.option("--transactions", type=click.Choice(["on", "off"]), default="off",
              show_default=True,
              help="Send 30% of the client operations as MULTI ... EXEC transactions (with an "
                   "INCR of a side key); off keeps every seed's run as it was before.")
@click.option("--publishes", type=click.Choice(["on", "off"]), default="on",
              show_default=True,
              help="Also send PUBLISH and SPUBLISH (alone, in transactions, in pipeline "
                   "batches) and check that every node delivers each committed entry's "
                   "messages once, in log order; off replays a seed as it ran before.")
@click.option("--newer", type=click.Choice(["on", "off"]), default="on",
              show_default=True,
              help="Also send stream (XADD, XREADGROUP, XAUTOCLAIM, ...), HyperLogLog, "
                   "blocking-pop and function (FUNCTION LOAD, FCALL) commands, whose check is "
                   "that every replica ends alike; off replays a seed as it ran before.")
@click.option("--trace", is_flag=True, help="Print the event trace (use with --seed).")
def sim(seeds: int, first: int, seed: int | None, nodes: str, faults: str, duration_ms: int,
        replication: str, membership: str, snapshots: str, transactions: str,
        publishes: str, newer: str, trace: bool) -> None:
    """Run the real node cores in a simulated world, one seed at a time.

    Each seed drives a cluster through network faults (delay, loss, duplication, reordering,
    partitions), crashes, pauses and slow disks while clients run with mixed write concerns
    and read options, checking the consensus invariants as it goes, then heals everything,
    checks that the cluster recovers, that the client history is linearizable, and that every
    acknowledged w=1 write is committed or in a rollback file. The same seed replays the same
    run.

    \b
    Examples:
      replikv sim --seeds 1000
      replikv sim --seeds 200 --nodes 5 --faults network
      replikv sim --seed 12345 --trace
      replikv sim --seeds 500 --membership on --snapshots on
      replikv sim --seeds 300 --transactions on
    """
    from replikv.sim.runner import SimConfig, run_seed

    choice = {"seed": None, "on": True, "off": False}
    config = SimConfig(nodes=int(nodes), faults=faults, duration_ms=duration_ms,
                       trace_all=trace,
                       replication=None if replication == "seed" else replication,
                       membership=choice[membership], snapshots=choice[snapshots],
                       transactions=transactions == "on", publishes=publishes == "on",
                       newer=newer == "on")
    todo = [seed] if seed is not None else list(range(first, first + seeds))
    failed = []
    totals = {"ops": 0, "faults": 0, "events": 0, "elections": 0, "transactions": 0}
    started = time.perf_counter()
    with click.progressbar(todo, label="simulating", show_pos=True,
                           file=sys.stderr if len(todo) > 1 else open(os.devnull, "w"),
                           item_show_func=lambda s: f"seed {s}" if s is not None else "") as bar:
        for s in bar:
            result = run_seed(s, config)
            totals["ops"] += result.ops
            totals["faults"] += result.faults
            totals["events"] += result.events
            totals["elections"] += result.leaders
            totals["transactions"] += result.transactions
            if not result.ok:
                failed.append(result)
    elapsed = time.perf_counter() - started
    if trace and seed is not None:
        click.echo("\n".join(result.trace))
    for r in failed:
        click.echo(f"\nseed {r.seed} FAILED: {r.failure}", err=True)
        click.echo("last events:\n  " + "\n  ".join(r.trace[-25:]), err=True)
        click.echo(f"replay: replikv sim --seed {r.seed} --nodes {nodes} --faults {faults} "
                   f"--duration-ms {duration_ms} --replication {replication} --membership "
                   f"{membership} --snapshots {snapshots} --transactions {transactions} "
                   f"--publishes {publishes} --newer {newer} --trace",
                   err=True)
    sent = f" (in transactions: {totals['transactions']})" if transactions == "on" else ""
    click.echo(f"seeds run: {len(todo)} ({len(todo) / elapsed:.1f} seeds/s), faults injected: "
               f"{totals['faults']}, leaders elected: {totals['elections']}, operations "
               f"checked: {totals['ops']}{sent}, events: {totals['events']}, violations: "
               f"{len(failed)}{' (seeds ' + ', '.join(str(r.seed) for r in failed) + ')' if failed else ''}")
    sys.exit(1 if failed else 0)


@main.command(context_settings=CONTEXT)
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout-s", type=float, default=300.0, show_default=True,
              help="Give up (answer 'unknown') after this long.")
def check(history: Path, timeout_s: float) -> None:
    """Check a recorded client history (JSON Lines) for linearizability.

    Exits 0 if it is linearizable, 1 if it is not, 2 if the check gave up (--timeout-s), 3 if
    the file is not a history (which line, and why) or holds no operations.

    \b
    Example:
      replikv check history.jsonl
    """
    from replikv.check.history import load_history
    from replikv.check.linearizability import check_history, format_result

    try:
        ops = load_history(history)
    except ValueError as e:  # also UnicodeDecodeError
        click.echo(f"Error: {history} is not a history: {e}", err=True)
        sys.exit(3)
    if not ops:  # a recording that never happened must not pass
        click.echo(f"Error: {history} holds no operations", err=True)
        sys.exit(3)
    result = check_history(ops, timeout_s=timeout_s)
    click.echo(format_result(result))
    sys.exit(0 if result.ok is True else (2 if result.ok is None else 1))


# `replikv cluster up` with its defaults puts node i's admin HTTP on --base-port + 200 + i.
_LOCAL_CLUSTER_ADMIN = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
_STATUS_TIMEOUT_S = 1.0


@main.command(context_settings=CONTEXT)
@click.option("--nodes", "--cluster", "addresses", default=_LOCAL_CLUSTER_ADMIN,
              show_default=True,
              help="Each node's admin address (its --admin HOST:PORT), comma-separated. "
                   "The default is the local cluster of `replikv cluster up`.")
@click.option("--timeout-s", type=click.FloatRange(0.05, 30.0), default=_STATUS_TIMEOUT_S,
              show_default=True, help="How long to wait for each node.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every node's full /status answer (or its error) as JSON.")
@click.option("--watch", is_flag=True,
              help="Refresh the table until Ctrl-C (in place on a terminal).")
@click.option("--interval-s", type=click.FloatRange(0.1, 3600.0), default=1.0,
              show_default=True, help="With --watch: seconds between refreshes.")
@click.option("--count", type=click.IntRange(1, 10**9), default=None,
              help="With --watch: stop after this many refreshes.")
@click.option("--no-discover", is_flag=True,
              help="Ask only the given addresses, not also the members their answers name.")
def status(addresses: str, timeout_s: float, as_json: bool, watch: bool, interval_s: float,
           count: int | None, no_discover: bool) -> None:
    """Show each node's role, term, indexes, disk space, health and replication lag.

    Asks every node's admin HTTP endpoint /status at once, then any other member their
    answers name (a standby, a member added later: every node knows every member's admin
    address); a node that does not answer within the timeout is listed as unreachable
    (HEALTH down). LAST, COMMIT and APPLIED are the last
    log, commit and applied indexes; FSYNC99 the node's fsync p99 over its last 1,024 fsyncs.
    DISK: the free space of the file system holding its data dir, "(low)" below its
    disk_low_free_bytes, with a WARNING line under the table (one also says when the
    leader's keyspace is over its maxmemory). HEALTH is ok, or why not: a leader with a disconnected follower, a follower without a
    leader or more than 5 s stale. LAG: on the leader, each follower's lag in entries and
    milliseconds; on a follower, its staleness (how long since it last had everything the
    leader had committed). CONTACT: on the leader, how long ago it last heard from each
    follower. On a terminal the table has colours; piped, it is plain text, one line per node.

    \b
    Examples:
      replikv status
      replikv status --watch                     # refresh every second until Ctrl-C
      replikv status --nodes 10.0.0.1:7201,10.0.0.2:7201,10.0.0.3:7201
      replikv status --json
    """
    from replikv import status_view

    targets = _parse_admin_addresses(addresses)
    if watch:
        status_view.watch(targets, timeout_s, as_json, interval_s, count,
                          discover=not no_discover)
    else:
        status_view.show(targets, timeout_s, as_json, discover=not no_discover)


def _parse_admin_addresses(addresses: str) -> list[str]:
    targets = [a.strip() for a in addresses.split(",") if a.strip()]
    if not targets:
        raise click.BadParameter("give at least one HOST:PORT", param_hint="--nodes")
    from replikv.status_view import NODES_MAX

    if len(targets) > NODES_MAX:
        raise click.BadParameter(f"at most {NODES_MAX} addresses",
                                 param_hint="--nodes")
    for target in targets:
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"{target!r} is not HOST:PORT (a node's --admin address)",
                                     param_hint="--nodes")
    return targets


# `replikv cluster up` with its defaults: node i has client port 7000+i and admin 7200+i.
_LOCAL_CLUSTER_NODES = ("n1=127.0.0.1:7001:7201,n2=127.0.0.1:7002:7202,"
                        "n3=127.0.0.1:7003:7203")


@main.command("haproxy-config", context_settings=CONTEXT)
@click.option("--nodes", "nodes_spec", default=_LOCAL_CLUSTER_NODES, show_default=True,
              help="Every node as ID=HOST:CLIENTPORT:ADMINPORT, comma-separated (its --listen "
                   "port and its --admin port). The default is the local cluster of "
                   "`replikv cluster up`.")
@click.option("--bind", "bind_host", default="127.0.0.1", show_default=True,
              help="Address HAProxy listens on for clients.")
@click.option("--write-port", type=click.IntRange(1, 65535), default=6379, show_default=True,
              help="HAProxy's port leading to the primary.")
@click.option("--read-port", type=click.IntRange(1, 65535), default=6380, show_default=True,
              help="HAProxy's port balanced over fresh replicas and the primary.")
@click.option("--max-lag-ms", type=click.IntRange(0), default=5000, show_default=True,
              help="A replica further behind the primary than this gets no reads.")
@click.option("--tls-ca-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="The nodes speak TLS and this CA signed their certificates: health checks "
                   "use HTTPS and verify them (clients' TLS passes through to the nodes).")
def haproxy_config_command(nodes_spec: str, bind_host: str, write_port: int, read_port: int,
                           max_lag_ms: int, tls_ca_cert: Path | None) -> None:
    """Print an HAProxy (2.6+) config that sends writes to the primary and spreads reads.

    \b
    HAProxy learns the roles from each node's admin port (GET /primary, GET /replica), so
    clients keep one address across failovers.

    \b
    Examples:
      replikv haproxy-config > replikv.cfg && haproxy -f replikv.cfg
      replikv haproxy-config --bind 0.0.0.0 \\
        --nodes n1=10.0.0.1:7001:7201,n2=10.0.0.2:7001:7201,n3=10.0.0.3:7001:7201
    """
    from replikv.haproxy import haproxy_config

    nodes = _parse_haproxy_nodes(nodes_spec)
    try:
        text = haproxy_config(nodes, bind_host=bind_host, write_port=write_port,
                              read_port=read_port, max_lag_ms=max_lag_ms,
                              tls_ca_cert=str(tls_ca_cert.resolve()) if tls_ca_cert else None)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(text, nl=False)


def _parse_haproxy_nodes(spec: str) -> list[tuple[str, str, int, int]]:
    from replikv.haproxy import NODES_MAX

    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise click.BadParameter("give at least one ID=HOST:CLIENTPORT:ADMINPORT",
                                 param_hint="--nodes")
    if len(items) > NODES_MAX:
        raise click.BadParameter(f"at most {NODES_MAX} nodes", param_hint="--nodes")
    nodes = []
    for item in items:
        node_id, eq, address = item.partition("=")
        parts = address.rsplit(":", 2)  # the host may be an IPv6 address, colons and all
        if (not eq or not node_id or len(parts) != 3 or not parts[0]
                or not all(p.isdigit() and 0 < int(p) < 65536 for p in parts[1:])):
            raise click.BadParameter(
                f"{item!r} is not ID=HOST:CLIENTPORT:ADMINPORT (e.g. n1=127.0.0.1:7001:7201)",
                param_hint="--nodes")
        nodes.append((node_id, parts[0], int(parts[1]), int(parts[2])))
    return nodes


DEFAULT_DATA_DIR = Path("replikv-data")  # where `replikv cluster up` puts its nodes
_SHOW_ARG_BYTES = 200  # `rollback show` cuts each argument to this unless --full


@main.group(context_settings=CONTEXT)
def rollback() -> None:
    """Inspect log entries a node discarded when another leader replaced them.

    A leader that loses its leadership may hold entries the cluster never committed; the new
    leader's log replaces them. Before that, the node saves them to DATA_DIR/rollback/, so that
    writes a client was told had succeeded (write concern w=1) are never lost silently.

    \b
    Examples:
      replikv rollback list                          (every node of `replikv cluster up`)
      replikv rollback list --data-dir replikv-data/n1
      replikv rollback show rollback-20250101T120000.000Z-i41-45.rkvrb
    """


@rollback.command("list", context_settings=CONTEXT)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DATA_DIR, show_default=True,
              help="A node's data dir, or a directory of them (as `cluster up` makes).")
def rollback_list(data_dir: Path) -> None:
    """List rollback files, oldest first.

    \b
      replikv rollback list                       # every node of `cluster up`'s replikv-data
      replikv rollback list --data-dir data/n1    # one node's
    """
    from replikv.storage.rollback import list_rollback_files, rollback_directory

    node_dirs = _node_data_dirs(data_dir)
    found = [(info, node_dir) for node_dir in node_dirs for info in list_rollback_files(node_dir)]
    # Each node's list is in time order already; merged, the nodes' events interleave.
    found.sort(key=lambda pair: -1 if pair[0].wall_time_ms is None else pair[0].wall_time_ms)
    rows, damaged = [], []
    for info, node_dir in found:
        if info.error is not None:
            damaged.append(info)
        acked = "?" if info.acknowledged_count is None else str(info.acknowledged_count)
        if info.unknown_count:
            acked += f" (+{info.unknown_count} unknown)"
        entries = "DAMAGED" if info.error else str(info.entry_count)
        if info.maybe_committed_count:
            entries += f" ({info.maybe_committed_count} maybe committed)"
        indexes = ("?" if info.first_index is None
                   else f"{info.first_index}..{info.last_index}")
        rows.append([_format_time_ms(info.wall_time_ms), info.node_id or node_dir.name,
                     indexes, entries, acked,
                     "?" if info.new_term is None else str(info.new_term),
                     info.new_leader or ("?" if info.error else "-"), info.path.name])
    if not rows:
        where = ", ".join(str(rollback_directory(d)) for d in node_dirs)
        click.echo(f"no rollback files in {where}: no node there has discarded log entries.")
        return
    click.echo(_table(["TIME (UTC)", "NODE", "INDEXES", "ENTRIES", "ACKNOWLEDGED", "NEW TERM",
                       "NEW LEADER", "FILE"], rows, right={2, 3, 4, 5}))
    for info in damaged:
        click.echo(f"\n{info.error}", err=True)
    click.echo(f"\nShow one with: replikv rollback show FILE --data-dir {data_dir}")


@rollback.command("show", context_settings=CONTEXT)
@click.argument("file")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DATA_DIR, show_default=True,
              help="Where to look for FILE when it is a bare file name.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output, with each entry's raw bytes in base64.")
@click.option("--full", is_flag=True,
              help=f"Show long arguments whole (otherwise cut at {_SHOW_ARG_BYTES} bytes).")
def rollback_show(file: str, data_dir: Path, as_json: bool, full: bool) -> None:
    """Print the entries of one rollback FILE (a path, or a name listed by `rollback list`).

    \b
    Entries marked acknowledged were confirmed to a client (at w=1) but are not in the
    cluster's data. Check the current values before re-applying any of them.
    
    \b
      replikv rollback show rollback-20261123T101500.000Z-i41-43.rkvrb --data-dir replikv-data/n1
      replikv rollback show replikv-data/n1/rollback/rollback-20261123T101500.000Z-i41-43.rkvrb --json
    """
    import base64
    import json

    from replikv.storage.errors import CorruptRollbackFileError
    from replikv.storage.rollback import describe_entry, read_rollback_file

    path = _find_rollback_file(file, data_dir)
    try:
        rb = read_rollback_file(path)
    except CorruptRollbackFileError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror or e}") from None
    if as_json:
        entries = []
        for r in rb.records:
            entries.append({"index": r.index, "term": r.term, "acknowledged": r.acknowledged,
                            "maybe_committed": r.maybe_committed, **describe_entry(r.data),
                            "data_base64": base64.b64encode(r.data).decode("ascii")})
        click.echo(json.dumps({"path": str(path), "node_id": rb.node_id,
                               "wall_time_ms": rb.wall_time_ms, "new_term": rb.new_term,
                               "new_leader": rb.new_leader, "entries": entries}, indent=2))
        return
    acknowledged = {True: "yes", False: "no", None: "unknown"}
    not_acked = sum(1 for r in rb.records if r.acknowledged is False and not r.maybe_committed)
    maybe = (f"\nmaybe committed: {rb.maybe_committed_count} (a snapshot replaced them after "
             f"this node restarted; they may be the entries the cluster committed: read their "
             f"keys before re-applying anything)" if rb.maybe_committed_count else "")
    click.echo(f"rollback file {path}\n"
               f"node {rb.node_id} discarded {len(rb.records)} entries (indexes "
               f"{rb.first_index}..{rb.last_index}) at {_format_time_ms(rb.wall_time_ms)} UTC, "
               f"replaced by leader {rb.new_leader or '(unknown)'} of term {rb.new_term}\n"
               f"acknowledged to a client: {rb.acknowledged_count}, not acknowledged: "
               f"{not_acked}, unknown: {rb.unknown_count}{maybe}\n")
    rows = []
    for r in rb.records:
        described = describe_entry(r.data, max_arg_bytes=None if full else _SHOW_ARG_BYTES)
        text = str(described["text"])
        if "seed" in described:
            text += f"  (seed {described['seed']})"
        rows.append([str(r.index), str(r.term), acknowledged[r.acknowledged]
                     + (" (maybe committed)" if r.maybe_committed else ""),
                     str(described["kind"]), _format_time_ms(described["time_ms"]), text])
    click.echo(_table(["INDEX", "TERM", "ACKNOWLEDGED", "KIND", "TIME (UTC)", "ENTRY"], rows,
                      right={0, 1}))


class _UndoneWrite(TypedDict):
    """One write in `rollback report` (an object of its --json output)."""

    node: str
    index: int
    term: int
    acknowledged: bool | None
    maybe_committed: bool
    time_ms: int | None
    undone_at_ms: int
    keys: list[str]
    entry: str
    file: str


@rollback.command("report", context_settings=CONTEXT)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_DATA_DIR, show_default=True,
              help="A node's data dir, or a directory of them (as `cluster up` makes).")
@click.option("--all", "show_all", is_flag=True,
              help="Also list undone writes no client was told had succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rollback_report(data_dir: Path, show_all: bool, as_json: bool) -> None:
    """What did not survive: writes acknowledged to a client (at w=1) and then undone by a
    failover, by key and time, across every node's rollback files.

    \b
    Each was saved in a rollback file before it was discarded (`rollback show FILE` has the
    whole entry). A write listed here may still be in the data if another node had it and a
    later leader committed it (Raft's Figure 8): read the key before re-applying anything.

    \b
    Examples:
      replikv rollback report
      replikv rollback report --data-dir replikv-data/n1 --all --json
    """
    import json

    from replikv.entries import ALL_KEYS, entry_keys
    from replikv.storage.errors import CorruptRollbackFileError
    from replikv.storage.rollback import (
        describe_entry,
        list_rollback_files,
        read_rollback_file,
    )

    rows: list[list[str]] = []
    out: list[_UndoneWrite] = []
    problems: list[str] = []
    counts = {True: 0, False: 0, None: 0}
    maybe_committed = 0
    for node_dir in _node_data_dirs(data_dir):
        for info in list_rollback_files(node_dir):
            try:
                rb = read_rollback_file(info.path)
            except (CorruptRollbackFileError, OSError) as e:
                problems.append(str(e))
                continue
            for r in rb.records:
                described = describe_entry(r.data, max_arg_bytes=_SHOW_ARG_BYTES)
                if described["kind"] in ("noop", "membership"):
                    continue
                if r.maybe_committed:
                    maybe_committed += 1
                else:
                    counts[r.acknowledged] += 1
                if (r.acknowledged is not True or r.maybe_committed) and not show_all:
                    continue
                keys = ["(every key)" if k == ALL_KEYS else k.decode("utf-8", "replace")
                        for k in entry_keys(r.data)]
                out.append({"node": rb.node_id, "index": r.index, "term": r.term,
                            "acknowledged": r.acknowledged,
                            "maybe_committed": r.maybe_committed,
                            "time_ms": described["time_ms"],
                            "undone_at_ms": rb.wall_time_ms, "keys": keys,
                            "entry": described["text"], "file": info.path.name})
    out.sort(key=lambda o: (o["time_ms"] or 0, o["node"] or "", o["index"]))
    if as_json:
        click.echo(json.dumps({"acknowledged_undone": counts[True],
                               "unacknowledged_undone": counts[False],
                               "unknown": counts[None], "maybe_committed": maybe_committed,
                               "writes": out}, indent=2))
        return
    acknowledged = {True: "yes", False: "no", None: "unknown"}
    for o in out:
        rows.append([_format_time_ms(o["time_ms"]), str(o["node"]), str(o["index"]),
                     acknowledged[o["acknowledged"]]
                     + (" (maybe committed)" if o["maybe_committed"] else ""), ", ".join(o["keys"]) or "-", o["entry"]])
    if rows:
        click.echo(_table(["WRITTEN (UTC)", "NODE", "INDEX", "ACKNOWLEDGED", "KEYS", "ENTRY"],
                          rows, right={2}))
        click.echo("")
    click.echo(f"{counts[True]} acknowledged write(s) undone by failovers, "
               f"{counts[False]} unacknowledged, {counts[None]} unknown"
               + ("" if counts[True] else ": every acknowledged write survived")
               + ". Saved in rollback files: `replikv rollback list`.")
    if maybe_committed:
        click.echo(f"{maybe_committed} more entr{'y' if maybe_committed == 1 else 'ies'} a "
                   f"snapshot replaced after a restart may have been committed (not counted "
                   f"above; " + ("listed as 'maybe committed'" if show_all else "--all lists "
                                 "them") + "): read their keys before re-applying anything.")
    for problem in problems:
        click.echo(problem, err=True)


def _node_data_dirs(data_dir: Path) -> list[Path]:
    """`data_dir` if it is a node's data dir (or its rollback/), else the node data dirs in it."""
    hint = (f"Pass a node's data dir with --data-dir (for `replikv cluster up`, "
            f"{DEFAULT_DATA_DIR / 'n1'}), or the directory holding them ({DEFAULT_DATA_DIR}).")
    if not data_dir.is_dir():
        raise click.ClickException(f"data dir {data_dir} does not exist. {hint}")
    if data_dir.name == "rollback" and _is_node_data_dir(data_dir.parent):
        return [data_dir.parent]
    if _is_node_data_dir(data_dir):
        return [data_dir]
    children = sorted(d for d in data_dir.iterdir() if d.is_dir() and _is_node_data_dir(d))
    if not children:
        raise click.ClickException(f"{data_dir} is not a replikv data dir (it has no meta "
                                   f"file or wal/ directory, nor do its subdirectories). {hint}")
    return children


def _is_node_data_dir(path: Path) -> bool:
    return (path / "meta").is_file() or (path / "wal").is_dir() or (path / "rollback").is_dir()


def _find_rollback_file(file: str, data_dir: Path) -> Path:
    from replikv.storage.rollback import rollback_directory

    path = Path(file)
    if path.is_file():
        return path
    if path.name != file:
        raise click.ClickException(f"rollback file {file} does not exist.")
    found = [rollback_directory(d) / file for d in _node_data_dirs(data_dir)
             if (rollback_directory(d) / file).is_file()]
    if not found:
        raise click.ClickException(
            f"no rollback file named {file} in {data_dir}. See which there are with: "
            f"replikv rollback list --data-dir {data_dir}")
    if len(found) > 1:
        raise click.ClickException(
            f"{len(found)} nodes have a rollback file named {file} "
            f"({', '.join(str(p) for p in found)}); pass the path of the one you mean.")
    return found[0]


def _format_time_ms(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    seconds, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{rest:03d}"


def _table(header: list[str], rows: list[list[str]], *, right: Container[int] = ()) -> str:
    """Plain aligned columns; the last column is never padded (it may be long)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()


# `replikv cluster up` with its defaults puts node i's client port on --base-port + i.
_LOCAL_CLUSTER_CLIENTS = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
_ADMIN_TIMEOUT_S = 5.0


def _cluster_call(cluster_addresses: str, *argv: str, timeout_s: float = _ADMIN_TIMEOUT_S):
    """Send one command to the first node of `cluster_addresses` that answers (followers
    forward membership changes and switchovers to the leader)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from replikv.client.credentials import env_password, redis_tls_kwargs
    from replikv.client.errors import auth_problem, describe_connection_error

    errors = []
    addresses = [a.strip() for a in cluster_addresses.split(",") if a.strip()]
    if not addresses:
        raise click.UsageError("--cluster: expected HOST:PORT,... (the nodes' client addresses)")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.UsageError(f"--cluster: expected HOST:PORT,..., got {address!r}")
        # One try per node: redis-py's own retries made a paused node cost a minute.
        client = redis.Redis(host=host, port=int(port), socket_timeout=timeout_s,
                             socket_connect_timeout=min(timeout_s, 2.0),
                             retry=Retry(NoBackoff(), 0), password=env_password(),
                             **redis_tls_kwargs())
        try:
            return client.execute_command(*argv)
        except redis.AuthenticationError as e:  # every member has the same password
            raise click.ClickException(f"{address}: {auth_problem(str(e))}") from None
        except redis.ResponseError as e:
            raise click.ClickException(str(e)) from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            errors.append(f"{address}: {describe_connection_error(e, timeout_s)}")
        except redis.RedisError as e:  # it answered, but not in RESP: not a client port
            errors.append(f"{address}: not a replikv client port ({e}; the admin HTTP port is "
                          "not the one: give the client port, such as 7001)")
        finally:
            client.close()
    raise _NoNodeAnswered(errors)


class _NoNodeAnswered(click.ClickException):
    """No address of --cluster answered; `problems` says why, one per address."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("no node answered (" + "; ".join(problems) + "). Start a local cluster "
                         "with `replikv cluster up`, or pass the nodes' client addresses with "
                         "--cluster")
        self.problems = problems


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_CLUSTER_OPTION = click.option(
    "--cluster", "cluster_addresses", default=_LOCAL_CLUSTER_CLIENTS, show_default=True,
    help="Client addresses (HOST:PORT) of cluster nodes, comma-separated; any member will do.")


@main.group(context_settings=CONTEXT)
def member() -> None:
    """Change the cluster's membership at runtime: add standbys and voters, promote, demote,
    remove. One change at a time; each is committed through Raft before it answers."""


@member.command("add", context_settings=CONTEXT)
@click.argument("node_id")
@click.option("--peer", "peer_address", required=True,
              help="HOST:PORT where the other members reach the new node (its --peer-listen).")
@click.option("--client", "client_address", help="Its client address (its --listen).")
@click.option("--admin", "admin_address", help="Its admin HTTP address (its --admin).")
@click.option("--standby", is_flag=True,
              help="Add it as a standby (a non-voting mirror) and stop there; without this it "
                   "is promoted to voter once it has caught up.")
@click.option("--wait-s", type=click.FloatRange(1, 24 * 3600), default=600, show_default=True,
              help="How long to wait for it to catch up before promoting it.")
@_CLUSTER_OPTION
def member_add(node_id: str, peer_address: str, client_address: str | None,
               admin_address: str | None, standby: bool, wait_s: float,
               cluster_addresses: str) -> None:
    """Add NODE_ID to the cluster: first as a standby, which receives the log (or a snapshot,
    if it is far behind); then, unless --standby, promote it to voter once it has caught up.

    Start the new node first, with --join and --peers listing the running members and itself:

    \b
      replikv node --id n4 --join --data-dir data/n4 --listen 127.0.0.1:7004 \\
        --peer-listen 127.0.0.1:7104 --admin 127.0.0.1:7204 \\
        --peers n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103,n4=127.0.0.1:7104
      replikv member add n4 --peer 127.0.0.1:7104 --client 127.0.0.1:7004 \\
        --admin 127.0.0.1:7204
    """
    argv = ["REPLIKV", "MEMBER", "ADD", node_id, "PEER", peer_address]
    if client_address:
        argv += ["CLIENT", client_address]
    if admin_address:
        argv += ["ADMIN", admin_address]
    click.echo(_text(_cluster_call(cluster_addresses, *argv)))
    if standby:
        return
    _promote_when_caught_up(cluster_addresses, node_id, wait_s)


def _promote_when_caught_up(cluster_addresses: str, node_id: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    last_reason = ""
    # Given up on (time out, Ctrl-C): the node stays in the membership as a standby, which
    # counts toward no majority but is sent the log; say how to go on or undo it.
    stays = (f"{node_id} stays a standby. Once it runs and has caught up, promote it with: "
             f"replikv member promote {node_id}; to undo the addition: replikv member remove "
             f"{node_id}")
    while True:
        try:
            click.echo(_text(_cluster_call(cluster_addresses, "REPLIKV", "MEMBER", "PROMOTE",
                                           node_id)))
            return
        except click.ClickException as e:
            reason = e.message
            retryable = any(w in reason for w in ("catching up", "not reachable", "try again",
                                                  "still being committed"))
            if not retryable:
                raise
            if time.monotonic() >= deadline:
                raise click.ClickException(f"{reason}\n{stays}") from None
            if reason != last_reason:
                said = reason.removeprefix("ERR ").removeprefix("membership change refused: ")
                if "not reachable" in reason:
                    said += (f" (is it running, started with --join and the --peers above? "
                             f"waiting up to {wait_s:.0f} s; Ctrl-C stops waiting)")
                click.echo(f"waiting for {node_id}: {said}", err=True)
                last_reason = reason
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                raise click.ClickException(f"stopped waiting. {stays}") from None


def _member_change(op: str, node_id: str, cluster_addresses: str) -> None:
    click.echo(_text(_cluster_call(cluster_addresses, "REPLIKV", "MEMBER", op, node_id)))


@member.command("promote", context_settings=CONTEXT)
@click.argument("node_id")
@click.option("--wait-s", type=click.FloatRange(0, 24 * 3600), default=60, show_default=True,
              help="How long to wait for the standby to catch up first.")
@_CLUSTER_OPTION
def member_promote(node_id: str, wait_s: float, cluster_addresses: str) -> None:
    """Make standby NODE_ID a voter (it must be reachable and caught up).

    \b
      replikv member promote n4
    """
    _promote_when_caught_up(cluster_addresses, node_id, wait_s)


@member.command("demote", context_settings=CONTEXT)
@click.argument("node_id")
@_CLUSTER_OPTION
def member_demote(node_id: str, cluster_addresses: str) -> None:
    """Make voter NODE_ID a standby: it keeps receiving the log but no longer votes. Refused if
    the remaining voters could not form a majority.

    \b
      replikv member demote n4
    """
    _member_change("DEMOTE", node_id, cluster_addresses)


@member.command("remove", context_settings=CONTEXT)
@click.argument("node_id")
@_CLUSTER_OPTION
def member_remove(node_id: str, cluster_addresses: str) -> None:
    """Remove NODE_ID (voter or standby) from the cluster. Removing the leader works: it hands
    over to the most up-to-date voter once the change commits. Refused if the remaining voters
    could not form a majority. Stop the removed node's process afterwards.

    \b
      replikv member remove n4
      replikv member remove n2 --cluster 10.0.0.1:7001,10.0.0.2:7002
    """
    _member_change("REMOVE", node_id, cluster_addresses)


@member.command("list", context_settings=CONTEXT)
@_CLUSTER_OPTION
def member_list(cluster_addresses: str) -> None:
    """Show the members with their role and addresses (REPLIKV TOPOLOGY).

    \b
      replikv member list
      replikv member list --cluster 127.0.0.1:7002
    """
    # The leader's view, which knows every member's addresses and is current. A node that
    # names no leader may be cut off, or removed from the cluster (a removed node is not told:
    # it keeps the membership from before): ask the next address then.
    first: list[dict[str, object]] | None = None
    members: list[dict[str, object]] | None = None
    problems: list[str] = []
    for address in [a.strip() for a in cluster_addresses.split(",") if a.strip()]:
        try:
            view = [_member_fields(m) for m in _cluster_call(address, "REPLIKV", "TOPOLOGY")]
        except _NoNodeAnswered as e:
            problems.extend(e.problems)
            continue
        first = view if first is None else first
        leader = next((m for m in view if m.get("role") == b"leader" and m.get("client")), None)
        if leader is None:
            continue
        members = view
        if not leader.get("self"):
            try:
                members = [_member_fields(m) for m in _cluster_call(
                    _text(leader["client"]), "REPLIKV", "TOPOLOGY")]
            except click.ClickException:
                pass
        break
    if members is None:
        if first is None:
            raise _NoNodeAnswered(problems) if problems else click.UsageError(
                "--cluster: expected HOST:PORT,... (the nodes' client addresses)")
        click.echo(f"warning: no node at {cluster_addresses} names a leader, so this view may "
                   "be stale (a node removed from the cluster keeps the membership from before "
                   "its removal)", err=True)
        members = first
    for f in members:
        click.echo(f"{_text(f.get('id', '?')):<8} {_text(f.get('role', '?')):<10} "
                   f"voter={_text(f.get('voter', '?'))} client={_text(f.get('client') or '-')} "
                   f"admin={_text(f.get('admin') or '-')}")


def _member_fields(m: dict | list) -> dict[str, object]:
    fields = dict(m) if isinstance(m, dict) else dict(zip(m[::2], m[1::2]))
    return {_text(k): v for k, v in fields.items()}


@main.command(context_settings=CONTEXT)
@click.option("--to", "target", help="The voter to hand leadership to; default: the most "
                                     "up-to-date one.")
@click.option("--wait-s", type=click.FloatRange(0.5, 600), default=10, show_default=True,
              help="How long to wait for the new leader.")
@_CLUSTER_OPTION
def switchover(target: str | None, wait_s: float, cluster_addresses: str) -> None:
    """Hand leadership to another voter gracefully, for maintenance or a rolling upgrade.

    The leader stops taking new writes, brings the target fully up to date, then tells it to
    take over at once (Raft's TimeoutNow): no acknowledged write is lost and clients see a
    pause of about one round trip plus an election.

    \b
      replikv switchover              # to the most up-to-date voter
      replikv switchover --to n2
    """
    import re

    started = time.monotonic()
    argv = ["REPLIKV", "SWITCHOVER"] + ([target] if target else [])
    reply = _text(_cluster_call(cluster_addresses, *argv))
    click.echo(reply)
    named = re.search(r" to (\S+):", reply)
    target = target or (named.group(1) if named else None)
    if target is None or "already leads" in reply:
        return
    deadline = started + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            members = _cluster_call(cluster_addresses, "REPLIKV", "TOPOLOGY", timeout_s=1.0)
        except click.ClickException:
            continue
        for m in members:
            fields = dict(m) if isinstance(m, dict) else dict(zip(m[::2], m[1::2]))
            f = {_text(k): _text(v) for k, v in fields.items() if v is not None}
            if f.get("role") == "leader" and f.get("id") == target:
                click.echo(f"{target} leads now ({time.monotonic() - started:.2f} s after "
                           "the request)")
                return
    raise click.ClickException(f"{target} did not take over within {wait_s:g} s (the transfer "
                               "is abandoned after an election timeout); check `replikv status`")


@main.command(context_settings=CONTEXT)
@click.option("--cluster", "cluster_addresses", default=None,
              help="Client addresses (HOST:PORT,...) of a running cluster. Default: start a "
                   "local 3-node cluster in a temp dir and stop it at the end.")
@click.option("--workloads", default="set1,set64,set256,setp16,get64,mix90,mset10",
              show_default=True, help="Which workloads to run, in order.")
@click.option("--duration-s", type=click.FloatRange(0.1, 3600), default=10, show_default=True,
              help="How long each workload runs.")
@click.option("--keys", type=click.IntRange(1, 100_000_000), default=10_000, show_default=True,
              help="Keys are random over this many.")
@click.option("--value-bytes", type=click.IntRange(0, 1 << 20), default=100, show_default=True)
@click.option("--w", "write_concern", type=click.Choice(WRITE_CONCERNS), default="majority",
              show_default=True, help="Write concern (REPLIKV WRITECONCERN per connection).")
@click.option("--read-consistency", type=click.Choice(READ_CONSISTENCIES),
              default="linearizable", show_default=True)
@click.option("--fsync", type=click.Choice(FSYNC_MODES), default="always", show_default=True,
              help="The local cluster's fsync mode (ignored with --cluster).")
@click.option("--replication", type=click.Choice(REPLICATION_MODES), default="passive",
              show_default=True, help="The local cluster's replication (ignored with --cluster).")
@click.option("--client-processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes the client connections are spread over. One event loop "
                   "drives get64 at ~27k ops/s with 60% of a core here; add one where the "
                   "'cpu client' column nears 1000 / (ops/s).")
@click.option("--redis-benchmark", "redis_benchmark_requests", type=click.IntRange(0, 10**8),
              default=0, show_default=True, metavar="REQUESTS",
              help="Also run redis-benchmark (set and get, 64 clients, -d VALUE -r KEYS, with "
                   "and without -P 16) with this many requests per run; 0: skip.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(cluster_addresses: str | None, workloads: str, duration_s: float, keys: int,
          value_bytes: int, write_concern: str, read_consistency: str, fsync: str,
          replication: str, client_processes: int, redis_benchmark_requests: int,
          as_json: bool) -> None:
    """Measure throughput, latency (p50, p99, p99.9) and each node's CPU and memory cost.

    \b
    Workloads: set1, set64, set256 (SET at 1, 64, 256 clients), setp16 (SET, 64 clients
    pipelining 16), get64 (GET, 64 clients), mix90 (90% GET, 10% SET, 64 clients), mset10
    (MSET of 10 keys, 64 clients). Every client talks to the leader.
    
    \b
      replikv bench                                   # every workload, 10 s each
      replikv bench --workloads set1,set64 --duration-s 5 --json
      replikv bench --cluster 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --w all
    """
    from replikv import bench as bench_module

    try:
        settings = bench_module.BenchSettings(
            bench_module.parse_workloads(workloads), duration_s, keys, value_bytes,
            write_concern, read_consistency, None if cluster_addresses else fsync,
            None if cluster_addresses else replication, client_processes,
            redis_benchmark_requests=redis_benchmark_requests)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--workloads") from None
    try:
        bench_module.main(settings, cluster_addresses, as_json)
    except bench_module.BenchError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
