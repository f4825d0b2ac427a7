"""The demo's scenarios act on the leader only once there is one (replikv.demo), here with
stand-ins for the cluster: each node's status, and the playground's signals and faults.

Between two scenarios there may be a moment when no node passes for the leader (an election,
a lease not yet renewed). A scenario that took that moment's "no leader" for the leader's id
signalled or cut off a node called None, which the playground refuses: the demo stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replikv import demo as demo_module
from replikv.demo import NODES, Demo, Scenario
from replikv.playground import PlaygroundError


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Demo:
    """A demo whose leader is n1, though not at the first two looks; once n1 is acted on,
    n2 leads the others and n1 follows it."""
    d = Demo(tmp_path, quick=True, say=lambda _line: None)
    looks = iter([None, None])

    def leader(among: tuple[str, ...] | list[str] = NODES) -> str | None:
        return next(looks, "n1") if "n1" in among else "n2"

    monkeypatch.setattr(d, "leader", leader)
    monkeypatch.setattr(d, "status", lambda node_id: {"leader": "n2"})
    return d


def playground(calls: list[tuple[str, str]]):
    """A stand-in for the playground's calls on one node: recorded, and refused for a node
    the cluster does not have, as the playground does."""
    def call(_data_dir: Path, node_id: str, what: str = "") -> None:
        if node_id not in NODES:
            raise PlaygroundError(f"no node {node_id!r} in this cluster")
        calls.append((node_id, what))
    return call


def test_killing_the_primary_waits_for_a_leader(demo: Demo,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    signalled: list[tuple[str, str]] = []
    restarted: list[tuple[str, str]] = []
    monkeypatch.setattr(demo_module, "signal_node", playground(signalled))
    monkeypatch.setattr(demo_module, "request_restart", playground(restarted))
    scenario = Scenario("kill", "kill the primary")
    demo.kill_primary(scenario)
    assert signalled == [("n1", "kill")]
    assert restarted == [("n1", "")]
    assert scenario.notes == ["n1 killed; n2 took over"]


def test_partitioning_the_primary_waits_for_a_leader(demo: Demo,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(demo_module, "post_faults", playground(posted))
    scenario = Scenario("partition", "partition the primary")
    demo.partition_primary(scenario)
    assert posted == [("n1", "block=n2,n3,n4"), ("n2", "block=n1"), ("n3", "block=n1"),
                      ("n4", "block=n1"), *((n, "clear") for n in NODES)]
    assert scenario.notes == ["n1 cut off; n2 took over"]
