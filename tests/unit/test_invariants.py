"""invariant(): raises with the message formatted from its arguments, and formats nothing
when the condition holds (the hot paths rely on that)."""

from __future__ import annotations

import pytest

from replikv.invariants import InvariantViolation, invariant
from replikv.state import _check_effect


def test_a_failed_invariant_formats_its_arguments_into_the_message():
    with pytest.raises(InvariantViolation, match=r"^applying 7 after 5$"):
        invariant(False, "applying %d after %d", 7, 5)
    with pytest.raises(InvariantViolation, match=r"^100% plain$"):
        invariant(0, "100% plain")  # no arguments: the message is taken as it is


def test_a_holding_invariant_never_formats():
    invariant(True, "%d", "not a number")  # would raise TypeError if it were formatted


@pytest.mark.parametrize("effect, message", [
    ([True, b"k", b"v", None], "effect 3: unknown opcode True"),
    ([1, b"k", b"v", 2**63], "effect 3: bad expiry"),
    ([1, b"k", "v", None], "effect 3: the value is not bytes"),
    ([1, b"k", b"v"], "effect 3: wrong length for 1"),
])
def test_effects_off_the_fast_path_still_get_their_checks(effect, message):
    with pytest.raises(InvariantViolation, match=f"^{message}$"):
        _check_effect(3, effect)
    _check_effect(3, [1, b"k", b"v", 2**63 - 1])
