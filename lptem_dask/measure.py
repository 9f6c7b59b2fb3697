"""Per-frame measurement of every particle: region properties, shape descriptors, outlines.

:func:`measure_regions` maps a pure numpy kernel over the frame chunks of a
label video and returns a lazy ``dask.dataframe.DataFrame`` with one row per
particle per frame, columns and dtypes from :mod:`lptem_dask.schema`.
:func:`measure_contours` returns the outlines resampled at uniform arc length
with their signed curvature. :func:`write_table` writes either to Parquet in a
store (one part per frame chunk, units in the Parquet schema metadata) and
:func:`read_table` / :func:`column_units` read them back.

Conventions (see :mod:`lptem_dask.schema`): centroids ``y, x`` in px with the
first pixel centre at 0, ``y_nm = (y + 0.5) * pixel_size_nm``; angles in degrees
counter-clockwise from +x *as displayed* (image y axis pointing down), axis
orientations in (-90, 90]; curvature positive where the outline is convex.

Outlines are sub-pixel: the iso-line 0.5 of the region's mask smoothed by a
Gaussian of ``contour_sigma_px`` (or of the probability map restricted to the
region, when ``probability`` is given), found with
:func:`skimage.measure.find_contours`, resampled at uniform arc length; the
curvature is computed from the periodic Fourier derivatives of the outline
smoothed along its arc by a Gaussian of ``curvature_sigma_px`` (by default a
quarter of the region's equivalent radius, at least 2 px).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
from scipy import ndimage as ndi
from skimage.measure import find_contours, regionprops_table

from . import schema
from .errors import InputError, StoreError
from .store import atomic_path, table_path

__all__ = [
    "measure_regions",
    "measure_contours",
    "measure_store",
    "write_table_part",
    "write_table",
    "read_table",
    "column_units",
    "region_outline",
    "resample_closed",
    "closed_curvature",
]

logger = logging.getLogger(__name__)

_DIMS = ("frame", "y", "x")
_N_FOLD = {"prism": 3, "cube": 4}


# --------------------------------------------------------------------------- outlines
def region_outline(
    mask: np.ndarray,
    *,
    field: np.ndarray | None = None,
    sigma_px: float = 1.0,
) -> np.ndarray:
    """Sub-pixel outline of one region, counter-clockwise as displayed.

    Parameters
    ----------
    mask : ndarray of bool, shape (y, x)
        The region (one connected particle).
    field : ndarray of float, shape (y, x), optional
        A smooth field whose 0.5 iso-line is the outline (e.g. the probability
        restricted to the region); default: the mask smoothed by ``sigma_px``.
    sigma_px : float
        Gaussian smoothing (px) of the mask; 0 takes the raw mask.

    Returns
    -------
    ndarray of float64, shape (n, 2)
        (y, x) px of the outer outline, not repeating the first point, ordered
        counter-clockwise on screen (y axis pointing down). Empty (0, 2) when
        the region has no outline.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros((0, 2))
    pad = int(np.ceil(3 * sigma_px)) + 2
    ys, xs = np.nonzero(mask)
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, mask.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, mask.shape[1])
    if field is None:
        f = mask[y0:y1, x0:x1].astype(np.float64)
        if sigma_px > 0:
            f = ndi.gaussian_filter(f, sigma_px, mode="constant")
    else:
        f = np.asarray(field, np.float64)[y0:y1, x0:x1]
    # pad with zeros so outlines touching the frame border close
    f = np.pad(f, 1)
    contours = find_contours(f, 0.5)
    if not contours:
        return np.zeros((0, 2))
    c = max(contours, key=len)
    if len(c) > 1 and np.allclose(c[0], c[-1]):
        c = c[:-1]
    c = c + np.array([y0 - 1, x0 - 1], np.float64)
    # signed area on screen coordinates X = x, Y = -y
    X, Y = c[:, 1], -c[:, 0]
    area = 0.5 * np.sum(X * np.roll(Y, -1) - np.roll(X, -1) * Y)
    if area < 0:
        c = c[::-1]
    return np.ascontiguousarray(c)


