"""Who a change wakes among the blocked clients (replikv.server.blocking.Waiters): the
longest-waiting idle calls per changed key, as many as it holds elements, calls trying marked
dirty, the next in line after
one that popped, every key on a flush; the probe that gates attempts after the first; and which
keys are busy (a call on one makes its first attempt without a read first)."""

from __future__ import annotations

from replikv.entries import ALL_KEYS
from replikv.server import blocking
from replikv.server.blocking import BUSY_S, Blocked, Waiters, probe


def one(_key: bytes) -> int:
    return 1


def blocked(*keys: bytes) -> Blocked:
    return Blocked(tuple(keys), lambda: None)


def test_a_change_wakes_the_longest_waiting_idle_call_on_the_key() -> None:
    waiters = Waiters()
    first, second, other = blocked(b"q"), blocked(b"q"), blocked(b"r")
    for call in (first, second, other):
        waiters.add(call)
    assert waiters.calls == 3 and waiters
    assert waiters.changed([b"q"], one) == [first]
    assert waiters.changed([b"q", b"r", b"nobody"], one) == [first, other]
    first.trying = True
    assert waiters.changed([b"q"], one) == [second]  # first is under way: marked dirty instead
    assert first.dirty and not second.dirty


def test_a_change_wakes_as_many_as_the_key_holds_and_none_for_an_empty_key() -> None:
    waiters = Waiters()
    calls = [blocked(b"q") for _ in range(4)]
    for call in calls:
        waiters.add(call)
    assert waiters.changed([b"q"], lambda key: 3) == calls[:3]
    calls[0].trying = True
    assert waiters.changed([b"q"], lambda key: 0) == [] and calls[0].dirty


def test_a_call_on_several_keys_is_woken_once_and_the_next_one_takes_the_other_key() -> None:
    waiters = Waiters()
    both, q_only = blocked(b"q", b"r"), blocked(b"r")
    waiters.add(both)
    waiters.add(q_only)
    assert waiters.changed([b"q", b"r"], one) == [both, q_only]


def test_one_that_popped_wakes_the_next_in_line_on_each_of_its_keys() -> None:
    waiters = Waiters()
    a, b, c = blocked(b"q", b"r"), blocked(b"q"), blocked(b"r")
    for call in (a, b, c):
        waiters.add(call)
    assert waiters.served(a) == [b, c]
    b.trying = True
    assert waiters.served(a) == [c]  # b is trying already


def test_a_flush_wakes_one_per_key_and_removal_forgets_the_call() -> None:
    waiters = Waiters()
    a, b = blocked(b"q"), blocked(b"r")
    waiters.add(a)
    waiters.add(b)
    assert waiters.changed([ALL_KEYS], one) == [a, b]
    waiters.remove(a)
    waiters.remove(b)
    assert not waiters and waiters.changed([ALL_KEYS], one) == []
    assert waiters._by_key == {}  # nothing left behind


def test_the_probe_wants_a_key_of_the_type_the_command_pops() -> None:
    types = {b"l": b"list", b"s": b"string", b"z": b"zset"}
    assert probe(types.get, [b"x", b"l"], b"list")
    assert not probe(types.get, [b"s", b"x"], b"list")  # a string: the client waits on
    assert probe(types.get, [b"z"], b"zset") and not probe(types.get, [b"z"], b"list")


def test_a_key_is_busy_for_a_while_after_a_change_left_it_something_to_pop() -> None:
    now = [100.0]
    waiters = Waiters(clock=lambda: now[0])
    waiters.changed([b"q"], one)  # nobody waits on q: nothing to remember
    assert not waiters.busy([b"q"])
    call = blocked(b"q", b"r")
    waiters.add(call)
    waiters.changed([b"q", b"r"], lambda key: 0)  # left nothing to pop (a nil attempt's entry)
    assert not waiters.busy([b"q"]) and not waiters.busy([b"r"])
    waiters.changed([b"q"], one)
    assert waiters.busy([b"q"]) and waiters.busy([b"x", b"q"]) and not waiters.busy([b"r"])
    now[0] += BUSY_S / 2
    assert waiters.busy([b"q"])
    now[0] += BUSY_S
    assert not waiters.busy([b"q"])  # idle again: a call on it reads first
    waiters.changed([ALL_KEYS], one)  # a snapshot: every key waited on changed
    assert waiters.busy([b"q"]) and waiters.busy([b"r"])


def test_busy_keys_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(blocking, "BUSY_KEYS_MAX", 4)
    now = [0.0]
    waiters = Waiters(clock=lambda: now[0])
    keys = [b"k%d" % i for i in range(6)]
    waiters.add(blocked(*keys))
    waiters.changed(keys[:4], one)
    now[0] += BUSY_S * 2
    waiters.changed(keys[4:], one)  # the first four are no longer busy: forgotten
    assert sorted(waiters._changed_at) == keys[4:]
    waiters.changed(keys[:2], one)
    assert len(waiters._changed_at) == 4
    waiters.changed(keys[2:3], one)  # all busy, and full: forgotten, all but the newest
    assert list(waiters._changed_at) == [keys[2]]
