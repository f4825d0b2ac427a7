"""The hard state file: round trip, atomic replacement, and every way it can be damaged."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from replikv.invariants import InvariantViolation
from replikv.storage import CorruptStateError, HardState, load_hard_state, save_hard_state


def framed(body: bytes, *, magic: bytes = b"RKVHS", version: int = 1) -> bytes:
    return magic + bytes([version]) + struct.pack("<I", zlib.crc32(body)) + body


@pytest.mark.parametrize(
    "state", [HardState(0, None), HardState(1, "n1"), HardState(2**40, "node-é")]
)
def test_round_trip(tmp_path: Path, state: HardState) -> None:
    path = tmp_path / "hardstate"
    save_hard_state(path, state)
    assert load_hard_state(path) == state
    assert sorted(os.listdir(tmp_path)) == ["hardstate"], "no .tmp left behind"


def test_the_format_is_magic_version_crc_body(tmp_path: Path) -> None:
    path = tmp_path / "hardstate"
    save_hard_state(path, HardState(7, "n2"))
    assert path.read_bytes() == framed(msgpack.packb([7, "n2"]))


def test_a_save_replaces_the_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "hardstate"
    save_hard_state(path, HardState(1, "n1"))
    save_hard_state(path, HardState(2, None))
    assert load_hard_state(path) == HardState(2, None)


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert load_hard_state(tmp_path / "hardstate") is None


def test_a_stale_tmp_from_a_crashed_save_is_ignored_and_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "hardstate"
    save_hard_state(path, HardState(3, "n1"))
    (tmp_path / "hardstate.tmp").write_bytes(b"half a write")
    assert load_hard_state(path) == HardState(3, "n1")
    save_hard_state(path, HardState(4, "n3"))
    assert load_hard_state(path) == HardState(4, "n3")
    assert not (tmp_path / "hardstate.tmp").exists()


def test_save_fsyncs_the_file_before_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_hard_state(tmp_path / "hardstate", HardState(1, None))
    assert calls == [str(tmp_path / "hardstate.tmp"), str(tmp_path)]


@pytest.mark.parametrize(
    ("contents", "reason"),
    [
        (b"", "truncated: 0 bytes"),
        (b"RKVH", "truncated: 4 bytes"),
        (framed(msgpack.packb([1, None]))[:9], "truncated: 9 bytes"),
        (b"XXXXX" + framed(msgpack.packb([1, None]))[5:], "bad magic"),
        (b"RK", "truncated: 2 bytes"),
        (b"XY", "bad magic"),
        (framed(msgpack.packb([1, None]), version=9), "unknown format version 9"),
        (framed(msgpack.packb([1, None]))[:-1], "checksum mismatch"),
        (framed(msgpack.packb([1, None]))[:-1] + b"\x01", "checksum mismatch"),
        (framed(msgpack.packb([1, None])) + b"\x00", "checksum mismatch"),
        (framed(b"\xc1"), "not valid msgpack"),
        (framed(msgpack.packb([1, None, 3])), "wrong types"),
        (framed(msgpack.packb({"term": 1})), "wrong types"),
        (framed(msgpack.packb(["1", None])), "wrong types: term"),
        (framed(msgpack.packb([-1, None])), "wrong types: term"),
        (framed(msgpack.packb([True, None])), "wrong types: term"),
        (framed(msgpack.packb([1, 5])), "wrong types: voted_for"),
        (framed(msgpack.packb([1, b"n1"], use_bin_type=True)), "wrong types: voted_for"),
    ],
)
def test_each_kind_of_damage_is_reported(tmp_path: Path, contents: bytes, reason: str) -> None:
    path = tmp_path / "hardstate"
    path.write_bytes(contents)
    with pytest.raises(CorruptStateError) as caught:
        load_hard_state(path)
    assert reason in caught.value.reason
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_saving_an_invalid_state_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(InvariantViolation):
        save_hard_state(tmp_path / "hardstate", HardState(-1, None))
    with pytest.raises(InvariantViolation):
        save_hard_state(tmp_path / "hardstate", HardState(1, b"n1"))  # type: ignore[arg-type]
    assert not (tmp_path / "hardstate").exists()


def test_save_without_fsync_for_fsync_never(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    path = tmp_path / "hardstate"
    save_hard_state(path, HardState(4, "n3"), fsync=False)
    assert calls == []
    save_hard_state(path, HardState(5, None))
    assert len(calls) == 2, "the file and its directory, by default"
    monkeypatch.undo()
    assert load_hard_state(path) == HardState(5, None)
