"""The metrics' lock-free histogram: Prometheus's `le` buckets, cumulative, with sum and count."""

from __future__ import annotations

from replikv.server.metrics import Buckets


def test_values_land_in_the_first_bucket_whose_bound_they_do_not_exceed():
    b = Buckets((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.002, 0.01, 0.5, 7.0):
        b.observe(value)
    assert b.cumulative() == [("0.001", 2), ("0.01", 4), ("0.1", 4), ("+Inf", 6)]
    assert b.count == 6 and abs(b.sum - 7.5135) < 1e-9
    assert Buckets((1.0,)).cumulative() == [("1.0", 0), ("+Inf", 0)]
