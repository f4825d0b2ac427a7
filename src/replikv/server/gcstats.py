"""The node process and CPython's cyclic garbage collector: fewer objects to walk, and what the
collections cost, for INFO memory and /metrics.

A full (generation 2) collection walks every tracked object in the process, and holds the event
loop meanwhile: every request in flight waits for it. Most of what a node holds is kept out of
its reach by design (the keyspace is dicts of bytes, which CPython does not track; the Raft log
is arrays and a bytearray, see replikv.raft.log), but what the process imported (modules,
classes, functions: about 36,000 objects) is walked by every full collection, though none of it
can ever be garbage. `freeze_startup_objects` moves everything alive once the node has opened
its storage into the permanent generation (`gc.freeze`, the technique CPython documents for
servers that fork, used here for the walk it saves): full collections then walk only what was
made since. Those objects are still freed by reference counting; only a reference cycle among
them would outlive its use, and they are the process's own lifetime objects.

`GcStats` measures every full collection's wall time with a `gc.callbacks` hook: its count,
total and longest pause since start. The collector is the process's, so is the hook: one
instance per process (`process_gc_stats`), shared by the node servers a test may run in it.
"""

from __future__ import annotations

import gc
import time
from typing import Any


class GcStats:
    """Counts and times the process's full collections, from the moment it is installed."""

    def __init__(self) -> None:
        self.full_collections = 0
        self.full_pause_seconds_total = 0.0
        self.full_pause_seconds_max = 0.0
        self._started: float | None = None

    def install(self) -> GcStats:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            pause = time.perf_counter() - self._started
            self._started = None
            self.full_collections += 1
            self.full_pause_seconds_total += pause
            self.full_pause_seconds_max = max(self.full_pause_seconds_max, pause)

    def info_fields(self) -> list[tuple[str, object]]:
        """The INFO memory fields."""
        return [
            ("gc_frozen_objects", gc.get_freeze_count()),
            ("gc_full_collections", self.full_collections),
            ("gc_full_pause_ms_total", round(1000 * self.full_pause_seconds_total, 3)),
            ("gc_full_pause_ms_max", round(1000 * self.full_pause_seconds_max, 3)),
        ]


_PROCESS_GC_STATS: GcStats | None = None


def process_gc_stats() -> GcStats:
    """The process's GcStats, installed on first use."""
    global _PROCESS_GC_STATS
    if _PROCESS_GC_STATS is None:
        _PROCESS_GC_STATS = GcStats().install()
    return _PROCESS_GC_STATS


def freeze_startup_objects() -> int:
    """Collect what is garbage now, then move every surviving tracked object into the permanent
    generation; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
