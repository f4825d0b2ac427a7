"""The failover playground on a local cluster: `replikv cluster kill|pause|resume|restart NODE`.

They act on the cluster `replikv cluster up` runs from the same DATA_DIR, through the state file
its supervisor keeps (see replikv.local_cluster): kill is SIGKILL (a crash: nothing is flushed
or closed), pause SIGSTOP (the node freezes: no heartbeats, no answers, its sockets stay open,
as in a long GC pause or a stalled VM), resume SIGCONT, restart asks the supervisor to stop the
node and start it again. Only a local cluster's own node processes are ever signalled: the pid
must still run `replikv node --config <that node's config>`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from replikv.client.credentials import TLS_CA_CERT_ENV, admin_url
from replikv.local_cluster import CONTROL_DIR, STATE_FILE, AdminRefused, post_admin

RESTART_TIMEOUT_S = 20.0
ACTIONS = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}


class PlaygroundError(Exception):
    """What to tell the user (the message says what to do)."""


def load_state(data_dir: Path) -> dict:
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlaygroundError(f"no local cluster is running with its data in {data_dir} "
                              "(start one with `replikv cluster up`, or pass the --data-dir "
                              "it was started with)") from None
    except (OSError, ValueError) as e:
        raise PlaygroundError(f"cannot read {path}: {e}") from None
    pid = state.get("supervisor_pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise PlaygroundError(f"the `replikv cluster up` that wrote {path} is no longer "
                              "running; start the cluster again")
    if isinstance(state.get("tls_ca_cert"), str):  # `cluster up --tls`: its CA, unless given
        os.environ.setdefault(TLS_CA_CERT_ENV, state["tls_ca_cert"])
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_config(pid: int, config: str) -> bool:
    """Whether `pid` is a replikv node started with this config (not a reused pid). Its
    --config may be relative to its working directory (as `cluster up` once started them)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    if b"node" not in argv or b"--config" not in argv:
        return False
    at = argv.index(b"--config") + 1
    if at >= len(argv):
        return False
    try:
        return (Path(cwd) / os.fsdecode(argv[at])).resolve() == Path(config).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False


def node_entry(state: dict, node_id: str) -> dict:
    nodes = state.get("nodes") or {}
    if node_id not in nodes:
        raise PlaygroundError(f"no node {node_id!r} in this cluster; its nodes are "
                              f"{', '.join(sorted(nodes))}")
    return nodes[node_id]


def signal_node(data_dir: Path, node_id: str, action: str) -> int:
    """Send the action's signal to the node's process group; returns its pid."""
    state = load_state(data_dir)
    entry = node_entry(state, node_id)
    pid = entry.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise PlaygroundError(f"{node_id} is not running; `replikv cluster restart {node_id}` "
                              "starts it again")
    if not _runs_config(pid, entry["config"]):
        raise PlaygroundError(f"pid {pid} is not {node_id}'s node process any more; nothing "
                              "was signalled")
    os.killpg(pid, ACTIONS[action])
    return pid


def request_restart(data_dir: Path, node_id: str,
                    timeout_s: float = RESTART_TIMEOUT_S) -> int:
    """Ask the supervisor to restart the node; wait until it runs again. Returns its new pid."""
    state = load_state(data_dir)
    old_pid = node_entry(state, node_id).get("pid")
    control = data_dir / CONTROL_DIR
    control.mkdir(parents=True, exist_ok=True)
    (control / f"restart-{node_id}").write_text("")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        pid = node_entry(load_state(data_dir), node_id).get("pid")
        if isinstance(pid, int) and pid != old_pid and _alive(pid):
            return pid
    raise PlaygroundError(f"{node_id} did not start again within {timeout_s:.0f} s; see the "
                          "output of `replikv cluster up`")


# ---- faults inside the peer transport (nodes started with --fault-injection) ----------------


def split_groups(tokens: list[str], members: list[str]) -> list[list[str]]:
    """`n1 / n2 n3` (or `|`, quoted from the shell) -> [["n1"], ["n2", "n3"]]; a single group
    is set against all the other members."""
    groups: list[list[str]] = [[]]
    for token in tokens:
        for part in token.replace("|", " / ").replace("/", " / ").split():
            if part == "/":
                groups.append([])
            else:
                groups[-1].append(part)
    groups = [g for g in groups if g]
    named = [n for g in groups for n in g]
    unknown = sorted(set(named) - set(members))
    if unknown:
        raise PlaygroundError(f"no node {', '.join(unknown)} in this cluster; its nodes are "
                              f"{', '.join(sorted(members))}")
    if len(named) != len(set(named)):
        raise PlaygroundError("a node is named in two groups")
    if len(groups) == 1:
        rest = [m for m in members if m not in named]
        if not rest:
            raise PlaygroundError("name the nodes to cut off, e.g. `partition n1` or "
                                  "`partition n1 / n2 n3`")
        groups.append(rest)
    named = [n for g in groups for n in g]
    missing = [m for m in members if m not in named]
    if missing:  # nodes named in no group form one more, cut off from the rest
        groups.append(missing)
    return groups


def blocked_by_node(groups: list[list[str]]) -> dict[str, list[str]]:
    """For each node, the peers outside its group."""
    everyone = [n for g in groups for n in g]
    return {n: sorted(p for p in everyone if p not in g) for g in groups for n in g}


def post_faults(data_dir: Path, node_id: str, query: str) -> dict:
    """POST /faults?<query> (or /faults/clear when query is "clear") on a node of the local
    cluster; its answer's "faults"."""
    state = load_state(data_dir)
    entry = node_entry(state, node_id)
    path = "/faults/clear" if query == "clear" else f"/faults?{query}"
    url = admin_url(f"{state.get('host', '127.0.0.1')}:{entry['admin_port']}", path)
    try:
        return post_admin(url)["faults"]
    except AdminRefused as e:
        raise PlaygroundError(f"{node_id} refused: {e}") from None
    except OSError as e:
        raise PlaygroundError(f"{node_id} did not answer at {url} ({e}); is it running, or "
                              "paused?") from None
