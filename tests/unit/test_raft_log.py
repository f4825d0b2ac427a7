"""RaftLog against a plain list of entries, over random operations, and what it keeps in memory."""

from __future__ import annotations

import gc
import random

import pytest

from replikv.invariants import InvariantViolation
from replikv.raft.log import ARENA_CHUNK_BYTES, TAIL_MAX, TAIL_MAX_BYTES, RaftLog
from replikv.raft.messages import Entry


class Model:
    """The log as it was written before it was columnar: a list of Entry tuples."""

    def __init__(self, offset: int, offset_term: int) -> None:
        self.entries: list[Entry] = []
        self.offset, self.offset_term = offset, offset_term

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        return self.entries[pos].term if 0 <= pos < len(self.entries) else None

    def slice(self, lo: int, hi: int, max_bytes: int | None, max_count: int | None) -> list[Entry]:
        out = [e for e in self.entries if lo <= e.index < hi]
        if max_count is not None:
            out = out[:max(max_count, 1)]
        if max_bytes is not None:
            size = 0
            for i, e in enumerate(out):
                size += len(e.data)
                if size > max_bytes and i > 0:
                    return out[:i]
        return out


def check_same(log: RaftLog, model: Model, rng: random.Random) -> None:
    assert (log.offset, log.offset_term) == (model.offset, model.offset_term)
    assert (log.last_index, log.last_term, len(log)) == (
        model.last_index, model.last_term, len(model.entries))
    assert log.data_bytes == sum(len(e.data) for e in model.entries)
    for index in range(model.offset - 1, model.last_index + 2):
        assert log.term_at(index) == model.term_at(index)
    for e in model.entries:
        assert log.entry(e.index) == e and type(log.entry(e.index)) is Entry
        assert log.data_size(e.index) == len(e.data)
    for _ in range(5):
        lo = rng.randint(model.offset - 2, model.last_index + 2)
        hi = rng.randint(lo, model.last_index + 3)
        max_bytes = rng.choice([None, 0, 5, 20])
        max_count = rng.choice([None, 0, 1, 3])
        got = log.slice(lo, hi, max_bytes=max_bytes, max_count=max_count)
        assert got == model.slice(lo, hi, max_bytes, max_count)
        assert all(type(e) is Entry for e in got)
    terms = {e.term for e in model.entries}
    for term in terms | {max(terms | {0}) + 1, 0}:
        want = max((e.index for e in model.entries if e.term == term), default=None)
        assert log.last_index_of_term(term) == want


@pytest.mark.parametrize(("tail_max", "tail_max_bytes", "chunk_bytes"), [
    (2, TAIL_MAX_BYTES, ARENA_CHUNK_BYTES), (TAIL_MAX, TAIL_MAX_BYTES, ARENA_CHUNK_BYTES),
    (TAIL_MAX, 15, ARENA_CHUNK_BYTES), (2, TAIL_MAX_BYTES, 8), (1, 0, 20)])
@pytest.mark.parametrize("seed", range(30))
def test_the_log_answers_as_a_list_of_entries_would(seed: int, tail_max: int,
                                                     tail_max_bytes: int,
                                                     chunk_bytes: int) -> None:
    """With a tail of 2 entries (or 15 bytes, or none) kept as tuples, most answers are made
    from the arena, and with chunks of 8 or 20 bytes its data is spread over many; with the
    defaults, answers come from the tail."""
    rng = random.Random(seed)
    offset = rng.choice([0, 0, 7, 1000])
    offset_term = 0 if offset == 0 else rng.randint(1, 3)
    log = RaftLog(offset=offset, offset_term=offset_term, tail_max=tail_max,
                  tail_max_bytes=tail_max_bytes, chunk_bytes=chunk_bytes)
    model = Model(offset, offset_term)
    term = max(offset_term, 1)
    for _ in range(60):
        op = rng.choice(["append", "append", "append_new", "truncate", "compact", "reset",
                         "unstable", "stable"])
        if op == "append":
            if rng.random() < 0.3:
                term += 1
            new = [Entry(model.last_index + 1 + i, term, rng.randbytes(rng.randint(0, 12)))
                   for i in range(rng.randint(1, 5))]
            log.append(new)
            model.entries.extend(new)
        elif op == "append_new":
            datas = [rng.randbytes(rng.randint(0, 12)) for _ in range(rng.randint(1, 5))]
            first = model.last_index + 1
            log.append_new(term, datas)
            model.entries.extend(Entry(first + i, term, d) for i, d in enumerate(datas))
        elif op == "truncate" and model.entries:
            index = rng.randint(model.offset + 1, model.last_index)
            removed = log.truncate_from(index)
            assert removed == model.entries[index - model.offset - 1:]
            del model.entries[index - model.offset - 1:]
            assert log.unstable_from <= index and log.persisted_index < index
        elif op == "compact":
            index = rng.randint(model.offset, model.last_index)
            new_term = model.term_at(index)
            assert new_term is not None
            log.compact(index)
            del model.entries[:index - model.offset]
            model.offset, model.offset_term = index, new_term
        elif op == "reset" and rng.random() < 0.3:
            index = model.last_index + rng.randint(0, 4)
            term = max(term, model.last_term) + 1
            assert log.reset(index, term) == model.entries
            model.entries, model.offset, model.offset_term = [], index, term
        elif op == "unstable":
            start = log.unstable_from
            out = log.take_unstable()
            assert out == [e for e in model.entries if e.index >= start]
            assert log.unstable_from == model.last_index + 1
        elif op == "stable" and model.entries:
            e = rng.choice(model.entries)
            before = log.persisted_index
            log.stable_to(e.index, e.term)
            assert log.persisted_index == max(before, e.index)
        check_same(log, model, rng)
        assert len(log._tail) <= min(2 * tail_max, len(model.entries))
        assert sum(len(e.data) for e in log._tail) <= 2 * tail_max_bytes
        # Chunks: no bigger than chunk_bytes but for one entry of its own (data <= 12 bytes).
        assert all(len(c) <= max(chunk_bytes, 12) for c in log._chunks)
        starts = list(log._chunk_starts)
        assert len(starts) == len(log._chunks) and starts == sorted(set(starts))


