"""The playground's pure parts: partition groups, and what each node blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replikv.playground import PlaygroundError, blocked_by_node, split_groups

MEMBERS = ["n1", "n2", "n3"]


@pytest.mark.parametrize("tokens, groups", [
    (["n1"], [["n1"], ["n2", "n3"]]),
    (["n1", "/", "n2", "n3"], [["n1"], ["n2", "n3"]]),
    (["n1/n2", "n3"], [["n1"], ["n2", "n3"]]),
    (["n1 | n2 | n3"], [["n1"], ["n2"], ["n3"]]),
    (["n1", "/", "n2"], [["n1"], ["n2"], ["n3"]]),  # a node named nowhere is on its own
])
def test_groups(tokens, groups):
    assert split_groups(tokens, MEMBERS) == groups


@pytest.mark.parametrize("tokens, message", [
    (["n9"], "no node n9"),
    (["n1", "/", "n1"], "named in two groups"),
    (["n1", "n2", "n3"], "name the nodes to cut off"),
])
def test_bad_groups(tokens, message):
    with pytest.raises(PlaygroundError, match=message):
        split_groups(tokens, MEMBERS)


def test_each_node_blocks_everyone_outside_its_group():
    assert blocked_by_node([["n1"], ["n2", "n3"]]) == {
        "n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}
    assert blocked_by_node([["n1"], ["n2"], ["n3"]]) == {
        "n1": ["n2", "n3"], "n2": ["n1", "n3"], "n3": ["n1", "n2"]}


def test_cluster_up_standbys_join_a_cluster_the_voters_create(tmp_path: Path) -> None:
    from replikv.config import load_settings
    from replikv.local_cluster import LocalCluster

    cluster = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=tmp_path, standbys=2,
                           auto_replace_after_ms=4000)
    cluster.write_configs()
    settings = {n.id: load_settings(n.config_path, {}).validate() for n in cluster.nodes}
    assert [n.id for n in cluster.nodes] == ["n1", "n2", "n3", "n4", "n5"]
    assert [s.join for s in settings.values()] == [False, False, False, True, True]
    assert sorted(settings["n1"].peers) == ["n1", "n2", "n3"]
    assert sorted(settings["n5"].peers) == ["n1", "n2", "n3", "n5"]
    assert settings["n5"].listen.port == 7005 and settings["n5"].admin.port == 7205
    # Everyone agrees on the cluster id, the standbys too: each config names it.
    assert len({s.cluster_id for s in settings.values()}) == 1
    assert {s.auto_replace_after_ms for s in settings.values()} == {4000}


def test_cluster_up_archive_dir_gives_every_node_its_own_archive(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from replikv.config import load_settings
    from replikv.local_cluster import LocalCluster

    monkeypatch.chdir(tmp_path)  # relative, as a user types them
    cluster = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=Path("replikv-data"),
                           standbys=1, archive_dir=Path("archive"))
    cluster.write_configs()
    settings = {n.id: load_settings(n.config_path, {}).validate() for n in cluster.nodes}
    assert {i: s.archive_dir for i, s in settings.items()} == {
        i: tmp_path / "archive" / i for i in ("n1", "n2", "n3", "n4")}
    plain = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=tmp_path / "other")
    plain.write_configs()
    assert load_settings(plain.nodes[0].config_path, {}).validate().archive_dir is None


def test_each_new_local_cluster_gets_an_id_of_its_own_and_keeps_it(tmp_path: Path) -> None:
    from replikv.config import default_cluster_id, load_settings
    from replikv.local_cluster import LocalCluster
    from replikv.storage.datadir import DataDir

    def ids(data_dir: Path) -> set[str]:
        cluster = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=data_dir,
                               standbys=1)
        cluster.write_configs()
        return {load_settings(n.config_path, {}).validate().cluster_id for n in cluster.nodes}

    (one,), (two,) = ids(tmp_path / "a"), ids(tmp_path / "b")
    derived = default_cluster_id({"n1": "", "n2": "", "n3": ""})
    assert one != two and derived not in (one, two) and one.startswith("replikv-")
    assert ids(tmp_path / "a") == {one}, "a later run keeps the id its configs name"
    # A data dir a node has written wins: a cluster made before ids were random keeps its own.
    (tmp_path / "c").mkdir()
    DataDir.open(tmp_path / "c" / "n2", node_id="n2", cluster_id=derived).close()
    assert ids(tmp_path / "c") == {derived}


def test_restore_refuses_to_keep_a_standby_data_dir_from_before(tmp_path: Path) -> None:
    from replikv.local_cluster import ClusterError, LocalCluster

    (tmp_path / "n4").mkdir()
    cluster = LocalCluster(3, base_port=7001, host="127.0.0.1", data_dir=tmp_path, standbys=1)
    with pytest.raises(ClusterError, match="standbys must start empty.*--force"):
        cluster.restore(tmp_path / "no-such-backup.rkvsnap")
    assert (tmp_path / "n4").exists()


def test_cluster_up_refuses_an_auto_replace_delay_shorter_than_ten_ticks() -> None:
    from click.testing import CliRunner

    from replikv.cli import main

    result = CliRunner().invoke(main, ["cluster", "up", "--auto-replace-after-ms", "100"])
    assert result.exit_code == 2 and "at least 500 ms" in result.output


@pytest.mark.parametrize("code, body, expected", [
    (200, b'{"faults": {"blocked": ["n2"]}}', {"faults": {"blocked": ["n2"]}}),
    (409, b'{"error": "membership change refused: n4 is already a member (voter)"}',
     "membership change refused: n4 is already a member (voter)"),
    (500, b"not json", "HTTP 500"),
])
def test_post_admin_gives_the_answer_or_the_nodes_reason(code, body, expected) -> None:
    from replikv.local_cluster import AdminRefused, post_admin

    from .fake_http import fake_http_server

    with fake_http_server(lambda method, path, _: (code if method == "POST" else 405, body)
                          ) as port:
        url = f"http://127.0.0.1:{port}/faults"
        if code == 200:
            assert post_admin(url) == expected
        else:
            with pytest.raises(AdminRefused) as refused:
                post_admin(url)
            assert str(refused.value) == expected


def test_a_node_is_recognised_by_its_config_whether_started_with_a_relative_or_full_path(
        tmp_path: Path) -> None:
    """The pid check behind `cluster pause/resume/kill`: a process whose --config, taken from
    its working directory, is the node's config runs that node; any other does not."""
    import subprocess
    import sys

    from replikv.playground import _runs_config

    (tmp_path / "data").mkdir()
    config = tmp_path / "data" / "n1.toml"
    sleeper = "import time; time.sleep(30)"
    procs = [subprocess.Popen([sys.executable, "-c", sleeper, "node", "--config", path],
                              cwd=tmp_path)
             for path in ("data/n1.toml", str(config), "data/n2.toml")]
    try:
        relative, full, other = (p.pid for p in procs)
        assert _runs_config(relative, str(config))
        assert _runs_config(full, str(config))
        assert not _runs_config(other, str(config))
        assert not _runs_config(os.getpid(), str(config))  # not a node at all
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert not _runs_config(procs[0].pid, str(config))  # gone


def test_cluster_up_refuses_another_layout_over_a_data_dir(tmp_path: Path) -> None:
    """--nodes 5 (or fewer standbys) over a data dir last run with n1..n3 is refused: n4 and
    n5 would have started a second cluster beside the first."""
    from replikv.local_cluster import ClusterError, LocalCluster

    def cluster(nodes: int, standbys: int = 0) -> LocalCluster:
        return LocalCluster(nodes, base_port=7001, host="127.0.0.1", data_dir=tmp_path,
                            standbys=standbys)

    cluster(3).check_layout()  # a new data dir: anything goes
    cluster(3).write_configs()
    cluster(3).check_layout()  # the same again
    for other in (cluster(5), cluster(1), cluster(3, standbys=1)):
        with pytest.raises(ClusterError, match="was last run with n1, n2, n3"):
            other.check_layout()
    (tmp_path / "n2").mkdir()  # a wiped node's dir, its config kept: still the same layout
    cluster(3).check_layout()
