"""The sans-I/O cores type-check (pyproject's [tool.mypy] list), and so does the whole package.

mypyc compiles only modules that type-check, and a compiled module checks its declared types
at run time; so a wrong annotation in a core is a crash in the compiled build
(benchmarks/compiled.py), not just a comment out of date. The rest of src/replikv (the
runtime, the simulator, the checker, the command line, ...) is checked with the same settings:
there a wrong type is a bug mypy can point at before a run does (a value that may be None
used as if it were set, an argument of the wrong kind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}  # the editable install hides src
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          check=False)


def _configured_files() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mypy"]["files"]


def test_the_cores_type_check() -> None:
    result = _mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no issues found in {len(_configured_files())} source files" in result.stdout


def test_the_whole_package_type_checks() -> None:
    # A path on the command line overrides the configured list: every module is checked.
    result = _mypy("--config-file", str(ROOT / "pyproject.toml"), "src/replikv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found" in result.stdout


def test_the_list_holds_the_cores_and_only_files_that_exist() -> None:
    files = _configured_files()
    for core in ("src/replikv/raft/core.py", "src/replikv/raft/log.py", "src/replikv/node.py",
                 "src/replikv/state.py", "src/replikv/wire.py", "src/replikv/sessions.py"):
        assert core in files
    for name in files:
        assert (ROOT / name).is_file(), name
    assert len(set(files)) == len(files)


def test_a_wrong_type_against_a_core_is_reported(tmp_path: Path) -> None:
    # The same settings see a mistake the compiled build would only meet at run time.
    bad = tmp_path / "bad.py"
    bad.write_text("from replikv.raft.messages import Entry\n"
                   "from replikv.raft.log import RaftLog\n\n"
                   "def f(log: RaftLog) -> int:\n"
                   "    return log.term_at(3)\n\n"
                   "Entry('1', 2, b'')\n")
    result = _mypy("--config-file", str(ROOT / "pyproject.toml"), str(bad), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Incompatible return value type (got "int | None", expected "int")' in result.stdout
    assert 'Argument 1 to "Entry" has incompatible type "str"' in result.stdout
