"""The Raft log as the consensus core sees it: entries in memory, and how much of it is durable.

Entries live in a list indexed from `offset` (the index before the first entry; 0 for a log
that starts at 1). Two cursors describe persistence, as in etcd-io/raft's unstable log:
- `unstable_from`: the first index not yet handed to the driver for writing;
- `persisted_index`: the highest index the driver has confirmed durable and that still holds
  the entry it wrote (a truncation can replace entries while a write is in flight, so a
  confirmation only counts if the term still matches).

Truncation never reaches a committed entry (the core checks that invariant), and never happens
in place on disk: the write-ahead log records the replacing entries and recovery applies them.
"""

from __future__ import annotations

from replikv.invariants import InvariantViolation, invariant
from replikv.raft.messages import Entry


class RaftLog:
    __slots__ = ("_entries", "offset", "offset_term", "persisted_index", "unstable_from")

    def __init__(self, entries: list[Entry] | None = None, *, offset: int = 0,
                 offset_term: int = 0) -> None:
        self._entries: list[Entry] = list(entries or [])
        self.offset = offset  # index of the entry just before the first one held here
        self.offset_term = offset_term
        for i, e in enumerate(self._entries):
            invariant(e.index == offset + 1 + i, f"log entries not contiguous at {e.index}")
        # Everything given at construction came from disk: it is durable.
        self.unstable_from = self.last_index + 1
        self.persisted_index = self.last_index

    # -- reading -------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when the log does not hold it."""
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        if 0 <= pos < len(self._entries):
            return self._entries[pos].term
        return None

    def entry(self, index: int) -> Entry:
        pos = index - self.offset - 1
        invariant(0 <= pos < len(self._entries), "no entry at index %d", index)
        return self._entries[pos]

    def slice(self, lo: int, hi: int, *, max_bytes: int | None = None,
              max_count: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, cut after max_bytes of data (at least one entry)."""
        lo_pos = max(lo - self.offset - 1, 0)
        hi_pos = min(hi - self.offset - 1, len(self._entries))
        if lo_pos >= hi_pos:
            return []
        if max_count is not None:
            hi_pos = min(hi_pos, lo_pos + max(max_count, 1))
        out = self._entries[lo_pos:hi_pos]
        if max_bytes is not None:
            size = 0
            for i, e in enumerate(out):
                size += len(e.data)
                if size > max_bytes and i > 0:
                    return out[:i]
        return out

    def first_index_of_term(self, index: int, *, floor: int = 1) -> int:
        """Walk back from `index` to the first index holding the same term (for reject hints),
        stopping at `floor` (the follower's commit index + 1: nothing below it can conflict)."""
        term = self.term_at(index)
        floor = max(floor, self.offset + 1)
        while index - 1 >= floor and self.term_at(index - 1) == term:
            index -= 1
        return max(index, floor)

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding `term`, or None if the log has no entry of that term."""
        for e in reversed(self._entries):
            if e.term == term:
                return e.index
            if e.term < term:
                return None
        return None

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index)

    # -- writing -------------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append entries that directly follow the last one."""
        if not entries:
            return
        invariant(entries[0].index == self.last_index + 1,
                  "append at %d to a log ending at %d", entries[0].index, self.last_index)
        self._entries.extend(entries)

    def truncate_from(self, index: int) -> list[Entry]:
        """Drop every entry at or after `index` (a conflicting suffix from an old term) and
        return them in index order, durable or not, so the driver can keep a rollback copy."""
        invariant(index > self.offset, f"truncate at {index} below log start {self.offset}")
        pos = index - self.offset - 1
        removed = self._entries[pos:]
        del self._entries[pos:]
        self.unstable_from = min(self.unstable_from, index)
        if self.persisted_index >= index:
            self.persisted_index = index - 1
        return removed

    def compact(self, index: int) -> None:
        """Drop the entries through `index`: a durable snapshot covers them. The entry at
        `index` keeps answering `term_at` (it becomes the offset), for the consistency check."""
        invariant(self.offset <= index <= self.last_index,
                  f"compact at {index} outside the log ({self.offset}, {self.last_index}]")
        term = self.term_at(index)
        if term is None:  # cannot be, inside the log; says so to the type checker too
            raise InvariantViolation(f"compact at {index}: the log has no term for it")
        del self._entries[:index - self.offset]
        self.offset, self.offset_term = index, term
        self.unstable_from = max(self.unstable_from, index + 1)
        self.persisted_index = max(self.persisted_index, index)

    def reset(self, index: int, term: int) -> list[Entry]:
        """Discard the whole log: it now starts after a snapshot at (index, term). Returns the
        dropped entries."""
        removed, self._entries = self._entries, []
        self.offset, self.offset_term = index, term
        self.unstable_from = index + 1
        self.persisted_index = index
        return removed

    def take_unstable(self) -> list[Entry]:
        """Entries the driver must write; they count as in flight until `stable_to`."""
        out = self._entries[self.unstable_from - self.offset - 1:]
        self.unstable_from = self.last_index + 1
        return out

    def stable_to(self, index: int, term: int) -> None:
        """The driver made entries up to (index, term) durable."""
        if self.term_at(index) == term and index > self.persisted_index:
            self.persisted_index = index
