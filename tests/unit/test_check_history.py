"""Histories: Op validation, the recorder, and JSON Lines files that round-trip exactly (binary
keys and values, CR LF, bytes that are not UTF-8, every kind of result)."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.check import HistoryRecorder, Op, dump_history, load_history
from replikv.check.history import op_from_json, op_to_json

AWKWARD_BYTES = [
    b"",
    b"\r\n",
    b"line one\r\nline two\n",
    b"\x00\xff\xfe\x80",
    "caf\u00e9".encode("latin-1"),  # one byte 0xe9: not UTF-8
    "caf\u00e9".encode(),  # two bytes: UTF-8
    b'"quoted" \\ back\\slash',
    bytes(range(256)),
]


def test_round_trip_of_awkward_bytes(tmp_path):
    ops = []
    for n, data in enumerate(AWKWARD_BYTES):
        ops.append(Op(n, data, "set", data, None, n, n + 1, "ok", None))
        ops.append(Op(n, data, "get", None, None, n, n + 1, "ok", data))
        ops.append(Op(n, data, "cas", data, data, n, n + 1, "ok", True))
    path = tmp_path / "history.jsonl"
    dump_history(ops, path)
    assert load_history(path) == ops


def test_every_kind_of_result_round_trips(tmp_path):
    ops = [
        Op(1, b"k", "get", None, None, 0, 5, "ok", None),
        Op(1, b"k", "get", None, None, 0, 5, "ok", b"v"),
        Op(1, b"k", "cas", b"n", b"o", 0, 5, "ok", False),
        Op(1, b"k", "incr", None, None, 0, 5, "ok", 7),
        Op(1, b"k", "incr", None, None, 0, 5, "ok", -(2**63)),
        Op(1, b"k", "del", None, None, 0, 5, "ok", 1),
        Op(1, b"k", "del", None, None, 0, 5, "ok", None),
        Op(1, b"k", "set", b"v", None, 0, 5, "ok", b"OK"),
        Op(1, b"k", "set", b"v", None, 0, 5, "ok", True),  # what redis-py answers
        Op(1, b"k", "set", b"v", None, 0, 5, "fail", "TRYAGAIN no leader"),  # a str stays a str
        Op(1, b"k", "set", b"v", None, 0, None, "unknown", None),
    ]
    path = tmp_path / "history.jsonl"
    dump_history(ops, path)
    loaded = load_history(path)
    assert loaded == ops
    assert [type(op.result) for op in loaded] == [type(op.result) for op in ops]


def test_file_is_ascii_with_one_line_per_op(tmp_path):
    ops = [Op(1, b"a\r\nb", "set", b"\xff\n", None, 0, 1, "ok", None)] * 3
    path = tmp_path / "history.jsonl"
    dump_history(ops, path)
    raw = path.read_bytes()
    raw.decode("ascii")  # nothing outside ASCII
    assert raw.count(b"\n") == 3
    record = json.loads(raw.splitlines()[0])
    assert record["key"] == "a\r\nb" and record["value"] == "\u00ff\n"


def test_blank_lines_are_skipped_and_bad_lines_named(tmp_path):
    good = op_to_json(Op(1, b"k", "get", None, None, 0, 1, "ok", None))
    path = tmp_path / "history.jsonl"
    path.write_text(f"{good}\n\n{good}\n")
    assert len(load_history(path)) == 2
    path.write_text(f'{good}\n{{"client": 1}}\n')
    with pytest.raises(ValueError, match=r"history.jsonl:2"):
        load_history(path)
    path.write_text(good.replace('"get"', '"getx"') + "\n")
    with pytest.raises(ValueError, match=r":1: .*kind"):
        load_history(path)


def test_the_readmes_example_line_loads_and_a_cas_without_expected_is_refused(tmp_path):
    """The README's example op leaves out "expected" (only a compare-and-set has one)."""
    line = ('{"client": 1, "key": "k1", "kind": "set", "value": "v", "call_ns": 10, '
            '"return_ns": 25, "outcome": "ok", "result": null}')
    assert op_from_json(line) == Op(1, b"k1", "set", b"v", None, 10, 25, "ok", None)
    cas = line.replace('"set"', '"cas"').replace('"result": null', '"result": true')
    with pytest.raises((ValueError, TypeError), match="expected"):
        op_from_json(cas)
    with pytest.raises(ValueError, match="fields"):
        op_from_json(line.replace('"client"', '"clients"'))


def test_the_check_command_tells_a_bad_file_from_a_violation(tmp_path):
    """Exit 3 and the line for a file that is not a history; 1 stays 'not linearizable'."""
    from click.testing import CliRunner

    from replikv.cli import main

    path = tmp_path / "history.jsonl"
    ok = op_to_json(Op(1, b"k", "set", b"v", None, 0, 1, "ok", None))
    stale = op_to_json(Op(2, b"k", "get", None, None, 2, 3, "ok", None))  # after the set: b"v"
    runner = CliRunner()
    path.write_text(f"{ok}\n")
    assert runner.invoke(main, ["check", str(path)]).exit_code == 0
    path.write_text(f"{ok}\n{stale}\n")
    assert runner.invoke(main, ["check", str(path)]).exit_code == 1
    path.write_text(f'{ok}\n{{"client": 1}}\n')
    bad = runner.invoke(main, ["check", str(path)])
    assert bad.exit_code == 3 and "history.jsonl:2" in bad.output, bad.output
    path.write_bytes(b"\xff\xfe\n")
    assert runner.invoke(main, ["check", str(path)]).exit_code == 3


