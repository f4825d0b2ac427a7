"""`replikv rollback list` and `replikv rollback show` as an operator runs them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from replikv.cli import main
from replikv.storage import RollbackRecord, write_rollback_file
from replikv.storage.datadir import DataDir

T0 = 1_700_000_000_123  # 2023-11-14 22:13:20.123 UTC


def command(*argv: bytes) -> bytes:
    return msgpack.packb([1, T0, list(argv)], use_bin_type=True)


def node_dir(root: Path, node_id: str) -> Path:
    path = root / "replikv-data" / node_id
    DataDir.open(path, node_id=node_id, cluster_id="c").close()
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every command from the test's directory, as an operator would from theirs."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    """replikv-data/n1 with two rollback files, n2 with one, n3 with none."""
    n1, n2 = node_dir(tmp_path, "n1"), node_dir(tmp_path, "n2")
    node_dir(tmp_path, "n3")
    write_rollback_file(n1, "n1", [RollbackRecord(5, 2, b"", None),
                                   RollbackRecord(6, 2, command(b"set", b"k", b"v\x00"), True)],
                        wall_time_ms=T0, new_term=3, new_leader="n2")
    write_rollback_file(n1, "n1", [RollbackRecord(9, 3, command(b"del", b"k"), False)],
                        wall_time_ms=T0 + 120_000, new_term=5, new_leader="n3")
    write_rollback_file(n2, "n2", [RollbackRecord(7, 4, command(b"incr", b"c"), True)],
                        wall_time_ms=T0 + 60_000, new_term=5, new_leader=None)
    return tmp_path


def test_list_by_default_covers_every_node_of_cluster_up_oldest_first(cluster_dir: Path):
    result = invoke("rollback", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "NODE", "INDEXES", "ENTRIES", "ACKNOWLEDGED",
                                "NEW", "TERM", "NEW", "LEADER", "FILE"]
    rows = [line.split() for line in lines[1:4]]
    assert [r[:2] for r in rows] == [["2023-11-14", "22:13:20.123"],
                                     ["2023-11-14", "22:14:20.123"],
                                     ["2023-11-14", "22:15:20.123"]]
    assert rows[0][2:] == ["n1", "5..6", "2", "1", "(+1", "unknown)", "3", "n2",
                           "rollback-20231114T221320.123Z-i5-6.rkvrb"]
    assert rows[1][2:] == ["n2", "7..7", "1", "1", "5", "-",
                           "rollback-20231114T221420.123Z-i7-7.rkvrb"]
    assert rows[2][2:6] == ["n1", "9..9", "1", "0"]
    assert "replikv rollback show FILE --data-dir replikv-data" in result.output


def test_list_one_node(cluster_dir: Path):
    result = invoke("rollback", "list", "--data-dir", "replikv-data/n2")
    assert result.exit_code == 0, result.output
    assert "i7-7" in result.output and "i5-6" not in result.output
    # The node's rollback directory itself works too.
    result = invoke("rollback", "list", "--data-dir", "replikv-data/n2/rollback")
    assert result.exit_code == 0 and "i7-7" in result.output


def test_list_says_so_when_there_are_none(cluster_dir: Path):
    result = invoke("rollback", "list", "--data-dir", "replikv-data/n3")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no rollback files in replikv-data/n3/rollback")


def test_list_explains_a_wrong_data_dir(tmp_path: Path):
    result = invoke("rollback", "list")
    assert result.exit_code == 1
    assert "data dir replikv-data does not exist" in result.output
    assert "--data-dir" in result.output
    (tmp_path / "elsewhere").mkdir()
    result = invoke("rollback", "list", "--data-dir", "elsewhere")
    assert result.exit_code == 1 and "is not a replikv data dir" in result.output


def test_list_shows_a_damaged_file_without_hiding_the_others(cluster_dir: Path):
    [path] = (cluster_dir / "replikv-data/n2/rollback").glob("*.rkvrb")
    path.write_bytes(path.read_bytes()[:-3])
    result = invoke("rollback", "list")
    assert result.exit_code == 0, result.output
    damaged = next(line for line in result.output.splitlines() if "i7-7" in line)
    assert "DAMAGED" in damaged
    assert f"damaged rollback file {path.relative_to(cluster_dir)}" in result.output
    assert "i5-6" in result.output and "i9-9" in result.output


def test_show_by_bare_name_and_by_path(cluster_dir: Path):
    name = "rollback-20231114T221320.123Z-i5-6.rkvrb"
    result = invoke("rollback", "show", name)
    assert result.exit_code == 0, result.output
    assert "node n1 discarded 2 entries (indexes 5..6) at 2023-11-14 22:13:20.123 UTC, " \
           "replaced by leader n2 of term 3" in result.output
    assert "acknowledged to a client: 1, not acknowledged: 0, unknown: 1" in result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()
            if line.split() and line.split()[0].isdigit()}
    assert rows["5"][:4] == ["5", "2", "unknown", "noop"]
    assert rows["6"][:4] == ["6", "2", "yes", "command"]
    assert rows["6"][-3:] == ["SET", '"k"', '"v\\x00"']
    by_path = invoke("rollback", "show", f"replikv-data/n1/rollback/{name}", "--data-dir",
                     "/nonexistent")
    assert by_path.exit_code == 0 and by_path.output == result.output


def test_show_json(cluster_dir: Path):
    result = invoke("rollback", "show", "rollback-20231114T221320.123Z-i5-6.rkvrb", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["node_id"], doc["wall_time_ms"], doc["new_term"], doc["new_leader"]) == \
        ("n1", T0, 3, "n2")
    first, second = doc["entries"]
    assert first == {"index": 5, "term": 2, "acknowledged": None, "maybe_committed": False,
                     "kind": "noop",
                     "time_ms": None, "text": first["text"], "data_base64": ""}
    assert second["acknowledged"] is True and second["text"] == 'SET "k" "v\\x00"'
    assert base64.b64decode(second["data_base64"]) == command(b"set", b"k", b"v\x00")


def test_show_cuts_long_values_unless_full(tmp_path: Path):
    n1 = node_dir(tmp_path, "n1")
    write_rollback_file(n1, "n1", [RollbackRecord(1, 1, command(b"set", b"k", b"x" * 500),
                                                  True)],
                        wall_time_ms=T0, new_term=2, new_leader="n2")
    name = "rollback-20231114T221320.123Z-i1-1.rkvrb"
    cut = invoke("rollback", "show", name)
    assert cut.exit_code == 0 and "...(+300 bytes)" in cut.output
    full = invoke("rollback", "show", name, "--full")
    assert full.exit_code == 0 and '"' + "x" * 500 + '"' in full.output


def test_show_errors_say_what_to_do(cluster_dir: Path):
    result = invoke("rollback", "show", "nope.rkvrb")
    assert result.exit_code == 1
    assert "no rollback file named nope.rkvrb in replikv-data" in result.output
    assert "replikv rollback list --data-dir replikv-data" in result.output
    result = invoke("rollback", "show", "some/where/nope.rkvrb")
    assert result.exit_code == 1 and "does not exist" in result.output
    [path] = (cluster_dir / "replikv-data/n2/rollback").glob("*.rkvrb")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    result = invoke("rollback", "show", path.name)
    assert result.exit_code == 1
    assert "damaged rollback file" in result.output and "checksum mismatch" in result.output
    assert "Traceback" not in result.output


def test_help_has_examples():
    result = CliRunner().invoke(main, ["rollback", "--help"])
    assert result.exit_code == 0 and "replikv rollback list" in result.output


def effects(*ops: list) -> bytes:
    return msgpack.packb([3, T0 + 5_000, list(ops)], use_bin_type=True)


def test_report_lists_acknowledged_undone_writes_by_key_and_time(cluster_dir: Path):
    n3 = cluster_dir / "replikv-data" / "n3"
    write_rollback_file(n3, "n3", [
        RollbackRecord(11, 4, effects([1, b"user:1", b"ann", None], [2, b"user:2"]), True),
        RollbackRecord(12, 4, effects([7]), True),  # a FLUSHALL
    ], wall_time_ms=T0 + 200_000, new_term=6, new_leader="n1")

    result = invoke("rollback", "report")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["WRITTEN", "(UTC)", "NODE", "INDEX", "ACKNOWLEDGED", "KEYS",
                                "ENTRY"]
    body = [line for line in lines[1:] if line.startswith("2023-")]
    # Only acknowledged ones, in the order they were written.
    assert [line.split()[2:5] for line in body] == [
        ["n1", "6", "yes"], ["n2", "7", "yes"], ["n3", "11", "yes"], ["n3", "12", "yes"]]
    assert "k" == body[0].split()[5].rstrip(",")
    assert "user:1, user:2" in body[2]
    assert "(every key)" in body[3]
    assert lines[-1].startswith("4 acknowledged write(s) undone by failovers, 1 unacknowledged")


def test_report_all_and_json_and_nothing_lost(cluster_dir: Path, tmp_path: Path):
    result = invoke("rollback", "report", "--all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["acknowledged_undone"], report["unacknowledged_undone"]) == (2, 1)
    assert [(w["node"], w["index"], w["acknowledged"], w["keys"]) for w in report["writes"]] == [
        ("n1", 6, True, ["k"]), ("n1", 9, False, ["k"]), ("n2", 7, True, ["c"])]

    node_dir(tmp_path / "other", "n1")
    quiet = invoke("rollback", "report", "--data-dir", str(tmp_path / "other" / "replikv-data"))
    assert quiet.exit_code == 0, quiet.output
    assert "every acknowledged write survived" in quiet.output


def test_entries_a_snapshot_replaced_are_shown_as_maybe_committed_not_as_undone(
        cluster_dir: Path):
    n3 = cluster_dir / "replikv-data" / "n3"
    write_rollback_file(n3, "n3", [
        RollbackRecord(20, 4, command(b"set", b"x", b"1"), None, True),
        RollbackRecord(21, 4, command(b"set", b"y", b"2"), True, True),
        RollbackRecord(22, 6, command(b"set", b"z", b"3"), None),
    ], wall_time_ms=T0 + 300_000, new_term=6, new_leader="n1")

    listed = invoke("rollback", "list", "--data-dir", str(n3))
    assert listed.exit_code == 0, listed.output
    assert "3 (2 maybe committed)" in listed.output
    assert "0 (+1 unknown)" in listed.output

    shown = invoke("rollback", "show", "--data-dir", str(n3), list_names(n3)[0])
    assert shown.exit_code == 0, shown.output
    assert "maybe committed: 2" in shown.output
    rows = {line.split()[0]: line.split()[1:5] for line in shown.output.splitlines()
            if line.split()[:1] in (["20"], ["21"], ["22"])}
    assert rows == {"20": ["4", "unknown", "(maybe", "committed)"],
                    "21": ["4", "yes", "(maybe", "committed)"],
                    "22": ["6", "unknown", "command", "2023-11-14"]}

    report = invoke("rollback", "report")
    assert report.exit_code == 0, report.output
    # The acknowledged (21) is maybe committed: not among the undone, counted apart.
    assert " 21 " not in report.output
    assert "2 acknowledged write(s) undone by failovers, 1 unacknowledged, 1 unknown" in \
        report.output
    assert "2 more entries a snapshot replaced after a restart may have been committed" in \
        report.output
    as_json = json.loads(invoke("rollback", "report", "--all", "--json").output)
    assert (as_json["acknowledged_undone"], as_json["unknown"], as_json["maybe_committed"]) == \
        (2, 1, 2)
    assert [(w["index"], w["maybe_committed"]) for w in as_json["writes"]
            if w["node"] == "n3"] == [(20, True), (21, True), (22, False)]


def list_names(node: Path) -> list[str]:
    return sorted(p.name for p in (node / "rollback").glob("*.rkvrb"))
