"""SLOWLOG: the commands a node's clients sent that took longer than `slowlog-log-slower-than`
microseconds, newest first, at most `slowlog-max-len` of them, as Redis keeps them.

Node-local, as in Redis: each node logs the commands its own clients sent, and CONFIG SET
changes its two settings on that node only. A command's time is the node's, from when it took
the command to when its reply was ready (resp_server.ClientConnection): for a write that
includes its replication to a majority and the fsyncs on the way, which is what makes a write
slow here; Redis times only the execution, which the node core (sans-I/O, no clock) cannot
time apart. A blocking command's wait is not counted, as in Redis, and commands the connection
answers itself (PING, AUTH, CLIENT, ...) are not logged, so no password ever is.
"""

from __future__ import annotations

import time
from collections import deque

SLOWER_THAN_US = 10_000  # Redis's default slowlog-log-slower-than
MAX_LEN = 128  # Redis's default slowlog-max-len
# What an entry keeps of a command, as Redis: at most 32 arguments (the last one then says how
# many more there were) and 128 bytes of each (then how many more bytes).
ARGS_MAX = 32
ARG_BYTES_MAX = 128
NAME_BYTES_MAX = 128  # of the client's name, whatever its length


class SlowLog:
    def __init__(self) -> None:
        self.slower_than_us = SLOWER_THAN_US  # negative: log nothing; 0: every command
        self.max_len = MAX_LEN
        self._entries: deque[list] = deque()
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, usec: float, argv: list[bytes], addr: str, name: bytes) -> None:
        """Log `argv` if it took `usec` microseconds or more than the threshold allows."""
        if self.slower_than_us < 0 or usec < self.slower_than_us or self.max_len == 0:
            return
        if len(argv) > ARGS_MAX:
            kept = [*argv[:ARGS_MAX - 1],
                    b"... (%d more arguments)" % (len(argv) - ARGS_MAX + 1)]
        else:
            kept = list(argv)
        kept = [a if len(a) <= ARG_BYTES_MAX
                else a[:ARG_BYTES_MAX] + b"... (%d more bytes)" % (len(a) - ARG_BYTES_MAX)
                for a in kept]
        self._entries.appendleft([self._next_id, int(time.time()), int(usec), kept,
                                  addr.encode(), name[:NAME_BYTES_MAX]])
        self._next_id += 1
        while len(self._entries) > self.max_len:
            self._entries.pop()

    def set_max_len(self, max_len: int) -> None:
        self.max_len = max_len
        while len(self._entries) > max_len:
            self._entries.pop()

    def newest(self, count: int) -> list[list]:
        """SLOWLOG GET: the newest `count` entries (-1: all), each [id, unix time, microseconds,
        arguments, client address, client name]."""
        entries = self._entries
        return list(entries) if count < 0 else [entries[i] for i in range(min(count, len(entries)))]

    def reset(self) -> None:
        self._entries.clear()
