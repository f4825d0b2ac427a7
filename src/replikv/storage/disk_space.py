"""The free space of the file system holding a node's data dir, and when it is too little.

A node whose log write or fsync fails (a full disk: ENOSPC) stops, by design: a failed write is
never retried (see the README, "Durability and recovery"). So a full disk must be seen coming.
The runtime reads the file system's numbers about once a second (`read_disk_space`, one
`statvfs`: the kernel's counters, no disk I/O on a local file system) and hands them to a
`DiskSpaceAlarm`, which says "low" below `disk_low_free_bytes` and when that changes; /status,
/metrics, the log, the node's timeline and `replikv status` show it. A second alarm at
`disk_min_free_bytes` says the disk is nearly full: as leader the node then refuses writes that
add data (NodeCore.disk_refusal), since every replica's disk takes the same log. At start-up a
node below `disk_min_free_bytes` refuses to start (`refuse_to_start_if_full`): it would stop
again at its first write.

The decisions are plain functions of the numbers, tested without filling a disk; reading the
numbers is the one thing here that touches the system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from replikv.limits import MIB
from replikv.storage.errors import StorageError

DISK_OK = "ok"
DISK_LOW = "low"

# A low disk is reported ok again only once it has this much more than the threshold (at most
# RECOVERY_MARGIN_BYTES_MAX): free space hovering around the threshold, as a log segment is
# written and a snapshot compacts the log, would otherwise warn and recover every few seconds.
RECOVERY_MARGIN_FRACTION = 1 / 16
RECOVERY_MARGIN_BYTES_MAX = 64 * MIB
CAP_SYS_RESOURCE = 24  # the capability that lets a process write into reserved blocks


class StatvfsResult(Protocol):
    """The fields of os.statvfs_result used here (a test passes its own numbers)."""

    @property
    def f_frsize(self) -> int: ...
    @property
    def f_blocks(self) -> int: ...
    @property
    def f_bfree(self) -> int: ...
    @property
    def f_bavail(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """One reading: the file system holding `path`, its size and what this process may use."""

    path: str
    total_bytes: int
    free_bytes: int

    @property
    def measurable(self) -> bool:
        """False for a file system that reports no size (some FUSE or virtual ones): nothing
        can be judged from its numbers, so it is never called low or full."""
        return self.total_bytes > 0


class DiskSpaceError(StorageError):
    """At start-up, the data dir's file system has less free space than disk_min_free_bytes."""


def space_from_statvfs(path: str, st: StatvfsResult, *, as_root: bool) -> DiskSpace:
    """The numbers of one statvfs. Root may write into the blocks the file system reserves
    (typically 5% on ext4), so for a node running as root (`as_root`: see
    `uses_reserved_blocks`) free means every free block (f_bfree); for anyone else, the blocks
    available to unprivileged users (f_bavail)."""
    free_blocks = st.f_bfree if as_root else st.f_bavail
    return DiskSpace(path, total_bytes=st.f_blocks * st.f_frsize,
                     free_bytes=max(0, free_blocks) * st.f_frsize)


def uses_reserved_blocks(euid: int, effective_capabilities: int | None) -> bool:
    """Whether this process counts as root for free space: whether it may write into the
    blocks reserved for root. The kernel lets a process do that if it has CAP_SYS_RESOURCE,
    which root has, except in a container: Docker, for one, drops it, and there root gets
    ENOSPC where f_bfree promises space. So: that capability when the capabilities are known
    (Linux's /proc/self/status), else root (euid 0)."""
    if effective_capabilities is None:
        return euid == 0
    return bool(effective_capabilities >> CAP_SYS_RESOURCE & 1)


def this_process_uses_reserved_blocks() -> bool:
    """`uses_reserved_blocks` for this process (its euid and CapEff)."""
    capabilities = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    capabilities = int(line.split()[1], 16)
                    break
    except (OSError, ValueError, IndexError):
        capabilities = None
    return uses_reserved_blocks(os.geteuid(), capabilities)


def read_disk_space(path: Path, *, as_root: bool) -> DiskSpace:
    """Read the file system holding `path`; before the data dir is created, the file system of
    its nearest existing parent (where it will be created). Raises OSError."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return space_from_statvfs(str(target), os.statvfs(probe), as_root=as_root)


def recovery_margin_bytes(low_free_bytes: int) -> int:
    return min(int(low_free_bytes * RECOVERY_MARGIN_FRACTION), RECOVERY_MARGIN_BYTES_MAX)


class DiskSpaceAlarm:
    """Whether the disk is low, from one reading after another. `observe` returns the new state
    when it changed ("low" once free space drops below low_free_bytes; "ok" once it is back
    above low_free_bytes plus a margin), else None. A low_free_bytes of 0 never goes off."""

    __slots__ = ("last", "low_free_bytes", "recover_at_bytes", "state")

    def __init__(self, low_free_bytes: int) -> None:
        if low_free_bytes < 0:
            raise ValueError(f"low_free_bytes must be >= 0, got {low_free_bytes}")
        self.low_free_bytes = low_free_bytes
        self.recover_at_bytes = low_free_bytes + recovery_margin_bytes(low_free_bytes)
        self.state = DISK_OK
        self.last: DiskSpace | None = None  # the latest reading

    def observe(self, space: DiskSpace) -> str | None:
        self.last = space
        if not space.measurable:
            new = DISK_OK
        elif self.state == DISK_OK:
            new = DISK_LOW if space.free_bytes < self.low_free_bytes else DISK_OK
        else:
            new = DISK_OK if space.free_bytes >= self.recover_at_bytes else DISK_LOW
        if new == self.state:
            return None
        self.state = new
        return new


def refuse_to_start_if_full(space: DiskSpace, min_free_bytes: int) -> None:
    """Raise DiskSpaceError if `space` has less free than min_free_bytes (0: never)."""
    if not space.measurable or space.free_bytes >= min_free_bytes:
        return
    raise DiskSpaceError(
        f"the file system holding data dir {space.path} has {format_bytes(space.free_bytes)} "
        f"free, below disk_min_free_bytes ({format_bytes(min_free_bytes)}): the node would "
        "stop at its first log write. Free space on that file system or move the data dir to "
        "a larger one; or lower disk_min_free_bytes in the node's config "
        "(--disk-min-free-bytes; 0 turns this check off), at the risk that the node stops "
        "again as soon as the disk fills")


def low_disk_warning(space: DiskSpace, low_free_bytes: int) -> str:
    """The log line for a disk that just became low."""
    return (f"disk space low: the file system holding {space.path} has "
            f"{format_bytes(space.free_bytes)} free of {format_bytes(space.total_bytes)}, "
            f"below disk_low_free_bytes ({format_bytes(low_free_bytes)}); a node whose disk "
            "fills stops (fail-stop: a failed log write or fsync is never retried) and will "
            "not restart until there is space. Free space on that file system or move the "
            "data dir to a larger one")


def format_bytes(n: int) -> str:
    """A size for people, in binary units: 512 B, 1.5 KiB, 16.0 MiB, 41.3 GiB, 1.0 PiB."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"
