"""The data directory: one process at a time, and only for the node it was created for."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replikv.storage import CorruptStateError, DataDir, DataDirError


def test_open_creates_the_layout(tmp_path: Path) -> None:
    path = tmp_path / "node1"
    data_dir = DataDir.open(path, node_id="n1", cluster_id="c1")
    try:
        assert data_dir.path == path
        assert data_dir.wal_dir == path / "wal"
        assert data_dir.wal_dir.is_dir()
        assert data_dir.hard_state_path == path / "hardstate"
        assert (path / "meta").is_file()
        assert (path / "LOCK").read_text() == f"{os.getpid()}\n"
        assert not (path / "meta.tmp").exists()
    finally:
        data_dir.close()


def test_reopening_with_the_same_identity_works(tmp_path: Path) -> None:
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()
    meta_before = (tmp_path / "meta").read_bytes()
    with DataDir.open(tmp_path, node_id="n1", cluster_id="c1") as data_dir:
        assert data_dir.node_id == "n1"
    assert (tmp_path / "meta").read_bytes() == meta_before


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    # flock belongs to the open file description, so a second open() of LOCK conflicts even
    # within one process: a node cannot accidentally open its own directory twice.
    first = DataDir.open(tmp_path, node_id="n1", cluster_id="c1")
    with pytest.raises(DataDirError) as caught:
        DataDir.open(tmp_path, node_id="n1", cluster_id="c1")
    assert str(caught.value) == (
        f"data dir {tmp_path} is in use by another replikv process (pid {os.getpid()})"
    )
    first.close()
    first.close()  # idempotent
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()


def test_open_held_by_another_process_is_refused_until_it_exits(tmp_path: Path) -> None:
    holder_script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from replikv.storage import DataDir
        data_dir = DataDir.open(Path({str(tmp_path)!r}), node_id="n1", cluster_id="c1")
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(
            DataDirError, match=rf"in use by another replikv process \(pid {holder.pid}\)"
        ):
            DataDir.open(tmp_path, node_id="n1", cluster_id="c1")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The process never called close(): the kernel released its lock when it exited.
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()


def test_a_refused_open_does_not_disturb_the_holder(tmp_path: Path) -> None:
    with DataDir.open(tmp_path, node_id="n1", cluster_id="c1"):
        with pytest.raises(DataDirError):
            DataDir.open(tmp_path, node_id="n2", cluster_id="c1")
        assert (tmp_path / "LOCK").read_text() == f"{os.getpid()}\n"


def test_wrong_node_id_is_refused(tmp_path: Path) -> None:
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()
    with pytest.raises(DataDirError) as caught:
        DataDir.open(tmp_path, node_id="n2", cluster_id="c1")
    message = str(caught.value)
    assert "belongs to node 'n1'" in message
    assert "started as node 'n2'" in message
    assert str(tmp_path) in message
    # The refused open released the lock again.
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()


def test_wrong_cluster_id_is_refused(tmp_path: Path) -> None:
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()
    with pytest.raises(DataDirError) as caught:
        DataDir.open(tmp_path, node_id="n1", cluster_id="c2")
    message = str(caught.value)
    assert "belongs to cluster 'c1'" in message
    assert "for cluster 'c2'" in message
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()


def test_damaged_meta_is_reported(tmp_path: Path) -> None:
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()
    meta = bytearray((tmp_path / "meta").read_bytes())
    meta[-1] ^= 0xFF
    (tmp_path / "meta").write_bytes(bytes(meta))
    with pytest.raises(CorruptStateError, match="checksum mismatch"):
        DataDir.open(tmp_path, node_id="n1", cluster_id="c1")
    # And the lock is not left held by the failed open.
    (tmp_path / "meta").unlink()
    DataDir.open(tmp_path, node_id="n1", cluster_id="c1").close()


def test_a_directory_of_node_data_dirs_is_refused(tmp_path: Path) -> None:
    """`replikv node --data-dir DIR` where DIR is cluster up's (its nodes in DIR/n1, ...):
    refused, naming the node's own, instead of starting an empty voter beside them."""
    with DataDir.open(tmp_path / "n1", node_id="n1", cluster_id="c"):
        pass
    with pytest.raises(DataDirError, match=r"not a node's data dir: it holds the data dirs of n1"):
        DataDir.open(tmp_path, node_id="n1", cluster_id="c")
    assert not (tmp_path / "meta").exists() and not (tmp_path / "LOCK").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "cluster.json").write_text("{}")
    with pytest.raises(DataDirError, match="cluster.json"):
        DataDir.open(tmp_path / "other", node_id="n1", cluster_id="c")
    # A node's own data dir, and an empty or unrelated one (a fresh disk's lost+found), open.
    with DataDir.open(tmp_path / "n1", node_id="n1", cluster_id="c"):
        pass
    (tmp_path / "disk" / "lost+found").mkdir(parents=True)
    with DataDir.open(tmp_path / "disk", node_id="n2", cluster_id="c"):
        pass