def resample_closed(
    points: np.ndarray, *, step_px: float = 1.0, min_points: int = 16
) -> np.ndarray:
    """Resample a closed polyline at uniform arc length.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        Closed polyline (last point not repeating the first).
    step_px : float
        Target spacing along the arc (px); the spacing used is the perimeter
        divided by the nearest whole number of points.
    min_points : int
        At least this many points are returned.

    Returns
    -------
    ndarray of float64, shape (m, 2)
    """
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return p.copy()
    closed = np.vstack([p, p[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    perim = s[-1]
    m = max(min_points, int(round(perim / step_px)))
    t = np.arange(m) * (perim / m)
    return np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])


def closed_curvature(points: np.ndarray, *, sigma_px: float = 2.0) -> np.ndarray:
    """Signed curvature (1/px) of a closed outline sampled at uniform arc length.

    The outline is smoothed along its arc by a Gaussian of ``sigma_px`` and
    differentiated in Fourier space. Positive where the outline is convex,
    for an outline ordered counter-clockwise on screen (as :func:`region_outline`).

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        (y, x) px, uniformly spaced along the arc.

    Returns
    -------
    ndarray of float64, shape (n,)

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    >>> circle = np.column_stack([10 - 5 * np.sin(t), 10 + 5 * np.cos(t)])
    >>> bool(np.allclose(closed_curvature(circle, sigma_px=0), 0.2))
    True
    """
    p = np.asarray(points, np.float64)
    n = len(p)
    if n < 5:
        return np.full(n, np.nan)
    X, Y = p[:, 1], -p[:, 0]
    perim = np.sum(np.hypot(np.diff(np.r_[X, X[:1]]), np.diff(np.r_[Y, Y[:1]])))
    ds = perim / n
    k = 2 * np.pi * np.fft.fftfreq(n, d=ds)
    g = np.exp(-0.5 * (k * sigma_px) ** 2)
    if n % 2 == 0:
        k1 = k.copy()
        k1[n // 2] = 0.0  # the Nyquist term has no well-defined first derivative
    else:
        k1 = k
    FX, FY = np.fft.fft(X) * g, np.fft.fft(Y) * g
    dX, dY = np.fft.ifft(1j * k1 * FX).real, np.fft.ifft(1j * k1 * FY).real
    ddX, ddY = np.fft.ifft(-(k**2) * FX).real, np.fft.ifft(-(k**2) * FY).real
    speed = np.hypot(dX, dY)
    # a degenerate outline (zero speed) gives NaN curvature, silently
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kappa = (dX * ddY - dY * ddX) / speed**3
        # Gaussian smoothing shrinks a circle of radius R by exp(-sigma^2 / 2R^2), so it
        # raises its curvature by the inverse factor; undo that to first order.
        return kappa * np.exp(-0.5 * (sigma_px * kappa) ** 2)


# --------------------------------------------------------------------- descriptors
def _screen_polar(outline: np.ndarray, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    dx = outline[:, 1] - cx
    dy = -(outline[:, 0] - cy)
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def _n_fold(outline: np.ndarray, cy: float, cx: float, n: int) -> tuple[float, np.ndarray, float]:
    """Orientation (deg in [0, 360/n)) of the n-fold outline, its n vertices (y, x px)
    and its n-fold strength: the n-th angular Fourier amplitude of the radius over its
    mean (0 for a circle; its orientation is then noise)."""
    r, th = _screen_polar(outline, cy, cx)
    dth = (np.angle(np.exp(1j * (np.roll(th, -1) - np.roll(th, 1))))) / 2
    c = np.sum(r * np.exp(1j * n * th) * dth)
    r0 = np.sum(r * dth)
    strength = float(np.abs(c) / r0) if r0 > 0 else float("nan")
    period = 360.0 / n
    phi = float(np.degrees(np.angle(c)) / n) % period
    verts = np.full((n, 2), np.nan)
    dx = outline[:, 1] - cx
    dy = -(outline[:, 0] - cy)
    for k in range(n):
        a = np.radians(phi + k * period)
        ang = np.abs(np.angle(np.exp(1j * (th - a))))
        near = ang < np.pi / n
        if not near.any():
            continue
        proj = np.where(near, dx * np.cos(a) + dy * np.sin(a), -np.inf)
        verts[k] = outline[int(np.argmax(proj))]
    return phi, verts, strength


def _fit_circle(pts: np.ndarray) -> float:
    if len(pts) < 5:
        return float("nan")
    y, x = pts[:, 0], pts[:, 1]
    A = np.column_stack([x, y, np.ones_like(x)])
    b = -(x**2 + y**2)
    (D, E, F), *_ = np.linalg.lstsq(A, b, rcond=None)
    r2 = (D * D + E * E) / 4 - F
    return float(np.sqrt(r2)) if r2 > 0 else float("nan")


def _rod(outline: np.ndarray, cy: float, cx: float, angle_deg: float) -> tuple[float, ...]:
    a = np.radians(angle_deg)
    dx = outline[:, 1] - cx
    dy = -(outline[:, 0] - cy)
    s = dx * np.cos(a) + dy * np.sin(a)
    w = -dx * np.sin(a) + dy * np.cos(a)
    smin, smax = s.min(), s.max()
    length = smax - smin
    mid = 0.5 * (smin + smax)
    central = np.abs(s - mid) < 0.25 * length
    up, down = central & (w > 0), central & (w < 0)
    if up.any() and down.any():
        width = float(np.median(w[up]) - np.median(w[down]))
    else:
        width = float(w.max() - w.min())
    cap = 0.4 * width
    ra = _fit_circle(outline[s > smax - cap])
    rb = _fit_circle(outline[s < smin + cap])
    return float(length), width, ra, rb


# --------------------------------------------------------------------------- kernel
def _axis_orientation_deg(sk_orientation: np.ndarray) -> np.ndarray:
    """skimage ``orientation`` (rad, from the row axis) -> deg CCW from +x on screen, (-90, 90]."""
    deg = np.degrees(np.asarray(sk_orientation, np.float64)) + 90.0
    return np.where(deg > 90.0, deg - 180.0, deg)


def _frame_regions(
    lbl: np.ndarray,
    image: np.ndarray | None,
    prob: np.ndarray | None,
    *,
    frame: int,
    time_s: float,
    dose_rate: float,
    pixel_size_nm: float,
    shape: str | None,
    contour_sigma_px: float,
) -> pd.DataFrame:
    cols = schema.regions_columns(shape)
    if lbl.max() <= 0:
        return schema.empty_table(cols)
    t = regionprops_table(
        lbl,
        properties=(
            "label",
            "centroid",
            "area",
            "perimeter",
            "equivalent_diameter_area",
            "orientation",
            "axis_major_length",
            "axis_minor_length",
            "eccentricity",
            "solidity",
            "bbox",
        ),
    )
    labels = t["label"].astype(np.int32)
    n = len(labels)
    ps = float(pixel_size_nm)
    y, x = t["centroid-0"], t["centroid-1"]
    out: dict[str, Any] = {
        "frame": np.full(n, frame, np.int64),
        "time_s": np.full(n, time_s),
        "dose_e_per_A2": np.full(n, dose_rate * time_s),
        "label": labels,
        "y": y,
        "x": x,
        "y_nm": (y + 0.5) * ps,
        "x_nm": (x + 0.5) * ps,
        "area_px": t["area"].astype(np.int64),
        "area_nm2": t["area"] * ps * ps,
        "perimeter_px": t["perimeter"],
        "perimeter_nm": t["perimeter"] * ps,
        "equivalent_diameter_nm": t["equivalent_diameter_area"] * ps,
        "orientation_deg": _axis_orientation_deg(t["orientation"]),
        "major_axis_length_nm": t["axis_major_length"] * ps,
        "minor_axis_length_nm": t["axis_minor_length"] * ps,
        "eccentricity": t["eccentricity"],
        "solidity": t["solidity"],
        "bbox_y0": t["bbox-0"],
        "bbox_x0": t["bbox-1"],
        "bbox_y1": t["bbox-2"],
        "bbox_x1": t["bbox-3"],
    }
    ny, nx = lbl.shape
    out["touches_border"] = (
        (t["bbox-0"] == 0) | (t["bbox-1"] == 0) | (t["bbox-2"] == ny) | (t["bbox-3"] == nx)
    )
    if image is not None:
        img = np.asarray(image, np.float64)
        out["mean_intensity"] = np.asarray(ndi.mean(img, lbl, labels))
        out["contrast"] = _local_contrast(lbl, img, labels, out["mean_intensity"])
    else:
        out["mean_intensity"] = out["contrast"] = np.full(n, np.nan)
    out["confidence"] = (
        np.asarray(ndi.mean(np.asarray(prob, np.float64), lbl, labels))
        if prob is not None
        else np.full(n, np.nan)
    )
    if shape is not None:
        extra = {k: np.full(n, np.nan) for k in schema.shape_columns(shape)}
        slices = ndi.find_objects(lbl)
        for i, lab in enumerate(labels):
            sl = slices[lab - 1]
            if sl is None:
                continue
            outline = _outline_in_frame(lbl, int(lab), sl, None, contour_sigma_px)
            if len(outline) < 8:
                continue
            outline = resample_closed(outline, step_px=0.5)
            cy, cx = float(y[i]), float(x[i])
            if shape in _N_FOLD:
                nf = _N_FOLD[shape]
                phi, verts, strength = _n_fold(outline, cy, cx, nf)
                extra[f"{shape}_orientation_deg"][i] = phi
                extra["symmetry_strength"][i] = strength
                edges = np.hypot(*(np.roll(verts, -1, axis=0) - verts).T)
                extra["edge_length_nm"][i] = float(np.mean(edges)) * ps
                for k in range(nf):
                    extra[f"vertex{k}_y_nm"][i] = (verts[k, 0] + 0.5) * ps
                    extra[f"vertex{k}_x_nm"][i] = (verts[k, 1] + 0.5) * ps
            else:
                length, width, ra, rb = _rod(outline, cy, cx, float(out["orientation_deg"][i]))
                extra["rod_length_nm"][i] = length * ps
                extra["rod_width_nm"][i] = width * ps
                extra["cap_radius_a_nm"][i] = ra * ps
                extra["cap_radius_b_nm"][i] = rb * ps
        out.update(extra)
    return schema.conform(pd.DataFrame(out), cols)


CONTRAST_RING_PX = (2, 6)  # background ring: from 2 to 6 px (Chebyshev) outside a region


def _local_contrast(
    lbl: np.ndarray, image: np.ndarray, labels: np.ndarray, mean_intensity: np.ndarray
) -> np.ndarray:
    """``(background - region) / background`` per region, background = mean of a ring.

    The ring holds the unlabelled pixels 2 to 6 px (Chebyshev distance) outside
    the region; a ring pixel near two regions belongs to the higher label. NaN
    where a region has no ring pixel or the background is not positive.
    """
    a, b = CONTRAST_RING_PX
    outer = ndi.maximum_filter(lbl, size=2 * b + 1, mode="constant")
    inner = ndi.maximum_filter(lbl > 0, size=2 * a - 1, mode="constant")
    ring = np.where((lbl == 0) & ~inner, outer, 0)
    cnt = np.bincount(ring.ravel(), minlength=int(lbl.max()) + 1)
    tot = np.bincount(ring.ravel(), weights=image.ravel(), minlength=cnt.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        bg = tot[labels] / cnt[labels]
        c = (bg - mean_intensity) / bg
    return np.where(np.isfinite(c) & (bg > 0), c, np.nan)


def _outline_in_frame(
    lbl: np.ndarray,
    lab: int,
    sl: tuple[slice, slice],
    prob: np.ndarray | None,
    sigma_px: float,
) -> np.ndarray:
    pad = int(np.ceil(3 * sigma_px)) + 3
    y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, lbl.shape[0])
    x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, lbl.shape[1])
    crop = lbl[y0:y1, x0:x1]
    mask = crop == lab
    field = None
    if prob is not None:
        allowed = (crop == 0) | mask  # other particles' pixels cut the field
        field = np.where(allowed, np.asarray(prob[y0:y1, x0:x1], np.float64), 0.0)
        if sigma_px > 0:
            field = ndi.gaussian_filter(field, sigma_px, mode="constant")
    outline = region_outline(mask, field=field, sigma_px=sigma_px)
    return outline + np.array([y0, x0], np.float64) if len(outline) else outline


CURVATURE_SIGMA_REL = 0.25  # of the equivalent radius; at least CURVATURE_SIGMA_MIN_PX
CURVATURE_SIGMA_MIN_PX = 2.0


def auto_curvature_sigma_px(area_px: float) -> float:
    """Arc-length smoothing (px) of an outline before its curvature, for ``None``.

    A quarter of the region's equivalent radius, at least 2 px: the same relative
    smoothing for particles of every size. Chosen on U-Net outlines of simulated
    ellipses (semi-axes 15-40 px, moderate CNR, a seed the tests do not use): the
    median relative curvature error went from 0.50 at a fixed 2 px to 0.22 at 6 px,
    about a quarter of their equivalent radius.
    """
    r_eq = float(np.sqrt(max(area_px, 0.0) / np.pi))
    return max(CURVATURE_SIGMA_MIN_PX, CURVATURE_SIGMA_REL * r_eq)


def _frame_contours(
    lbl: np.ndarray,
    prob: np.ndarray | None,
    *,
    frame: int,
    pixel_size_nm: float,
    step_px: float,
    contour_sigma_px: float,
    curvature_sigma_px: float | None,
) -> pd.DataFrame:
    parts = []
    slices = ndi.find_objects(lbl)
    areas = np.bincount(lbl.ravel()) if curvature_sigma_px is None else None
    ps = float(pixel_size_nm)
    for i, sl in enumerate(slices):
        if sl is None:
            continue
        lab = i + 1
        outline = _outline_in_frame(lbl, lab, sl, prob, contour_sigma_px)
        if len(outline) < 3:
            continue
        pts = resample_closed(outline, step_px=step_px, min_points=8)
        sigma = (
            auto_curvature_sigma_px(float(areas[lab]))  # type: ignore[index]
            if curvature_sigma_px is None
            else curvature_sigma_px
        )
        kappa = closed_curvature(pts, sigma_px=sigma)
        m = len(pts)
        perimeter = np.sum(np.hypot(*np.diff(np.vstack([outline, outline[:1]]), axis=0).T))
        arc = np.arange(m) * (perimeter / m)  # uniform arc length along the outline
        parts.append((lab, pts, arc, kappa))
    if not parts:
        return schema.empty_contours()
    # one table per frame (building one per particle cost more than the outlines)
    sizes = [len(p[1]) for p in parts]
    pts = np.concatenate([p[1] for p in parts])
    table = pd.DataFrame(
        {
            "frame": np.full(len(pts), frame, np.int64),
            "label": np.repeat(np.array([p[0] for p in parts], np.int32), sizes),
            "point": np.concatenate([np.arange(m, dtype=np.int32) for m in sizes]),
            "y": pts[:, 0],
            "x": pts[:, 1],
            "y_nm": (pts[:, 0] + 0.5) * ps,
            "x_nm": (pts[:, 1] + 0.5) * ps,
            "arc_length_nm": np.concatenate([p[2] for p in parts]) * ps,
            "curvature_per_nm": np.concatenate([p[3] for p in parts]) / ps,
        }
    )
    return schema.conform(table, schema.CONTOURS)


def _measure_block(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    *,
    frames: Sequence[int],
    times_s: Sequence[float],
    pixel_size_nm: float,
    dose_rate_e_per_A2_s: float = float("nan"),
    shape: str | None = None,
    contour_sigma_px: float = 1.0,
) -> pd.DataFrame:
    """Regions table of one block of frames (pure kernel of :func:`measure_regions`).

    Parameters
    ----------
    labels : ndarray of int, shape (frame, y, x)
    image, prob : ndarray, shape (frame, y, x), optional
    frames, times_s : sequence, length frame
        Frame numbers and times (s) of the block's frames.

    Returns
    -------
    pandas.DataFrame with the columns of ``schema.regions_columns(shape)``.
    """
    labels = np.asarray(labels)
    dfs = [
        _frame_regions(
            labels[i],
            None if image is None else image[i],
            None if prob is None else prob[i],
            frame=int(frames[i]),
            time_s=float(times_s[i]),
            dose_rate=float(dose_rate_e_per_A2_s),
            pixel_size_nm=pixel_size_nm,
            shape=shape,
            contour_sigma_px=contour_sigma_px,
        )
        for i in range(labels.shape[0])
    ]
    dfs = [d for d in dfs if len(d)]
    cols = schema.regions_columns(shape)
    if not dfs:
        return schema.empty_table(cols)
    return schema.conform(pd.concat(dfs, ignore_index=True), cols)


def _contours_block(
    labels: np.ndarray,
    prob: np.ndarray | None = None,
    *,
    frames: Sequence[int],
    pixel_size_nm: float,
    step_px: float = 1.0,
    contour_sigma_px: float = 1.0,
    curvature_sigma_px: float | None = None,
) -> pd.DataFrame:
    """Contours table of one block of frames (pure kernel of :func:`measure_contours`)."""
    labels = np.asarray(labels)
    dfs = [
        _frame_contours(
            labels[i],
            None if prob is None else prob[i],
            frame=int(frames[i]),
            pixel_size_nm=pixel_size_nm,
            step_px=step_px,
            contour_sigma_px=contour_sigma_px,
            curvature_sigma_px=curvature_sigma_px,
        )
        for i in range(labels.shape[0])
    ]
    dfs = [d for d in dfs if len(d)]
    if not dfs:
        return schema.empty_contours()
    return schema.conform(pd.concat(dfs, ignore_index=True), schema.CONTOURS)


# ----------------------------------------------------------------------- lazy layer
def _check_labels(labels: xr.DataArray) -> da.Array:
    if not isinstance(labels, xr.DataArray) or tuple(labels.dims) != _DIMS:
        dims = getattr(labels, "dims", None)
        raise InputError(
            f"`labels` must be an xr.DataArray with dims {_DIMS}, got "
            f"{type(labels).__name__} with dims {dims}; use lp.label_frames(...) or "
            "xr.DataArray(arr, dims=('frame', 'y', 'x'))"
        )
    if labels.dtype.kind not in "iu":
        raise InputError(f"`labels` must hold integers, got dtype {labels.dtype}")
    data = labels.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=("auto", -1, -1), name=False)
    return data.rechunk({1: -1, 2: -1})


def _attr(name: str, *sources: Any) -> Any:
    for s in sources:
        if s is not None and name in getattr(s, "attrs", {}):
            return s.attrs[name]
    return None


def _frame_info(
    labels: xr.DataArray, video: xr.DataArray | None, frame_interval_s: float | None
) -> tuple[np.ndarray, np.ndarray]:
    n = labels.sizes["frame"]
    frames = (
        np.asarray(labels["frame"].values, np.int64)
        if "frame" in labels.coords
        else np.arange(n, dtype=np.int64)
    )
    for src in (labels, video):
        if src is not None and "time" in src.coords and src.sizes["frame"] == n:
            return frames, np.asarray(src["time"].values, np.float64)
    fi = frame_interval_s or _attr("frame_interval_s", labels, video)
    times = frames * float(fi) if fi else np.full(n, np.nan)
    return frames, np.asarray(times, np.float64)


def _matching(arr: xr.DataArray | None, name: str, labels: xr.DataArray, chunks) -> da.Array | None:
    if arr is None:
        return None
    if tuple(arr.dims) != _DIMS or arr.shape != labels.shape:
        raise InputError(
            f"`{name}` must have dims {_DIMS} and the shape of `labels` {labels.shape}, "
            f"got dims {tuple(arr.dims)} shape {arr.shape}"
        )
    data = arr.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=chunks, name=False)
    return data.rechunk(chunks)


