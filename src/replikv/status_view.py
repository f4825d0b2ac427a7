"""`replikv status`: ask every node's admin /status at once and show the answers as a table.

The table is a rich Table: on a terminal it has colours (roles, health) and `--watch` redraws it
in place (rich.live.Live); anywhere else (a pipe, a file, CI) it is plain aligned text, one line
per node, no escape codes, and `--watch` prints a fresh table after a timestamp line each time.
The command's options and address parsing are in replikv.cli.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from replikv.client.credentials import admin_url, admin_urlopen, env_tls_files
from replikv.features import FEATURE_LEVEL_LEGACY
from replikv.storage.disk_space import DISK_LOW, format_bytes

ANSWER_BYTES_MAX = 1024 * 1024  # a /status answer larger than this is not ours
STALE_AFTER_MS = 5000  # a follower further behind than this is not healthy (as /replica)

# An answer: (the node's /status body, None), or (None, why there is none).
Answer = tuple[dict, None] | tuple[None, str]

HEADER = ["ADMIN", "ID", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "FSYNC99",
          "DISK", "HEALTH", "LAG", "CONTACT"]
_RIGHT = {"TERM", "LAST", "COMMIT", "APPLIED", "FSYNC99", "DISK"}
_NO_WRAP = {"ADMIN", "ID", "ROLE", "TERM", "LEADER", "LAST", "COMMIT", "APPLIED", "FSYNC99",
            "DISK"}
ROLE_STYLES = {"leader": "bold green", "follower": "", "standby": "cyan",
               "candidate": "yellow", "pre-candidate": "yellow", "unreachable": "red"}


def query_status(address: str, timeout_s: float) -> Answer:
    """A node's /status answer, or why there is none (a short phrase for the table)."""
    try:
        with admin_urlopen(admin_url(address, "/status"), timeout_s) as response:
            raw = response.read(ANSWER_BYTES_MAX + 1)
    except urllib.error.HTTPError as e:
        return None, f"unexpected answer (HTTP {e.code}); is {address} a replikv admin port?"
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            return None, f"no answer within {timeout_s:g} s"
        reason = e.reason.strerror if isinstance(e.reason, OSError) else e.reason
        return None, str(reason or e).lower()
    except TimeoutError:
        return None, f"no answer within {timeout_s:g} s"
    except http.client.RemoteDisconnected:  # (an OSError too) a TLS port, asked in plain HTTP?
        return None, "closed the connection without an answer." + (
            "" if env_tls_files() else _TLS_HINT)
    except OSError as e:
        return None, str(e.strerror or e).lower()
    except http.client.HTTPException:  # it answered, but not in HTTP: a client port?
        tls = "" if env_tls_files() else _TLS_HINT
        return None, (f"not HTTP; is {address} a replikv admin port? (a client port, such as "
                      f"7001, is not: its admin port is 200 above it){tls}")
    try:
        body = json.loads(raw) if len(raw) <= ANSWER_BYTES_MAX else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or "role" not in body:
        return None, f"unexpected answer (not replikv /status JSON); is {address} an admin port?"
    return body, None


def query_all(targets: list[str], timeout_s: float) -> list[Answer]:
    """Every target's answer, asked all at once (one thread each; the caller bounds how many)."""
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return list(pool.map(lambda a: query_status(a, timeout_s), targets))


NODES_MAX = 64  # addresses one `status` asks (given and discovered), and threads it asks with
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")


def discovered(targets: list[str], answers: list[Answer]) -> list[str]:
    """Admin addresses of members the answers name (each /status has every member's address
    book) that `targets` does not already cover: a standby, a member added later. Only plain
    HOST:PORT addresses count (they come from the nodes; nothing else is ever asked)."""
    answered = {body.get("id") for body, _ in answers if body is not None}
    extra: list[str] = []
    for body, _ in answers:
        book = body.get("addresses") if body is not None else None
        if not isinstance(book, dict):
            continue
        for member, entry in sorted(book.items()):
            admin = entry.get("admin") if isinstance(entry, dict) else None
            if (member in answered or not isinstance(admin, str) or not _ADDRESS.match(admin)
                    or admin in targets or admin in extra):
                continue
            extra.append(admin)
    return extra[:max(0, NODES_MAX - len(targets))]


