"""Fixtures for the real-process integration tests (see cluster.py for the harness).

- Everything in this directory is marked `integration`.
- `make_cluster(size, **kw)` starts a cluster for one test; `shared_cluster` is one 3-node
  cluster per test module for tests that only talk to it (they must not kill its nodes).
- Whatever happens, every process a fixture started is SIGKILLed on teardown, and when a test
  fails the tail of every node's log is attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .cluster import ACTIVE_CLUSTERS, MEASUREMENTS, Cluster, kill_leftover_processes, running

INTEGRATION_DIR = Path(__file__).resolve().parent
LOG_TAIL_LINES = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and INTEGRATION_DIR in Path(str(item.fspath)).resolve().parents:
        for cluster in ACTIVE_CLUSTERS:
            report.sections.append(
                (f"node logs ({cluster.root.name}, last {LOG_TAIL_LINES} lines each)",
                 cluster.all_log_tails(LOG_TAIL_LINES)))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if MEASUREMENTS:
        terminalreporter.section("replikv integration measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kill_leftover_processes()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """make_cluster(size=3, start=True, **Cluster kwargs) -> a started cluster with a leader."""
    with ExitStack() as stack:
        made: list[Cluster] = []

        def make(size: int = 3, *, start: bool = True, name: str | None = None,
                 **kwargs: object) -> Cluster:
            cluster = Cluster(tmp_path / (name or f"cluster{len(made)}"), size, **kwargs)
            made.append(cluster)
            return stack.enter_context(running(cluster, start=start))

        yield make


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-node cluster for a whole module; its tests must not stop or kill its nodes."""
    with running(Cluster(tmp_path_factory.mktemp("shared"), 3)) as cluster:
        yield cluster
