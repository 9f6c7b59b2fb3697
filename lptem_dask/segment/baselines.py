"""Classical segmentation baselines with the same interface as the U-Net path.

Methods (``method=``):

``otsu``, ``li``, ``triangle``
    Global threshold (scikit-image) of the pre-processed frame.
``sauvola``
    Sauvola local threshold (window and ``k``) of the pre-processed frame.
``local``
    Local threshold: foreground where the frame exceeds its Gaussian-weighted
    local mean by ``offset`` robust standard deviations.
``watershed``
    Marker-controlled watershed: a global (Otsu or Li) foreground, markers at
    the maxima of its distance transform at least ``min_distance_rel``
    particle diameters apart, flooded on the negated distance.
``canny``
    Canny edges (quantile hysteresis thresholds), closed, holes filled.
``random_forest``
    A scikit-learn random forest on ``skimage.feature.multiscale_basic_features``
    (intensity, gradient and Hessian-eigenvalue features at scales proportional
    to the particle size), trained on the simulator's images: the same preset
    and training seed as the U-Net's training config (``configs/train/default.yaml``:
    preset "mixed", seed 1) and never on real data.

Pre-processing, shared by all methods: the frame is normalised robustly
(percentiles 1-99, :func:`~lptem_dask.segment._normalize.normalize_frame`) and
turned so particles are bright; optionally a smooth background (Gaussian of
``background_rel`` particle diameters) is subtracted ("flattening"); then it is
smoothed with a Gaussian of ``sigma_rel`` diameters. After thresholding holes
are filled, regions smaller than ``min_area_rel`` of a disc of the particle
diameter are dropped, and regions are labelled (4-connected) in raster order.

Every length parameter is relative to the particle diameter ``d`` (px):
``particle_size_px`` when given, else estimated per frame from the image
autocovariance (:func:`~lptem_dask.segment._scale.estimate_particle_size_px`,
the estimate the U-Net path uses). This makes a tuned setting transferable
between magnifications.

:func:`segment_baseline` is lazy (``dask.array.map_blocks`` with explicit
dtype and meta over frame chunks; per-frame numpy kernel :func:`segment_frame`).
:func:`tune_baseline` searches a grid of settings on labelled frames.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from ..errors import InputError
from ._normalize import check_polarity, decide_polarity, normalize_frame
from ._scale import estimate_particle_size_px
from .metrics import frame_scores, summarize_scores

__all__ = [
    "METHODS",
    "DEFAULT_PARAMS",
    "default_grid",
    "segment_frame",
    "segment_baseline",
    "tune_baseline",
    "train_random_forest",
    "rf_features",
]

logger = logging.getLogger(__name__)

METHODS = ("otsu", "li", "triangle", "sauvola", "local", "watershed", "canny", "random_forest")

#: fallback particle diameter (px) when none is given and the estimate fails
FALLBACK_SIZE_PX = 20.0

_COMMON = {"sigma_rel": 0.1, "background_rel": 4.0, "min_area_rel": 0.1}

#: untuned defaults of each method (lengths in particle diameters)
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "otsu": dict(_COMMON),
    "li": dict(_COMMON),
    "triangle": dict(_COMMON),
    "sauvola": {**_COMMON, "window_rel": 2.0, "k": 0.2},
    "local": {**_COMMON, "window_rel": 2.0, "offset": 0.5},
    "watershed": {**_COMMON, "threshold": "otsu", "min_distance_rel": 0.4},
    "canny": {**_COMMON, "low_quantile": 0.8, "high_quantile": 0.95, "closing_rel": 0.1},
    "random_forest": {
        "threshold": 0.5,
        "min_area_rel": 0.1,
        "simulation": "mixed",
        "train_seed": 1,
        "n_images": 12,
        "pixels_per_image": 4000,
        "n_estimators": 40,
        "max_depth": 14,
        "rf_seed": 0,
    },
}

_RF_TRAIN_KEYS = (
    "simulation",
    "train_seed",
    "n_images",
    "pixels_per_image",
    "n_estimators",
    "max_depth",
    "rf_seed",
)


def default_grid(method: str) -> list[dict[str, Any]]:
    """The tuning grid of ``method``: at least 20 settings (full parameter dicts)."""
    _check_method(method)
    base = DEFAULT_PARAMS[method]
    axes: dict[str, Sequence[Any]]
    if method in ("otsu", "li", "triangle"):
        axes = {
            "sigma_rel": (0.0, 0.05, 0.1, 0.2, 0.3),
            "background_rel": (0.0, 2.0, 4.0, 8.0),
            "min_area_rel": (0.05, 0.25),
        }
    elif method == "sauvola":
        axes = {
            "sigma_rel": (0.05, 0.15, 0.3),
            "window_rel": (1.0, 2.0, 4.0),
            "k": (0.05, 0.1, 0.2, 0.35),
        }
    elif method == "local":
        axes = {
            "sigma_rel": (0.05, 0.15, 0.3),
            "window_rel": (1.0, 2.0, 4.0),
            "offset": (0.0, 0.25, 0.5, 1.0),
        }
    elif method == "watershed":
        axes = {
            "sigma_rel": (0.05, 0.1, 0.2, 0.3),
            "min_distance_rel": (0.25, 0.4, 0.6),
            "threshold": ("otsu", "li"),
        }
    elif method == "canny":
        axes = {
            "sigma_rel": (0.05, 0.1, 0.2, 0.3),
            "low_quantile": (0.6, 0.8),
            "high_quantile": (0.9, 0.97),
            "closing_rel": (0.05, 0.15),
        }
    else:
        axes = {"threshold": (0.3, 0.4, 0.5, 0.6, 0.7), "min_area_rel": (0.02, 0.05, 0.1, 0.25)}
    keys = list(axes)
    grid = []
    for values in itertools.product(*(axes[k] for k in keys)):
        p = dict(base)
        p.update(dict(zip(keys, values, strict=False)))
        if method == "canny" and p["low_quantile"] >= p["high_quantile"]:
            continue
        grid.append(p)
    return grid


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"`method` must be one of {METHODS}, got {method!r}")


def _resolve_params(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    _check_method(method)
    p = dict(DEFAULT_PARAMS[method])
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise InputError(
                f"unknown `params` for method {method!r}: {sorted(unknown)}; known: {sorted(p)}"
            )
        p.update(params)
    return p


# --------------------------------------------------------------------------- kernels


def _size(frame: np.ndarray, polarity: str, particle_size_px: float | None) -> float:
    if particle_size_px is not None:
        return float(particle_size_px)
    d = estimate_particle_size_px(frame, polarity=polarity)
    return float(d) if d else FALLBACK_SIZE_PX


def _bright(frame: np.ndarray, polarity: str) -> np.ndarray:
    """Robustly normalised frame with particles bright (background ~0, particles ~1)."""
    return 1.0 - normalize_frame(frame, polarity=polarity).astype(np.float64)


def _background(f: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``f`` with a large ``sigma`` (px), on a block-averaged grid.

    The frame is averaged over ``k x k`` blocks (``k ~ sigma / 4``), blurred with
    ``sigma / k`` and interpolated back (linear): the error is far below the
    noise for the smooth backgrounds this removes, and the cost no longer grows
    with ``sigma``.
    """
    h, w = f.shape
    k = int(max(1, min(sigma / 4, min(h, w) / 16)))
    if k == 1:
        return ndimage.gaussian_filter(f, sigma, mode="reflect")
    hh, ww = -(-h // k) * k, -(-w // k) * k
    padded = np.pad(f, ((0, hh - h), (0, ww - w)), mode="reflect")
    small = padded.reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / k, mode="reflect")
    # block centres sit at (i + 0.5) k - 0.5 in pixel coordinates
    yy = (np.arange(h) + 0.5) / k - 0.5
    xx = (np.arange(w) + 0.5) / k - 0.5
    cy = np.clip(yy, 0, small.shape[0] - 1)
    cx = np.clip(xx, 0, small.shape[1] - 1)
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    return ndimage.map_coordinates(small, [gy, gx], order=1, mode="nearest")