def collect(targets: list[str], timeout_s: float,
            discover: bool = True) -> tuple[list[str], list[Answer]]:
    """Ask `targets`, then (with `discover`) the members their answers name that were not
    among them, and so on until no answer names a member not yet asked (a follower may not
    know where another follower's admin port is, while the leader does); returns every address
    asked and its answer, in that order. At most NODES_MAX addresses in all."""
    asked, answers = list(targets), query_all(targets, timeout_s)
    while discover and (extra := discovered(asked, answers)):
        asked += extra
        answers += query_all(extra, timeout_s)
    return asked, answers


def no_answer_hint(targets: list[str]) -> str:
    return (f"no node answered at {', '.join(targets)}. Start a local cluster with "
            f"`replikv cluster up`, or pass each running node's --admin address with "
            f"--nodes HOST:PORT,...{_TLS_HINT if not env_tls_files() else ''}")


# What a plain HTTP request to an HTTPS port meets: the node ends the connection.
_TLS_HINT = (" If the cluster speaks TLS, set REPLIKV_TLS_CA_CERT to its CA certificate "
             "(`cluster up --tls`: DATA_DIR/tls/ca.pem).")


def health(body: dict) -> str:
    """The HEALTH cell: ok, or the reason a node needs a look."""
    role = body.get("role")
    if role == "leader":
        followers = body.get("followers") or {}
        down = sorted(p for p, f in followers.items()
                      if isinstance(f, dict) and f.get("connected") is False)
        return f"degraded: {', '.join(down)} unreachable" if down else "ok"
    if role in ("candidate", "pre-candidate"):
        return "electing"
    if not body.get("leader"):
        return "no leader"
    staleness_ms = body.get("staleness_ms")
    if staleness_ms is None or staleness_ms > STALE_AFTER_MS:
        return "stale"
    return "ok"


def _followers(body: dict) -> list[tuple[str, dict]]:
    followers = body.get("followers") or {}
    if not isinstance(followers, dict):
        return []
    return [(str(peer), f if isinstance(f, dict) else {})
            for peer, f in sorted(followers.items())]


def lag_cells(body: dict) -> list[str]:
    """The LAG cell, one part per follower on the leader; the staleness on any other node."""
    if body.get("role") == "leader":
        followers = _followers(body)
        if not followers:
            return ["no followers"]
        return [f"{peer} {f.get('lag_entries', '?')} entries/{f.get('lag_ms', '?')} ms"
                + (" (disconnected)" if f.get("connected") is False else "")
                for peer, f in followers]
    staleness_ms = body.get("staleness_ms")
    if staleness_ms is None:
        return ["staleness unknown (not caught up with a leader yet)"]
    return [f"staleness {staleness_ms} ms"]


def lag(body: dict) -> str:
    return ", ".join(lag_cells(body))


def contact_cells(body: dict) -> list[str]:
    """The CONTACT cell: on the leader, how long ago it last heard from each follower (in
    the LAG cell's order); "-" on any other node."""
    if body.get("role") != "leader":
        return ["-"]
    return [f"{peer} {ago(f.get('last_contact_ms'))}" for peer, f in _followers(body)] or ["-"]


def contact(body: dict) -> str:
    return ", ".join(contact_cells(body))


def ago(ms: object) -> str:
    """`last_contact_ms` as a phrase: 50 ms ago, 42 s ago, 3 min ago; never if None."""
    if ms is None:
        return "never"
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "?"
    if ms < 10_000:
        return f"{ms:g} ms ago"
    if ms < 600_000:
        return f"{ms / 1000:.0f} s ago"
    if ms < 7_200_000:
        return f"{ms / 60_000:.0f} min ago"
    return f"{ms / 3_600_000:.0f} h ago"


def _fsync_p99(body: dict) -> str:
    p99 = body.get("fsync_p99_ms")
    if p99 is None:
        return "-"
    if isinstance(p99, int | float) and not isinstance(p99, bool):
        return f"{p99:.2f} ms"
    return str(p99)


