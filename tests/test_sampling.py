"""Sampling is pure arithmetic: property-tested on fake durations, no decoding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.data.sampling import clip_span, segment_centres, segment_grid, segment_random
from vidtune.runs.features import Sampling

durations = st.floats(min_value=0.01, max_value=36_000, allow_nan=False)


@given(duration=durations, n=st.integers(1, 64))
def test_centres_inside_sorted_and_counted(duration, n):
    t = segment_centres(0.0, duration, n)
    assert t.shape == (n,)
    assert (t >= 0).all() and (t < duration).all()
    assert (np.diff(t) > 0).all()


@given(duration=durations, n=st.integers(1, 64), seed=st.integers(0, 2**31))
def test_random_one_per_segment(duration, n, seed):
    t = segment_random(0.0, duration, n, np.random.default_rng(seed))
    assert t.shape == (n,)
    assert (t >= 0).all() and (t < duration).all()
    seg = np.floor(t / (duration / n)).clip(max=n - 1)
    assert (seg == np.arange(n)).all()  # exactly one frame in each segment, so sorted


@given(duration=durations, n=st.integers(1, 32), views=st.integers(1, 5))
def test_grid_odd_views_contain_centres(duration, n, views):
    g = segment_grid(0.0, duration, n, views)
    assert g.shape == (n, views)
    assert (g >= 0).all() and (g < duration).all()
    assert (np.diff(g.reshape(-1)) > 0).all()
    if views % 2 == 1:
        np.testing.assert_allclose(g[:, views // 2], segment_centres(0.0, duration, n), rtol=1e-12, atol=1e-9)


@settings(max_examples=50)
@given(duration=durations, start=st.floats(0, 100), length=st.floats(0.01, 100))
def test_span_clamped(duration, start, length):
    if start >= duration:
        with pytest.raises(ValueError):
            clip_span(duration, start, start + length)
        return
    s, e = clip_span(duration, start, start + length)
    assert 0 <= s < e <= duration
    t = Sampling(4, "centre").timestamps(duration, start, start + length)
    assert ((t >= s) & (t < e)).all()


def test_known_values():
    np.testing.assert_allclose(segment_centres(0, 8, 4), [1, 3, 5, 7])
    np.testing.assert_allclose(segment_grid(0, 8, 2, 2), [[1, 3], [5, 7]])
    np.testing.assert_allclose(Sampling(2, "centre").timestamps(10.0, 2.0, 6.0), [3, 5])
    assert Sampling(3, "grid", views=3).per_clip == 9