def _pixel_size(pixel_size_nm: float | None, *sources: Any) -> float:
    ps = pixel_size_nm if pixel_size_nm is not None else _attr("pixel_size_nm", *sources)
    if ps is None or not np.isfinite(ps) or float(ps) <= 0:
        raise InputError(
            "the pixel size is unknown: `labels` and `video` have no attrs['pixel_size_nm']; "
            f"pass `pixel_size_nm=` (got {ps!r})"
        )
    return float(ps)


def measure_regions(
    labels: xr.DataArray,
    video: xr.DataArray | None = None,
    *,
    probability: xr.DataArray | None = None,
    shape: str | None = None,
    pixel_size_nm: float | None = None,
    frame_interval_s: float | None = None,
    dose_rate_e_per_A2_s: float | None = None,
    contour_sigma_px: float = 1.0,
) -> dd.DataFrame:
    """Measure every particle in every frame (lazy).

    Parameters
    ----------
    labels : xr.DataArray of int, dims (frame, y, x)
        Particle instances (0 = background), e.g. from ``label_frames``.
    video : xr.DataArray, dims (frame, y, x), optional
        The frames; gives ``mean_intensity``, and the pixel size, times and dose rate
        from its attrs/coords when ``labels`` lacks them.
    probability : xr.DataArray of float, dims (frame, y, x), optional
        Gives ``confidence`` (mean probability inside each particle).
    shape : {"prism", "rod", "cube"}, optional
        Adds the shape descriptors of that particle shape (see :mod:`lptem_dask.schema`):
        prism/cube orientation modulo 120/90 deg and vertex positions; rod length,
        width and end-cap radii (``cap_radius_a_nm`` at the end in the direction of
        ``orientation_deg``).
    pixel_size_nm, frame_interval_s, dose_rate_e_per_A2_s : float, optional
        Override the attrs of ``labels``/``video``.
    contour_sigma_px : float
        Smoothing (px) of the mask for the sub-pixel outline of shape descriptors.

    Returns
    -------
    dask.dataframe.DataFrame
        One partition per frame chunk of ``labels``; columns and dtypes of
        ``schema.regions_columns(shape)``; ``dose_e_per_A2 = dose_rate * time_s``
        (NaN when the dose rate is unknown). Nothing is computed.

    Examples
    --------
    >>> lab = np.zeros((2, 16, 16), np.int32); lab[0, 2:6, 3:9] = 1
    >>> t = measure_regions(xr.DataArray(lab, dims=("frame", "y", "x")), pixel_size_nm=2.0)
    >>> t.compute()[["frame", "label", "y", "x", "area_nm2"]].to_dict("records")
    [{'frame': 0, 'label': 1, 'y': 3.5, 'x': 5.5, 'area_nm2': 96.0}]
    """
    ldata = _check_labels(labels)
    ps = _pixel_size(pixel_size_nm, labels, video)
    schema.regions_columns(shape)  # validates shape
    chunks = ldata.chunks
    img = _matching(video, "video", labels, chunks)
    prb = _matching(probability, "probability", labels, chunks)
    frames, times = _frame_info(labels, video, frame_interval_s)
    rate = dose_rate_e_per_A2_s
    if rate is None:
        rate = _attr("dose_rate_e_per_A2_s", labels, video)
    rate = float("nan") if rate is None else float(rate)
    meta = schema.empty_regions(shape)
    lblocks = ldata.to_delayed().ravel()
    iblocks = img.to_delayed().ravel() if img is not None else [None] * len(lblocks)
    pblocks = prb.to_delayed().ravel() if prb is not None else [None] * len(lblocks)
    parts = []
    start = 0
    for lb, ib, pb, n in zip(lblocks, iblocks, pblocks, chunks[0], strict=True):
        parts.append(
            dask.delayed(_measure_block, pure=True)(
                lb,
                ib,
                pb,
                frames=frames[start : start + n],
                times_s=times[start : start + n],
                pixel_size_nm=ps,
                dose_rate_e_per_A2_s=rate,
                shape=shape,
                contour_sigma_px=contour_sigma_px,
            )
        )
        start += n
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def measure_contours(
    labels: xr.DataArray,
    *,
    probability: xr.DataArray | None = None,
    pixel_size_nm: float | None = None,
    spacing_px: float = 1.0,
    contour_sigma_px: float = 1.0,
    curvature_sigma_px: float | None = None,
) -> dd.DataFrame:
    """Outlines of every particle, at uniform arc length, with signed curvature (lazy).

    Parameters
    ----------
    labels : xr.DataArray of int, dims (frame, y, x)
    probability : xr.DataArray of float, dims (frame, y, x), optional
        When given, the outline is the 0.5 iso-line of the probability restricted
        to the particle (more precise than the smoothed mask).
    pixel_size_nm : float, optional
        Default: ``labels.attrs["pixel_size_nm"]``.
    spacing_px : float
        Spacing of the outline points along the arc (px, adjusted so they close evenly).
    contour_sigma_px : float
        Gaussian smoothing (px) of the mask before the iso-line.
    curvature_sigma_px : float, optional
        Gaussian smoothing (px of arc length) of the outline before differentiating.
        None: per region, a quarter of its equivalent radius and at least 2 px
        (:func:`auto_curvature_sigma_px`), so particles of every size get the same
        relative smoothing.

    Returns
    -------
    dask.dataframe.DataFrame
        Columns of ``schema.CONTOURS``: ``frame, label, point`` (0.. counter-clockwise
        on screen), ``y, x`` (px), ``y_nm, x_nm``, ``arc_length_nm`` and
        ``curvature_per_nm`` (positive convex). One partition per frame chunk.
    """
    ldata = _check_labels(labels)
    ps = _pixel_size(pixel_size_nm, labels)
    chunks = ldata.chunks
    prb = _matching(probability, "probability", labels, chunks)
    frames, _ = _frame_info(labels, None, None)
    lblocks = ldata.to_delayed().ravel()
    pblocks = prb.to_delayed().ravel() if prb is not None else [None] * len(lblocks)
    parts = []
    start = 0
    for lb, pb, n in zip(lblocks, pblocks, chunks[0], strict=True):
        parts.append(
            dask.delayed(_contours_block, pure=True)(
                lb,
                pb,
                frames=frames[start : start + n],
                pixel_size_nm=ps,
                step_px=spacing_px,
                contour_sigma_px=contour_sigma_px,
                curvature_sigma_px=curvature_sigma_px,
            )
        )
        start += n
    return dd.from_delayed(parts, meta=schema.empty_contours(), verify_meta=False)


