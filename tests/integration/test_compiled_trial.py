"""The compiled-cores trial (benchmarks/compiled.py), built for real with mypyc: the compiled
cores run the simulator exactly as the interpreted ones do, seed for seed (3 nodes, and 5 with
membership changes and snapshots), and a real 3-node
cluster whose nodes load them serves writes and reads.

The build here asks gcc for no optimization (MYPYC_OPT_LEVEL=0): what is checked is that the
cores compile and behave exactly alike, not how fast they run, and -O0 halves the build (about
110 s here, against 210 s at mypyc's default -O3, which `benchmarks/compiled.py build` uses for
measuring). The full check (every unit test on the compiled build, 200 seeds) is
`benchmarks/compiled.py check`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from benchmarks.compiled import (
    SIM_CONFIGS,
    build,
    build_problem,
    compiled_env,
    core_modules,
    sim,
    sim_summary,
)
from replikv.bench import discover, local_cluster, parse_address

ROOT = Path(__file__).resolve().parents[2]
SEEDS = 30


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    build(out, say=lambda _text: None, opt_level="0")
    return out


def test_the_build_holds_every_core_and_is_current(built: Path) -> None:
    assert build_problem(built) is None
    names = [m.removesuffix(".py").replace("/", ".") for m in core_modules()]
    probe = ("import importlib, sys\n"
             "print('\\n'.join(importlib.import_module(m).__file__ for m in sys.argv[1:]))\n")
    files = subprocess.run([sys.executable, "-c", probe, *names], env=compiled_env(built),
                           capture_output=True, text=True, check=True,
                           cwd=built).stdout.split()
    assert len(files) == len(names)
    assert all(f.startswith(str(built)) and f.endswith(".so") for f in files), files


@pytest.mark.parametrize("extra", SIM_CONFIGS, ids=("3-nodes", "5-nodes-membership-snapshots"))
def test_the_compiled_cores_simulate_exactly_as_the_interpreted_ones(
        built: Path, extra: tuple[str, ...]) -> None:
    interpreted = sim_summary(sim(SEEDS, 424242, None, extra))
    compiled = sim_summary(sim(SEEDS, 424242, compiled_env(built), extra))
    assert compiled == interpreted
    assert "violations: 0" in compiled and f"seeds run: {SEEDS}" in compiled


def test_a_cluster_of_compiled_nodes_serves_writes_and_reads(built: Path,
                                                             tmp_path: Path) -> None:
    with local_cluster(tmp_path, fsync="always", replication="passive",
                       env=compiled_env(built)) as addresses:
        members, leader_id = discover([parse_address(a) for a in addresses])
        assert len(members) == 3 and leader_id is not None
        for m in members:  # every node process has the compiled node core mapped
            maps = Path(f"/proc/{m.pid}/maps").read_text()
            assert str(built / "src" / "replikv" / "node.cpython") in maps, m.id
        leader = next(m for m in members if m.id == leader_id)
        host, port = leader.address
        with redis.Redis(host=host, port=port, socket_timeout=10) as r:
            r.execute_command("REPLIKV", "WRITECONCERN", "all")
            for i in range(200):
                assert r.set(f"k{i}", f"v{i}") is True
            assert r.sadd("s", "a", "b", "c") == 3
            assert r.incrby("n", 5) == 5
            assert r.mget("k0", "k199", "missing") == [b"v0", b"v199", None]
        for m in members:  # w=all: every replica has applied them
            with redis.Redis(host=m.address[0], port=m.address[1], socket_timeout=10) as r:
                r.execute_command("REPLIKV", "CONSISTENCY", "local")
                assert r.get("k199") == b"v199" and r.smembers("s") == {b"a", b"b", b"c"}
