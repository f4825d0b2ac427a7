"""The `replikv` command."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from replikv import __version__
from replikv.config import ConfigError, load_settings

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
@click.option("--cluster-id", help="Refuse peers from other clusters. Default: derived from "
                                   "the member ids.")
@click.option("--tick-ms", type=int, help="Length of one logical tick. [default: 50]")
@click.option("--heartbeat-ticks", type=int, help="Leader heartbeat interval in ticks. "
                                                  "[default: 2]")
@click.option("--election-ticks", type=int,
              help="Election timeout in ticks, randomized up to twice this. [default: 10]")
@click.option("--request-timeout-ms", type=int,
              help="How long a command may wait for a leader or a commit. [default: 5000]")
@click.option("--max-bulk-bytes", type=int,
              help="Largest single argument a client may send. [default: 67108864]")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="[default: info]")
def node(config_file: Path | None, node_id: str | None, data_dir: Path | None,
         listen: str | None, peer_listen: str | None, peers: str | None, admin: str | None,
         cluster_id: str | None, tick_ms: int | None, heartbeat_ticks: int | None,
         election_ticks: int | None, request_timeout_ms: int | None,
         max_bulk_bytes: int | None, log_level: str | None) -> None:
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

    overrides = {"id": node_id, "data_dir": data_dir, "listen": listen,
                 "peer_listen": peer_listen, "peers": peers, "admin": admin,
                 "cluster_id": cluster_id, "tick_ms": tick_ms,
                 "heartbeat_ticks": heartbeat_ticks, "election_ticks": election_ticks,
                 "request_timeout_ms": request_timeout_ms, "max_bulk_bytes": max_bulk_bytes,
                 "log_level": log_level}
    try:
        settings = load_settings(config_file, overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)-7s [{settings.id}] %(name)s: %(message)s",
        stream=sys.stderr)
    try:
        run_node(settings)
    except StorageError as e:
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
def cluster_up(nodes: str, base_port: int, host: str, data_dir: Path) -> None:
    """Start a local cluster in the foreground; Ctrl-C stops every node cleanly.

    \b
    Each node's log lines are prefixed with its id. Each node's settings are written to
    DATA_DIR/<id>.toml, so a node you killed can be started again by hand with
      replikv node --config DATA_DIR/<id>.toml

    \b
    Examples:
      replikv cluster up
      replikv cluster up --nodes 5 --base-port 8001 --data-dir /tmp/rkv
    """
    from replikv.local_cluster import ClusterError, LocalCluster

    try:
        LocalCluster(int(nodes), base_port=base_port, host=host, data_dir=data_dir).run()
    except ClusterError as e:
        raise click.ClickException(str(e)) from None


@main.command(context_settings=CONTEXT)
@click.option("--seeds", type=int, default=100, show_default=True,
              help="How many seeds to run (seeds FIRST .. FIRST+N-1).")
@click.option("--first", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--seed", type=int, default=None, help="Run this one seed only.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--faults", type=click.Choice(["all", "network", "crash", "disk", "none"]),
              default="all", show_default=True, help="Which faults to inject.")
@click.option("--duration-ms", type=int, default=8000, show_default=True,
              help="Simulated time of the safety phase of each seed.")
@click.option("--trace", is_flag=True, help="Print the event trace (use with --seed).")
def sim(seeds: int, first: int, seed: int | None, nodes: str, faults: str, duration_ms: int,
        trace: bool) -> None:
    """Run the real node cores in a simulated world, one seed at a time.

    Each seed drives a cluster through network faults (delay, loss, duplication, reordering,
    partitions), crashes, pauses and slow disks while clients run, checking the consensus
    invariants as it goes, then heals everything, checks that the cluster recovers, and
    checks that the client history is linearizable. The same seed replays the same run.

    \b
    Examples:
      replikv sim --seeds 1000
      replikv sim --seeds 200 --nodes 5 --faults network
      replikv sim --seed 12345 --trace
    """
    from replikv.sim.runner import SimConfig, run_seed

    config = SimConfig(nodes=int(nodes), faults=faults, duration_ms=duration_ms,
                       trace_all=trace)
    todo = [seed] if seed is not None else list(range(first, first + seeds))
    failed = []
    totals = {"ops": 0, "faults": 0, "events": 0, "elections": 0}
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
            if not result.ok:
                failed.append(result)
    elapsed = time.perf_counter() - started
    if trace and seed is not None:
        click.echo("\n".join(result.trace))
    for r in failed:
        click.echo(f"\nseed {r.seed} FAILED: {r.failure}", err=True)
        click.echo("last events:\n  " + "\n  ".join(r.trace[-25:]), err=True)
        click.echo(f"replay: replikv sim --seed {r.seed} --nodes {nodes} --faults {faults} "
                   f"--duration-ms {duration_ms} --trace", err=True)
    click.echo(f"seeds run: {len(todo)} ({len(todo) / elapsed:.1f} seeds/s), faults injected: "
               f"{totals['faults']}, leaders elected: {totals['elections']}, operations "
               f"checked: {totals['ops']}, events: {totals['events']}, violations: "
               f"{len(failed)}{' (seeds ' + ', '.join(str(r.seed) for r in failed) + ')' if failed else ''}")
    sys.exit(1 if failed else 0)


@main.command(context_settings=CONTEXT)
@click.argument("history", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout-s", type=float, default=300.0, show_default=True,
              help="Give up (answer 'unknown') after this long.")
def check(history: Path, timeout_s: float) -> None:
    """Check a recorded client history (JSON Lines) for linearizability.

    \b
    Example:
      replikv check history.jsonl
    """
    from replikv.check.history import load_history
    from replikv.check.linearizability import check_history, format_result

    ops = load_history(history)
    result = check_history(ops, timeout_s=timeout_s)
    click.echo(format_result(result))
    sys.exit(0 if result.ok is True else (2 if result.ok is None else 1))


if __name__ == "__main__":  # pragma: no cover
    main()
