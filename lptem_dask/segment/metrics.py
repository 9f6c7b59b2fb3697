"""Segmentation accuracy: pixel, object, position and boundary scores.

All functions take one frame of integer instance labels (0 = background) or
boolean masks as numpy arrays; :func:`frame_scores` collects every score of one
frame and :func:`summarize_scores` pools frames.

Definitions
-----------
pixel IoU
    ``|P & T| / |P | T|`` of the foreground masks (1 when both are empty);
    pooled over frames as ``sum |P & T| / sum |P | T|``.
Dice
    ``2 |P & T| / (|P| + |T|)``, pooled the same way.
object precision / recall / F1
    A predicted and a true object match when their IoU is at least 0.5; with a
    threshold >= 0.5 each object overlaps at most one partner that much, so the
    matching is unique without an assignment solver. Precision ``TP / n_pred``,
    recall ``TP / n_true``, F1 ``2 TP / (n_pred + n_true)``, pooled over frames.
centroid error (px)
    Euclidean distance between the centroids of matched pairs, averaged over
    all matched pairs.
95th-percentile boundary distance (px)
    Symmetric: the distances from every boundary pixel of the predicted mask to
    the nearest boundary pixel of the true mask, and vice versa, pooled; their
    95th percentile (the "HD95" of medical image segmentation). NaN when either
    mask is empty.

Real-data scores (:func:`score_real_objects`, :func:`detection_precision_recall`)
reproduce the definitions of the project's judge, ``../shared/tools/score_real.py``
(greedy one-to-one matching of connected components of at least 30 px;
detection within 8 px).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "pixel_iou",
    "dice",
    "match_objects",
    "object_scores",
    "centroid_error_px",
    "boundary_distance_p95_px",
    "frame_scores",
    "summarize_scores",
    "score_real_objects",
    "detection_precision_recall",
    "METRIC_COLUMNS",
]

#: the summary metrics reported per method and test set, in order
METRIC_COLUMNS = (
    "pixel_iou",
    "dice",
    "object_precision",
    "object_recall",
    "object_f1",
    "centroid_error_px",
    "boundary_p95_px",
)


def _bool(a: np.ndarray) -> np.ndarray:
    return np.asarray(a) > 0


def pixel_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two foreground masks (labels > 0 count as foreground).

    Returns 1.0 when both are empty.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> pixel_iou(a, b)
    0.3333333333333333
    """
    p, t = _bool(pred), _bool(truth)
    union = int(np.count_nonzero(p | t))
    return 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|P&T| / (|P|+|T|)`` of two foreground masks (1.0 if both empty)."""
    p, t = _bool(pred), _bool(truth)
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return 1.0 if denom == 0 else 2 * int(np.count_nonzero(p & t)) / denom


def match_objects(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """Pairs of matching objects ``(pred_id, true_id, iou)`` with ``iou >= iou_threshold``.

    Parameters
    ----------
    pred_labels, true_labels : ndarray (y, x) of int
        Instance labels, 0 for background.
    iou_threshold : float
        Must be >= 0.5 so the matching is one-to-one.
    """
    if iou_threshold < 0.5:
        raise ValueError(f"`iou_threshold` must be >= 0.5 for unique matching, got {iou_threshold}")
    p = np.asarray(pred_labels).ravel().astype(np.int64)
    t = np.asarray(true_labels).ravel().astype(np.int64)
    both = (p > 0) & (t > 0)
    if not both.any():
        return []
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    pairs, inter = np.unique(np.stack([p[both], t[both]]), axis=1, return_counts=True)
    ap = p_area[np.searchsorted(p_ids, pairs[0])]
    at = t_area[np.searchsorted(t_ids, pairs[1])]
    iou = inter / (ap + at - inter)
    keep = iou >= iou_threshold
    return [
        (int(a), int(b), float(c))
        for a, b, c in zip(pairs[0][keep], pairs[1][keep], iou[keep], strict=True)
    ]


def object_scores(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    """Object precision, recall and F1 from counts (1.0 where nothing was to be found/found)."""
    return {
        "object_precision": 1.0 if n_pred == 0 else tp / n_pred,
        "object_recall": 1.0 if n_true == 0 else tp / n_true,
        "object_f1": 1.0 if n_pred + n_true == 0 else 2 * tp / (n_pred + n_true),
    }


def _centroids(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(ids) == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids), float)


def centroid_error_px(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    matches: list[tuple[int, int, float]] | None = None,
) -> np.ndarray:
    """Centroid distances (px) of the matched object pairs (empty array when none match)."""
    if matches is None:
        matches = match_objects(pred_labels, true_labels)
    if not matches:
        return np.zeros(0)
    pid = np.array([m[0] for m in matches])
    tid = np.array([m[1] for m in matches])
    cp = _centroids(np.asarray(pred_labels), pid)
    ct = _centroids(np.asarray(true_labels), tid)
    return np.hypot(*(cp - ct).T)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a mask: foreground pixels with a 4-connected background neighbour."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def boundary_distances_px(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Symmetric boundary-to-boundary distances (px) of two foreground masks (empty if either is)."""
    bp, bt = _boundary(_bool(pred)), _boundary(_bool(truth))
    if not bp.any() or not bt.any():
        return np.zeros(0)
    d_to_t = ndimage.distance_transform_edt(~bt)
    d_to_p = ndimage.distance_transform_edt(~bp)
    return np.concatenate([d_to_t[bp], d_to_p[bt]])