def test_a_code_point_above_255_is_not_a_byte():
    line = op_to_json(Op(1, b"k", "get", None, None, 0, 1, "ok", None)).replace(
        '"key":"k"', '"key":"\\u0100"'
    )
    with pytest.raises(ValueError):
        op_from_json(line)


# ---- Op validation ----


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "put"}, "kind"),
        ({"outcome": "maybe"}, "outcome"),
        ({"key": "k"}, "key"),
        ({"kind": "get", "value": b"v"}, "value"),
        ({"kind": "set", "value": None}, "value"),
        ({"kind": "cas", "value": b"n", "expected": None, "result": True}, "expected"),
        ({"return_ns": None}, "return_ns"),
        ({"outcome": "unknown"}, "return_ns"),
        ({"call_ns": 10, "return_ns": 5}, "before"),
        ({"result": b"v", "kind": "cas", "value": b"n", "expected": b"o"}, "cas"),
        ({"result": True, "kind": "incr"}, "incr"),
        ({"result": 1.5}, "result"),
        ({"call_ns": 1.0}, "call_ns"),
    ],
)
def test_malformed_ops_are_refused(fields, error):
    base = {
        "client": 1,
        "key": b"k",
        "kind": "get",
        "value": None,
        "expected": None,
        "call_ns": 0,
        "return_ns": 1,
        "outcome": "ok",
        "result": None,
    }
    base.update(fields)
    with pytest.raises((ValueError, TypeError), match=error):
        Op(**base)


def test_results_of_ops_without_a_reply_are_not_checked():
    Op(1, b"k", "incr", None, None, 0, 1, "fail", "ERR value is not an integer")
    Op(1, b"k", "cas", b"n", b"o", 0, None, "unknown", None)


# ---- the recorder ----


def test_recorder_produces_ops_in_invocation_order():
    recorder = HistoryRecorder()
    a = recorder.invoke(1, b"k", "set", b"v", now_ns=10)
    b = recorder.invoke(2, b"k", "get", now_ns=11)
    c = recorder.invoke(3, b"k", "cas", b"new", b"v", now_ns=12)
    recorder.complete(b, "ok", b"v", now_ns=20)
    recorder.complete(a, "ok", None, now_ns=21)
    recorder.complete(c, "unknown", None, 99)  # timed out: may still take effect
    assert recorder.ops() == [
        Op(1, b"k", "set", b"v", None, 10, 21, "ok", None),
        Op(2, b"k", "get", None, None, 11, 20, "ok", b"v"),
        Op(3, b"k", "cas", b"new", b"v", 12, None, "unknown", None),
    ]


def test_never_completed_ops_are_unknown():
    recorder = HistoryRecorder()
    recorder.invoke(1, b"k", "incr", now_ns=5)
    assert recorder.ops() == [Op(1, b"k", "incr", None, None, 5, None, "unknown", None)]


def test_recorder_refuses_mistakes_where_they_are_made():
    recorder = HistoryRecorder()
    with pytest.raises(TypeError):
        recorder.invoke(1, b"k", "set", now_ns=0)  # a set needs a value
    h = recorder.invoke(1, b"k", "incr", now_ns=10)
    with pytest.raises(TypeError):
        recorder.complete(h, "ok", b"5", now_ns=20)  # an incr answers an int
    with pytest.raises(ValueError):
        recorder.complete(h, "ok", 5, now_ns=5)  # before it was invoked
    recorder.complete(h, "ok", 5, now_ns=20)
    with pytest.raises(ValueError):
        recorder.complete(h, "ok", 5, now_ns=30)  # twice
    with pytest.raises(ValueError):
        recorder.complete(99, "ok", 5, now_ns=30)


def test_recorder_is_safe_across_threads():
    recorder = HistoryRecorder()

    def client(n: int) -> None:
        for t in range(200):
            h = recorder.invoke(n, b"k", "get", now_ns=t)
            recorder.complete(h, "ok", None, now_ns=t + 1)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ops = recorder.ops()
    assert len(ops) == 800 and all(op.outcome == "ok" for op in ops)


# ---- any op round-trips ----

_bytes = st.binary(max_size=12)


@st.composite
def any_op(draw) -> Op:
    kind = draw(st.sampled_from(["get", "set", "cas", "del", "incr"]))
    outcome = draw(st.sampled_from(["ok", "fail", "unknown"]))
    call = draw(st.integers(-(2**62), 2**62))
    ret = None if outcome == "unknown" else call + draw(st.integers(0, 2**40))
    value = draw(_bytes) if kind in ("set", "cas") else None
    expected = draw(_bytes) if kind == "cas" else None
    if outcome != "ok":
        result = draw(st.one_of(st.none(), st.text(max_size=8), _bytes))
    elif kind == "get":
        result = draw(st.one_of(st.none(), _bytes))
    elif kind == "cas":
        result = draw(st.booleans())
    elif kind == "incr":
        result = draw(st.integers(-(2**63), 2**63 - 1))
    elif kind == "del":
        result = draw(st.one_of(st.none(), st.integers(0, 1)))
    else:
        result = draw(st.one_of(st.none(), st.just(b"OK"), st.just(True)))
    return Op(
        draw(st.integers(0, 99)), draw(_bytes), kind, value, expected, call, ret, outcome, result
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(any_op(), max_size=10))
def test_any_history_round_trips(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("h") / "history.jsonl"
    dump_history(ops, path)
    loaded = load_history(path)
    assert loaded == ops
    assert [type(op.result) for op in loaded] == [type(op.result) for op in ops]


def test_an_empty_history_does_not_pass(tmp_path):
    """A recording that never happened (an empty file) is not a linearizable history."""
    from click.testing import CliRunner

    from replikv.cli import main

    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 3 and "no operations" in result.output
