"""The log-linear histogram: bounded relative error, exact merge, lossless serialisation."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from packserve.bench.histogram import Histogram

values = st.lists(st.integers(min_value=0, max_value=50_000_000), min_size=1, max_size=400)


def exact(sorted_vals: list[int], p: float) -> int:
    rank = max(1, math.ceil(len(sorted_vals) * p / 100))
    return sorted_vals[rank - 1]


@settings(max_examples=150, deadline=None)
@given(values, st.sampled_from([0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0]))
def test_percentiles_within_one_percent(vals: list[int], p: float) -> None:
    h = Histogram()
    for v in vals:
        h.record(v)
    want = exact(sorted(vals), p)
    got = h.value_at(p)
    assert want <= got <= max(want, want + want / 128 + 1)
    assert h.count == len(vals)
    assert h.min == min(vals) and h.max == max(vals)
    assert h.value_at(100) == max(vals)


@settings(max_examples=60, deadline=None)
@given(values, values)
def test_merge_equals_recording_everything(a: list[int], b: list[int]) -> None:
    ha, hb, hall = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.record(v)
        hall.record(v)
    for v in b:
        hb.record(v)
        hall.record(v)
    ha.merge(hb)
    assert ha.to_dict() == hall.to_dict()
    for p in (50, 99, 99.9):
        assert ha.value_at(p) == hall.value_at(p)


def test_roundtrip_empty_and_summary() -> None:
    h = Histogram()
    assert h.value_at(99) == 0 and h.summary().count == 0
    for ms in (1, 2, 3, 4, 100):
        h.record_seconds(ms / 1000)
    h2 = Histogram.from_dict(h.to_dict())
    assert h2.to_dict() == h.to_dict()
    s = h2.summary()
    assert 3.0 <= s.percentiles_ms["p50"] <= 3.0 * (1 + 1 / 128)
    assert s.max_ms == 100.0 and s.min_ms == 1.0
    assert math.isclose(s.mean_ms, 22.0)
    # memory is O(buckets), not O(samples)
    big = Histogram()
    for i in range(100_000):
        big.record(1000 + i % 5000)
    assert len(big.to_dict()["buckets"]) < 700
    curve = big.percentile_curve(20)
    assert curve[0][0] == 0.0 and curve[-1][0] > 99.98
    assert [v for _, v in curve] == sorted(v for _, v in curve)