def _preprocess(f: np.ndarray, d: float, p: dict[str, Any]) -> np.ndarray:
    if p["background_rel"] > 0:
        f = f - _background(f, p["background_rel"] * d)
    if p["sigma_rel"] > 0:
        f = ndimage.gaussian_filter(f, p["sigma_rel"] * d, mode="reflect")
    return f


def _finish(fg: np.ndarray, d: float, p: dict[str, Any], *, fill: bool = True) -> np.ndarray:
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    lab, n = ndimage.label(fg)
    min_area = p["min_area_rel"] * math.pi * d * d / 4
    if n:
        area = np.bincount(lab.ravel())
        keep = area >= min_area
        keep[0] = False
        lab, _ = ndimage.label(keep[lab])
    return lab.astype(np.int32)


def _global(f: np.ndarray, method: str) -> float:
    from skimage import filters

    fn: Any = {
        "otsu": filters.threshold_otsu,
        "li": filters.threshold_li,
        "triangle": filters.threshold_triangle,
    }[method]
    if not np.ptp(f) > 0:
        return math.inf
    return float(fn(f))


def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k if k % 2 else k + 1


def _watershed(g: np.ndarray, d: float, p: dict[str, Any]) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    fg = ndimage.binary_fill_holes(g > _global(g, p["threshold"]))
    dist = ndimage.distance_transform_edt(fg)
    comp, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(g.shape, np.int32)
    md = max(1, int(round(p["min_distance_rel"] * d)))
    peaks = peak_local_max(dist, min_distance=md, labels=comp, exclude_border=False)
    markers = np.zeros(g.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a component without a peak (too small) keeps one marker at its maximum
    has = np.zeros(n + 1, bool)
    has[comp[tuple(peaks.T)]] = True
    missing = np.flatnonzero(~has[1:]) + 1
    if len(missing):
        pos = ndimage.maximum_position(dist, comp, missing)
        for k, yx in enumerate(pos):
            markers[yx] = len(peaks) + 1 + k
    lab = watershed(-dist, markers, mask=fg)
    min_area = p["min_area_rel"] * math.pi * d * d / 4
    area = np.bincount(lab.ravel())
    small = area < min_area
    small[0] = False
    lab[small[lab]] = 0
    from .postprocess import relabel_raster_order

    return relabel_raster_order(lab)


def rf_features(frame_bright: np.ndarray, d: float) -> np.ndarray:
    """Per-pixel features ``(y, x, n_features)`` float32 for the random forest.

    Intensity, gradient magnitude and Hessian eigenvalues of the frame smoothed
    at five scales geometrically spaced from 0.04 to 0.6 particle diameters
    (at least 0.5 px), plus the frame minus its Gaussian background (4 diameters).
    """
    from skimage.feature import multiscale_basic_features

    s_min = max(0.5, 0.04 * d)
    s_max = max(s_min * 1.01, 0.6 * d)
    feats = multiscale_basic_features(
        frame_bright,
        intensity=True,
        edges=True,
        texture=True,
        sigma_min=s_min,
        sigma_max=s_max,
        num_sigma=5,
        channel_axis=None,
    )
    flat = frame_bright - _background(frame_bright, 4 * d)
    return np.concatenate([feats, flat[..., None]], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _rf_cached(key: tuple[Any, ...]) -> Any:
    return _train_rf(dict(zip(_RF_TRAIN_KEYS, key, strict=False)))


def train_random_forest(params: dict[str, Any] | None = None) -> Any:
    """Train (or fetch from the in-process cache) the random-forest pixel classifier.

    Training images are ``simulate_one(i, simulation, seed=train_seed)`` for
    ``i < n_images`` (the U-Net's training set); ``pixels_per_image`` pixels
    per image are drawn, half foreground and half background where possible.

    Returns
    -------
    sklearn.ensemble.RandomForestClassifier
    """
    p = _resolve_params("random_forest", params)
    return _rf_cached(tuple(p[k] for k in _RF_TRAIN_KEYS))


def _train_rf(p: dict[str, Any]) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    from ..simulate import simulate_one

    t0 = time.perf_counter()
    rng = np.random.default_rng([int(p["rf_seed"]), 7])
    xs, ys = [], []
    for i in range(int(p["n_images"])):
        out = simulate_one(i, p["simulation"], seed=int(p["train_seed"]))
        img = out["image"]
        d = _size(img, "dark", None)
        feats = rf_features(_bright(img, "dark"), d)
        mask = np.asarray(out["mask"], bool).ravel()
        n = int(p["pixels_per_image"])
        fg_idx, bg_idx = np.flatnonzero(mask), np.flatnonzero(~mask)
        n_fg = min(len(fg_idx), n // 2)
        idx = np.concatenate(
            [
                rng.choice(fg_idx, n_fg, replace=False) if n_fg else np.zeros(0, int),
                rng.choice(bg_idx, min(len(bg_idx), n - n_fg), replace=False),
            ]
        )
        xs.append(feats.reshape(-1, feats.shape[-1])[idx])
        ys.append(mask[idx])
    clf = RandomForestClassifier(
        n_estimators=int(p["n_estimators"]),
        max_depth=int(p["max_depth"]),
        random_state=int(p["rf_seed"]),
        n_jobs=1,
    )
    clf.fit(np.concatenate(xs), np.concatenate(ys))
    logger.info(
        "random forest trained on %d images in %.1f s", p["n_images"], time.perf_counter() - t0
    )
    return clf


def _rf_probability(f: np.ndarray, d: float, clf: Any) -> np.ndarray:
    feats = rf_features(f, d)
    prob = clf.predict_proba(feats.reshape(-1, feats.shape[-1]))
    col = list(clf.classes_).index(True) if True in clf.classes_ else None
    out = prob[:, col] if col is not None else np.zeros(len(prob))
    return out.reshape(f.shape)


def segment_frame(
    frame: np.ndarray,
    *,
    method: str,
    params: dict[str, Any] | None = None,
    polarity: str = "dark",
    particle_size_px: float | None = None,
    classifier: Any = None,
    _cache: dict[Any, Any] | None = None,
) -> np.ndarray:
    """Labels of one frame with a classical method (the numpy kernel).

    Parameters
    ----------
    frame : ndarray (y, x), any real dtype
    method : str
        One of :data:`METHODS`.
    params : dict, optional
        Overrides of :data:`DEFAULT_PARAMS` ``[method]``.
    polarity : {"dark", "bright"}
        Particles darker (bright-field TEM) or brighter than the background.
    particle_size_px : float, optional
        Particle diameter (px); None: estimated from the frame.
    classifier : sklearn classifier, optional
        For ``random_forest``; None: :func:`train_random_forest` ``(params)``.

    Returns
    -------
    ndarray (y, x) int32
        0 background, 1..n particles in raster order.
    """
    p = _resolve_params(method, params)
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise InputError(f"`frame` must be 2-D (y, x), got shape {frame.shape}")
    if polarity == "auto":
        polarity = decide_polarity(frame)
    d = _size(frame, polarity, particle_size_px)
    f = _bright(frame, polarity)
    if method == "random_forest":
        clf = classifier if classifier is not None else train_random_forest(p)
        key = ("rf", id(frame), d, tuple(p[k] for k in _RF_TRAIN_KEYS))
        if _cache is not None and key in _cache:
            prob = _cache[key]
        else:
            prob = _rf_probability(f, d, clf)
            if _cache is not None:
                _cache[key] = prob
        return _finish(prob > p["threshold"], d, p)
    g = _preprocess(f, d, p)
    if method in ("otsu", "li", "triangle"):
        return _finish(g > _global(g, method), d, p)
    if method == "sauvola":
        from skimage.filters import threshold_sauvola

        lo, hi = np.percentile(g, [0.5, 99.5])
        u = np.clip((g - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(g)
        dark = 1.0 - u  # Sauvola's model: dark objects on a bright page
        t = threshold_sauvola(dark, window_size=_odd(p["window_rel"] * d), k=p["k"])
        return _finish(dark < t, d, p)
    if method == "local":
        w = p["window_rel"] * d / 2
        mean = ndimage.gaussian_filter(g, w, mode="reflect")
        q25, q75 = np.percentile(g, [25, 75])
        scale = (q75 - q25) / 1.349 or 1.0
        return _finish(g > mean + p["offset"] * scale, d, p)
    if method == "watershed":
        return _watershed(g, d, p)
    # canny
    from skimage.feature import canny
    from skimage.morphology import disk

    f2 = _preprocess(f, d, {**p, "sigma_rel": 0.0})
    edges = canny(
        f2,
        sigma=max(0.5, p["sigma_rel"] * d),
        low_threshold=p["low_quantile"],
        high_threshold=p["high_quantile"],
        use_quantiles=True,
    )
    r = max(1, int(round(p["closing_rel"] * d)))
    closed = ndimage.binary_closing(edges, structure=disk(r), border_value=0)
    # edges decide the outlines, intensity the inside: the regions the closed
    # edges delimit are kept when brighter on average than the frame's Otsu
    # threshold (particle-like), with the edge pixels around them
    regions, n = ndimage.label(~closed)
    filled = np.zeros(f2.shape, bool)
    if n:
        mean = ndimage.mean(f2, regions, np.arange(1, n + 1))
        ok = np.concatenate([[False], np.asarray(mean) > _global(f2, "otsu")])
        filled = ok[regions]
        filled |= ndimage.binary_dilation(filled, iterations=r + 1) & closed
    return _finish(filled, d, p)


def _check_video(video: Any) -> xr.DataArray:
    if not isinstance(video, xr.DataArray):
        raise InputError(
            f"`video` must be an xarray.DataArray with dims ('frame', 'y', 'x'), got "
            f"{type(video).__name__}; wrap an array with lptem_dask.from_array(array, "
            "pixel_size_nm=..., frame_interval_s=...)"
        )
    if video.dims != ("frame", "y", "x"):
        raise InputError(
            f"`video` must have dims ('frame', 'y', 'x'), got {video.dims}; rename or "
            "transpose it, e.g. video.rename(t='frame')"
        )
    if video.dtype.kind not in "biuf":
        raise InputError(f"`video` must hold real numbers, got dtype {video.dtype}")
    return video


def _segment_block(
    block: np.ndarray,
    clf: Any,
    *,
    method: str,
    params: dict[str, Any],
    polarity: str,
    particle_size_px: float | None,
) -> np.ndarray:
    out = np.zeros(block.shape, np.int32)
    for i in range(block.shape[0]):
        out[i] = segment_frame(
            block[i],
            method=method,
            params=params,
            polarity=polarity,
            particle_size_px=particle_size_px,
            classifier=clf,
        )
    return out


def segment_baseline(
    video: xr.DataArray,
    *,
    method: str,
    params: dict[str, Any] | None = None,
    polarity: str = "dark",
    particle_size_px: float | None = None,
) -> xr.DataArray:
    """Instance labels of every frame with a classical method (lazy).

    Parameters
    ----------
    video : xr.DataArray (frame, y, x), any real dtype
        Dask-backed (chunked along ``frame``) or in memory.
    method : str
        One of :data:`METHODS`.
    params : dict, optional
        Overrides of :data:`DEFAULT_PARAMS` ``[method]`` (e.g. the ``best_params``
        of :func:`tune_baseline`). Lengths are in particle diameters.
    polarity : {"dark", "bright", "auto"}
        "auto" is decided per frame.
    particle_size_px : float, optional
        Particle diameter (px); None: estimated per frame.

    Returns
    -------
    xr.DataArray (frame, y, x) int32, named ``labels``
        0 background, 1..n per frame; chunked as ``video``. The random forest
        (``method="random_forest"``) is trained on the client when this is
        called (cached per process) and travels to workers as one graph key.

    Examples
    --------
    >>> import numpy as np, lptem_dask as lp
    >>> img = np.full((1, 64, 64), 200.0); img[0, 20:40, 20:40] = 50.0
    >>> lab = segment_baseline(lp.from_array(img, pixel_size_nm=1.0), method="otsu",
    ...                        particle_size_px=20)
    >>> int(lab.max()), int((lab[0] > 0).sum())
    (1, 400)
    """
    video = _check_video(video)
    check_polarity(polarity)
    p = _resolve_params(method, params)
    if particle_size_px is not None and not (
        math.isfinite(particle_size_px) and particle_size_px > 0
    ):
        raise InputError(f"`particle_size_px` must be a positive number, got {particle_size_px}")
    data = (
        video.data
        if isinstance(video.data, da.Array)
        else da.from_array(video.values, chunks=(1, -1, -1))
    )
    if data.numblocks[1:] != (1, 1):
        data = data.rechunk({1: -1, 2: -1})
    clf = None
    if method == "random_forest":
        model = train_random_forest(p)
        tok = dask.base.tokenize(tuple(p[k] for k in _RF_TRAIN_KEYS))
        clf = dask.delayed(model, pure=True, name=f"lptem-rf-{tok}")
    name = "lptem-baseline-" + dask.base.tokenize(
        data.name, method, sorted(p.items()), polarity, particle_size_px
    )
    out = da.map_blocks(
        _segment_block,
        data,
        clf,
        method=method,
        params=p,
        polarity=polarity,
        particle_size_px=particle_size_px,
        dtype=np.int32,
        meta=np.empty((0, 0, 0), np.int32),
        name=name,
    )
    coords = {k: v for k, v in video.coords.items()}
    attrs = {k: v for k, v in video.attrs.items() if k != "history"}
    from .._version import __version__

    history = list(video.attrs.get("history", []))
    history.append(
        {
            "step": "segment_baseline",
            "version": __version__,
            "method": method,
            "params": p,
            "polarity": polarity,
            "particle_size_px": "auto" if particle_size_px is None else particle_size_px,
        }
    )
    attrs.update({"history": history, "method": method, "units": "1"})
    return xr.DataArray(out, dims=("frame", "y", "x"), coords=coords, attrs=attrs, name="labels")


# --------------------------------------------------------------------------- tuning


def tune_baseline(
    method: str,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    grid: Sequence[dict[str, Any]] | None = None,
    polarity: str = "dark",
    particle_size_px: float | Sequence[float | None] | None = None,
    labels: Sequence[np.ndarray] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pick the setting of ``method`` maximising the mean of pixel IoU and object F1.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    images : sequence of ndarray (y, x)
        Labelled tuning frames (e.g. the U-Net's validation set; never test data).
    masks : sequence of ndarray (y, x)
        Their true foreground masks (bool) or instance labels (int).
    grid : sequence of dict, optional
        Settings to try (overrides of the defaults); default :func:`default_grid`.
    polarity : {"dark", "bright"}
    particle_size_px : float or sequence, optional
        Diameter hint for all frames or per frame; None: estimated.
    labels : sequence of ndarray, optional
        True instance labels; default: connected components of ``masks``.

    Returns
    -------
    (dict, pandas.DataFrame)
        The best full parameter dict, and one row per setting with its
        parameters, ``pixel_iou``, ``object_f1``, ``score`` and ``time_per_frame_s``,
        best first. Ties keep the earlier setting.
    """
    _check_method(method)
    if len(images) == 0 or len(images) != len(masks):
        raise InputError(
            f"`images` and `masks` must be equally long and non-empty, got "
            f"{len(images)} and {len(masks)}"
        )
    settings = list(grid) if grid is not None else default_grid(method)
    if not settings:
        raise InputError("`grid` is empty")
    if labels is None:
        truth = [
            np.asarray(m)
            if np.asarray(m).dtype.kind in "iu" and np.asarray(m).max() > 1
            else ndimage.label(np.asarray(m) > 0)[0]
            for m in masks
        ]
    else:
        truth = [np.asarray(x) for x in labels]
    sizes = (
        list(particle_size_px)
        if isinstance(particle_size_px, Sequence)
        else [particle_size_px] * len(images)
    )
    # estimate sizes once per frame, not once per setting
    sizes = [
        s if s is not None else _size(np.asarray(im), polarity, None)
        for s, im in zip(sizes, images, strict=False)
    ]
    frames = [np.asarray(im) for im in images]
    cache: dict[Any, Any] = {}
    rows = []
    for k, setting in enumerate(settings):
        p = _resolve_params(method, setting)
        clf = train_random_forest(p) if method == "random_forest" else None
        t0 = time.perf_counter()
        scores = [
            frame_scores(
                segment_frame(
                    f,
                    method=method,
                    params=p,
                    polarity=polarity,
                    particle_size_px=s,
                    classifier=clf,
                    _cache=cache,
                ),
                t,
            )
            for f, s, t in zip(frames, sizes, truth, strict=False)
        ]
        dt = (time.perf_counter() - t0) / len(frames)
        summ = summarize_scores(scores)
        row = {"setting": k, **{f"param.{a}": b for a, b in setting.items()}}
        row.update(
            pixel_iou=summ["pixel_iou"],
            object_f1=summ["object_f1"],
            score=(summ["pixel_iou"] + summ["object_f1"]) / 2,
            time_per_frame_s=dt,
        )
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(
        ["score", "setting"], ascending=[False, True], kind="stable"
    )
    best = _resolve_params(method, settings[int(table.iloc[0]["setting"])])
    logger.info("tuned %s: score %.3f with %s", method, table.iloc[0]["score"], best)
    return best, table.reset_index(drop=True)
