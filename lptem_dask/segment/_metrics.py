"""Training-time scores: pixel counts, object counts and a light labelling.

The matching itself is :func:`lptem_dask.segment.metrics.match_objects` (IoU >= 0.5,
unique), shared with the segmentation benchmark.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .metrics import match_objects, object_scores

__all__ = ["pixel_counts", "match_counts", "object_f1", "maps_to_labels"]


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks."""
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))


def match_counts(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one frame of labels."""
    p = np.asarray(pred_labels)
    t = np.asarray(true_labels)
    n_pred = len(np.unique(p[p > 0]))
    n_true = len(np.unique(t[t > 0]))
    tp = len(match_objects(p, t, iou_threshold=iou_threshold))
    return tp, n_pred - tp, n_true - tp


def object_f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) (1.0 when there is nothing to find or found)."""
    return object_scores(tp, tp + fp, tp + fn)["object_f1"]


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
