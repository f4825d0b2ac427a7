"""The node's garbage-collector hook and start-up freeze (replikv.server.gcstats)."""

from __future__ import annotations

import gc
import subprocess
import sys

from replikv.server.gcstats import GcStats, process_gc_stats


def test_full_collections_are_counted_and_timed_and_the_young_ones_are_not() -> None:
    stats = GcStats().install()
    try:
        gc.collect(0)
        gc.collect(1)
        assert stats.full_collections == 0
        gc.collect()
        gc.collect()
        assert stats.full_collections == 2
        assert 0 < stats.full_pause_seconds_max <= stats.full_pause_seconds_total
        fields = dict(stats.info_fields())
        assert fields["gc_full_collections"] == 2
        assert fields["gc_full_pause_ms_max"] == round(1000 * stats.full_pause_seconds_max, 3)
        assert fields["gc_frozen_objects"] == gc.get_freeze_count()
    finally:
        stats.uninstall()
    gc.collect()
    assert stats.full_collections == 2  # uninstalled: no longer called


def test_the_process_has_one_hook_however_many_servers_ask() -> None:
    first = process_gc_stats()
    assert process_gc_stats() is first
    assert gc.callbacks.count(first._callback) == 1


def test_the_start_up_freeze_takes_what_is_alive_out_of_full_collections() -> None:
    """In a child process: freezing in the test runner would keep its garbage forever."""
    code = (
        "import gc, replikv.server.runtime\n"
        "from replikv.server.gcstats import freeze_startup_objects\n"
        "before = len(gc.get_objects())\n"
        "frozen = freeze_startup_objects()\n"
        "print(before, frozen, len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    before, frozen, after = map(int, out)
    # The runtime's imports alone are tens of thousands of objects; the collector's
    # generations are left with almost none of them.
    assert frozen > 10_000 and frozen >= 0.9 * before, out
    assert after < 0.05 * before, out
