"""Segmentation scores: pixel IoU and object F1 with IoU >= 0.5 matching.

Object matching: a predicted and a true object match when their IoU is at
least ``iou_threshold`` (0.5). With a threshold of 0.5 or more each object can
match at most one other, so matching is unique without an assignment solver.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["pixel_counts", "pixel_iou", "match_counts", "object_f1", "maps_to_labels"]


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks."""
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))


def pixel_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 if both are empty)."""
    inter, union = pixel_counts(pred, truth)
    return 1.0 if union == 0 else inter / union


def match_counts(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one frame of labels."""
    p = np.asarray(pred_labels).ravel().astype(np.int64)
    t = np.asarray(true_labels).ravel().astype(np.int64)
    p_ids = np.unique(p[p > 0])
    t_ids = np.unique(t[t > 0])
    if len(p_ids) == 0 or len(t_ids) == 0:
        return 0, len(p_ids), len(t_ids)
    pi = np.searchsorted(p_ids, p)
    ti = np.searchsorted(t_ids, t)
    both = (p > 0) & (t > 0)
    inter = np.zeros((len(p_ids), len(t_ids)), np.int64)
    np.add.at(inter, (pi[both], ti[both]), 1)
    area_p = np.bincount(pi[p > 0], minlength=len(p_ids))
    area_t = np.bincount(ti[t > 0], minlength=len(t_ids))
    iou = inter / (area_p[:, None] + area_t[None, :] - inter)
    tp = int(np.count_nonzero(iou.max(axis=1) >= iou_threshold)) if iou.size else 0
    return tp, len(p_ids) - tp, len(t_ids) - tp


def object_f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) (1.0 when there is nothing to find or found)."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def maps_to_labels(
    probability: np.ndarray,
    boundary: np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    min_area_px: int = 4,
) -> np.ndarray:
    """Instances of one frame: seeds = probability > t and not boundary, grown by watershed.

    A foreground component that holds no seed keeps one label.

    A light stand-in for ``postprocess.label_frames`` used while training.
    """
    fg = probability > threshold
    if boundary is None:
        lab, _ = ndimage.label(fg)
    else:
        from skimage.segmentation import watershed

        seeds, n_seeds = ndimage.label(fg & (boundary < 0.5))
        lab = watershed(boundary, seeds, mask=fg)
        # foreground components without a seed keep one label each
        rest, _ = ndimage.label(fg & (lab == 0))
        lab = np.where(rest > 0, rest + n_seeds, lab)
    if min_area_px > 1 and lab.max() > 0:
        area = np.bincount(lab.ravel())
        small = area < min_area_px
        small[0] = False
        lab[small[lab]] = 0
    return lab.astype(np.int32)
