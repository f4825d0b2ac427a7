"""`replikv backup create|verify` and `replikv restore`: the command-line face of backups.

The work is done by `download`, `verify` and `restore`; this module parses options, draws
progress bars (on stderr, so stdout stays the report), prints summaries and turns every error
into one clear line and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click

from replikv.backup import BackupError
from replikv.backup.verify import BackupSummary, explain
from replikv.storage.snapshot import CorruptSnapshotError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MIB = 2**20


def _fail(error: BaseException) -> click.ClickException:
    if isinstance(error, CorruptSnapshotError | BackupError):
        return click.ClickException(explain(error))
    if isinstance(error, OSError):
        return click.ClickException(f"{error.filename or ''}: {error.strerror or error}"
                                    .lstrip(": "))
    return click.ClickException(str(error))


def format_time_ms(ms: int) -> str:
    seconds, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{rest:03d} UTC"


def format_summary(s: BackupSummary) -> str:
    members = "voters " + ", ".join(s.voters)
    if s.standbys:
        members += "; standbys " + ", ".join(s.standbys)
    if s.state_digest is None:
        digest = "(none recorded)"
    elif s.digest_checked:
        digest = f"{s.state_digest} (recomputed from the keys: matches)"
    else:
        digest = f"{s.state_digest} (not recomputed)"
    rows = [
        ("cluster", s.cluster_id),
        ("index / term", f"{s.index:,} / {s.term}: the state after log entry {s.index:,}"),
        ("taken", f"{format_time_ms(s.created_ms)} on node {s.taken_on_node}"),
        ("state time", format_time_ms(s.state_time_ms)),
        ("keys", f"{s.key_count:,}"),
        ("sessions", f"{s.sessions:,} retryable-write sessions"),
        ("replication", s.replication_mode),
        ("members", members),
        ("format", f"replikv snapshot format {s.format_version}"),
        ("size", f"{s.size_bytes:,} bytes ({s.size_bytes / MIB:.1f} MiB)"),
        ("checksum", f"sha256 {s.sha256} (verified)"),
        ("state digest", digest),
    ]
    if s.restored_from:
        r = s.restored_from
        rows.append(("restored from", (f"cluster {r.get('cluster_id')}, node "
                                       f"{r.get('node_id')}, index {r.get('index')}")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


@contextmanager
def progress_bar(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """(start(total), advance(n)) driving a click progress bar on stderr, if stderr is a
    terminal; both do nothing otherwise."""
    bars: list = []

    def start(total: int) -> None:
        if sys.stderr.isatty() and total > 0:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, width=30)
            bar.__enter__()
            bars.append(bar)

    def advance(n: int) -> None:
        if bars:
            bars[0].update(n)

    try:
        yield start, advance
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


@click.group(context_settings=CONTEXT)
def backup() -> None:
    """Online backups: take one from a running cluster, verify one.

    \b
    Replication is not a backup: a FLUSHALL reaches every replica within milliseconds. A backup
    is the state at one committed index, kept outside the cluster; restore it with
    `replikv restore` (one node's data dir) or `replikv cluster up --restore FILE`.

    \b
    Examples:
      replikv backup create --from 127.0.0.1:7202 --to backup.rkvsnap
      replikv backup verify backup.rkvsnap
    """


@backup.command("create", context_settings=CONTEXT)
@click.option("--from", "source", required=True, metavar="HOST:PORT",
              help="Any member's admin address (its --admin) or client address (its --listen; "
                   "then its admin address is asked for with REPLIKV TOPOLOGY).")
@click.option("--to", "dest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--timeout-s", type=click.FloatRange(1, 24 * 3600), default=600.0,
              show_default=True, help="How long to wait for the node at any one moment.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def backup_create(source: str, dest: Path, force: bool, timeout_s: float,
                  as_json: bool) -> None:
    """Take a consistent backup of a running cluster, from one member, into FILE.

    \b
    The member takes a snapshot of its state now, at one committed index, while it keeps
    serving (copy-on-write: no pause beyond milliseconds), and streams it. The file is written
    to FILE.tmp, fsynced, verified in full (checksums, counts, the state digest recomputed),
    and only then renamed to FILE. A follower's backup is as fresh as that follower; the
    leader's includes every write committed when it was asked.

    \b
    Examples:
      replikv backup create --from 127.0.0.1:7201 --to backup.rkvsnap      (admin port)
      replikv backup create --from 127.0.0.1:7002 --to backup.rkvsnap      (client port)
    """
    from replikv.backup.download import check_destination, fetch_backup, find_admin

    try:
        check_destination(dest, force=force)
        admin = find_admin(source)
        with progress_bar(f"backup from {admin.node_id}") as (start, advance):
            fetched = fetch_backup(
                admin.address, dest, force=force, timeout_s=timeout_s,
                on_start=lambda total, _headers: start(total), on_bytes=advance,
                on_waiting=lambda waited_s: click.echo(
                    f"waiting for {admin.node_id} ({admin.address}): no answer after "
                    f"{waited_s:.0f} s. It takes a snapshot before it answers, which takes a "
                    "while for a large state; a paused or hung node never answers. Ctrl-C "
                    f"stops; --timeout-s ({timeout_s:.0f} s) gives up.", err=True))
    except (BackupError, CorruptSnapshotError, OSError) as e:
        raise _fail(e) from None
    s = fetched.summary
    rate = s.size_bytes / max(fetched.transfer_seconds, 1e-9)
    if as_json:
        click.echo(json.dumps({**s.as_json(), "node": fetched.node_id, "role": fetched.role,
                               "admin": admin.address,
                               "transfer_seconds": round(fetched.transfer_seconds, 3),
                               "verify_seconds": round(fetched.verify_seconds, 3),
                               "bytes_per_s": round(rate)}, indent=2))
        return
    click.echo(f"backup written to {dest}, from node {fetched.node_id} ({fetched.role}, admin "
               f"{admin.address}):")
    click.echo(format_summary(s))
    click.echo(f"  {'transfer'.ljust(12)}  {s.size_bytes:,} bytes in {fetched.transfer_seconds:.2f}"
               f" s ({rate / 1e6:.1f} MB/s, {s.key_count / max(fetched.transfer_seconds, 1e-9):,.0f}"
               f" keys/s; taking the snapshot included), verified in "
               f"{fetched.verify_seconds:.2f} s")


@backup.command("verify", context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or error) as JSON.")
@click.option("--no-digest", is_flag=True,
              help="Skip recomputing the state digest (the checksums are still all checked).")
def backup_verify(file: Path, as_json: bool, no_digest: bool) -> None:
    """Check FILE in full and say what is inside it.

    \b
    Every record's CRC, the record order, the trailer's SHA-256 over the whole file and its
    key and record counts, the manifest, the membership and the session table, and (unless
    --no-digest) the state digest recomputed from the keys, in one streaming pass. Exits 1
    with what is wrong if anything is.

    \b
      replikv backup verify backup.rkvsnap
      replikv backup verify backup.rkvsnap --json --no-digest
    """
    from replikv.backup.verify import inspect_backup

    started = time.perf_counter()
    try:
        with progress_bar("verifying") as (start, advance):
            from replikv.storage.snapshot import read_trailer_hint

            trailer = read_trailer_hint(file) if file.is_file() else None
            start(trailer["key_count"] if trailer else 0)
            summary = inspect_backup(file, check_digest=not no_digest, on_keys=advance)
    except (BackupError, CorruptSnapshotError, OSError) as e:
        error = _fail(e)
        if as_json:
            click.echo(json.dumps({"path": str(file), "ok": False, "error": error.message},
                                  indent=2))
            sys.exit(1)
        raise error from None
    seconds = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps({"ok": True, **summary.as_json(),
                               "verify_seconds": round(seconds, 3)}, indent=2))
        return
    click.echo(f"{file}: a valid replikv backup (verified in {seconds:.2f} s)")
    click.echo(format_summary(summary))


@click.command(context_settings=CONTEXT)
@click.option("--from", "backup_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The backup file.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The node's data dir to seed.")
@click.option("--node-id", required=True, help="The node's id, one of those in --peers.")
@click.option("--peers", required=True,
              help="Every member of the restored cluster, as for `replikv node`: "
                   "n1=HOST:PORT,n2=HOST:PORT,... (their --peer-listen addresses).")
@click.option("--cluster-id", help="The restored cluster's id. Default: the backup's.")
@click.option("--new-cluster-id", is_flag=True,
              help="A new cluster id, derived from the backup's checksum and the member ids "
                   "(the same for every node restored from FILE with these --peers), for a "
                   "copy that runs beside the original cluster.")
@click.option("--force", is_flag=True,
              help="Replace a non-empty data dir (only once the new data is complete and "
                   "verified).")
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Point-in-time recovery: a log archive (a node's --archive-dir) whose "
                   "entries after the backup are replayed on top of it, up to --until.")
@click.option("--until", "until",
              help="With --archive: the last log index to replay (a number), or a time "
                   "(ISO 8601 such as 2026-11-23T10:15:00Z, UTC if no zone given): every entry "
                   "up to that time is replayed. `replikv archive find` shows the index just "
                   "before a FLUSHALL or a key's deletion.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restore(backup_file: Path, data_dir: Path, node_id: str, peers: str,
            cluster_id: str | None, new_cluster_id: bool, force: bool, archive_dir: Path | None,
            until: str | None, as_json: bool) -> None:
    """Seed a node's data dir from a backup, so the node starts from the backup's state.

    \b
    Restore every member of the new cluster the same way (same FILE and --peers, each its own
    --node-id and --data-dir), then start them with `replikv node` and the same id and peers:
    they elect a leader and go on from the backup's index. The backup's keys, sessions, index
    and term are kept; its membership is replaced by the members in --peers. The new data dir
    is built beside DIR, verified, and only then swapped in; a bad backup file changes nothing.
    For a whole local cluster, `replikv cluster up --restore FILE` does all of this.

    With --archive DIR --until INDEX|TIME (point-in-time recovery), the archived log entries
    after the backup are first replayed on top of it, with the node's own apply code, up to that
    point; the result is restored as if it were the backup.

    \b
    Example:
      replikv restore --from backup.rkvsnap --data-dir data/n1 --node-id n1 \\
        --peers n1=10.0.0.1:7101,n2=10.0.0.2:7101,n3=10.0.0.3:7101
      replikv restore --from backup.rkvsnap --archive archive/n1 --until 41234 ...
    """
    from replikv.backup.restore import BackupFileSeed, restore_data_dir
    from replikv.backup.restore import new_cluster_id as derive_cluster_id
    from replikv.config import ConfigError, default_cluster_id, parse_peers
    from replikv.storage.snapshot import read_trailer_hint

    if cluster_id is not None and new_cluster_id:
        raise click.UsageError("give --cluster-id or --new-cluster-id, not both")
    if (archive_dir is None) != (until is None):
        raise click.UsageError("--archive and --until go together (point-in-time recovery)")
    if archive_dir is not None and until is not None:
        parent = Path(data_dir).resolve().parent  # the replay's scratch file stays on that disk
        made = [p for p in (parent, *parent.parents) if not p.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(prefix=".replikv-pitr-", dir=parent) as work:
                replayed = replay_to_point(backup_file, archive_dir, until, Path(work))
                ctx = click.get_current_context()
                ctx.invoke(restore, backup_file=replayed, data_dir=data_dir, node_id=node_id,
                           peers=peers, cluster_id=cluster_id, new_cluster_id=new_cluster_id,
                           force=force, archive_dir=None, until=None, as_json=as_json)
        except BaseException:
            for p in made:  # refused: leave no directory behind that we made (deepest first)
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise
        return
    try:
        members = parse_peers(peers)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--peers") from None
    seed = BackupFileSeed(backup_file)
    try:
        info = seed.describe()
        if new_cluster_id:
            cluster_id = derive_cluster_id(seed.sha256(), {k: str(v) for k, v in members.items()})
        chosen = cluster_id or info.manifest["cluster_id"]
        trailer = read_trailer_hint(backup_file)
        with progress_bar(f"restoring {node_id}") as (start, advance):
            start(trailer["key_count"] if trailer else 0)
            result = restore_data_dir(seed, data_dir, node_id=node_id,
                                      peers={k: str(v) for k, v in members.items()},
                                      cluster_id=chosen, force=force, on_keys=advance)
    except (BackupError, CorruptSnapshotError, OSError) as e:
        raise _fail(e) from None
    snap = result.snapshot
    flags = []
    if result.cluster_id != default_cluster_id(members):
        flags.append(f"--cluster-id {result.cluster_id}")
    if result.replication_mode != "passive":
        flags.append(f"--replication {result.replication_mode}")
    node_command = (f"replikv node --id {node_id} --data-dir {data_dir} --peers {peers} "
                    f"--listen HOST:PORT --peer-listen {members[node_id]}"
                    + "".join(f" {f}" for f in flags))
    if as_json:
        click.echo(json.dumps({
            "data_dir": str(result.data_dir), "node_id": node_id,
            "cluster_id": result.cluster_id, "source_cluster_id": result.source_cluster_id,
            "replication_mode": result.replication_mode, "index": snap.index,
            "term": snap.term, "keys": snap.key_count, "snapshot": str(snap.path),
            "snapshot_bytes": snap.size_bytes, "digest_checked": result.digest_checked,
            "replaced": result.replaced, "seconds": round(result.seconds, 3),
            "node_command": node_command}, indent=2))
        return
    seconds = max(result.seconds, 1e-9)
    keys = snap.key_count or 0  # always known for a snapshot just written
    click.echo(
        f"restored node {node_id} into {data_dir}"
        + (" (its old contents were replaced)" if result.replaced else "") + ":\n"
        f"  state        index {snap.index:,} (term {snap.term}), {keys:,} keys, "
        f"from cluster {result.source_cluster_id}\n"
        f"  cluster id   {result.cluster_id}"
        + (" (the backup's)" if result.cluster_id == result.source_cluster_id else " (new)")
        + "\n"
        f"  members      voters {', '.join(members)}\n"
        f"  replication  {result.replication_mode}\n"
        f"  snapshot     {snap.path} ({snap.size_bytes:,} bytes; checksums"
        + (", state digest" if result.digest_checked else "") + " verified)\n"
        f"  took         {result.seconds:.2f} s ({keys / seconds:,.0f} keys/s, "
        f"{snap.size_bytes / 1e6 / seconds:.1f} MB/s)\n"
        f"Start it (and every other member, restored the same way) with:\n  {node_command}")


def parse_until(text: str) -> tuple[int | None, int | None]:
    """--until: (index, None) for a number, (None, time in ms) for an ISO 8601 time (UTC if
    it has no zone)."""
    text = text.strip()
    if text.isdigit():
        return int(text), None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a log index (a number) or an ISO 8601 "
                                 "time such as 2026-11-23T10:15:00Z", param_hint="--until")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return None, int(when.timestamp() * 1000)


def replay_to_point(backup_file: Path, archive_dir: Path, until: str, work: Path) -> Path:
    from replikv.pitr import replay
    from replikv.storage.errors import StorageError

    until_index, until_time_ms = parse_until(until)
    try:
        result = replay(backup_file, archive_dir, out_dir=work, until_index=until_index,
                        until_time_ms=until_time_ms)
    except (BackupError, CorruptSnapshotError, StorageError, OSError) as e:
        raise _fail(e) from None
    snap = result.snapshot
    nxt = result.next_entry
    click.echo(f"replayed {result.entries_applied:,} archived entries on top of the backup "
               f"(index {result.backup_index:,}): the state at index {snap.index:,}"
               + (f", time {format_time_ms(result.time_ms)}" if result.time_ms else "")
               + (f"; the next entry, not applied: #{nxt.index} {nxt.text}" if nxt else ""),
               err=True)
    return snap.path


ARCHIVE_TAIL_HINT = ("A running node archives its open log segment only when the segment "
                     "closes (at 64 MiB, or when a snapshot compacts the log) or when the node "
                     "stops cleanly: the newest entries may not be there yet. Stop the nodes "
                     "(as you will to restore them; `replikv archive info` shows what is "
                     "archived), then look again.")


@click.group(context_settings=CONTEXT)
def archive() -> None:
    """Inspect a log archive (a node's --archive-dir) for point-in-time recovery."""


@archive.command("info", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def archive_info(directory: Path, as_json: bool) -> None:
    """Which log indexes and times the archive DIRECTORY covers.

    \b
      replikv archive info archive/n1
    """
    from replikv.pitr import describe_archive
    from replikv.storage.errors import StorageError

    try:
        cov = describe_archive(directory)
    except (StorageError, OSError) as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(cov.as_json(), indent=2))
        return
    if cov.first_index is None:
        click.echo(f"{directory}: no log entries archived yet")
        return
    click.echo(f"{directory}: {cov.copies} segment copies, {cov.size_bytes:,} bytes")
    if cov.owner is not None:
        click.echo(f"  log of   node {cov.owner.node_id} of cluster {cov.owner.cluster_id}")
    click.echo(f"  indexes  {cov.first_index:,} .. {cov.last_index:,}"
               + ("" if len(cov.runs) == 1 else
                  f" with gaps: {', '.join(f'{a}..{b}' for a, b in cov.runs)}"))
    if cov.first_time_ms is not None and cov.last_time_ms is not None:
        click.echo(f"  times    {format_time_ms(cov.first_time_ms)} .. "
                   f"{format_time_ms(cov.last_time_ms)}")


@archive.command("find", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--key", help="Find the first deletion of this key (DEL, UNLINK, GETDEL, "
                            "expiry; with --backup, anything that removed it) instead of the "
                            "first FLUSHALL/FLUSHDB.")
@click.option("--backup", "backup", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="With --key: replay the archive on this backup's state and report the entry "
                   "after which the key is gone, whatever removed it (RENAME, SPOP or SREM of "
                   "its last member, ...), in active mode too.")
@click.option("--after-index", type=int, default=0, show_default=True,
              help="Look only at entries after this index.")
def archive_find(directory: Path, key: str | None, backup: Path | None,
                 after_index: int) -> None:
    """Find the entry that flushed everything (or deleted --key): restoring with `--until`
    the index printed gets the state from just before it.

    \b
      replikv archive find archive/n1
      replikv archive find archive/n1 --key user:42 --backup backup.rkvsnap
    """
    from replikv.pitr import RecoveryError, find_removal
    from replikv.storage.errors import StorageError

    if backup is not None and key is None:
        raise click.UsageError("--backup goes with --key (a FLUSHALL is found without it)")
    try:
        found = find_removal(directory, key=key.encode() if key else None,
                             after_index=after_index, backup=backup)
    except (StorageError, RecoveryError, OSError) as e:
        raise _fail(e) from None
    if found is None:
        raise click.ClickException(
            f"no {'deletion of ' + repr(key) if key else 'FLUSHALL'} after index "
            f"{after_index} in {directory}. {ARCHIVE_TAIL_HINT}")
    when = f" at {format_time_ms(found.time_ms)}" if found.time_ms else ""
    click.echo(f"entry {found.index} (term {found.term}){when}: {found.text}")
    click.echo(f"recover to just before it: --until {found.recover_until_index}")
    if found.key_written_before is False:
        click.echo(f"note: no entry of the archive before it writes {key!r}: if the key "
                   "existed then, it was written before the archive's first entry, and if it "
                   "never existed, this flush did not remove it. --backup FILE (a backup the "
                   "archive continues) replays the state and tells for sure.", err=True)
