"""The data dir's disk space (replikv.storage.disk_space): what counts as free for root and for
anyone else, when the alarm goes low and back to ok, and when a node refuses to start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pytest

from replikv.storage.disk_space import (
    DISK_LOW,
    DISK_OK,
    RECOVERY_MARGIN_BYTES_MAX,
    DiskSpace,
    DiskSpaceAlarm,
    DiskSpaceError,
    format_bytes,
    read_disk_space,
    recovery_margin_bytes,
    refuse_to_start_if_full,
    space_from_statvfs,
    this_process_uses_reserved_blocks,
    uses_reserved_blocks,
)
from replikv.storage.errors import StorageError

MIB = 1024 * 1024
GIB = 1024 * MIB


class FakeStatvfs(NamedTuple):
    f_frsize: int
    f_blocks: int
    f_bfree: int  # free blocks, the ones reserved for root included
    f_bavail: int  # free blocks an unprivileged process may use


# A 100 GiB file system in 4 KiB blocks, 10 GiB free of which 5 GiB reserved for root.
STATVFS = FakeStatvfs(f_frsize=4096, f_blocks=100 * GIB // 4096, f_bfree=10 * GIB // 4096,
                      f_bavail=5 * GIB // 4096)


def space(free_bytes: int, total_bytes: int = 100 * GIB) -> DiskSpace:
    return DiskSpace("/data/n1", total_bytes=total_bytes, free_bytes=free_bytes)


def test_root_counts_the_reserved_blocks_as_free_and_others_do_not() -> None:
    as_root = space_from_statvfs("/data/n1", STATVFS, as_root=True)
    as_user = space_from_statvfs("/data/n1", STATVFS, as_root=False)

    assert as_root == DiskSpace("/data/n1", total_bytes=100 * GIB, free_bytes=10 * GIB)
    assert as_user == DiskSpace("/data/n1", total_bytes=100 * GIB, free_bytes=5 * GIB)


ALL_CAPABILITIES = (1 << 41) - 1
WITHOUT_SYS_RESOURCE = ALL_CAPABILITIES & ~(1 << 24)  # Docker's root, for one


@pytest.mark.parametrize("euid, capabilities, expected", [
    (0, ALL_CAPABILITIES, True),
    (0, WITHOUT_SYS_RESOURCE, False),  # root in a container gets ENOSPC before f_bfree is 0
    (0, None, True),  # capabilities unknown (no /proc): root is root
    (1000, 0, False),
    (1000, None, False),
    (1000, 1 << 24, True),  # granted CAP_SYS_RESOURCE: the kernel lets it use them
])
def test_who_counts_as_root_for_free_space(euid: int, capabilities: int | None,
                                           expected: bool) -> None:
    assert uses_reserved_blocks(euid, capabilities) is expected


def test_this_process_is_judged_by_its_euid_and_capabilities() -> None:
    with open("/proc/self/status") as f:
        (line,) = [line for line in f if line.startswith("CapEff:")]
    expected = uses_reserved_blocks(os.geteuid(), int(line.split()[1], 16))
    assert this_process_uses_reserved_blocks() is expected


def test_the_fragment_size_is_the_unit_of_the_block_counts() -> None:
    st = FakeStatvfs(f_frsize=512, f_blocks=2048, f_bfree=100, f_bavail=10)
    assert space_from_statvfs("/x", st, as_root=False).free_bytes == 10 * 512
    assert space_from_statvfs("/x", st, as_root=False).total_bytes == 2048 * 512


def test_the_alarm_goes_low_below_the_threshold_and_says_so_once() -> None:
    alarm = DiskSpaceAlarm(low_free_bytes=512 * MIB)
    assert alarm.state == DISK_OK and alarm.last is None

    assert alarm.observe(space(10 * GIB)) is None  # ok, as it was: no change to report
    assert alarm.observe(space(512 * MIB)) is None  # exactly the threshold is not below it
    assert alarm.observe(space(512 * MIB - 1)) == DISK_LOW
    assert alarm.state == DISK_LOW
    assert alarm.observe(space(100 * MIB)) is None  # still low: reported once
    assert alarm.observe(space(0)) is None
    assert alarm.last == space(0)


def test_a_low_disk_is_ok_again_only_past_a_margin_above_the_threshold() -> None:
    alarm = DiskSpaceAlarm(low_free_bytes=512 * MIB)
    margin = recovery_margin_bytes(512 * MIB)
    assert margin == 32 * MIB  # a sixteenth of the threshold
    assert alarm.observe(space(500 * MIB)) == DISK_LOW

    assert alarm.observe(space(512 * MIB)) is None  # back at the threshold: not yet
    assert alarm.observe(space(512 * MIB + margin - 1)) is None
    assert alarm.state == DISK_LOW
    assert alarm.observe(space(512 * MIB + margin)) == DISK_OK
    assert alarm.state == DISK_OK
    assert alarm.observe(space(512 * MIB + 1)) is None  # hovering above it: still ok
    assert alarm.observe(space(512 * MIB - 1)) == DISK_LOW  # and low again below it


def test_the_recovery_margin_is_bounded() -> None:
    assert recovery_margin_bytes(0) == 0
    assert recovery_margin_bytes(1 << 50) == RECOVERY_MARGIN_BYTES_MAX


def test_a_threshold_of_zero_never_goes_off() -> None:
    alarm = DiskSpaceAlarm(low_free_bytes=0)
    assert alarm.observe(space(0)) is None
    assert alarm.state == DISK_OK
    with pytest.raises(ValueError):
        DiskSpaceAlarm(low_free_bytes=-1)


def test_a_file_system_that_reports_no_size_is_never_judged() -> None:
    alarm = DiskSpaceAlarm(low_free_bytes=512 * MIB)
    unmeasured = space(0, total_bytes=0)
    assert alarm.observe(unmeasured) is None and alarm.state == DISK_OK
    refuse_to_start_if_full(unmeasured, 16 * MIB)  # no refusal
    assert alarm.observe(space(1)) == DISK_LOW
    assert alarm.observe(unmeasured) == DISK_OK


def test_a_nearly_full_disk_refuses_the_start_and_says_what_to_do() -> None:
    refuse_to_start_if_full(space(16 * MIB), 16 * MIB)  # enough
    refuse_to_start_if_full(space(0), 0)  # 0 turns the check off

    with pytest.raises(DiskSpaceError) as refused:
        refuse_to_start_if_full(space(3 * MIB + MIB // 2), 16 * MIB)

    message = str(refused.value)
    assert isinstance(refused.value, StorageError)  # the CLI's "cannot start: ..." path
    assert "data dir /data/n1 has 3.5 MiB free, below disk_min_free_bytes (16.0 MiB)" in message
    assert "Free space" in message and "move the data dir" in message
    assert "lower disk_min_free_bytes" in message and "at the risk" in message
    assert "\n" not in message  # one line


def test_reading_a_data_dir_that_does_not_exist_yet_reads_its_parents_file_system(
        tmp_path: Path) -> None:
    future = tmp_path / "not" / "yet" / "n1"

    got = read_disk_space(future, as_root=False)

    st = os.statvfs(tmp_path)
    assert got.path == str(future)
    assert got.total_bytes == st.f_blocks * st.f_frsize
    assert abs(got.free_bytes - st.f_bavail * st.f_frsize) < 256 * MIB  # others write too


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (16 * MIB, "16.0 MiB"),
    (int(41.3 * GIB), "41.3 GiB"), (3 * 1024 * GIB, "3.0 TiB"), (1 << 50, "1.0 PiB"),
    (1 << 60, "1024.0 PiB"),
])
def test_sizes_are_shown_in_binary_units(n: int, text: str) -> None:
    assert format_bytes(n) == text