def measure_store(
    store: str | os.PathLike,
    *,
    shape: str | None = None,
    contours: bool = False,
    overwrite: bool = False,
    contour_sigma_px: float = 1.0,
    curvature_sigma_px: float | None = None,
    spacing_px: float = 1.0,
) -> dict[str, Path]:
    """Measure a store's ``labels`` into its ``regions`` (and ``contours``) tables.

    Reads ``labels`` (and ``image``, ``probability`` where present) lazily from the
    store, maps :func:`measure_regions` (and :func:`measure_contours`) over their
    frame chunks and writes ``tables/regions.parquet`` (``tables/contours.parquet``),
    one part per frame chunk, atomically.

    Returns
    -------
    dict mapping table name to its path.
    """
    from .results import open_arrays

    ds = open_arrays(store)
    if "labels" not in ds:
        raise StoreError(
            f"store {str(store)!r} has no `labels` array; segment the video first (`lptem segment`)"
        )
    labels = ds["labels"]
    video = ds["image"] if "image" in ds else None
    prob = ds["probability"] if "probability" in ds else None
    attrs = {**(video.attrs if video is not None else {}), **labels.attrs}
    labels = labels.assign_attrs(attrs)
    out = {
        "regions": write_table(
            measure_regions(
                labels,
                video,
                probability=prob,
                shape=shape,
                contour_sigma_px=contour_sigma_px,
            ),
            store,
            "regions",
            overwrite=overwrite,
        )
    }
    if contours:
        out["contours"] = write_table(
            measure_contours(
                labels,
                probability=prob,
                spacing_px=spacing_px,
                contour_sigma_px=contour_sigma_px,
                curvature_sigma_px=curvature_sigma_px,
            ),
            store,
            "contours",
            overwrite=overwrite,
        )
    return out


