"""The pure parts of benchmarks/compiled.py: which modules, which build is usable, what the
simulator's summaries are compared on. The build itself: tests/integration/test_compiled_trial.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from benchmarks import compiled
from benchmarks.compiled import (
    BUILD_INFO,
    KNOWN_DIFFERENCES,
    TrialError,
    build_problem,
    compiled_env,
    core_modules,
    missing_extensions,
    sim_summary,
    sources_digest,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_modules_are_the_type_checked_cores_under_src() -> None:
    modules = core_modules()
    assert "replikv/raft/core.py" in modules and "replikv/node.py" in modules
    assert "replikv/replies.py" not in modules  # mypyc cannot compile its str subclass
    for m in modules:
        assert (ROOT / "src" / m).is_file()


def test_a_listed_file_outside_src_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.mypy]\nfiles = ["src/replikv/node.py", "tests/x.py"]\n')
    with pytest.raises(TrialError, match="tests/x.py"):
        core_modules(pyproject)


def test_every_known_difference_names_a_test_that_exists() -> None:
    # A renamed test would make `check` deselect nothing and fail on it; say so here first.
    for test_id in KNOWN_DIFFERENCES:
        path, name = test_id.split("::")
        tree = ast.parse((ROOT / path).read_text())
        assert name in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, test_id


def test_the_compiled_dir_goes_first_on_pythonpath(tmp_path: Path) -> None:
    env = compiled_env(tmp_path, {"PYTHONPATH": "/x", "HOME": "/h"})
    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "src"), "/x"]
    assert env["HOME"] == "/h"
    assert compiled_env(tmp_path, {})["PYTHONPATH"] == str(tmp_path / "src")


def _fake_build(out: Path, modules: list[str]) -> None:
    for m in modules:
        so = out / "src" / Path(m).with_suffix("")
        so.parent.mkdir(parents=True, exist_ok=True)
        so.with_name(so.name + ".cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    (out / BUILD_INFO).write_text(f"{sources_digest(ROOT / 'src')} {len(modules)} modules\n")


def test_only_a_complete_build_of_the_current_sources_is_usable(tmp_path: Path) -> None:
    modules = core_modules()
    assert build_problem(tmp_path).startswith("no compiled build")
    _fake_build(tmp_path, modules)
    assert build_problem(tmp_path) is None
    assert missing_extensions(tmp_path, modules) == []
    next((tmp_path / "src" / "replikv" / "raft").glob("core.*.so")).unlink()
    assert missing_extensions(tmp_path, modules) == ["replikv/raft/core.py"]
    assert "lacks replikv/raft/core.py" in build_problem(tmp_path)
    _fake_build(tmp_path, modules)
    (tmp_path / BUILD_INFO).write_text("0" * 64 + " 17 modules\n")
    assert "other sources" in build_problem(tmp_path)
    with pytest.raises(TrialError, match="compiled.py build"):
        compiled.require_build(tmp_path)


def test_the_sources_digest_sees_a_changed_file_and_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    first = sources_digest(tmp_path)
    assert sources_digest(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    second = sources_digest(tmp_path)
    assert second != first
    (tmp_path / "b.py").write_text("")
    assert sources_digest(tmp_path) != second


def test_sim_summaries_are_compared_without_the_rate() -> None:
    a = ("simulating\nseeds run: 20 (9.4 seeds/s), faults injected: 164, leaders elected: 87, "
         "operations checked: 872, events: 86798, violations: 0\n")
    b = a.replace("9.4 seeds/s", "17.6 seeds/s")
    assert sim_summary(a) == sim_summary(b)
    assert "seeds/s" not in sim_summary(a)
    assert sim_summary(a) != sim_summary(a.replace("events: 86798", "events: 86799"))
    with pytest.raises(TrialError, match="no summary"):
        sim_summary("Traceback ...\n")