def test_a_log_built_from_entries_checks_they_are_contiguous() -> None:
    log = RaftLog([Entry(6, 2, b"a"), Entry(7, 3, b"b")], offset=5, offset_term=2)
    assert log.slice(6, 8) == [Entry(6, 2, b"a"), Entry(7, 3, b"b")]
    assert log.persisted_index == 7 and log.unstable_from == 8
    with pytest.raises(InvariantViolation):
        RaftLog([Entry(6, 2, b"a"), Entry(8, 3, b"b")], offset=5, offset_term=2)
    with pytest.raises(InvariantViolation):
        log.append([Entry(9, 3, b"c")])


def test_entries_in_the_log_are_not_objects_for_the_garbage_collector() -> None:
    """A large store's log holds hundreds of thousands of entries between snapshots; each
    tracked object among them lengthens every full collection of the node process. Only the
    tail (at most 2 x TAIL_MAX entries) is kept as tuples."""
    log = RaftLog(tail_max=100)
    gc.collect()
    before = len(gc.get_objects())
    for chunk in range(20):
        log.append([Entry(chunk * 500 + i + 1, 1 + chunk // 5, b"v%d" % i) for i in range(500)])
    log.append_new(9, [b"w%d" % i for i in range(5000)])
    gc.collect()
    assert len(log) == 15_000
    assert len(gc.get_objects()) - before < 2 * 100 + 100
    # ...and what a full collection visits through the log: the tail's tuples and their items,
    # not one object per entry (a list of bytes would be one tracked object, but 15,000 visits).
    visits = 0
    for held in gc.get_referents(log):
        if gc.is_tracked(held):
            visits += len(gc.get_referents(held))
            visits += sum(len(gc.get_referents(x)) for x in gc.get_referents(held)
                          if gc.is_tracked(x))
    assert visits <= 2 * 100 * 4 + 20, visits
    assert log.slice(1, 4) == [Entry(1, 1, b"v0"), Entry(2, 1, b"v1"), Entry(3, 1, b"v2")]
    assert log.slice(15_000, 15_001) == [Entry(15_000, 9, b"w4999")]


def test_big_entries_are_not_held_twice() -> None:
    """A bulk load's entries (an MSET of 500 keys is 60 KB) are in the arena; the tail, whose
    data is a second copy, keeps only the last few MiB of them."""
    log = RaftLog()
    for i in range(200):
        log.append_new(1, [b"%06d" % i + bytes(100_000)])
    log.append([Entry(201 + i, 1, bytes(100_000)) for i in range(50)])
    assert len(log) == 250 and log.data_bytes == 250 * 100_000 + 200 * 6
    assert sum(len(e.data) for e in log._tail) <= 2 * TAIL_MAX_BYTES
    assert log.entry(1).data[:6] == b"000000" and log.entry(200).data[:6] == b"000199"
    assert [e.index for e in log.slice(1, 251)] == list(range(1, 251))
    # ...and the arena is in chunks of at most ARENA_CHUNK_BYTES: a compaction frees them.
    assert all(len(c) <= ARENA_CHUNK_BYTES for c in log._chunks) and len(log._chunks) >= 25
    log.compact(240)
    assert len(log._chunks) <= 2 and log.data_bytes == 10 * 100_000
    assert log.entry(241).data == bytes(100_000)
