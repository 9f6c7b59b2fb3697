"""Segmentation metrics against hand-computed values and against the project's judge."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

from lptem_dask.segment.metrics import (
    boundary_distance_p95_px,
    centroid_error_px,
    detection_precision_recall,
    dice,
    frame_scores,
    match_objects,
    object_scores,
    pixel_iou,
    score_real_objects,
    summarize_scores,
)

SCORE_REAL = Path(__file__).parents[1] / ".." / "shared" / "tools" / "score_real.py"


def _square(shape, y0, x0, size, label=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[y0 : y0 + size, x0 : x0 + size] = label
    return out


def test_pixel_iou_and_dice_hand_values():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 px, 4 shared
    assert pixel_iou(a, b) == pytest.approx(4 / 12)
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert pixel_iou(a, a) == 1.0 and dice(a, ~a) == 0.0
    empty = np.zeros((3, 3), bool)
    assert pixel_iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0


def test_object_matching_counts_and_f1():
    truth = _square((40, 40), 2, 2, 8, 1)
    _square((40, 40), 20, 20, 8, 2, truth)
    pred = _square((40, 40), 2, 2, 8, 5)  # exact match of object 1
    _square((40, 40), 24, 24, 8, 6, pred)  # overlaps object 2 by 16/112 -> no match
    _square((40, 40), 30, 2, 4, 7, pred)  # a false positive
    m = match_objects(pred, truth)
    assert [(a, b) for a, b, _ in m] == [(5, 1)]
    assert m[0][2] == pytest.approx(1.0)
    s = frame_scores(pred, truth)
    assert (s["tp"], s["n_pred"], s["n_true"]) == (1, 3, 2)
    o = object_scores(1, 3, 2)
    assert o["object_precision"] == pytest.approx(1 / 3)
    assert o["object_recall"] == pytest.approx(1 / 2)
    assert o["object_f1"] == pytest.approx(2 / 5)
    assert s["object_f1"] == pytest.approx(2 / 5)


def test_match_at_exactly_half_iou():
    truth = _square((20, 20), 0, 0, 4)  # 16 px
    pred = np.zeros((20, 20), np.int32)
    pred[0:4, 0:4] = 1
    pred[4:8, 0:4] = 1  # 32 px, IoU 16/32 = 0.5 -> matches
    assert len(match_objects(pred, truth)) == 1
    pred[8:9, 0:4] = 1  # IoU 16/36 < 0.5
    assert match_objects(pred, truth) == []


def test_centroid_error_of_a_shifted_square():
    truth = _square((30, 30), 5, 5, 10)
    pred = _square((30, 30), 6, 8, 10)  # shifted (1, 3): IoU 63/137 < 0.5
    assert centroid_error_px(pred, truth).size == 0
    pred = _square((30, 30), 6, 7, 10)  # shifted (1, 2): IoU 72/128 >= 0.5
    np.testing.assert_allclose(centroid_error_px(pred, truth), [math.hypot(1, 2)])


def test_boundary_p95_of_a_grown_square():
    # truth 10x10; prediction grown by 2 px on every side. Side boundary pixels are
    # 2 px from the other boundary, the 12 corner pixels of the prediction's ring
    # sqrt(5) (8 of them) or sqrt(8) (4): 76 x 2, 8 x sqrt(5), 4 x sqrt(8) of 88;
    # the 95th percentile (linear, index 82.65) falls among the sqrt(5) values.
    truth = _square((24, 24), 5, 5, 10)
    pred = _square((24, 24), 3, 3, 14)
    assert boundary_distance_p95_px(pred, truth) == pytest.approx(math.sqrt(5))
    assert boundary_distance_p95_px(truth, truth) == 0.0
    assert math.isnan(boundary_distance_p95_px(np.zeros_like(truth), truth))


def test_summarize_pools_pixels_and_objects():
    truth = _square((20, 20), 0, 0, 10)
    f1 = frame_scores(truth, truth)
    f2 = frame_scores(np.zeros_like(truth), truth)
    s = summarize_scores([f1, f2])
    assert s["pixel_iou"] == pytest.approx(100 / 200)
    assert s["dice"] == pytest.approx(2 * 100 / 300)
    assert s["object_recall"] == pytest.approx(0.5)
    assert s["object_precision"] == pytest.approx(1.0)
    assert s["centroid_error_px"] == 0.0
    assert s["boundary_p95_px"] == 0.0  # the empty frame's NaN is left out


def test_detection_precision_recall_hand_values():
    truth = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    found = np.array([[12.0, 10.0], [50.0, 58.5], [0.0, 0.0], [10.0, 17.0]])
    p, r = detection_precision_recall(found, truth, radius_px=8)
    assert p == pytest.approx(2 / 4)  # (12,10) and (10,17) within 8 px
    assert r == pytest.approx(1 / 3)
    assert detection_precision_recall(np.zeros((0, 2)), truth) == (0.0, 0.0)


def _random_masks(seed: int):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(96, 96)), 3)
    gt = noise > 0.05
    pred = ndimage.shift(noise, (1.5, -2.0), order=1) + 0.02 * rng.normal(size=(96, 96)) > 0.08
    return pred, gt


def test_score_real_objects_agrees_with_the_judge():
    if not SCORE_REAL.exists():
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"{SCORE_REAL} is absent")
    spec = importlib.util.spec_from_file_location("score_real", SCORE_REAL)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    for seed in range(4):
        pred, gt = _random_masks(seed)
        ours = score_real_objects(pred, gt, min_area_px=30)
        assert ours == mod.object_matches(pred, gt, min_area=30)
        assert ours[0] > 0 and ours[1] > ours[0] - 1  # the example is not trivial
