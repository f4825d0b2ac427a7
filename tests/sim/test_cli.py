"""`replikv sim` and `replikv check` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from replikv.check.history import Op, dump_history
from replikv.cli import main


def test_sim_runs_seeds_and_prints_a_summary():
    result = CliRunner().invoke(main, ["sim", "--seeds", "3", "--duration-ms", "2000"])
    assert result.exit_code == 0, result.output
    assert "seeds run: 3" in result.output and "violations: 0" in result.output


def test_sim_replays_one_seed_with_its_trace():
    result = CliRunner().invoke(main, ["sim", "--seed", "5", "--duration-ms", "2000",
                                       "--trace"])
    assert result.exit_code == 0, result.output
    assert "LEADER term" in result.output


def _op(client, kind, value, call, ret, result):
    return Op(client=client, key=b"k", kind=kind, value=value, expected=None, call_ns=call,
              return_ns=ret, outcome="ok", result=result)


def test_check_accepts_a_linearizable_history_and_rejects_a_stale_read(tmp_path: Path):
    good = tmp_path / "good.jsonl"
    dump_history([_op(1, "set", b"1", 0, 10, None), _op(2, "get", None, 20, 30, b"1")], good)
    result = CliRunner().invoke(main, ["check", str(good)])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.jsonl"
    dump_history([_op(1, "set", b"1", 0, 10, None), _op(1, "set", b"2", 20, 30, None),
                  _op(2, "get", None, 40, 50, b"1")], bad)
    result = CliRunner().invoke(main, ["check", str(bad)])
    assert result.exit_code == 1, result.output
    assert "k" in result.output


def test_a_run_of_no_seeds_is_refused_not_passed() -> None:
    """`sim --seeds 0` (or negative) tested nothing and reported 0 violations, exit 0."""
    for seeds in ("0", "-5"):
        result = CliRunner().invoke(main, ["sim", "--seeds", seeds])
        assert result.exit_code == 2 and "--seeds" in result.output, result.output