def boundary_distance_p95_px(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th percentile of the symmetric boundary distances (px); NaN if either mask is empty."""
    d = boundary_distances_px(pred, truth)
    return float(np.percentile(d, 95)) if d.size else math.nan


def frame_scores(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Raw counts and scores of one frame, ready for :func:`summarize_scores`.

    Returns
    -------
    dict
        ``intersection``, ``union``, ``area_pred``, ``area_true`` (px), ``tp``,
        ``n_pred``, ``n_true``, ``centroid_errors_px`` (array),
        ``boundary_p95_px`` and the per-frame ``pixel_iou``, ``dice``,
        ``object_f1``.
    """
    pl, tl = np.asarray(pred_labels), np.asarray(true_labels)
    p, t = pl > 0, tl > 0
    matches = match_objects(pl, tl, iou_threshold=iou_threshold)
    n_pred = len(np.unique(pl[p]))
    n_true = len(np.unique(tl[t]))
    out: dict[str, Any] = {
        "intersection": int(np.count_nonzero(p & t)),
        "union": int(np.count_nonzero(p | t)),
        "area_pred": int(np.count_nonzero(p)),
        "area_true": int(np.count_nonzero(t)),
        "tp": len(matches),
        "n_pred": n_pred,
        "n_true": n_true,
        "centroid_errors_px": centroid_error_px(pl, tl, matches),
        "boundary_p95_px": boundary_distance_p95_px(p, t),
        "pixel_iou": pixel_iou(p, t),
        "dice": dice(p, t),
    }
    out["object_f1"] = object_scores(len(matches), n_pred, n_true)["object_f1"]
    return out


def summarize_scores(frames: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Pool :func:`frame_scores` results over frames.

    Pixel IoU, Dice and object scores are pooled over all pixels/objects; the
    centroid error is the mean over all matched pairs; the boundary distance is
    the mean of the per-frame 95th percentiles (frames where it is undefined
    are left out).
    """
    fr = list(frames)
    inter = sum(f["intersection"] for f in fr)
    union = sum(f["union"] for f in fr)
    areas = sum(f["area_pred"] + f["area_true"] for f in fr)
    tp = sum(f["tp"] for f in fr)
    n_pred = sum(f["n_pred"] for f in fr)
    n_true = sum(f["n_true"] for f in fr)
    cerr = np.concatenate([np.zeros(0)] + [np.asarray(f["centroid_errors_px"]) for f in fr])
    bd = np.array([f["boundary_p95_px"] for f in fr], float)
    out = {
        "pixel_iou": 1.0 if union == 0 else inter / union,
        "dice": 1.0 if areas == 0 else 2 * inter / areas,
    }
    out.update(object_scores(tp, n_pred, n_true))
    out["centroid_error_px"] = float(cerr.mean()) if cerr.size else math.nan
    out["boundary_p95_px"] = float(np.nanmean(bd)) if np.isfinite(bd).any() else math.nan
    out.update({"n_frames": len(fr), "n_pred": n_pred, "n_true": n_true, "n_matched": tp})
    return out


# --------------------------------------------------------------------------- real data


def score_real_objects(
    pred: np.ndarray, truth: np.ndarray, *, min_area_px: int = 30
) -> tuple[int, int, int]:
    """``(tp, n_pred, n_true)`` as the project's judge counts objects on real tiles.

    Connected components (8-connected, ``skimage.measure.label``) smaller than
    ``min_area_px`` are dropped from both masks; pairs are taken greedily by
    decreasing overlap, one-to-one, when their IoU is at least 0.5.
    """
    from skimage import measure

    def lab(m: np.ndarray) -> np.ndarray:
        lbl = measure.label(np.asarray(m) > 0)
        area = np.bincount(lbl.ravel())
        small = area < min_area_px
        small[0] = False
        lbl[small[lbl]] = 0
        return lbl

    lp, lg = lab(pred), lab(truth)
    n_p, n_g = len(np.unique(lp)) - 1, len(np.unique(lg)) - 1
    both = (lp > 0) & (lg > 0)
    if not both.any():
        return 0, n_p, n_g
    pairs, counts = np.unique(np.stack([lp[both], lg[both]]), axis=1, return_counts=True)
    ap, ag = np.bincount(lp.ravel()), np.bincount(lg.ravel())
    order = np.argsort(-counts, kind="stable")
    tp, used_p, used_g = 0, set(), set()
    for k in order:
        p, g, c = int(pairs[0, k]), int(pairs[1, k]), int(counts[k])
        if c / (ap[p] + ag[g] - c) >= 0.5 and p not in used_p and g not in used_g:
            tp += 1
            used_p.add(p)
            used_g.add(g)
    return tp, n_p, n_g


def detection_precision_recall(
    found_yx: np.ndarray, truth_yx: np.ndarray, *, radius_px: float = 8.0
) -> tuple[float, float]:
    """Detection precision and recall of points within ``radius_px`` (px).

    Precision: fraction of found points with a listed point within the radius;
    recall: fraction of listed points with a found point within it (not
    one-to-one, as in the project's judge). ``(0, 0)`` when nothing was found.
    """
    found = np.asarray(found_yx, float).reshape(-1, 2)
    truth = np.asarray(truth_yx, float).reshape(-1, 2)
    if len(found) == 0 or len(truth) == 0:
        return 0.0, 0.0
    d, _ = cKDTree(truth).query(found)
    d2, _ = cKDTree(found).query(truth)
    return float((d <= radius_px).mean()), float((d2 <= radius_px).mean())