# ---------------------------------------------------------------------------- Parquet
def _write_part(df: pd.DataFrame, path: str, name: str, col_units: dict[str, str]) -> int:
    table = pa.Table.from_pandas(df, preserve_index=False)
    frames = df["frame"] if "frame" in df.columns else pd.Series([], dtype="int64")
    extra: dict[str, Any] = {}
    if len(frames):
        extra = {"frame_min": int(frames.min()), "frame_max": int(frames.max())}
    md = dict(table.schema.metadata or {})
    md[schema.METADATA_KEY] = schema.encode_metadata(name, col_units, **extra)
    table = table.replace_schema_metadata(md)
    pq.write_table(table, path)
    return len(df)


def write_table(
    table: dd.DataFrame | pd.DataFrame,
    store: str | os.PathLike,
    name: str,
    *,
    overwrite: bool = False,
    units: dict[str, str] | None = None,
) -> Path:
    """Write a table to ``store/tables/NAME.parquet`` atomically, one part per partition.

    Parameters
    ----------
    table : dask or pandas DataFrame
        E.g. from :func:`measure_regions`. Computing it happens here.
    store : path
        The video's store directory (``NAME.zarr``); created if missing.
    name : str
        Table name, e.g. ``"regions"``, ``"contours"``, ``"tracks"``.
    overwrite : bool
        Replace an existing table.
    units : dict, optional
        Units per column; default from :mod:`lptem_dask.schema`.

    Returns
    -------
    Path of the Parquet dataset directory. Every part file carries the units in its
    schema metadata (key ``schema.METADATA_KEY``), read them with :func:`column_units`.
    """
    path = table_path(store, name)
    col_units = schema.units(list(table.columns))
    if units:
        col_units.update(units)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        if isinstance(table, pd.DataFrame):
            _write_part(
                table.reset_index(drop=True), str(tmp / "part.00000.parquet"), name, col_units
            )
        else:
            parts = table.to_delayed()
            tasks = [
                dask.delayed(_write_part)(p, str(tmp / f"part.{i:05d}.parquet"), name, col_units)
                for i, p in enumerate(parts)
            ]
            dask.compute(*tasks)
    logger.info("wrote table %s to %s", name, path)
    return path