def _disk(body: dict) -> dict | None:
    """The node's "disk" reading if it is well formed (an older node has none)."""
    disk = body.get("disk")
    if not isinstance(disk, dict):
        return None
    numbers = (disk.get("free_bytes"), disk.get("low_free_bytes"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return None
    return disk


def disk_cell(body: dict) -> Text:
    """The DISK cell: the free space of the node's data dir file system, "(low)" in yellow
    below its disk_low_free_bytes, "(full)" in red below its disk_min_free_bytes (it refuses
    writes as leader); "-" if the node does not say."""
    disk = _disk(body)
    if disk is None:
        return Text("-")
    free = format_bytes(disk["free_bytes"])
    if disk.get("writes_refused") is True:
        return Text(f"{free} (full)", "bold red")
    if disk.get("state") == DISK_LOW:
        return Text(f"{free} (low)", "bold yellow")
    return Text(free)


def disk_warnings(targets: list[str], answers: list[Answer]) -> list[Text]:
    """A line under the table for each node whose disk is low: what it has, and what to do."""
    lines = []
    for address, (body, _) in zip(targets, answers):
        if body is None:
            continue
        disk = _disk(body)
        if disk is None or disk.get("state") != DISK_LOW:
            continue
        if disk.get("writes_refused") is True and isinstance(disk.get("min_free_bytes"), int):
            lines.append(Text(
                f"WARNING: the disk of {body.get('id', '?')} ({address}) is nearly full: "
                f"{format_bytes(disk['free_bytes'])} free in {disk.get('path', '?')}, below "
                f"disk_min_free_bytes ({format_bytes(disk['min_free_bytes'])}). As leader it "
                "refuses writes that add data (MISCONF); free space on that file system or "
                "move the data dir", "bold red"))
            continue
        lines.append(Text(
            f"WARNING: the disk of {body.get('id', '?')} ({address}) is low: "
            f"{format_bytes(disk['free_bytes'])} free in {disk.get('path', '?')}, below "
            f"disk_low_free_bytes ({format_bytes(disk['low_free_bytes'])}). A node whose disk "
            "fills stops; free space on that file system or move the data dir",
            "bold yellow"))
    return lines


def memory_warnings(targets: list[str], answers: list[Answer]) -> list[Text]:
    """A line under the table if the leader's keyspace is over its maxmemory: the cluster is
    refusing writes that add data."""
    for address, (body, _) in zip(targets, answers):
        memory = body.get("memory") if body is not None else None
        if body is None or body.get("role") != "leader" or not isinstance(memory, dict) \
                or memory.get("full") is not True:
            continue
        used, limit = memory.get("used_bytes"), memory.get("maxmemory")
        if not (isinstance(used, int) and isinstance(limit, int)):
            continue
        return [Text(
            f"WARNING: the keyspace holds {format_bytes(used)}, over the leader's maxmemory "
            f"({format_bytes(limit)}; {body.get('id', '?')} at {address}): writes that add "
            "data are refused with OOM. Delete keys or give them expiries, or raise maxmemory "
            "on every member (CONFIG SET maxmemory, and their configs)", "bold yellow")]
    return []


def feature_warnings(answers: list[Answer]) -> list[Text]:
    """A line under the table while the members run replikv of different feature levels (a
    rolling upgrade under way, or one forgotten): writes that need the newest level are
    refused until every member has it (replikv.features)."""
    levels: dict[str, int] = {}
    cluster = None
    for body, _ in answers:
        if body is None:
            continue
        features = body.get("features")
        if features is None:  # a replikv from before feature levels
            features = {"this_node": FEATURE_LEVEL_LEGACY}
        if not isinstance(features, dict) or not isinstance(features.get("this_node"), int):
            continue
        levels[str(body.get("id", "?"))] = features["this_node"]
        if body.get("role") == "leader" and isinstance(features.get("cluster_level"), int):
            cluster = features["cluster_level"]
    if len(set(levels.values())) < 2:
        return []
    shown = ", ".join(f"{node} {level}" for node, level in sorted(levels.items()))
    top = max(levels.values())
    at = f" (the cluster's log is at level {cluster})" if cluster is not None else ""
    return [Text(f"NOTE: the members run replikv of different feature levels ({shown}){at}: "
                 f"writes that need level {top} are refused until every member runs a "
                 "replikv of that level; finish the upgrade", "bold yellow")]


def _health_style(text: str) -> str:
    return "green" if text == "ok" else "red" if text == "down" else "yellow"


def build_table(targets: list[str], answers: list[Answer], *,
                one_line: bool = True) -> Table:
    """One row per node. With one_line, the leader's per-follower LAG and CONTACT parts are
    joined by ", " (one text line per node, for pipes); else each follower has its own line."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in HEADER:
        table.add_column(name, justify="right" if name in _RIGHT else "left",
                         no_wrap=name in _NO_WRAP)
    join = ", ".join if one_line else "\n".join
    for address, (body, error) in zip(targets, answers):
        if body is None:
            table.add_row(Text(address), Text("?"), Text("unreachable", ROLE_STYLES["unreachable"]),
                          *(Text("-") for _ in range(7)), Text("down", _health_style("down")),
                          Text(str(error), "red"), Text("-"))
            continue
        role = str(body.get("role", "?"))
        health_text = health(body)
        table.add_row(
            Text(address), Text(str(body.get("id", "?"))),
            Text(role, ROLE_STYLES.get(role, "")),
            Text(str(body.get("term", "?"))), Text(str(body.get("leader") or "-")),
            Text(str(body.get("last_log_index", "?"))), Text(str(body.get("commit_index", "?"))),
            Text(str(body.get("applied_index", "?"))), Text(_fsync_p99(body)), disk_cell(body),
            Text(health_text, _health_style(health_text)),
            Text(join(lag_cells(body))), Text(join(contact_cells(body))))
    return table


def modes_line(answers: list[Answer]) -> Text:
    """The line under the table: each replication/fsync mode the nodes run, flagged if they
    differ."""
    modes = sorted({(str(body.get("replication", "?")), str(body.get("fsync", "?")))
                    for body, _ in answers if body is not None})
    line = Text("modes: " + "; ".join(f"replication {r}, fsync {f}" for r, f in modes))
    if len(modes) > 1:
        line.append("  (the nodes differ!)", "bold red")
    return line


def footer(targets: list[str], answers: list[Answer]) -> list[Text]:
    """The lines under the table: the modes, then a warning for each node with a low disk."""
    return [modes_line(answers), *disk_warnings(targets, answers),
            *memory_warnings(targets, answers), *feature_warnings(answers)]


def render_plain(renderable: RenderableType) -> str:
    """Text without escape codes, wide enough that no line wraps, trailing spaces stripped."""
    console = Console(file=io.StringIO(), width=10_000, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in capture.get().splitlines())


def _console() -> Console:
    return Console(highlight=False, emoji=False)


def _status_json(targets: list[str], answers: list[Answer]) -> str:
    return json.dumps([{"address": address, "status": body} if error is None
                       else {"address": address, "error": error}
                       for address, (body, error) in zip(targets, answers)], indent=2)


def show(targets: list[str], timeout_s: float, as_json: bool,
         console: Console | None = None, discover: bool = True) -> None:
    """One table (or the JSON answers). Nobody answering: exit 1 with the hint."""
    targets, answers = collect(targets, timeout_s, discover)
    answered = any(error is None for _, error in answers)
    if as_json:
        click.echo(_status_json(targets, answers))
        if not answered:
            click.echo(f"replikv status: {no_answer_hint(targets)}", err=True)
            sys.exit(1)
        return
    if not answered:
        raise click.ClickException(no_answer_hint(targets))
    console = console or _console()
    if console.is_terminal:
        console.print(build_table(targets, answers, one_line=False))
        for line in footer(targets, answers):
            console.print(line)
    else:
        click.echo(render_plain(Group(build_table(targets, answers),
                                      *footer(targets, answers))))


def watch(targets: list[str], timeout_s: float, as_json: bool, interval_s: float,
          count: int | None, console: Console | None = None, discover: bool = True) -> None:
    """Refresh until Ctrl-C (or `count` times): in place on a terminal, else one table (or
    JSON document) after a timestamp line each time. Nobody answering is shown, not fatal."""
    console = console or _console()
    try:
        if console.is_terminal and not as_json:
            _watch_live(console, targets, timeout_s, interval_s, count, discover)
        else:
            _watch_lines(targets, timeout_s, as_json, interval_s, count, console, discover)
    except KeyboardInterrupt:
        return


def _header(interval_s: float) -> str:
    return (f"replikv status at {time.strftime('%H:%M:%S')} (every {interval_s:g} s; "
            "Ctrl-C to stop)")


def _watch_lines(targets: list[str], timeout_s: float, as_json: bool, interval_s: float,
                 count: int | None, console: Console, discover: bool) -> None:
    done = 0
    while True:
        click.echo(_header(interval_s))
        try:
            show(targets, timeout_s, as_json, console, discover)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}")
        done += 1
        if count is not None and done >= count:
            return
        time.sleep(interval_s)


def _watch_live(console: Console, targets: list[str], timeout_s: float, interval_s: float,
                count: int | None, discover: bool) -> None:
    done = 0
    given = targets
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            targets, answers = collect(given, timeout_s, discover)
            header = Text(_header(interval_s), "bold")
            if any(error is None for _, error in answers):
                view = Group(header, build_table(targets, answers, one_line=False),
                             *footer(targets, answers))
            else:
                view = Group(header, Text(f"Error: {no_answer_hint(targets)}", "red"))
            live.update(view, refresh=True)
            done += 1
            if count is not None and done >= count:
                return
            time.sleep(interval_s)
