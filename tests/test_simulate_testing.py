"""lptem_dask.testing: synthetic data with ground truth, and position matching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lptem_dask.errors import InputError
from lptem_dask.testing import (
    assert_positions_match,
    match_positions,
    synthetic_image,
    synthetic_video,
)


def test_synthetic_image_truth_and_cnr():
    out = synthetic_image((96, 96), n_particles=4, diameter_px=14, cnr=4.0, seed=1)
    lab, truth = out["labels"], out["truth"]
    assert lab.max() == 4 and len(truth) == 4
    com = ndimage.center_of_mass(lab > 0, lab, index=truth["label"].to_numpy())
    np.testing.assert_allclose(np.array(com), truth[["y", "x"]].to_numpy(), atol=0.3)
    assert abs(out["cnr"] / 4.0 - 1) < 0.15
    with pytest.raises(InputError):
        synthetic_image((64, 64), n_particles=40, diameter_px=20)


def test_synthetic_video_matches_truth():
    video, truth = synthetic_video(4, (64, 64), n_particles=3, diameter_px=10, seed=2)
    assert video.dims == ("frame", "y", "x") and video.sizes["frame"] == 4
    assert len(truth) == 12
    assert set(truth.columns) >= {"frame", "particle", "label", "y", "x"}
    frames = video.values
    assert not np.array_equal(frames[0], frames[1])  # new noise and positions each frame
    # dark particles sit at the true positions
    for f in range(4):
        t = truth[truth["frame"] == f]
        iy, ix = np.rint(t["y"]).astype(int), np.rint(t["x"]).astype(int)
        assert (frames[f][iy, ix] < np.median(frames[f])).all()


def test_match_positions_counts():
    truth = pd.DataFrame({"y": [10.0, 20.0, 30.0], "x": [10.0, 20.0, 30.0]})
    found = pd.DataFrame({"y": [10.5, 20.0, 50.0], "x": [10.0, 21.0, 50.0]})
    m, p, r = match_positions(found, truth, max_distance_px=2.0)
    assert len(m) == 2 and p == pytest.approx(2 / 3) and r == pytest.approx(2 / 3)
    with pytest.raises(AssertionError, match="precision"):
        assert_positions_match(found, truth, max_distance_px=2.0)
    assert_positions_match(found.iloc[:2], truth.iloc[:2], max_distance_px=2.0)
