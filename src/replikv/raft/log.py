"""The Raft log as the consensus core sees it: entries in memory, and how much of it is durable.

Entries are indexed from `offset` (the index before the first entry; 0 for a log that starts at
1); an entry's index is implied by its position. Their data is held in a byte arena (bytearrays
of up to ARENA_CHUNK_BYTES each, an entry's data never split between two) with an array of
where each entry's data ends, their terms in an array of ints, and
only the newest entries also as `Entry` tuples (the tail: between `tail_max` and twice that
many, TAIL_MAX by default, and no more than twice `tail_max_bytes` of data, TAIL_MAX_BYTES, as
the tail's data is also in the arena; what replication, the write-ahead log and the state machine
ask for, so the hot path makes no tuple twice). Older entries are made from the arena when asked
for (a follower catching up).

Held that way because the log holds every entry since the last snapshot, hundreds of thousands
of them on a large store, and a full garbage collection visits every object a tracked container
refers to. As a list of Entry tuples (a NamedTuple class, which CPython never untracks) or even
as a list of bytes, each entry cost the collector a visit to a different place in memory, and a
full collection of the node process took 20 to 40 ms (its p99.9 latency). Arrays and bytearrays
hold no objects: the collector does not look inside them. Each entry costs 16 bytes beyond its
data (an end and a term), where a tuple, an index int and a bytes object cost about 145. The
arena grows and shrinks one chunk at a time: one bytearray the size of the log, grown by
reallocation and freed whole at compaction, made glibc raise its mmap threshold to that size,
after which the process's big buffers came from its heap and its peak RSS rose by tens of MiB.

Two cursors describe persistence, as in etcd-io/raft's unstable log:
- `unstable_from`: the first index not yet handed to the driver for writing;
- `persisted_index`: the highest index the driver has confirmed durable and that still holds
  the entry it wrote (a truncation can replace entries while a write is in flight, so a
  confirmation only counts if the term still matches).

Truncation never reaches a committed entry (the core checks that invariant), and never happens
in place on disk: the write-ahead log records the replacing entries and recovery applies them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, repeat

from replikv.invariants import InvariantViolation, invariant
from replikv.raft.messages import Entry

_make_entry = Entry._make
TAIL_MAX = 4096  # the newest entries kept as Entry tuples: between this and twice this...
TAIL_MAX_BYTES = 2 * 2**20  # ...and at most twice this much data (a bulk load's entries are big)
ARENA_CHUNK_BYTES = 2**20  # the arena's chunks (one entry bigger than this is a chunk of its own)


class RaftLog:
    __slots__ = ("_base", "_chunk_bytes", "_chunk_starts", "_chunks", "_ends", "_tail",
                 "_tail_max", "_tail_max_bytes", "_terms", "offset", "offset_term",
                 "persisted_index", "unstable_from")

    def __init__(self, entries: list[Entry] | None = None, *, offset: int = 0,
                 offset_term: int = 0, tail_max: int = TAIL_MAX,
                 tail_max_bytes: int = TAIL_MAX_BYTES,
                 chunk_bytes: int = ARENA_CHUNK_BYTES) -> None:
        entries = list(entries or ())
        self._tail_max = max(tail_max, 1)
        self._tail_max_bytes = max(tail_max_bytes, 0)
        self.offset = offset  # index of the entry just before the first one held here
        self.offset_term = offset_term
        for i, e in enumerate(entries):
            invariant(e.index == offset + 1 + i, f"log entries not contiguous at {e.index}")
        self._terms = array("q", [e.term for e in entries])
        # The arena: entry data back to back, in chunks. Positions in it are counted from the
        # arena's creation and never reused: chunk k holds positions from _chunk_starts[k] on,
        # `_base` is where the first entry's data starts (compaction leaves dead bytes before
        # it in the first chunk), `_ends[pos]` where the data of the entry at list position pos
        # ends. There is always a chunk, the last one being filled, maybe empty.
        self._chunk_bytes = max(chunk_bytes, 1)
        self._chunks: list[bytearray] = [bytearray()]
        self._chunk_starts = array("q", [0])
        self._base = 0
        self._ends = array("q")
        self._push_data([e.data for e in entries])
        self._tail: list[Entry] = entries[-self._tail_max:]
        self._trim_tail()
        # Everything given at construction came from disk: it is durable.
        self.unstable_from = self.last_index + 1
        self.persisted_index = self.last_index

    def _push_data(self, datas: list[bytes]) -> None:
        last = self._chunks[-1]
        size = sum(map(len, datas))
        if len(last) + size > self._chunk_bytes:
            if size > self._chunk_bytes and len(datas) > 1:  # entry by entry (a log read
                for data in datas:                           # from disk, a big batch)
                    self._push_one(data)
                return
            if last:
                last = self._new_chunk()
        position = self._chunk_starts[-1] + len(last)
        last += b"".join(datas)
        ends = accumulate(map(len, datas), initial=position)
        next(ends)  # the initial position itself
        self._ends.extend(ends)

    def _push_one(self, data: bytes) -> None:
        last = self._chunks[-1]
        if len(last) + len(data) > self._chunk_bytes and last:
            last = self._new_chunk()
        last += data
        self._ends.append(self._chunk_starts[-1] + len(last))

    def _new_chunk(self) -> bytearray:
        self._chunk_starts.append(self._chunk_starts[-1] + len(self._chunks[-1]))
        chunk = bytearray()
        self._chunks.append(chunk)
        return chunk

    def _data(self, start: int, end: int) -> bytes:
        """The arena's bytes from position start to end (one entry's: in one chunk)."""
        k = bisect_right(self._chunk_starts, start) - 1
        chunk_start = self._chunk_starts[k]
        return bytes(self._chunks[k][start - chunk_start:end - chunk_start])

    @property
    def _arena_end(self) -> int:
        return self._chunk_starts[-1] + len(self._chunks[-1])

    def _start(self, pos: int) -> int:
        """Where the data of the entry at list position `pos` starts in the arena."""
        return self._ends[pos - 1] if pos else self._base

    def _entries(self, lo_pos: int, hi_pos: int) -> list[Entry]:
        """The entries at list positions lo_pos <= pos < hi_pos, as Entry tuples: the tail's,
        and made from the arena for those before it."""
        tail = self._tail
        tail_pos = len(self._terms) - len(tail)
        if lo_pos >= tail_pos:
            return tail[lo_pos - tail_pos:hi_pos - tail_pos]
        made_to = min(hi_pos, tail_pos)
        start = self._start(lo_pos)
        datas = []
        for end in self._ends[lo_pos:made_to]:
            datas.append(self._data(start, end))
            start = end
        first = self.offset + 1
        made = list(map(_make_entry, zip(range(first + lo_pos, first + made_to),
                                         self._terms[lo_pos:made_to], datas)))
        if hi_pos > tail_pos:
            made += tail[:hi_pos - tail_pos]
        return made

    def _extend_tail(self, entries: list[Entry]) -> None:
        self._tail.extend(entries)
        self._trim_tail()

    def _trim_tail(self) -> None:
        """Once the tail holds twice tail_max entries or twice tail_max_bytes of data, cut it
        to tail_max entries and tail_max_bytes (in steps, so amortized O(1) per entry)."""
        tail, ends = self._tail, self._ends
        if not tail:
            return
        n = len(ends)
        tail_pos = n - len(tail)
        last_end = ends[-1]
        tail_bytes = last_end - (ends[tail_pos - 1] if tail_pos else self._base)
        if len(tail) <= 2 * self._tail_max and tail_bytes <= 2 * self._tail_max_bytes:
            return
        # The first position from which the data to the end fits in tail_max_bytes.
        floor = last_end - self._tail_max_bytes
        keep_from = 0 if self._base >= floor else bisect_left(ends, floor) + 1
        keep_from = max(keep_from, n - self._tail_max, tail_pos)
        del tail[:keep_from - tail_pos]

    # -- reading -------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.offset + len(self._terms)

    @property
    def last_term(self) -> int:
        return self._terms[-1] if self._terms else self.offset_term

    def __len__(self) -> int:
        """How many entries the log holds in memory."""
        return len(self._terms)

    @property
    def data_bytes(self) -> int:
        """The data of the entries held, in bytes."""
        return self._arena_end - self._base

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when the log does not hold it."""
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        if 0 <= pos < len(self._terms):
            return self._terms[pos]
        return None

    def entry(self, index: int) -> Entry:
        pos = index - self.offset - 1
        invariant(0 <= pos < len(self._terms), "no entry at index %d", index)
        tail_pos = len(self._terms) - len(self._tail)
        if pos >= tail_pos:
            return self._tail[pos - tail_pos]
        return Entry(index, self._terms[pos], self._data(self._start(pos), self._ends[pos]))

    def data_size(self, index: int) -> int:
        """The length of the data of the entry at `index` (nothing copied)."""
        pos = index - self.offset - 1
        invariant(0 <= pos < len(self._terms), "no entry at index %d", index)
        return self._ends[pos] - self._start(pos)

    def slice(self, lo: int, hi: int, *, max_bytes: int | None = None,
              max_count: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi, cut after max_bytes of data (at least one entry)."""
        lo_pos = max(lo - self.offset - 1, 0)
        hi_pos = min(hi - self.offset - 1, len(self._terms))
        if lo_pos >= hi_pos:
            return []
        if max_count is not None:
            hi_pos = min(hi_pos, lo_pos + max(max_count, 1))
        if max_bytes is not None:
            # The first entry that ends past max_bytes from lo's start is left out, unless it
            # is the first one.
            cut = bisect_right(self._ends, self._start(lo_pos) + max_bytes, lo_pos, hi_pos)
            hi_pos = max(cut, lo_pos + 1)
        return self._entries(lo_pos, hi_pos)

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
        terms = self._terms
        for pos in range(len(terms) - 1, -1, -1):
            t = terms[pos]
            if t == term:
                return self.offset + 1 + pos
            if t < term:
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
        self._terms.extend([e.term for e in entries])
        self._push_data([e.data for e in entries])
        self._extend_tail(entries)

    def append_new(self, term: int, datas: list[bytes]) -> None:
        """Append one entry of `term` per item of `datas` (the leader's proposals)."""
        first = self.last_index + 1
        if len(datas) == 1:  # the usual proposal: one command, without the batch machinery
            data = datas[0]
            self._terms.append(term)
            self._push_one(data)
            self._tail.append(Entry(first, term, data))
            self._trim_tail()
            return
        self._terms.extend(repeat(term, len(datas)))
        self._push_data(datas)
        self._extend_tail(list(map(_make_entry, zip(range(first, first + len(datas)),
                                                    repeat(term), datas))))

    def truncate_from(self, index: int) -> list[Entry]:
        """Drop every entry at or after `index` (a conflicting suffix from an old term) and
        return them in index order, durable or not, so the driver can keep a rollback copy."""
        invariant(index > self.offset, f"truncate at {index} below log start {self.offset}")
        pos = index - self.offset - 1
        removed = self._entries(pos, len(self._terms))
        tail_pos = len(self._terms) - len(self._tail)
        del self._tail[max(pos - tail_pos, 0):]
        if pos < len(self._terms):
            cut = self._start(pos)
            k = bisect_right(self._chunk_starts, cut) - 1
            del self._chunks[k + 1:]
            del self._chunk_starts[k + 1:]
            del self._chunks[k][cut - self._chunk_starts[k]:]
            del self._terms[pos:]
            del self._ends[pos:]
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
        dropped = index - self.offset
        if dropped:
            tail_pos = len(self._terms) - len(self._tail)
            if dropped > tail_pos:
                del self._tail[:dropped - tail_pos]
            new_base = self._ends[dropped - 1]
            k = bisect_right(self._chunk_starts, new_base) - 1  # the chunk the log now starts in
            if k:
                del self._chunks[:k]
                del self._chunk_starts[:k]
            self._base = new_base
            del self._terms[:dropped]
            del self._ends[:dropped]
        self.offset, self.offset_term = index, term
        self.unstable_from = max(self.unstable_from, index + 1)
        self.persisted_index = max(self.persisted_index, index)

    def reset(self, index: int, term: int) -> list[Entry]:
        """Discard the whole log: it now starts after a snapshot at (index, term). Returns the
        dropped entries."""
        removed = self._entries(0, len(self._terms))
        self._base = self._arena_end
        self._chunks, self._chunk_starts = [bytearray()], array("q", [self._base])
        self._terms, self._ends, self._tail = array("q"), array("q"), []
        self.offset, self.offset_term = index, term
        self.unstable_from = index + 1
        self.persisted_index = index
        return removed

    def take_unstable(self) -> list[Entry]:
        """Entries the driver must write; they count as in flight until `stable_to`."""
        out = self._entries(self.unstable_from - self.offset - 1, len(self._terms))
        self.unstable_from = self.last_index + 1
        return out

    def stable_to(self, index: int, term: int) -> None:
        """The driver made entries up to (index, term) durable."""
        if self.term_at(index) == term and index > self.persisted_index:
            self.persisted_index = index
