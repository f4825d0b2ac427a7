"""benchmarks/flamegraphs.py's summary of py-spy's collapsed stacks."""

from __future__ import annotations

from benchmarks.flamegraphs import top_functions

COLLAPSED = """\
run (asyncio/runners.py:86);_pump (replikv/server/resp_server.py:115);submit (replikv/node.py:350) 30
run (asyncio/runners.py:86);_flush (replikv/server/resp_server.py:193) 50
run (asyncio/runners.py:86) 20
garbage line without a count
"""


def test_functions_are_ranked_by_their_own_samples_in_percent():
    top = top_functions(COLLAPSED)
    assert top == [(50.0, "_flush (resp_server.py)"), (30.0, "submit (node.py)"),
                   (20.0, "run (runners.py)")]
    assert top_functions(COLLAPSED, limit=1) == [(50.0, "_flush (resp_server.py)")]
    assert top_functions("") == []
