"""Checking client histories for linearizability.

`history` records and stores what clients did (`HistoryRecorder`, `Op`, JSON Lines files);
`linearizability` decides whether a history could have come from a single-copy key-value store
(`check_history`). The simulator and the fault tests use both; nothing in the server imports
them.
"""

from replikv.check.history import HistoryRecorder, Op, dump_history, load_history
from replikv.check.linearizability import CheckResult, check_history, describe_op, format_result

__all__ = [
    "CheckResult",
    "HistoryRecorder",
    "Op",
    "check_history",
    "describe_op",
    "dump_history",
    "format_result",
    "load_history",
]
