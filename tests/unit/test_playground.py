"""The playground's pure parts: partition groups, and what each node blocks."""

from __future__ import annotations

import pytest

from replikv.playground import PlaygroundError, blocked_by_node, split_groups

MEMBERS = ["n1", "n2", "n3"]


@pytest.mark.parametrize("tokens, groups", [
    (["n1"], [["n1"], ["n2", "n3"]]),
    (["n1", "/", "n2", "n3"], [["n1"], ["n2", "n3"]]),
    (["n1/n2", "n3"], [["n1"], ["n2", "n3"]]),
    (["n1 | n2 | n3"], [["n1"], ["n2"], ["n3"]]),
    (["n1", "/", "n2"], [["n1"], ["n2"], ["n3"]]),  # a node named nowhere is on its own
])
def test_groups(tokens, groups):
    assert split_groups(tokens, MEMBERS) == groups


@pytest.mark.parametrize("tokens, message", [
    (["n9"], "no node n9"),
    (["n1", "/", "n1"], "named in two groups"),
    (["n1", "n2", "n3"], "name the nodes to cut off"),
])
def test_bad_groups(tokens, message):
    with pytest.raises(PlaygroundError, match=message):
        split_groups(tokens, MEMBERS)


def test_each_node_blocks_everyone_outside_its_group():
    assert blocked_by_node([["n1"], ["n2", "n3"]]) == {
        "n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}
    assert blocked_by_node([["n1"], ["n2"], ["n3"]]) == {
        "n1": ["n2", "n3"], "n2": ["n1", "n3"], "n3": ["n1", "n2"]}
