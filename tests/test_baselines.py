"""Classical baselines: correctness on clean discs, tuning, laziness and meta."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from lptem_dask.errors import InputError
from lptem_dask.io import from_array
from lptem_dask.segment import baselines as bl
from lptem_dask.segment.metrics import frame_scores

#: tiny random forest: 2 training images of the U-Net's training preset
RF_TINY = {
    "simulation": "mixed",
    "n_images": 2,
    "n_estimators": 8,
    "max_depth": 8,
    "pixels_per_image": 3000,
}


def _discs(n_px=96, radius=10, contrast=140.0, noise=2.0, seed=0, polarity="dark"):
    yy, xx = np.mgrid[:n_px, :n_px]
    img = np.full((n_px, n_px), 200.0)
    truth = np.zeros((n_px, n_px), np.int32)
    centres = [(24, 24), (24, 70), (70, 28), (72, 72)]
    for k, (cy, cx) in enumerate(centres):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        img[m] -= contrast
        truth[m] = k + 1
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    if polarity == "bright":
        img = 255.0 - img
    return img, truth


@pytest.mark.parametrize("method", bl.METHODS)
def test_each_baseline_finds_clean_discs(method):
    img, truth = _discs()
    params = dict(RF_TINY) if method == "random_forest" else {"sigma_rel": 0.0}
    lab = bl.segment_frame(img, method=method, params=params, particle_size_px=20)
    s = frame_scores(lab, truth)
    assert lab.dtype == np.int32
    assert s["pixel_iou"] > 0.9, (method, s["pixel_iou"])
    assert s["tp"] == 4 and s["n_pred"] == 4


def test_bright_polarity_and_size_estimate():
    img, truth = _discs(polarity="bright")
    lab = bl.segment_frame(img, method="otsu", params={"sigma_rel": 0.05}, polarity="bright")
    assert frame_scores(lab, truth)["pixel_iou"] > 0.9
    # the same frame read with the wrong polarity finds the background, not the discs
    wrong = bl.segment_frame(img, method="otsu", params={"sigma_rel": 0.05}, polarity="dark")
    assert frame_scores(wrong, truth)["pixel_iou"] < 0.2


def test_watershed_splits_touching_discs():
    yy, xx = np.mgrid[:80, :80]
    img = np.full((80, 80), 200.0)
    truth = np.zeros((80, 80), np.int32)
    for k, cx in enumerate((28, 48)):  # radius 11, centres 20 px apart: they touch
        m = (yy - 40) ** 2 + (xx - cx) ** 2 <= 11**2
        img[m] = 60.0
        truth[m & (truth == 0)] = k + 1
    otsu = bl.segment_frame(img, method="otsu", params={"sigma_rel": 0.0}, particle_size_px=22)
    ws = bl.segment_frame(img, method="watershed", params={"sigma_rel": 0.0}, particle_size_px=22)
    assert otsu.max() == 1
    assert ws.max() == 2
    assert frame_scores(ws, truth)["tp"] == 2


def test_default_grids_have_at_least_20_settings():
    for method in bl.METHODS:
        grid = bl.default_grid(method)
        assert len(grid) >= 20, method
        assert len({tuple(sorted(g.items())) for g in grid}) == len(grid)


def test_tuning_picks_the_right_setting():
    # two discs 3 px apart: heavy smoothing merges them, a huge minimum area
    # deletes them; only the light setting segments both
    imgs, truths = [], []
    for seed in range(2):
        yy, xx = np.mgrid[:64, :64]
        img = np.full((64, 64), 200.0)
        truth = np.zeros((64, 64), np.int32)
        for k, cx in enumerate((20, 43)):
            m = (yy - 32) ** 2 + (xx - cx) ** 2 <= 10**2
            img[m] = 60.0
            truth[m] = k + 1
        imgs.append(img + np.random.default_rng(seed).normal(0, 2, img.shape))
        truths.append(truth)
    grid = [{"sigma_rel": 0.6}, {"min_area_rel": 5.0}, {"sigma_rel": 0.02}, {"sigma_rel": 0.9}]
    best, table = bl.tune_baseline("otsu", imgs, truths, grid=grid, particle_size_px=20)
    assert (
        best["sigma_rel"] == 0.02
        and best["min_area_rel"] == bl.DEFAULT_PARAMS["otsu"]["min_area_rel"]
    )
    assert list(table["setting"])[0] == 2
    assert len(table) == 4
    assert {"pixel_iou", "object_f1", "score", "time_per_frame_s", "param.sigma_rel"} <= set(table)
    row = table.iloc[0]
    assert row["score"] == pytest.approx((row["pixel_iou"] + row["object_f1"]) / 2)
    assert table["score"].is_monotonic_decreasing


def test_segment_baseline_is_lazy_with_meta(monkeypatch):
    img, truth = _discs()
    video = from_array(
        np.stack([img, img[::-1], img[:, ::-1]]), pixel_size_nm=1.0, frame_interval_s=1.0, chunks=2
    )

    calls = []
    real = bl._segment_block

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bl, "_segment_block", counting)
    lab = bl.segment_baseline(video, method="otsu", params={"sigma_rel": 0.05}, particle_size_px=20)
    assert calls == []  # nothing ran while building the graph
    assert isinstance(lab, xr.DataArray) and lab.dims == ("frame", "y", "x")
    assert lab.dtype == np.int32 and lab.data._meta.dtype == np.int32
    assert lab.data._meta.ndim == 3
    assert lab.data.chunks == video.data.chunks
    assert lab.attrs["method"] == "otsu" and lab.attrs["history"][-1]["step"] == "segment_baseline"
    np.testing.assert_array_equal(lab["x"].values, video["x"].values)
    out = lab.values
    assert len(calls) == 2
    # chunking does not change the result
    video1 = from_array(video.values, pixel_size_nm=1.0, frame_interval_s=1.0, chunks=1)
    out1 = bl.segment_baseline(
        video1, method="otsu", params={"sigma_rel": 0.05}, particle_size_px=20
    ).values
    np.testing.assert_array_equal(out, out1)
    assert frame_scores(out[0], truth)["pixel_iou"] > 0.9


def test_segment_baseline_random_forest_lazy():
    img, truth = _discs()
    video = from_array(img[None], pixel_size_nm=1.0, frame_interval_s=1.0)
    lab = bl.segment_baseline(video, method="random_forest", params=RF_TINY, particle_size_px=20)
    assert lab.dtype == np.int32
    assert frame_scores(lab.values[0], truth)["pixel_iou"] > 0.9


def test_bad_arguments():
    img, _ = _discs()
    video = from_array(img[None], pixel_size_nm=1.0, frame_interval_s=1.0)
    with pytest.raises(InputError, match="method"):
        bl.segment_baseline(video, method="magic")
    with pytest.raises(InputError, match="unknown `params`"):
        bl.segment_baseline(video, method="otsu", params={"sigma": 2})
    with pytest.raises(InputError, match="particle_size_px"):
        bl.segment_baseline(video, method="otsu", particle_size_px=-1)
    with pytest.raises(InputError, match="DataArray"):
        bl.segment_baseline(img[None], method="otsu")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="equally long"):
        bl.tune_baseline("otsu", [img], [])