def write_table_part(
    table: pd.DataFrame | dd.DataFrame,
    store: str | os.PathLike,
    name: str,
    chunk: int,
    *,
    units: dict[str, str] | None = None,
) -> Path:
    """Write one part (``part.CHUNK.parquet``) of ``store/tables/NAME.parquet`` atomically.

    For resumable pipelines that write a table chunk by chunk: the part appears
    whole or not at all (written to a temporary file, then renamed); an existing
    part of the same chunk is replaced. Units go into the part's schema metadata.

    Parameters
    ----------
    table : pandas or dask DataFrame
        The rows of frame chunk ``chunk`` (a dask DataFrame is computed).
    store, name : path, str
        Store and table name.
    chunk : int
        Index of the frame chunk; parts sort by it.

    Returns
    -------
    Path of the part file.
    """
    if chunk < 0:
        raise InputError(f"`chunk` must be >= 0, got {chunk}")
    if isinstance(table, dd.DataFrame):
        table = table.compute()
    d = table_path(store, name)
    d.mkdir(parents=True, exist_ok=True)
    col_units = schema.units(list(table.columns))
    if units:
        col_units.update(units)
    final = d / f"part.{chunk:05d}.parquet"
    with atomic_path(final, overwrite=True) as tmp:
        _write_part(table.reset_index(drop=True), str(tmp), name, col_units)
    return final


