"""Etching kinetics of nanorods: sizes over time, local normal velocity against curvature, stages.

From the outlines of every particle in every frame (a contours table, see
:func:`lptem_dask.measure.measure_contours`):

- sizes per particle per frame: length and width (along and across the
  outline's principal axis; width = largest diameter), aspect ratio, projected
  area, and the volume of the body of revolution about the long axis;
- local normal velocity: each point of the outline at frame ``t`` is projected
  along its inward normal onto the outline at ``t + 1`` (a periodic cubic
  spline, intersection refined by Newton steps, so the polygon's chords bias
  nothing); ``v_n = displacement / dt`` is paired with the curvature averaged
  between the point and its image (midpoint in time);
- the law ``v_n = a + b kappa`` is fitted by Huber-robust regression, with 95%
  intervals from a cluster bootstrap over (particle, frame-interval) outlines
  (points of one outline are correlated); or, with ``rate_fit="baseline"``, from
  each point's displacements to every outline of a stage (a least-squares
  velocity per point, intervals from a jackknife over frames), which averages
  the jitter of every frame's outline;
- stages: per frame interval, ``(a_t, b_t)`` are fitted on all particles; the
  cumulative sums of the velocity at the interval's mean curvature and of
  ``b_t`` (the etched depth) are fitted by continuous piecewise-linear
  functions by generalised least squares, with noise of two kinds estimated
  from the series: rate noise (white across intervals) and the jitter of each
  frame's measured outline (white across frames, which makes successive rates
  anti-correlated). The number of knots is chosen by BIC. ``(a, b)`` are then
  fitted per stage on the intervals away from the changes. (Until stop 25 the
  rate series were cut into constant pieces by dynamic programming with white
  noise, ``method="piecewise_constant"``.)

References
----------
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020).
Huber, P. J. Robust Statistics (1981); Killick, R. et al. JASA 107, 1590 (2012), optimal partitioning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline
from scipy.optimize import linear_sum_assignment

from ..errors import InputError, StoreError
from ..simulate.etching import radius_profile
from ..store import RESULTS, atomic_path, check_output_path, table_path

__all__ = [
    "assign_particles",
    "shape_metrics",
    "normal_velocities",
    "huber_fit",
    "fit_velocity_law",
    "stage_displacements",
    "fit_stage_velocity_law",
    "interval_rates",
    "detect_stages",
    "detect_stages_cumulative",
    "detect_stages_piecewise_constant",
    "piecewise_linear_fit",
    "analyze_etching",
    "plot_etching",
    "run_etching",
]

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------- particles
def _i(x: Any) -> int:
    """int() of a pandas group key (typed Hashable)."""
    return int(x)


def _centroids(contours: pd.DataFrame) -> pd.DataFrame:
    return contours.groupby(["frame", "label"], sort=True)[["y_nm", "x_nm"]].mean().reset_index()


def assign_particles(
    contours: pd.DataFrame,
    *,
    tracks: pd.DataFrame | None = None,
    max_displacement_nm: float = 10.0,
) -> pd.DataFrame:
    """Add a ``particle`` column to a contours table.

    With ``tracks`` (``frame``, ``label``, ``particle``) the identities come
    from linking; otherwise outlines are matched frame to frame by their
    centroids (optimal assignment, at most ``max_displacement_nm`` apart).
    """
    if tracks is not None:
        key = tracks[["frame", "label", "particle"]].drop_duplicates(["frame", "label"])
        out = contours.merge(key, on=["frame", "label"], how="inner")
        return out
    cen = _centroids(contours)
    pid: dict[tuple[int, int], int] = {}
    nxt = 0
    prev = None
    for f, g in cen.groupby("frame", sort=True):
        labs = g["label"].to_numpy()
        P = g[["y_nm", "x_nm"]].to_numpy()
        ids = np.full(len(labs), -1)
        if prev is not None and len(prev[0]):
            d = np.hypot(*(P[:, None, :] - prev[1][None, :, :]).transpose(2, 0, 1))
            r, c = linear_sum_assignment(np.where(d <= max_displacement_nm, d, 1e9))
            for i, j in zip(r, c, strict=True):
                if d[i, j] <= max_displacement_nm:
                    ids[i] = prev[0][j]
        for i in range(len(labs)):
            if ids[i] < 0:
                ids[i] = nxt
                nxt += 1
            pid[(_i(f), _i(labs[i]))] = _i(ids[i])
        prev = (ids, P)
    keys = list(zip(contours["frame"].astype(int), contours["label"].astype(int), strict=True))
    return contours.assign(particle=np.array([pid[k] for k in keys], np.int64))


# ------------------------------------------------------------------------ sizes
def _ccw_screen(yx: np.ndarray) -> np.ndarray:
    """Return (X, Y) = (x, -y) coordinates ordered counter-clockwise, and the order used."""
    XY = np.column_stack([yx[:, 1], -yx[:, 0]])
    area = 0.5 * np.sum(XY[:, 0] * np.roll(XY[:, 1], -1) - np.roll(XY[:, 0], -1) * XY[:, 1])
    return XY if area >= 0 else XY[::-1]


def _outline_metrics(yx: np.ndarray) -> dict[str, float]:
    XY = _ccw_screen(yx)
    c = XY.mean(axis=0)
    w, V = np.linalg.eigh(np.cov((XY - c).T))
    axis = V[:, np.argmax(w)]
    R = np.array([[axis[0], axis[1]], [-axis[1], axis[0]]])
    uv = (XY - c) @ R.T
    length, _, prof = radius_profile(uv, n=257)
    du = length / (len(prof) - 1)
    area = 0.5 * float(np.sum(XY[:, 0] * np.roll(XY[:, 1], -1) - np.roll(XY[:, 0], -1) * XY[:, 1]))
    width = float(2 * prof.max())
    return {
        "length_nm": float(length),
        "width_nm": width,
        "aspect_ratio": float(length / width) if width > 0 else float("nan"),
        "area_nm2": area,
        "volume_nm3": float(np.pi * np.sum(prof**2) * du),
        "y_nm": float(-c[1]),
        "x_nm": float(c[0]),
    }


def shape_metrics(contours: pd.DataFrame, *, frame_interval_s: float) -> pd.DataFrame:
    """Size of every particle in every frame from its outline.

    Parameters
    ----------
    contours : pandas.DataFrame
        With ``particle`` (see :func:`assign_particles`), ``frame``, ``point``,
        ``y_nm``, ``x_nm``.
    frame_interval_s : float

    Returns
    -------
    pandas.DataFrame
        ``frame``, ``time_s``, ``particle``, ``length_nm``, ``width_nm``,
        ``aspect_ratio``, ``area_nm2``, ``volume_nm3`` (body of revolution),
        ``y_nm``, ``x_nm`` (centroid of the outline).
    """
    rows = []
    for (f, p), g in contours.sort_values("point").groupby(["frame", "particle"], sort=True):
        if len(g) < 8:
            continue
        m = _outline_metrics(g[["y_nm", "x_nm"]].to_numpy())
        fi = _i(f)
        rows.append({"frame": fi, "time_s": fi * frame_interval_s, "particle": _i(p), **m})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------- velocities
def _spline(XY: np.ndarray):
    closed = np.vstack([XY, XY[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return CubicSpline(s, closed, bc_type="periodic", axis=0), s


def _project(XA: np.ndarray, XB: np.ndarray, kB: np.ndarray, max_disp: float):
    """Inward normal displacement of each point of A to curve B, and B's curvature there."""
    nA = len(XA)
    T = np.roll(XA, -1, axis=0) - np.roll(XA, 1, axis=0)
    T /= np.hypot(T[:, 0], T[:, 1])[:, None]
    n = np.column_stack([T[:, 1], -T[:, 0]])  # outward for CCW
    q0 = XB
    e = np.roll(XB, -1, axis=0) - XB
    d = XA[:, None, :] - q0[None, :, :]  # (nA, nB, 2)
    det = n[:, None, 0] * e[None, :, 1] - n[:, None, 1] * e[None, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (d[..., 0] * e[None, :, 1] - d[..., 1] * e[None, :, 0]) / det
        u = (n[:, None, 0] * d[..., 1] - n[:, None, 1] * d[..., 0]) / det
    ok = (u >= 0) & (u < 1) & np.isfinite(s) & (np.abs(s) <= max_disp)
    s_m = np.where(ok, np.abs(s), np.inf)
    j = np.argmin(s_m, axis=1)
    found = np.isfinite(s_m[np.arange(nA), j])
    sp, sk = _spline(XB)
    seg_s = sk[j] + u[np.arange(nA), j] * (sk[j + 1] - sk[j])
    sig = np.where(found, seg_s, 0.0)
    for _ in range(4):  # Newton: B(sig) on the line p + t n
        B = sp(sig)
        dB = sp(sig, 1)
        r = B - XA
        f = r[:, 0] * n[:, 1] - r[:, 1] * n[:, 0]
        fp = dB[:, 0] * n[:, 1] - dB[:, 1] * n[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            sig = sig - np.where(np.abs(fp) > 1e-12, f / fp, 0.0)
        sig = np.mod(sig, sk[-1])
    B = sp(sig)
    disp = np.sum((XA - B) * n, axis=1)
    kb = np.interp(sig, sk, np.r_[kB, kB[:1]])
    disp = np.where(found, disp, np.nan)
    return disp, kb


def _smooth_outline(X: np.ndarray, sigma_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample a closed CCW curve uniformly, smooth it along the arc, return it and its curvature."""
    closed = np.vstack([X, X[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    perim = s[-1]
    n = max(len(X), 16)
    t = np.arange(n) * perim / n
    P = np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])
    k = 2 * np.pi * np.fft.fftfreq(n, d=perim / n)
    F = np.fft.fft(P, axis=0) * np.exp(-0.5 * (k * sigma_nm) ** 2)[:, None]
    P = np.fft.ifft(F, axis=0).real
    k1 = k.copy()
    if n % 2 == 0:
        k1[n // 2] = 0
    d1 = np.fft.ifft(1j * k1[:, None] * F, axis=0).real
    d2 = np.fft.ifft(-(k**2)[:, None] * F, axis=0).real
    sp = np.hypot(d1[:, 0], d1[:, 1])
    kappa = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / sp**3
    if sigma_nm > 0:
        # Gaussian smoothing along the arc moves a curve of curvature kappa inward
        # by sigma^2 kappa / 2 (and raises kappa by the factor 1 + sigma^2 kappa^2 / 2):
        # undo both to first order, or thinning tips would fake a positive b.
        n_out = np.column_stack([d1[:, 1], -d1[:, 0]]) / sp[:, None]
        shift = 0.5 * sigma_nm**2 * kappa
        P = P + shift[:, None] * n_out
        kappa = kappa / (1.0 + 0.5 * sigma_nm**2 * kappa**2)
    return P, kappa


def normal_velocities(
    contours: pd.DataFrame,
    *,
    frame_interval_s: float,
    smooth_nm: float = 1.0,
    max_displacement_nm: float = 5.0,
) -> pd.DataFrame:
    """Local inward normal velocity of every outline point between consecutive frames.

    Parameters
    ----------
    contours : pandas.DataFrame
        Contours with ``particle`` (``frame``, ``point``, ``y_nm``, ``x_nm``,
        ``curvature_per_nm``).
    frame_interval_s : float
    smooth_nm : float
        Both outlines are resampled uniformly and smoothed along the arc by a
        Gaussian of this length (nm) before normals and curvature are taken
        (the table's ``curvature_per_nm`` is not used): pixel-scale noise in
        the curvature would otherwise bias the fitted slope ``b`` towards 0
        (errors in variables). 0 keeps the outlines as they are.
    max_displacement_nm : float
        Projections farther than this are dropped.

    Returns
    -------
    pandas.DataFrame
        ``frame`` (start of the interval), ``time_s`` (mid-interval),
        ``particle``, ``point`` (index on the resampled outline), ``y_nm``,
        ``x_nm``, ``curvature_per_nm``
        (mean of both ends), ``curvature_residual_per_nm`` (the point's
        curvature minus the mean curvature at its images on the previous and
        the next outline: measurement noise, with a linear change in time
        cancelled; NaN on a particle's first outline), ``displacement_nm``
        (inward positive), ``v_nm_per_s``.
    """
    if frame_interval_s <= 0:
        raise InputError(f"`frame_interval_s` must be > 0, got {frame_interval_s}")
    out = []
    groups: dict[tuple[int, int], pd.DataFrame] = {
        (_i(k[0]), _i(k[1])): g.sort_values("point")  # type: ignore[index]
        for k, g in contours.groupby(["particle", "frame"], sort=True)
    }
    smoothed: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def outline(key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if key not in smoothed:
            X = _ccw_screen(groups[key][["y_nm", "x_nm"]].to_numpy(np.float64))
            smoothed[key] = _smooth_outline(X, smooth_nm)
        return smoothed[key]

    for (p, f), gA in groups.items():
        gB = groups.get((p, f + 1))
        if gB is None or len(gA) < 8 or len(gB) < 8:
            continue
        XA, kA = outline((p, f))
        XB, kB = outline((p, f + 1))
        disp, kb = _project(XA, XB, kB, max_displacement_nm)
        # curvature noise: kappa at a point minus the mean of kappa at its images on
        # the previous and the next outline (a linear trend in time cancels)
        resid = np.full(len(XA), np.nan)
        gP = groups.get((p, f - 1))
        if gP is not None and len(gP) >= 8:
            XP, kP = outline((p, f - 1))
            dP, kp = _project(XA, XP, kP, max_displacement_nm)
            resid = np.where(np.isfinite(dP) & np.isfinite(disp), kA - 0.5 * (kp + kb), np.nan)
        pts = np.arange(len(XA))
        out.append(
            pd.DataFrame(
                {
                    "frame": f,
                    "time_s": (f + 0.5) * frame_interval_s,
                    "particle": p,
                    "point": pts,
                    "y_nm": -XA[:, 1],
                    "x_nm": XA[:, 0],
                    "curvature_per_nm": 0.5 * (kA + kb),
                    "curvature_residual_per_nm": resid,
                    "displacement_nm": disp,
                    "v_nm_per_s": disp / frame_interval_s,
                }
            )
        )
    if not out:
        cols = [
            "frame",
            "time_s",
            "particle",
            "point",
            "y_nm",
            "x_nm",
            "curvature_per_nm",
            "curvature_residual_per_nm",
            "displacement_nm",
            "v_nm_per_s",
        ]
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    v = pd.concat(out, ignore_index=True)
    return v[np.isfinite(v["v_nm_per_s"]) & np.isfinite(v["curvature_per_nm"])].reset_index(
        drop=True
    )


# ------------------------------------------------------------------------ fits
def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = w.sum()
    mx, my = (w * x).sum() / sw, (w * y).sum() / sw
    dx = x - mx
    sxx = (w * dx * dx).sum()
    b = (w * dx * (y - my)).sum() / sxx if sxx > 0 else 0.0
    return np.array([my - b * mx, b])


def huber_fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    c: float = 1.345,
    n_iter: int = 50,
    scale: float | None = None,
) -> np.ndarray:
    """Huber-robust straight line ``y = a + b x`` by iteratively reweighted least squares.

    Parameters
    ----------
    x, y : ndarray, shape (n,)
    c : float
        Huber tuning constant (in units of the residual scale).
    n_iter : int
    scale : float, optional
        Fixed residual scale; default re-estimated (MAD) at every iteration.

    Returns
    -------
    ndarray, shape (2,)
        (a, b).

    Examples
    --------
    >>> x = np.linspace(0, 1, 50); y = 1 + 2 * x; y[3] = 100
    >>> np.round(huber_fit(x, y), 3).tolist()
    [1.0, 2.0]
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    beta = _wls(x, y, np.ones_like(x))
    for _ in range(n_iter):
        r = y - beta[0] - beta[1] * x
        sc = scale if scale is not None else 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if sc <= 1e-15:
            break
        w = np.minimum(1.0, c * sc / np.maximum(np.abs(r), 1e-300))
        new = _wls(x, y, w)
        done = np.all(np.abs(new - beta) <= 1e-9 * (np.abs(beta) + sc))
        beta = new
        if done:
            break
    return beta


def _huber_scale(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    r = y - beta[0] - beta[1] * x
    return 1.4826 * float(np.median(np.abs(r - np.median(r))))


RELIABILITY_MIN = 0.5  # below this the attenuation correction is too uncertain to apply fully


def _curvature_reliability(x: np.ndarray, resid: np.ndarray | None) -> tuple[float, float]:
    """Reliability ratio lambda of the curvatures ``x`` and their noise SD.

    The noise variance of ``x`` (a mean of two outlines' curvatures) is a third
    of the (MAD-robust) variance of ``resid`` (one curvature minus the mean of
    two others); ``lambda = 1 - var_noise / var(x)``, clipped at
    :data:`RELIABILITY_MIN`. Without (enough) residuals: lambda 1, noise SD NaN.
    """
    r = resid[np.isfinite(resid)] if resid is not None else np.zeros(0)
    if len(r) < 20:
        return 1.0, float("nan")
    var_u = _mad_var(r) / 3.0
    var_x = float(np.var(x))
    lam = max(1.0 - var_u / var_x, RELIABILITY_MIN) if var_x > 0 else 1.0
    return float(lam), float(np.sqrt(var_u))


def _eiv_corrected(beta: np.ndarray, x: np.ndarray, lam: float) -> np.ndarray:
    """Fit (a, b) with the slope divided by ``lam``, still through the mean of ``x``
    (method of moments, Fuller 1987, sec. 1.1)."""
    a, b = beta
    b_c = b / lam
    return np.array([a - (b_c - b) * float(np.mean(x)), b_c])


def fit_velocity_law(
    vel: pd.DataFrame,
    *,
    n_boot: int = 300,
    seed: int = 0,
    cluster: tuple[str, ...] = ("particle", "frame"),
    errors_in_variables: bool = True,
) -> dict[str, Any]:
    """Fit ``v_n = a + b kappa`` with 95% cluster-bootstrap intervals.

    The measured curvature carries noise (pixel-scale wiggles of the outline
    that the smoothing leaves), which biases an ordinary or Huber fit's slope
    ``b`` towards 0 by the reliability ratio ``lambda = var(kappa_true) /
    var(kappa_measured)`` (regression dilution) and its intercept ``a`` up.
    With ``errors_in_variables`` the noise variance is estimated from the
    outlines themselves (``curvature_residual_per_nm`` of
    :func:`normal_velocities`: a point's curvature against its images on the
    neighbouring frames) and the fit is corrected by the method of moments
    (Fuller 1987), in every bootstrap resample too.

    Parameters
    ----------
    vel : pandas.DataFrame
        From :func:`normal_velocities`.
    n_boot : int
        Bootstrap resamples of whole outlines (clusters).
    seed : int
    cluster : tuple of str
        Columns defining one cluster (default: one outline interval).
    errors_in_variables : bool
        Correct for the curvature's measurement noise (needs the column
        ``curvature_residual_per_nm``; without it the fit is uncorrected).

    Returns
    -------
    dict
        ``a_nm_per_s``, ``b_nm2_per_s``, ``a_ci95``, ``b_ci95``, ``n_points``,
        ``n_clusters``, ``kappa_range_per_nm``; ``curvature_reliability``
        (lambda, 1 when uncorrected), ``curvature_noise_sd_per_nm``, and the
        uncorrected fit ``a_uncorrected_nm_per_s``, ``b_uncorrected_nm2_per_s``.

    References
    ----------
    Fuller, W. A. Measurement Error Models (Wiley, 1987).
    """
    if len(vel) < 3:
        raise InputError("`vel` needs at least 3 points to fit v_n = a + b kappa")
    x = vel["curvature_per_nm"].to_numpy()
    y = vel["v_nm_per_s"].to_numpy()
    resid = (
        vel["curvature_residual_per_nm"].to_numpy()
        if errors_in_variables and "curvature_residual_per_nm" in vel.columns
        else None
    )
    a0, b0 = huber_fit(x, y)
    sc0 = _huber_scale(x, y, np.array([a0, b0]))
    sc = sc0 if sc0 > 1e-15 else None
    lam, noise_sd = _curvature_reliability(x, resid)
    a, b = _eiv_corrected(np.array([a0, b0]), x, lam)
    keys = vel.groupby(list(cluster), sort=False).indices
    groups = list(keys.values())
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(len(groups), size=len(groups))
        idx = np.concatenate([groups[i] for i in pick])
        if np.ptp(x[idx]) <= 0:
            continue
        beta = huber_fit(x[idx], y[idx], scale=sc, n_iter=20)
        lam_i = _curvature_reliability(x[idx], None if resid is None else resid[idx])[0]
        boots.append(_eiv_corrected(beta, x[idx], lam_i))
    B = np.array(boots) if boots else np.full((1, 2), np.nan)
    lo, hi = np.nanpercentile(B, [2.5, 97.5], axis=0)
    return {
        "a_nm_per_s": float(a),
        "b_nm2_per_s": float(b),
        "a_ci95": [float(lo[0]), float(hi[0])],
        "b_ci95": [float(lo[1]), float(hi[1])],
        "a_se": float(np.nanstd(B[:, 0])),
        "b_se": float(np.nanstd(B[:, 1])),
        "n_points": int(len(vel)),
        "n_clusters": int(len(groups)),
        "kappa_range_per_nm": [float(np.min(x)), float(np.max(x))],
        "curvature_reliability": lam,
        "curvature_noise_sd_per_nm": noise_sd,
        "a_uncorrected_nm_per_s": float(a0),
        "b_uncorrected_nm2_per_s": float(b0),
    }


# ----------------------------------------------------------- long-baseline stage fit
def stage_displacements(
    contours: pd.DataFrame,
    *,
    first_frame: int,
    last_frame: int,
    frame_interval_s: float,
    smooth_nm: float = 1.0,
    max_displacement_nm: float = 5.0,
    window_frames: int = 16,
) -> pd.DataFrame:
    """Displacement of each particle's reference outline to every outline of a stage.

    The outlines of frames ``first_frame .. last_frame`` (inclusive) are cut
    into windows of at most ``window_frames`` consecutive frames. In each window
    every point of the middle frame's outline (the reference) is projected
    along its inward normal onto each outline of the window, as
    :func:`normal_velocities` does for consecutive frames. A straight line
    through one point's displacements against time then gives its velocity
    with the jitter of every frame's outline averaged (see
    :func:`fit_stage_velocity_law`), where a velocity between consecutive
    frames carries the jitter of two outlines over one interval.

    Parameters
    ----------
    contours : pandas.DataFrame
        Contours with ``particle`` (``frame``, ``point``, ``y_nm``, ``x_nm``).
    first_frame, last_frame : int
        Outlines of the stage, both ends included.
    frame_interval_s : float
    smooth_nm : float
        Arc-length smoothing of every outline (nm), as in :func:`normal_velocities`.
    max_displacement_nm : float
        Projections farther than this times the number of frames between the
        two outlines (at least 1) are dropped.
    window_frames : int
        Longest window (frames): a reference outline serves at most
        ``window_frames // 2`` frames either side, so that the normal paths
        stay short while the particle changes shape. A particle seen on fewer
        than 3 outlines of the stage, or a window of fewer than 3, is skipped.

    Returns
    -------
    pandas.DataFrame
        One row per reference point and outline: ``particle``, ``window``,
        ``point`` (index on the reference outline), ``ref_frame``, ``frame``,
        ``time_s`` (of ``frame``), ``y_nm``, ``x_nm`` (of the reference point),
        ``displacement_nm`` (inward positive, 0 on the reference itself) and
        ``curvature_per_nm`` (of the outline of ``frame`` at the point's image).
    """
    if frame_interval_s <= 0:
        raise InputError(f"`frame_interval_s` must be > 0, got {frame_interval_s}")
    if window_frames < 3:
        raise InputError(f"`window_frames` must be >= 3, got {window_frames}")
    sel = contours[(contours["frame"] >= first_frame) & (contours["frame"] <= last_frame)]
    groups: dict[tuple[int, int], pd.DataFrame] = {
        (_i(k[0]), _i(k[1])): g.sort_values("point")  # type: ignore[index]
        for k, g in sel.groupby(["particle", "frame"], sort=True)
        if len(g) >= 8
    }
    out = []
    for p in sorted({k[0] for k in groups}):
        frames = sorted(f for q, f in groups if q == p)
        if len(frames) < 3:
            continue
        n_win = int(np.ceil(len(frames) / window_frames))
        for w, win in enumerate(np.array_split(np.array(frames), n_win)):
            if len(win) < 3:
                continue
            ref = int(win[len(win) // 2])
            sm = {
                int(f): _smooth_outline(
                    _ccw_screen(groups[(p, int(f))][["y_nm", "x_nm"]].to_numpy(np.float64)),
                    smooth_nm,
                )
                for f in win
            }
            XR, kR = sm[ref]
            for f in win:
                f = int(f)
                if f == ref:
                    disp, kb = np.zeros(len(XR)), kR
                else:
                    lim = max_displacement_nm * max(1, abs(f - ref))
                    disp, kb = _project(XR, sm[f][0], sm[f][1], lim)
                out.append(
                    pd.DataFrame(
                        {
                            "particle": p,
                            "window": w,
                            "point": np.arange(len(XR)),
                            "ref_frame": ref,
                            "frame": f,
                            "time_s": f * frame_interval_s,
                            "y_nm": -XR[:, 1],
                            "x_nm": XR[:, 0],
                            "displacement_nm": disp,
                            "curvature_per_nm": kb,
                        }
                    )
                )
    cols = ["particle", "window", "point", "ref_frame", "frame", "time_s", "y_nm", "x_nm"]
    cols += ["displacement_nm", "curvature_per_nm"]
    if not out:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    d = pd.concat(out, ignore_index=True)
    return d[np.isfinite(d["displacement_nm"]) & np.isfinite(d["curvature_per_nm"])].reset_index(
        drop=True
    )


def _point_lines(disp: pd.DataFrame, drop_frames: np.ndarray | None = None):
    """Per reference point: OLS velocity, mean curvature and the noise variance of that mean.

    The curvature's noise variance per outline is the residual variance of a
    straight line through the point's curvatures against time (robust: MAD
    over all points, ``n / (n - 2)`` degrees of freedom); that of the mean
    over ``n`` outlines is it divided by ``n``.
    """
    d = disp if drop_frames is None else disp[~disp["frame"].isin(drop_frames)]
    key = ["particle", "window", "point"]
    g = d.groupby(key, sort=False)
    t = d["time_s"].to_numpy()
    tc = t - g["time_s"].transform("mean").to_numpy()
    y = d["displacement_nm"].to_numpy()
    k = d["curvature_per_nm"].to_numpy()
    kc = k - g["curvature_per_nm"].transform("mean").to_numpy()
    yc = y - g["displacement_nm"].transform("mean").to_numpy()
    df = pd.DataFrame({"id": g.ngroup().to_numpy(), "tt": tc * tc, "ty": tc * yc, "tk": tc * kc})
    s = df.groupby("id", sort=True).sum()
    ids = df["id"].to_numpy()
    sxx = s["tt"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        v = s["ty"].to_numpy() / sxx
        kslope = s["tk"].to_numpy() / sxx
    resid = kc - kslope[ids] * tc
    counts = np.bincount(ids, minlength=len(sxx))
    kappa = np.bincount(ids, weights=k, minlength=len(sxx)) / np.maximum(counts, 1)
    ok_pt = (counts >= 3) & (sxx > 0)
    use = ok_pt[ids]
    n = counts[ids][use]
    dof = np.mean(n / np.maximum(n - 2, 1)) if use.any() else np.nan
    var1 = _mad_var(resid[use]) * dof if use.sum() >= 20 else np.nan
    noise_var = var1 / np.maximum(counts, 1)
    return v[ok_pt], kappa[ok_pt], noise_var[ok_pt]


def _stage_law(disp: pd.DataFrame, eiv: bool, drop_frames: np.ndarray | None = None):
    v, kappa, noise_var = _point_lines(disp, drop_frames)
    if len(v) < 3 or np.ptp(kappa) <= 0:
        return None
    a0, b0 = huber_fit(kappa, v)
    var_x = float(np.var(kappa))
    lam = 1.0
    nv = float(np.mean(noise_var)) if np.all(np.isfinite(noise_var)) else np.nan
    if eiv and np.isfinite(nv) and var_x > 0:
        lam = max(1.0 - nv / var_x, RELIABILITY_MIN)
    a, b = _eiv_corrected(np.array([a0, b0]), kappa, lam)
    return a, b, a0, b0, lam, nv, kappa, v


JACKKNIFE_GROUPS = 20  # most refits of the jackknife: longer stages leave out blocks of frames


def fit_stage_velocity_law(
    disp: pd.DataFrame, *, errors_in_variables: bool = True
) -> dict[str, Any]:
    """Fit ``v_n = a + b kappa`` over a stage from long-baseline point velocities.

    Each reference point's velocity is the least-squares slope of its
    displacements against time (from :func:`stage_displacements`), its
    curvature the mean over the same outlines. Per-frame jitter of the
    measured outlines then enters a velocity as ``sigma / sqrt(sum (t - t_mean)^2)``
    instead of ``sigma sqrt(2) / dt``, and the curvature's noise is divided by
    the number of outlines, so the errors-in-variables correction (as in
    :func:`fit_velocity_law`) is small. The line is a Huber fit over all points.
    The 95% intervals come from a jackknife over frames (each outline left out
    in turn, the whole fit repeated; beyond :data:`JACKKNIFE_GROUPS` frames,
    that many blocks of consecutive frames), ``estimate +- t(0.975, g - 1) SE``
    with ``g`` left-out groups: they hold the noise that is independent between
    frames, not a bias of the outlines that drifts over the stage.

    Parameters
    ----------
    disp : pandas.DataFrame
        From :func:`stage_displacements`.
    errors_in_variables : bool
        Correct the slope for the curvature's measurement noise.

    Returns
    -------
    dict
        The keys of :func:`fit_velocity_law` (``n_clusters``: the groups of
        frames the jackknife leaves out), and
        ``method`` ``"baseline"``, ``n_frames``.

    Examples
    --------
    >>> from lptem_dask.analysis.etching import _example_stage_displacements
    >>> fit = fit_stage_velocity_law(_example_stage_displacements())
    >>> round(fit["a_nm_per_s"], 3), round(fit["b_nm2_per_s"], 3)
    (0.1, 0.5)
    """
    from scipy.stats import t as student_t

    if len(disp) < 3:
        raise InputError("`disp` needs at least 3 rows to fit v_n = a + b kappa")
    full = _stage_law(disp, errors_in_variables)
    if full is None:
        raise InputError(
            "`disp` holds no point seen on 3 or more outlines with a spread of curvature; "
            "give a stage of at least 3 frames"
        )
    a, b, a0, b0, lam, nv, kappa, v = full
    frames = np.unique(disp["frame"].to_numpy())
    blocks = np.array_split(frames, min(len(frames), JACKKNIFE_GROUPS))
    jk = [_stage_law(disp, errors_in_variables, block) for block in blocks]
    J = np.array([[r[0], r[1]] for r in jk if r is not None])
    m = len(J)
    if m >= 3:
        se = np.sqrt((m - 1) / m * np.sum((J - J.mean(0)) ** 2, axis=0))
        q = float(student_t.ppf(0.975, m - 1))
    else:
        se, q = np.full(2, np.nan), np.nan
    return {
        "a_nm_per_s": float(a),
        "b_nm2_per_s": float(b),
        "a_ci95": [float(a - q * se[0]), float(a + q * se[0])],
        "b_ci95": [float(b - q * se[1]), float(b + q * se[1])],
        "a_se": float(se[0]),
        "b_se": float(se[1]),
        "n_points": int(len(v)),
        "n_clusters": int(len(blocks)),
        "n_frames": int(len(frames)),
        "kappa_range_per_nm": [float(np.min(kappa)), float(np.max(kappa))],
        "curvature_reliability": float(lam),
        "curvature_noise_sd_per_nm": float(np.sqrt(nv)) if np.isfinite(nv) else float("nan"),
        "a_uncorrected_nm_per_s": float(a0),
        "b_uncorrected_nm2_per_s": float(b0),
        "method": "baseline",
    }


def _try_stage_fit(disp: pd.DataFrame) -> dict[str, Any] | None:
    """:func:`fit_stage_velocity_law`, or None where the stage has too little to fit."""
    try:
        return fit_stage_velocity_law(disp)
    except InputError:
        return None


def _example_stage_displacements(
    n_frames: int = 9, a: float = 0.1, b: float = 0.5, dt: float = 2.0
) -> pd.DataFrame:
    """Exact displacements of a circle-capped outline etched at ``v = a + b kappa`` (doctest)."""
    kappa = np.r_[np.zeros(40), np.full(40, 0.1)]
    rows = []
    for f in range(n_frames):
        t = (f - n_frames // 2) * dt
        rows.append(
            pd.DataFrame(
                {
                    "particle": 0,
                    "window": 0,
                    "point": np.arange(len(kappa)),
                    "ref_frame": n_frames // 2,
                    "frame": f,
                    "time_s": f * dt,
                    "displacement_nm": (a + b * kappa) * t,
                    "curvature_per_nm": kappa,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def interval_rates(vel: pd.DataFrame) -> pd.DataFrame:
    """Per frame interval: ``a_t``, ``b_t`` of a robust fit on all particles' points.

    Returns
    -------
    pandas.DataFrame
        ``frame`` (interval start), ``time_s`` (mid), ``a_nm_per_s``,
        ``b_nm2_per_s``, ``mean_curvature_per_nm`` (of the interval's points),
        ``v_mean_nm_per_s`` (the fit at that curvature, ``a + b kappa_mean``: unlike
        ``a``, its error is nearly uncorrelated with ``b``'s), ``n_points``.
    """
    rows = []
    for f, g in vel.groupby("frame", sort=True):
        if len(g) < 10 or np.ptp(g["curvature_per_nm"]) <= 0:
            continue
        kappa = g["curvature_per_nm"].to_numpy()
        a, b = huber_fit(kappa, g["v_nm_per_s"].to_numpy())
        rows.append(
            {
                "frame": _i(f),
                "time_s": float(g["time_s"].iloc[0]),
                "a_nm_per_s": a,
                "b_nm2_per_s": b,
                "mean_curvature_per_nm": float(kappa.mean()),
                "v_mean_nm_per_s": a + b * float(kappa.mean()),
                "n_points": len(g),
            }
        )
    return pd.DataFrame(rows)


def _noise_sd(y: np.ndarray, floor: float) -> float:
    return float(max(np.sqrt(_mad_var(np.diff(y)) / 2.0), floor))


def detect_stages(
    series: np.ndarray,
    *,
    max_breakpoints: int = 3,
    min_size: int = 3,
    rel_floor: float = 0.03,
    method: str = "cumulative",
    skip_transition: bool = True,
) -> dict[str, Any]:
    """Stage changes in per-interval rate series; the number of changes by BIC.

    Parameters
    ----------
    series : ndarray, shape (n,) or (n, k)
        k series of per-frame-interval rates sharing their changes (e.g. ``a``
        and ``b * kappa_rms``, both nm/s).
    max_breakpoints : int
    min_size : int
        Fewest intervals per stage (the interval holding a change counts to the
        stage it starts).
    rel_floor : float
        Floor of the noise SD, relative to the median of the summed absolute
        values of the series (noise-free data would otherwise split on any drift).
    method : {"cumulative", "piecewise_constant"}
        ``"cumulative"`` (default, :func:`detect_stages_cumulative`): continuous
        piecewise-linear fits of the cumulative sums (the etched depth), with the
        noise of a measured outline position (white per frame) and of the rates
        (white per interval) both modelled. ``"piecewise_constant"``: the rates
        themselves cut into constant pieces by dynamic programming, their noise
        taken as white (:func:`detect_stages_piecewise_constant`).
    skip_transition : bool
        ``"piecewise_constant"`` only (see there).

    Returns
    -------
    dict
        ``breakpoints`` (indices of the intervals that hold a change; a new stage
        starts there), ``n_breakpoints``, ``bic`` (by number of breakpoints,
        0..max), ``sigma`` (per series, SD of a rate's noise), ``method``.

    Examples
    --------
    >>> y = np.r_[np.zeros(10), np.ones(10)] + 0.01 * np.random.default_rng(0).standard_normal(20)
    >>> detect_stages(y)["breakpoints"]
    [10]
    """
    if method == "cumulative":
        return detect_stages_cumulative(
            series, max_breakpoints=max_breakpoints, min_size=min_size, rel_floor=rel_floor
        )
    if method == "piecewise_constant":
        return detect_stages_piecewise_constant(
            series,
            max_breakpoints=max_breakpoints,
            min_size=min_size,
            rel_floor=rel_floor,
            skip_transition=skip_transition,
        )
    raise InputError(
        f"detect_stages: unknown method {method!r}; use 'cumulative' or 'piecewise_constant'"
    )


def _mad_var(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    if len(x) < 3:
        return 0.0
    return float((1.4826 * np.median(np.abs(x - np.median(x)))) ** 2)


def _rate_noise_components(r: np.ndarray, floor: float) -> tuple[float, float]:
    """Variances (rate noise, position noise) of one per-interval rate series.

    Rates ``r_k = (P_{k+1} - P_k) / dt`` of positions ``P`` carrying white jitter
    of variance ``se2`` (a frame's whole outline off by a little), plus rate noise
    of variance ``sw2`` white across intervals: the differences ``r_{k+1} - r_k``
    then have variance ``2 sw2 + 6 se2`` and ``r_{k+2} - r_k`` ``2 sw2 + 4 se2``
    (robust variances, median absolute deviation: a stage change is one outlier).
    """
    v1 = _mad_var(np.diff(r))
    v2 = _mad_var(r[2:] - r[:-2])
    se2 = max(0.5 * (v1 - v2), 0.0)
    sw2 = max(0.5 * (3.0 * v2 - 2.0 * v1), 0.0)
    if sw2 + 2.0 * se2 < floor**2:
        sw2 = floor**2 - 2.0 * se2
    return sw2, se2


N_REFINE = 20  # candidate change sets per number of changes whose positions are refined
DELTA_GRID = np.linspace(0.0, 1.0, 9)  # where inside an interval a change may lie


def detect_stages_cumulative(
    series: np.ndarray,
    *,
    max_breakpoints: int = 3,
    min_size: int = 3,
    rel_floor: float = 0.03,
    max_combinations: int = 20000,
    max_intervals: int = 2000,
) -> dict[str, Any]:
    """Stage changes as kinks of the cumulative rates, by generalised least squares.

    The cumulative sum of each rate series (the etched depth, in rate x interval)
    is fitted by a continuous piecewise-linear function whose knots lie inside the
    intervals holding a change (where inside, to an eighth of an interval, is
    fitted too). Its noise has two parts, both
    estimated from the series (:func:`_rate_noise_components`): a random walk
    (rate noise, white across intervals) and white jitter of each position (a
    frame's outline measured a little off; it makes successive rates
    anti-correlated, which cutting the rates themselves into constant pieces
    mistakes for changes or misses changes behind). Fits are generalised least
    squares with that covariance; the intervals holding the knots are found by
    exhaustive search (knots mid-interval) when there are at most
    ``max_combinations`` candidate sets per number of knots, else greedily with
    coordinate-wise refinement; the best sets then get their knots' places inside
    the intervals fitted; the number of knots minimises BIC
    (``k (2 + m) + m`` parameters for ``m`` changes and ``k`` series: per series
    an intercept, a slope and a change of slope per knot; per knot its place).

    Parameters
    ----------
    series : ndarray, shape (n,) or (n, k)
    max_breakpoints, min_size : int
    rel_floor : float
        Floor of the total rate-noise SD relative to the series' median summed
        absolute value.
    max_combinations : int
    max_intervals : int
        Longer records are averaged over blocks of consecutive intervals first
        (the fit holds (n + 1)^2-sized matrices); changes are then located to a
        block, and ``block_intervals`` in the result says how many intervals one is.

    Returns
    -------
    dict
        As :func:`detect_stages`, plus ``change_positions`` (the knots, in
        intervals from the first frame), ``rate_noise_sd`` and
        ``position_noise_sd`` (per series, rate units and rate x interval),
        ``block_intervals``.
    """
    Y = np.asarray(series, np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if len(Y) > max_intervals:
        q = int(np.ceil(len(Y) / max_intervals))
        nb = int(np.ceil(len(Y) / q))
        blocks = np.array([Y[i * q : (i + 1) * q].mean(axis=0) for i in range(nb)])
        logger.info("detect_stages: %d intervals averaged in blocks of %d", len(Y), q)
        res = detect_stages_cumulative(
            blocks,
            max_breakpoints=max_breakpoints,
            min_size=max(1, int(np.ceil(min_size / q))),
            rel_floor=rel_floor,
            max_combinations=max_combinations,
            max_intervals=max_intervals,
        )
        res["breakpoints"] = [int(f * q) for f in res["breakpoints"]]
        res["change_positions"] = [float(x * q) for x in res["change_positions"]]
        res["block_intervals"] = q
        return res
    return _detect_stages_cumulative(
        Y,
        max_breakpoints=max_breakpoints,
        min_size=min_size,
        rel_floor=rel_floor,
        max_combinations=max_combinations,
    )


def _detect_stages_cumulative(
    Y: np.ndarray,
    *,
    max_breakpoints: int,
    min_size: int,
    rel_floor: float,
    max_combinations: int,
) -> dict[str, Any]:
    from itertools import combinations
    from math import comb

    from scipy.linalg import cholesky, solve_triangular

    n, k = Y.shape
    N = n + 1
    t = np.arange(N, dtype=np.float64)
    P = np.vstack([np.zeros(k), np.cumsum(Y, axis=0)])
    floor = rel_floor * max(float(np.median(np.sum(np.abs(Y), axis=1))), 1e-12)
    # a change at time f + delta (0 <= delta <= 1, inside interval f): the hinge
    # max(t - f - delta, 0) at the frames t is ramp_{f+1} + (1 - delta) step_{f+1}
    ramp = np.maximum(t[:, None] - (np.arange(n) + 1.0)[None, :], 0.0)  # (N, n)
    step = (t[:, None] >= (np.arange(n) + 1.0)[None, :]).astype(np.float64)
    base = np.column_stack([np.ones(N), t])
    comps, whitened = [], []
    for j in range(k):
        sw2, se2 = _rate_noise_components(Y[:, j], floor)
        comps.append((sw2, se2))
        cov = sw2 * np.minimum.outer(t, t) + se2 * np.eye(N)
        cov[0, 0] += 1e-12 * floor**2 + 1e-300  # P_0 = 0 exactly when se2 = 0
        L = cholesky(cov, lower=True)
        whitened.append(
            (
                solve_triangular(L, P[:, j], lower=True),
                solve_triangular(L, base, lower=True),
                solve_triangular(L, ramp, lower=True),
                solve_triangular(L, step, lower=True),
            )
        )

    def cost(knots: tuple[int, ...], deltas: tuple[float, ...] | None = None) -> float:
        total = 0.0
        kn = list(knots)
        w = 1.0 - (np.full(len(kn), 0.5) if deltas is None else np.asarray(deltas))
        for z, wb, wr, ws in whitened:
            X = np.column_stack([wb, wr[:, kn] + ws[:, kn] * w]) if knots else wb
            beta, *_ = np.linalg.lstsq(X, z, rcond=None)
            r = z - X @ beta
            total += float(r @ r)
        return total

    def allowed(knots: tuple[int, ...]) -> bool:
        edges = [0, *knots, n]
        return all(edges[i + 1] - edges[i] >= min_size for i in range(len(edges) - 1))

    def best_added(fixed: list[int]) -> tuple[float, tuple[int, ...]] | None:
        """The best allowed set of ``fixed`` plus one more knot (None: no room)."""
        sets = [tuple(sorted([*fixed, f])) for f in range(1, n) if f not in fixed]
        scored = [(cost(kn), kn) for kn in sets if allowed(kn)]
        return min(scored) if scored else None

    def refine(knots: tuple[int, ...]) -> tuple[float, tuple[int, ...], tuple[float, ...]]:
        """Where inside its interval each change lies (coordinate-wise, on a grid)."""
        deltas = [0.5] * len(knots)
        c = cost(knots, tuple(deltas))
        for _ in range(3):
            moved = False
            for i in range(len(knots)):
                for d in DELTA_GRID:
                    trial = deltas.copy()
                    trial[i] = float(d)
                    ct = cost(knots, tuple(trial))
                    if ct < c - 1e-12:
                        c, deltas, moved = ct, trial, True
            if not moved:
                break
        return c, knots, tuple(deltas)

    best: dict[int, tuple[float, tuple[int, ...], tuple[float, ...]]] = {0: (cost(()), (), ())}
    for m in range(1, max_breakpoints + 1):
        if comb(n, m) <= max_combinations:
            cands = sorted((cost(kn), kn) for kn in combinations(range(1, n), m) if allowed(kn))
            if not cands:
                break
            best[m] = min(refine(kn) for _, kn in cands[:N_REFINE])
            continue
        # greedy: add the best new knot to the m - 1 solution, then refine each
        start = best_added(list(best[m - 1][1]))
        if start is None:
            break
        cur = start
        for _ in range(10):
            changed = False
            for i in range(m):
                cand = best_added([f for q, f in enumerate(cur[1]) if q != i])
                if cand is not None and cand[0] < cur[0] - 1e-12:
                    cur, changed = cand, True
            if not changed:
                break
        best[m] = refine(cur[1])
    bic = [best[m][0] + (k * (2 + m) + m) * np.log(N) for m in sorted(best)]
    nbp = int(np.argmin(bic))
    return {
        "breakpoints": [int(f) for f in best[nbp][1]],
        "change_positions": [f + d for f, d in zip(best[nbp][1], best[nbp][2], strict=True)],
        "n_breakpoints": nbp,
        "bic": [float(b) for b in bic],
        "sigma": [float(np.sqrt(sw2 + 2.0 * se2)) for sw2, se2 in comps],
        "rate_noise_sd": [float(np.sqrt(sw2)) for sw2, _ in comps],
        "position_noise_sd": [float(np.sqrt(se2)) for _, se2 in comps],
        "method": "cumulative",
        "block_intervals": 1,
    }


def detect_stages_piecewise_constant(
    series: np.ndarray,
    *,
    max_breakpoints: int = 3,
    min_size: int = 3,
    rel_floor: float = 0.03,
    skip_transition: bool = True,
) -> dict[str, Any]:
    """Optimal piecewise-constant segmentation of (several) series, number of pieces by BIC.

    Parameters
    ----------
    series : ndarray, shape (n,) or (n, k)
        k series sharing breakpoints, in comparable units (e.g. per-interval
        ``a`` and ``b * kappa_rms``, both nm/s).
    max_breakpoints : int
    min_size : int
        Fewest points per segment.
    rel_floor : float
        Floor of the noise SD, relative to the median of the summed absolute
        values of the series (noise-free data would otherwise split on any drift).
    skip_transition : bool
        Leave the first point of every segment after the first out of the
        cost: a stage change inside a frame interval gives that interval
        mixed rates; the breakpoint is then placed on it.

    Returns
    -------
    dict
        ``breakpoints`` (indices where a new segment starts), ``n_breakpoints``,
        ``bic`` (by number of breakpoints, 0..max), ``sigma`` (per series).

    Examples
    --------
    >>> y = np.r_[np.zeros(10), np.ones(10)] + 0.01 * np.random.default_rng(0).standard_normal(20)
    >>> detect_stages_piecewise_constant(y, skip_transition=False)["breakpoints"]
    [10]
    """
    Y = np.asarray(series, np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, k = Y.shape
    floor = rel_floor * max(float(np.median(np.sum(np.abs(Y), axis=1))), 1e-12)
    sig = np.array([_noise_sd(Y[:, j], floor) for j in range(k)])
    Z = Y / sig
    c1 = np.vstack([np.zeros(k), np.cumsum(Z, axis=0)])
    c2 = np.vstack([np.zeros(k), np.cumsum(Z * Z, axis=0)])

    def cost(i: int, j: int) -> float:  # segment [i, j)
        m = j - i
        s1 = c1[j] - c1[i]
        return float(np.sum(c2[j] - c2[i] - s1 * s1 / m))

    K = max_breakpoints + 1
    INF = np.inf
    best = np.full((K + 1, n + 1), INF)
    arg = np.zeros((K + 1, n + 1), np.int64)
    best[0, 0] = 0.0
    for seg in range(1, K + 1):
        for j in range(seg * min_size, n + 1):
            for i in range((seg - 1) * min_size, j - min_size + 1):
                if best[seg - 1, i] == INF:
                    continue
                start = i + 1 if (skip_transition and i > 0) else i
                v = best[seg - 1, i] + cost(start, j)
                if v < best[seg, j]:
                    best[seg, j] = v
                    arg[seg, j] = i
    bic = []
    for seg in range(1, K + 1):
        p = seg * k + (seg - 1)
        bic.append(float(best[seg, n] + p * np.log(n)) if np.isfinite(best[seg, n]) else INF)
    nseg = int(np.argmin(bic)) + 1
    bps = []
    j = n
    for seg in range(nseg, 0, -1):
        i = int(arg[seg, j])
        if seg > 1:
            bps.append(i)
        j = i
    return {
        "breakpoints": sorted(bps),
        "n_breakpoints": nseg - 1,
        "bic": bic,
        "sigma": sig.tolist(),
        "method": "piecewise_constant",
    }


def piecewise_linear_fit(t_s: np.ndarray, y: np.ndarray, *, knots_s: list[float]) -> dict[str, Any]:
    """Continuous piecewise-linear least-squares fit with knots at given times.

    Parameters
    ----------
    t_s, y : ndarray, shape (n,)
    knots_s : list of float
        Times where the slope may change (e.g. detected stage changes).

    Returns
    -------
    dict
        ``slopes`` (one per piece, units of y per s), ``intercept`` (y at
        ``t_s[0]``), ``fitted`` (ndarray, shape (n,)), ``rms`` (residual RMS).

    Examples
    --------
    >>> t = np.arange(10.0); y = np.where(t < 4, 10 - t, 6 - 2 * (t - 4))
    >>> np.round(piecewise_linear_fit(t, y, knots_s=[4.0])["slopes"], 6).tolist()
    [-1.0, -2.0]
    """
    t = np.asarray(t_s, np.float64)
    yy = np.asarray(y, np.float64)
    knots = [k for k in knots_s if t.min() < k < t.max()]
    A = np.column_stack([np.ones_like(t), t - t[0]] + [np.maximum(t - k, 0.0) for k in knots])
    coef = np.linalg.lstsq(A, yy, rcond=None)[0]
    fitted = A @ coef
    return {
        "slopes": np.cumsum(coef[1:]).tolist(),
        "intercept": float(coef[0]),
        "fitted": fitted,
        "rms": float(np.sqrt(np.mean((yy - fitted) ** 2))),
    }


# ---------------------------------------------------------------------- driver
def analyze_etching(
    contours: pd.DataFrame,
    *,
    frame_interval_s: float,
    tracks: pd.DataFrame | None = None,
    max_breakpoints: int = 3,
    min_stage_intervals: int = 3,
    stage_method: str = "cumulative",
    guard_intervals: int = 1,
    smooth_nm: float = 1.0,
    rate_fit: str = "interval",
    n_boot: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Full etching analysis of a contours table.

    Parameters
    ----------
    contours : pandas.DataFrame
        ``schema.CONTOURS`` columns (optionally with ``particle``).
    frame_interval_s : float
    tracks : pandas.DataFrame, optional
        Particle identities (``frame``, ``label``, ``particle``).
    max_breakpoints, min_stage_intervals : int
        Stage detection (see :func:`detect_stages`).
    stage_method : {"cumulative", "piecewise_constant"}
        ``method`` of :func:`detect_stages`.
    guard_intervals : int
        Intervals on each side of a breakpoint left out of the per-stage fits.
    smooth_nm : float
        Smoothing of the outlines along the arc (see :func:`normal_velocities`).
    rate_fit : {"interval", "baseline"}
        How each stage's ``(a, b)`` are fitted. ``"interval"``:
        :func:`fit_velocity_law` on the velocities between consecutive frames,
        95% intervals from a cluster bootstrap. ``"baseline"``:
        :func:`fit_stage_velocity_law` on each point's displacements to every
        outline of the stage (:func:`stage_displacements`), intervals from a
        jackknife over frames; several times more precise, and so more
        exposed to a segmentation bias that drifts while the particle changes
        (README, "Etching").
    n_boot, seed : int
        Bootstrap of the intervals (``rate_fit="interval"``).

    Returns
    -------
    dict
        ``result`` (JSON-ready: ``stage_change_frames`` (the frame interval
        ``[f, f + 1]`` that holds each change) and ``stage_change_times_s``
        (where inside it the cumulative method placed the change, to an eighth of
        an interval; the middle, ``(f + 0.5) dt``, for ``"piecewise_constant"``), stages,
        per-stage population fits, per-particle fits, size summaries) and
        the tables ``sizes``, ``velocities``, ``rates``.
    """
    if rate_fit not in ("interval", "baseline"):
        raise InputError(f"`rate_fit` must be 'interval' or 'baseline', got {rate_fit!r}")
    if "particle" not in contours.columns:
        contours = assign_particles(contours, tracks=tracks)
    sizes = shape_metrics(contours, frame_interval_s=frame_interval_s)
    vel = normal_velocities(contours, frame_interval_s=frame_interval_s, smooth_nm=smooth_nm)
    rates = interval_rates(vel)
    if len(rates) < 2 * min_stage_intervals:
        seg = {"breakpoints": [], "n_breakpoints": 0, "bic": [], "sigma": []}
    else:
        # two rate series in nm/s whose errors are nearly independent (as the
        # detection assumes): the velocity at the interval's mean curvature, and b
        # scaled by the rms curvature (a_t and b_t themselves anti-correlate)
        kappa_rms = float(np.sqrt(np.mean(vel["curvature_per_nm"] ** 2)))
        seg = detect_stages(
            np.column_stack([rates["v_mean_nm_per_s"], rates["b_nm2_per_s"] * kappa_rms]),
            max_breakpoints=max_breakpoints,
            min_size=min_stage_intervals,
            method=stage_method,
        )
    rf = rates["frame"].to_numpy() if len(rates) else np.zeros(0, np.int64)
    bps: list[int] = list(seg["breakpoints"])  # type: ignore[call-overload]
    change_frames = [int(rf[i]) for i in bps]
    edges = (
        [int(rf.min()) if len(rf) else 0] + change_frames + [int(rf.max()) + 1 if len(rf) else 0]
    )
    stages = []
    vel = vel.assign(stage=np.searchsorted(np.array(change_frames), vel["frame"], side="right"))
    for s in range(len(edges) - 1):
        lo = edges[s] + (guard_intervals if s > 0 else 0)
        hi = edges[s + 1] - (guard_intervals if s < len(edges) - 2 else 0)
        entry: dict[str, Any] = {
            "stage": s,
            "start_frame": edges[s],
            "end_frame": edges[s + 1],
            "start_time_s": edges[s] * frame_interval_s,
        }
        if rate_fit == "baseline":
            # outlines lo .. hi: the ends of the intervals lo .. hi - 1
            disp = stage_displacements(
                contours,
                first_frame=lo,
                last_frame=hi,
                frame_interval_s=frame_interval_s,
                smooth_nm=smooth_nm,
            )
            if disp["frame"].nunique() >= 3 and len(disp) >= 10:
                entry["population"] = _try_stage_fit(disp)
                per = {}
                for p, g in disp.groupby("particle"):
                    if g["frame"].nunique() >= 3:
                        per[str(_i(p))] = _try_stage_fit(g)
                entry["particles"] = {k: v for k, v in per.items() if v is not None}
                if entry["population"] is None:
                    del entry["population"]
        elif len(sel := vel[(vel["frame"] >= lo) & (vel["frame"] < hi)]) >= 10:
            entry["population"] = fit_velocity_law(sel, n_boot=n_boot, seed=seed + s)
            per = {}
            for p, g in sel.groupby("particle"):
                if g["frame"].nunique() >= 2 and len(g) >= 10:
                    per[str(_i(p))] = fit_velocity_law(
                        g, n_boot=max(n_boot // 3, 50), seed=seed + s
                    )
            entry["particles"] = per
        stages.append(entry)
    summary = []
    # a change inside interval [t_f, t_f+1]: where the cumulative fit placed it, else
    # its middle
    pos: list[float] = list(seg.get("change_positions") or [])  # type: ignore[call-overload]
    offsets = [float(q) - i for q, i in zip(pos, bps, strict=True)] if pos else [0.5] * len(bps)
    knots = [(f + d) * frame_interval_s for f, d in zip(change_frames, offsets, strict=True)]
    for p, g in sizes.groupby("particle"):
        g = g.sort_values("frame")
        rates_pl = {}
        if len(g) >= 2 * (len(knots) + 2):
            for c in ("length_nm", "width_nm"):
                pl = piecewise_linear_fit(g["time_s"].to_numpy(), g[c].to_numpy(), knots_s=knots)
                rates_pl[f"{c}_slopes_per_s"] = pl["slopes"]
        summary.append(
            {
                "particle": _i(p),
                **rates_pl,
                "first_frame": int(g["frame"].iloc[0]),
                "last_frame": int(g["frame"].iloc[-1]),
                **{
                    f"{c}_start": float(g[c].iloc[0])
                    for c in ("length_nm", "width_nm", "aspect_ratio", "area_nm2", "volume_nm3")
                },
                **{
                    f"{c}_end": float(g[c].iloc[-1])
                    for c in ("length_nm", "width_nm", "aspect_ratio", "area_nm2", "volume_nm3")
                },
            }
        )
    result = {
        "frame_interval_s": frame_interval_s,
        "rate_fit": rate_fit,
        "n_particles": int(sizes["particle"].nunique()) if len(sizes) else 0,
        "stage_change_frames": change_frames,
        "stage_change_times_s": knots,
        "segmentation": seg,
        "stages": stages,
        "particles": summary,
    }
    return {"result": result, "sizes": sizes, "velocities": vel, "rates": rates}


# --------------------------------------------------------------------- figures
def plot_etching(analysis: dict[str, Any], contours: pd.DataFrame | None = None, path=None):
    """Sizes vs time with stages, v_n vs kappa per stage, and outlines coloured by velocity."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    res, sizes, vel = analysis["result"], analysis["sizes"], analysis["velocities"]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    knots = list(res["stage_change_times_s"])
    for p, g in sizes.groupby("particle"):
        for col, mk in (("length_nm", "o"), ("width_nm", "s")):
            line = ax[0].plot(g["time_s"], g[col], mk, ms=2, label=f"{col[:-3]} {p}")
            if len(g) >= 2 * (len(knots) + 2):
                pl = piecewise_linear_fit(g["time_s"].to_numpy(), g[col].to_numpy(), knots_s=knots)
                ax[0].plot(g["time_s"], pl["fitted"], "-", lw=0.8, color=line[0].get_color())
    for t in res["stage_change_times_s"]:
        ax[0].axvline(t, color="k", lw=0.8)
    ax[0].set(xlabel="time (s)", ylabel="size (nm)")
    ax[0].legend(fontsize=6, ncol=2)
    kk = np.linspace(vel["curvature_per_nm"].min(), vel["curvature_per_nm"].max(), 10)
    for st in res["stages"]:
        sel = vel[vel["stage"] == st["stage"]]
        sc = ax[1].plot(sel["curvature_per_nm"], sel["v_nm_per_s"], ".", ms=1, alpha=0.3)
        if "population" in st:
            f = st["population"]
            ax[1].plot(
                kk,
                f["a_nm_per_s"] + f["b_nm2_per_s"] * kk,
                color=sc[0].get_color(),
                label=f"stage {st['stage']}: a={f['a_nm_per_s']:.3g}, b={f['b_nm2_per_s']:.3g}",
            )
    ax[1].set(xlabel="curvature (1/nm)", ylabel="v_n (nm/s)")
    ax[1].legend(fontsize=7)
    if len(vel):
        p0 = vel["particle"].iloc[0]
        sel = vel[vel["particle"] == p0]
        vmax = np.nanpercentile(np.abs(sel["v_nm_per_s"]), 98)
        im = ax[2].scatter(
            sel["x_nm"], sel["y_nm"], c=sel["v_nm_per_s"], s=2, cmap="viridis", vmin=0, vmax=vmax
        )
        ax[2].invert_yaxis()
        ax[2].set_aspect("equal")
        ax[2].set(xlabel="x (nm)", ylabel="y (nm)", title=f"particle {p0}: v_n (nm/s)")
        fig.colorbar(im, ax=ax[2])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# ---------------------------------------------------------------------- store
def _read_parquet(path: Path) -> pd.DataFrame:
    from ..measure import read_table_pandas

    return read_table_pandas(path)


def run_etching(
    store: str | os.PathLike,
    *,
    frame_interval_s: float | None = None,
    max_breakpoints: int = 3,
    rate_fit: str = "interval",
    n_boot: int = 300,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Etching analysis of one store: tables/contours (+ tracks) -> results/etching/.

    Writes ``results/etching/etching.json``, ``sizes.csv``, ``rates.csv`` and
    ``etching.png``.

    Parameters
    ----------
    store : path
        Store with ``tables/contours.parquet`` and optionally
        ``tables/tracks.parquet`` (identities) and ``tables/regions.parquet``
        (times).
    frame_interval_s : float, optional
        Default: from the regions/tracks table's ``time_s`` steps, else 1.
    max_breakpoints, n_boot : int
    rate_fit : {"interval", "baseline"}
        See :func:`analyze_etching`.
    overwrite : bool
    """
    store = Path(store)
    src = table_path(store, "contours")
    if not src.exists():
        raise StoreError(
            f"{str(src)!r} does not exist; measure outlines first "
            "(lp.measure_contours + lp.measure.write_table(..., name='contours'))"
        )
    out_dir = store / RESULTS / "etching"
    check_output_path(out_dir, overwrite=overwrite, what="etching results")
    contours = _read_parquet(src)
    tracks = None
    tp = table_path(store, "tracks")
    if tp.exists():
        tracks = _read_parquet(tp)
    if frame_interval_s is None:
        frame_interval_s = 1.0
        for name in ("tracks", "regions"):
            p = table_path(store, name)
            if p.exists():
                t = (
                    _read_parquet(p)[["frame", "time_s"]]
                    .drop_duplicates("frame")
                    .sort_values("frame")
                )
                if len(t) > 1:
                    frame_interval_s = float(np.median(np.diff(t["time_s"]) / np.diff(t["frame"])))
                break
    an = analyze_etching(
        contours,
        frame_interval_s=frame_interval_s,
        tracks=tracks,
        max_breakpoints=max_breakpoints,
        rate_fit=rate_fit,
        n_boot=n_boot,
    )
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "etching.json").write_text(json.dumps(an["result"], indent=1, default=float))
        an["sizes"].to_csv(tmp / "sizes.csv", index=False)
        an["rates"].to_csv(tmp / "rates.csv", index=False)
        import matplotlib.pyplot as plt

        fig = plot_etching(an, contours, tmp / "etching.png")
        plt.close(fig)
    return an["result"]
