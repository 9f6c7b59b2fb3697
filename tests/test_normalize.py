"""Per-frame normalisation for the network: any dtype, either polarity."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lptem_dask.segment._normalize import _integer_percentiles, normalize_frame

INT_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(INT_DTYPES, st.integers(1, 400)),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_integer_percentiles_equal_numpys(a, q0, q1):
    got = _integer_percentiles(a, (q0, q1))
    if got is None:  # a range too wide for a histogram: the caller sorts instead
        assert int(a.max()) - int(a.min()) > 1 << 20
        return
    want = np.percentile(a.astype(np.float64), [q0, q1])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))


def _reference(frame: np.ndarray, polarity: str) -> np.ndarray:
    x = frame.astype(np.float64)
    x = -x if polarity == "bright" else x
    lo, hi = np.percentile(x, [1, 99])
    return np.clip((x - lo) / (hi - lo), -1, 2).astype(np.float32)


def test_normalize_frame_integer_fast_path_matches_the_definition():
    rng = np.random.default_rng(1)
    for dtype in (np.uint8, np.uint16, np.int16):
        frame = rng.integers(0, 200, (64, 80)).astype(dtype)
        for polarity in ("dark", "bright"):
            np.testing.assert_array_equal(
                normalize_frame(frame, polarity=polarity), _reference(frame, polarity)
            )
    wide = rng.integers(-(2**31), 2**31 - 1, (32, 32), dtype=np.int64)  # no histogram
    np.testing.assert_allclose(normalize_frame(wide), _reference(wide, "dark"), atol=1e-6)