def _table_dir(store_or_path: str | os.PathLike, name: str | None) -> Path:
    p = Path(store_or_path)
    if name is not None:
        p = table_path(p, name)
    if not p.exists():
        raise StoreError(
            f"table {str(p)!r} does not exist; write it first (e.g. `lptem measure`) "
            "or check the store path and table name"
        )
    return p


def part_files(store_or_path: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Sorted part files of a table written by :func:`write_table`."""
    d = _table_dir(store_or_path, name)
    if d.is_file():
        return [d]
    return sorted(d.glob("part.*.parquet"))


def read_table_pandas(store_or_path: str | os.PathLike, name: str | None = None) -> pd.DataFrame:
    """A whole table in memory (small tables only; see :func:`read_table` for lazy reads).

    Raises
    ------
    StoreError
        If the table has no part files.
    """
    files = part_files(store_or_path, name)
    if not files:
        where = _table_dir(store_or_path, name)
        raise StoreError(f"table {str(where)!r} has no part files; run `lptem measure` first")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_table(store_or_path: str | os.PathLike, name: str | None = None) -> dd.DataFrame:
    """Read a table written by :func:`write_table` as a lazy dask DataFrame (one partition per part).

    Parameters
    ----------
    store_or_path : path
        A store (then give ``name``) or the ``.parquet`` dataset directory itself.
    name : str, optional
        Table name inside the store.
    """
    files = part_files(store_or_path, name)
    if not files:
        raise StoreError(f"table {str(_table_dir(store_or_path, name))!r} has no part files")
    meta = pq.read_schema(files[0]).empty_table().to_pandas()

    def _read(path: Path) -> pd.DataFrame:
        return pq.read_table(path).to_pandas()

    return dd.from_map(_read, files, meta=meta, enforce_metadata=False)


def column_units(store_or_path: str | os.PathLike, name: str | None = None) -> dict[str, str]:
    """Units of the columns of a table on disk (from its Parquet schema metadata).

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = write_table(schema.empty_regions(), d, "regions")
    >>> column_units(d, "regions")["x_nm"]
    'nm'
    """
    files = part_files(store_or_path, name)
    if not files:
        raise StoreError(f"table {str(_table_dir(store_or_path, name))!r} has no part files")
    md = schema.decode_metadata(pq.read_schema(files[0]).metadata)
    if "units" not in md:
        raise StoreError(f"{str(files[0])!r} has no lptem_dask units metadata")
    return dict(md["units"])
