"""Durable file primitives: atomic replacement and durable directory creation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replikv.storage.files import create_directory, write_file_atomically

from .fsync_recorder import record_fsyncs


def test_write_file_atomically_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old contents that are longer")
    (tmp_path / "state.tmp").write_bytes(b"leftover from a crash, much longer than the new data")
    write_file_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_write_file_atomically_handles_partial_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    write_file_atomically(tmp_path / "state", b"0123456789" * 10)
    monkeypatch.undo()
    assert (tmp_path / "state").read_bytes() == b"0123456789" * 10


def test_create_directory_makes_every_new_entry_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_fsyncs(monkeypatch)
    create_directory(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert calls == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    calls.clear()
    create_directory(tmp_path / "a" / "b" / "c")
    assert calls == [], "nothing new, nothing to sync"


def test_write_file_atomically_without_fsync_still_replaces_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")
    calls = record_fsyncs(monkeypatch)
    write_file_atomically(path, b"new", fsync=False)
    assert calls == []
    assert path.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["state"]
