"""Flame graphs of where a node's time goes under each standard workload. Run as a script:

    .venv/bin/python -m pip install -e '.[profile]'     # py-spy
    .venv/bin/python benchmarks/flamegraphs.py [--workloads set1,set64,...] [--duration-s 8]
        [--out benchmarks/profiles] [--gil | --no-gil]

For each workload it starts a local 3-node cluster (replikv bench's, defaults: fsync always,
passive replication), runs the workload with `replikv bench --cluster ...` for `--duration-s`
plus a warm-up, and meanwhile samples the leader and one follower with py-spy (200 Hz) for the
middle `--duration-s` seconds. It writes `<workload>-leader.svg` and `<workload>-follower.svg`
(flame graphs: open them in a browser) and `<workload>-leader.txt` (the top functions by own
samples, plain text, so a change in a profile can be reviewed in a diff).

With `--gil` (the default) py-spy samples only the thread holding the GIL, so a graph shows
where the interpreter's time goes, including system calls made while holding it (a socket
send on loopback can run the receiving side's TCP stack and be preempted by the process it
wakes: that shows as time in the send). `--no-gil` samples every running thread instead.

Every process started here is stopped in a `finally`, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replikv.bench import DEFAULT_WORKLOADS, discover, local_cluster, parse_address

WARM_UP_S = 3.0
SAMPLE_RATE_HZ = 200
TOP_FUNCTIONS = 40


def top_functions(collapsed: str, limit: int = TOP_FUNCTIONS) -> list[tuple[float, str]]:
    """From py-spy's collapsed stacks ("frame;frame;... count" per line), the functions with
    the most samples at the top of the stack: (percent of all samples, "function (file)")."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", leaf)
        name = f"{match.group(1)} ({Path(match.group(2)).name})" if match else leaf
        own[name] += n
    if total == 0:
        return []
    return [(100.0 * n / total, name) for name, n in own.most_common(limit)]


def py_spy() -> str | None:
    """py-spy next to this interpreter (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, fmt: str, gil: bool) -> subprocess.Popen:
    argv = [py_spy() or "py-spy", "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
            "-r", str(SAMPLE_RATE_HZ), "-f", fmt, "-o", str(out)]
    if gil:
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def profile_workload(workload: str, duration_s: float, out_dir: Path, gil: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="replikv-profile-"))
    spies: list[subprocess.Popen] = []
    load = None
    try:
        with local_cluster(root, fsync="always", replication="passive") as addresses:
            members, leader_id = discover([parse_address(a) for a in addresses])
            leader = next(m for m in members if m.id == leader_id)
            follower = next(m for m in members if m.id != leader_id)
            load = subprocess.Popen(
                [sys.executable, "-m", "replikv", "bench", "--cluster", ",".join(addresses),
                 "--workloads", workload, "--duration-s", str(duration_s + 2 * WARM_UP_S)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(WARM_UP_S)
            raw = out_dir / f"{workload}-leader.collapsed"
            spies = [record(leader.pid, duration_s, out_dir / f"{workload}-leader.svg",
                            "flamegraph", gil),
                     record(follower.pid, duration_s, out_dir / f"{workload}-follower.svg",
                            "flamegraph", gil),
                     record(leader.pid, duration_s, raw, "raw", gil)]
            for spy in spies:
                _, err = spy.communicate(timeout=duration_s + 60)
                if spy.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err.strip()[-500:]}")
            table, _ = load.communicate(timeout=duration_s + 120)
            title = (f"{workload}: leader {leader.id}, py-spy {'--gil ' if gil else ''}"
                     f"{SAMPLE_RATE_HZ} Hz for {duration_s:g} s; functions by own samples")
            lines = [title, ""]
            lines += [f"{pct:5.1f}%  {name}" for pct, name in top_functions(raw.read_text())]
            lines += ["", "replikv bench during the profile (py-spy slows the nodes):", table]
            (out_dir / f"{workload}-leader.txt").write_text("\n".join(lines))
            raw.unlink()
    finally:
        for p in [*spies, *([load] if load else [])]:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    ap.add_argument("--duration-s", type=float, default=8.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/profiles"))
    ap.add_argument("--gil", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    if py_spy() is None:
        print("py-spy is not installed: .venv/bin/python -m pip install -e '.[profile]'",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for workload in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        print(f"profiling {workload} ...", file=sys.stderr, flush=True)
        profile_workload(workload, args.duration_s, args.out, args.gil)
    print(f"flame graphs in {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
