"""Who a change wakes among the blocked clients (replikv.server.blocking.Waiters): the
longest-waiting idle calls per changed key, as many as it holds elements, calls trying marked
dirty, the next in line after
one that popped, every key on a flush; and the probe that gates attempts after the first."""

from __future__ import annotations

from replikv.entries import ALL_KEYS
from replikv.server.blocking import Blocked, Waiters, probe


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
