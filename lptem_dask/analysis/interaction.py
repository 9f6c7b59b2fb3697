"""Pair interactions from particle positions: g(r), the potential of mean force,
and the anisotropic free-energy landscape around a nanoprism.

Pair distances are histogrammed frame by frame and normalised by what an
ideal gas with the same number of particles per frame would give *inside the
same finite rectangular field of view*. For two independent uniform points in
a ``W x H`` rectangle the density of their separation vector ``d`` is the set
covariance ``gamma(d) / (W H)^2`` with ``gamma(d) = (W - |d_x|)(H - |d_y|)``
(zero outside), so the distance density is

    p(r) = r / (W H)^2  *  integral_0^{2 pi} gamma(r cos phi, r sin phi) dphi,

which for ``r <= min(W, H)`` is ``2 r (pi W H - 2 r (W + H) + r^2) / (W H)^2``.
This is the exact edge correction: no pair is lost or re-weighted, and a
non-interacting system gives ``g(r) = 1`` at every ``r`` up to the diagonal.
Then ``U(r) = -kT ln g(r)`` (the potential of mean force; at low density, the
orientation-averaged pair potential). Errors come from a bootstrap over
blocks of consecutive frames.

The anisotropic landscape: each neighbour's separation is expressed in the
reference particle's body frame (rotated by its orientation modulo the
particle's symmetry, 120 degrees for prisms), histogrammed in 2-D and divided
by the ideal-gas expectation for the same references (the set covariance
rotated by each reference's orientation), giving ``F(u, v) = -kT ln g(u, v)``.

References
----------
Chandler, D. Introduction to Modern Statistical Mechanics (Oxford, 1987), ch. 7.
Ohser, J. On estimators for the reduced second moment measure of point
processes. Math. Operationsforsch. Statist. 14, 63-71 (1983) (set covariance
edge correction).
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020) (anisotropic landscape of prisms).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError, LptemError

logger = logging.getLogger(__name__)

__all__ = [
    "ideal_pair_density",
    "set_covariance",
    "frame_arrays",
    "radial_distribution",
    "well_estimate",
    "first_peak",
    "body_frame_landscape",
    "landscape_minimum",
    "angular_profile",
    "interaction_analysis",
    "run_interaction",
]


# ----------------------------------------------------------------------------- ideal gas
def set_covariance(
    dy: np.ndarray, dx: np.ndarray, *, width_nm: float, height_nm: float
) -> np.ndarray:
    """Area (nm²) of the window intersected with itself shifted by ``(dy, dx)``."""
    return np.maximum(width_nm - np.abs(dx), 0.0) * np.maximum(height_nm - np.abs(dy), 0.0)


def ideal_pair_density(
    r_nm: np.ndarray, *, width_nm: float, height_nm: float, n_phi: int = 4096
) -> np.ndarray:
    """Density (1/nm) of the distance between two uniform points in a ``W x H`` rectangle.

    Closed form for ``r <= min(W, H)``; beyond, the angular integral of the
    set covariance by the midpoint rule on ``n_phi`` angles (the integrand is
    smooth except at a few kinks).

    Examples
    --------
    >>> from scipy.integrate import quad
    >>> round(quad(lambda r: ideal_pair_density(np.array([r]), width_nm=3, height_nm=2)[0],
    ...            0, np.hypot(3, 2), limit=200)[0], 4)
    1.0
    """
    if width_nm <= 0 or height_nm <= 0:
        raise InputError(f"the window must have positive size, got {width_nm} x {height_nm} nm")
    r = np.asarray(r_nm, dtype=np.float64)
    W, H = float(width_nm), float(height_nm)
    out = 2.0 * r * (np.pi * W * H - 2.0 * r * (W + H) + r * r) / (W * H) ** 2
    far = r > min(W, H)
    if np.any(far):
        phi = (np.arange(n_phi) + 0.5) * (0.5 * np.pi / n_phi)
        rf = r[far][:, None]
        g = set_covariance(rf * np.sin(phi), rf * np.cos(phi), width_nm=W, height_nm=H)
        out[far] = 4.0 * rf[:, 0] * g.mean(axis=1) * (0.5 * np.pi) / (W * H) ** 2
    return np.where(r < 0, 0.0, out)


def _bin_integral(edges: np.ndarray, W: float, H: float, nodes: int = 8) -> np.ndarray:
    """Probability of a distance falling in each bin (Gauss-Legendre per bin)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    a, b = edges[:-1, None], edges[1:, None]
    r = 0.5 * (b - a) * x[None] + 0.5 * (a + b)
    p = ideal_pair_density(r.ravel(), width_nm=W, height_nm=H).reshape(r.shape)
    return (p * w[None]).sum(axis=1) * 0.5 * (edges[1:] - edges[:-1])


# ----------------------------------------------------------------------------- data
def frame_arrays(
    tracks: pd.DataFrame,
    *,
    columns: tuple[str, ...] = ("y_nm", "x_nm"),
    frame_column: str = "frame",
) -> tuple[np.ndarray, np.ndarray]:
    """Dense (frame, slot, column) array of the rows of each frame, NaN padded.

    Returns
    -------
    values : ndarray (frame, max particles per frame, len(columns)), float64
    frames : ndarray (frame,) the frame keys, sorted
    """
    missing = [c for c in (frame_column, *columns) if c not in tracks.columns]
    if missing:
        raise InputError(f"`tracks` lacks columns {missing}; it has {list(tracks.columns)}")
    f = tracks[frame_column].to_numpy()
    frames, fi = np.unique(f, return_inverse=True)
    order = np.argsort(fi, kind="stable")
    fs = fi[order]
    start = np.searchsorted(fs, np.arange(frames.size))
    slot = np.arange(fs.size) - start[fs]
    m = int(slot.max()) + 1 if fs.size else 0
    out = np.full((frames.size, m, len(columns)), np.nan)
    out[fs, slot, :] = tracks[list(columns)].to_numpy(np.float64)[order]
    return out, frames


def _window(tracks: pd.DataFrame, window_nm) -> tuple[float, float, float, float]:
    """(y0, x0, H, W) of the field of view; default the bounding box of the positions."""
    if window_nm is not None:
        y0, x0, H, W = (float(v) for v in window_nm)
        if H <= 0 or W <= 0:
            raise InputError(
                f"`window_nm` must be (y0, x0, height, width) with sizes > 0, got {window_nm}"
            )
        return y0, x0, H, W
    y, x = tracks["y_nm"].to_numpy(float), tracks["x_nm"].to_numpy(float)
    return (
        float(np.nanmin(y)),
        float(np.nanmin(x)),
        float(np.nanmax(y) - np.nanmin(y)),
        float(np.nanmax(x) - np.nanmin(x)),
    )


def _inside(v: np.ndarray, win) -> np.ndarray:
    y0, x0, H, W = win
    return (v[..., 0] >= y0) & (v[..., 0] <= y0 + H) & (v[..., 1] >= x0) & (v[..., 1] <= x0 + W)


def _blocks(n_frames: int, block_frames: int) -> np.ndarray:
    return np.arange(n_frames) // max(int(block_frames), 1)


def _pmf_from(
    counts: np.ndarray, expected: np.ndarray, tail: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        g = counts / expected
        if tail is not None and tail.any():
            g = g / np.nanmean(g[..., tail], axis=-1, keepdims=True)
        return g, -np.log(g)


# ----------------------------------------------------------------------------- g(r)
def radial_distribution(
    tracks: pd.DataFrame,
    *,
    window_nm: tuple[float, float, float, float] | None = None,
    r_max_nm: float | None = None,
    bin_nm: float | None = None,
    tail_range_nm: tuple[float, float] | None = None,
    block_frames: int = 50,
    n_boot: int = 200,
    frame_column: str = "frame",
    seed: int = 0,
) -> xr.Dataset:
    """Pair distribution g(r) with the exact finite-window correction, and the PMF.

    Parameters
    ----------
    tracks : pandas.DataFrame
        One row per particle per frame: ``frame_column``, ``y_nm``, ``x_nm``.
    window_nm : (y0, x0, height, width), optional
        Field of view in nm; default the bounding box of all positions. Rows
        outside it are ignored.
    r_max_nm : float, optional
        Largest distance; default half the shorter window side.
    bin_nm : float, optional
        Bin width; default ``r_max_nm / 100``.
    tail_range_nm : (r_lo, r_hi), optional
        If given, g is divided by its mean over this range (sets U = 0 there;
        removes the O(1/N) offset of a finite interacting system).
    block_frames : int
        Frames per bootstrap block (blocks are resampled with replacement).
    n_boot : int
    frame_column : str
        Column defining the independent snapshots (default ``frame``).
    seed : int

    Returns
    -------
    xarray.Dataset
        On ``r`` (bin centres, nm): ``g``, ``g_err``, ``pmf`` (kT), ``pmf_err``
        (kT, bootstrap std), ``counts``, ``expected``; ``g_boot``/``pmf_boot``
        (boot, r). Attrs: window, number of frames and pairs.
    """
    vals, frames = frame_arrays(tracks, frame_column=frame_column)
    win = _window(tracks, window_nm)
    y0, x0, H, W = win
    if r_max_nm is None:
        r_max_nm = 0.5 * min(H, W)
    if bin_nm is None:
        bin_nm = r_max_nm / 100.0
    if r_max_nm <= 0 or bin_nm <= 0:
        raise InputError(f"`r_max_nm` and `bin_nm` must be > 0, got {r_max_nm}, {bin_nm}")
    edges = np.arange(0.0, r_max_nm + 0.5 * bin_nm, bin_nm)
    inside = _inside(vals, win)
    vals = np.where(inside[..., None], vals, np.nan)
    n_f = inside.sum(axis=1)
    blk = _blocks(len(frames), block_frames)
    nb = int(blk.max()) + 1 if blk.size else 0
    counts = np.zeros((nb, edges.size - 1))
    P = vals.shape[1]
    iu, ju = np.triu_indices(P, k=1)
    chunk = max(1, 2_000_000 // max(iu.size, 1))
    for a in range(0, len(frames), chunk):
        v = vals[a : a + chunk]
        d = v[:, iu, :] - v[:, ju, :]
        r = np.hypot(d[..., 0], d[..., 1])
        b = np.broadcast_to(blk[a : a + chunk, None], r.shape)
        ok = np.isfinite(r)
        idx = np.searchsorted(edges, r[ok], side="right") - 1
        keep = (idx >= 0) & (idx < edges.size - 1)
        np.add.at(counts, (b[ok][keep], idx[keep]), 1.0)
    pairs_per_frame = n_f * (n_f - 1) / 2.0
    pb = np.bincount(blk, weights=pairs_per_frame, minlength=nb)
    prob = _bin_integral(edges, W, H)
    expected = pb[:, None] * prob[None, :]
    centres = 0.5 * (edges[1:] + edges[:-1])
    tail = None
    if tail_range_nm is not None:
        tail = (centres >= tail_range_nm[0]) & (centres <= tail_range_nm[1])
        if not tail.any():
            raise InputError(f"`tail_range_nm` {tail_range_nm} holds no bin below r_max {r_max_nm}")
    C, E = counts.sum(0), expected.sum(0)
    g, pmf = _pmf_from(C, E, tail)
    rng = np.random.default_rng(seed)
    if nb > 1 and n_boot > 0:
        pick = rng.integers(0, nb, size=(n_boot, nb))
        gb, pmfb = _pmf_from(counts[pick].sum(1), expected[pick].sum(1), tail)
    else:
        gb = pmfb = np.full((0, centres.size), np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins (no pair seen)
        pmf_b = np.where(np.isfinite(pmfb), pmfb, np.nan)
        g_err = np.nanstd(gb, axis=0) if len(gb) else np.full(centres.size, np.nan)
        pmf_err = np.nanstd(pmf_b, axis=0) if len(gb) else np.full(centres.size, np.nan)
    return xr.Dataset(
        {
            "g": ("r", g, {"units": "1"}),
            "g_err": ("r", g_err, {"units": "1"}),
            "pmf": ("r", pmf, {"units": "kT"}),
            "pmf_err": ("r", pmf_err, {"units": "kT"}),
            "counts": ("r", C, {"units": "pairs"}),
            "expected": ("r", E, {"units": "pairs"}),
            "g_boot": (("boot", "r"), gb, {"units": "1"}),
            "pmf_boot": (("boot", "r"), pmfb, {"units": "kT"}),
        },
        coords={
            "r": ("r", centres, {"units": "nm"}),
            "r_edge_low": ("r", edges[:-1], {"units": "nm"}),
        },
        attrs={
            "window_nm": [y0, x0, H, W],
            "n_frames": int(len(frames)),
            "n_pairs": float(C.sum()),
            "block_frames": int(block_frames),
            "tail_range_nm": list(tail_range_nm) if tail_range_nm is not None else [],
        },
    )


def _well(r: np.ndarray, pmf: np.ndarray, ref: float, search: np.ndarray) -> tuple[float, float]:
    y = np.where(search & np.isfinite(pmf), pmf, np.inf)
    if not np.isfinite(y).any():
        return float("nan"), float("nan")
    i = int(np.argmin(y))
    lo, hi = max(i - 2, 0), min(i + 3, r.size)
    rr, yy = r[lo:hi], pmf[lo:hi]
    ok = np.isfinite(yy)
    pos, val = float(r[i]), float(pmf[i])
    if ok.sum() >= 3:
        c2, c1, c0 = np.polyfit(rr[ok] - r[i], yy[ok], 2)
        if c2 > 0:
            x = -c1 / (2 * c2)
            if abs(x) <= (rr[-1] - rr[0]) / 2:
                pos, val = float(r[i] + x), float(c0 - c1 * c1 / (4 * c2))
    return ref - val, pos


def well_estimate(
    pmf: xr.Dataset,
    *,
    search_range_nm: tuple[float, float] | None = None,
    tail_range_nm: tuple[float, float] | None = None,
) -> dict[str, float | None]:
    """Depth (kT) and position (nm) of the deepest minimum of a PMF, with bootstrap errors.

    The minimum is refined by a parabola through the five bins around the
    lowest one. The depth is measured from the mean PMF over ``tail_range_nm``
    (default: from 0).

    Returns
    -------
    dict
        ``depth_kT``, ``depth_err_kT``, ``position_nm``, ``position_err_nm``.
    """
    r = pmf["r"].values
    search = np.ones(r.size, bool)
    if search_range_nm is not None:
        search = (r >= search_range_nm[0]) & (r <= search_range_nm[1])
    tail = None
    if tail_range_nm is not None:
        tail = (r >= tail_range_nm[0]) & (r <= tail_range_nm[1])

    def one(p: np.ndarray) -> tuple[float, float]:
        ref = float(np.nanmean(p[tail])) if tail is not None and tail.any() else 0.0
        return _well(r, p, ref, search)

    depth, pos = one(pmf["pmf"].values)
    boots = (
        np.array([one(p) for p in pmf["pmf_boot"].values])
        if pmf.sizes.get("boot", 0)
        else np.zeros((0, 2))
    )

    def _std(x):
        x = x[np.isfinite(x)]
        return float(x.std()) if x.size > 1 else None

    return {
        "depth_kT": depth if np.isfinite(depth) else None,
        "depth_err_kT": _std(boots[:, 0]) if len(boots) else None,
        "position_nm": pos if np.isfinite(pos) else None,
        "position_err_nm": _std(boots[:, 1]) if len(boots) else None,
    }


def first_peak(radial: xr.Dataset, *, r_max_nm: float | None = None) -> dict[str, float]:
    """Highest maximum of g(r) below ``r_max_nm``, refined by a parabola through 3 bins.

    For a crystal, the first coordination shell; compare with the median
    nearest-neighbour distance.

    Returns
    -------
    dict
        ``position_nm`` and ``g`` at the peak.
    """
    r, g = radial["r"].values, radial["g"].values
    sel = np.isfinite(g) & (r <= (r_max_nm if r_max_nm is not None else np.inf))
    if not sel.any():
        raise InputError("g(r) has no finite value below `r_max_nm`")
    i = int(np.argmax(np.where(sel, g, -np.inf)))
    pos, val = float(r[i]), float(g[i])
    if 0 < i < r.size - 1 and np.all(np.isfinite(g[i - 1 : i + 2])):
        c2, c1, c0 = np.polyfit(r[i - 1 : i + 2] - r[i], g[i - 1 : i + 2], 2)
        if c2 < 0:
            x = -c1 / (2 * c2)
            pos, val = float(r[i] + x), float(c0 - c1 * c1 / (4 * c2))
    return {"position_nm": pos, "g": val}


# ----------------------------------------------------------------------------- landscape
def body_frame_landscape(
    tracks: pd.DataFrame,
    *,
    orientation_column: str = "orientation_deg",
    symmetry_deg: float = 120.0,
    window_nm: tuple[float, float, float, float] | None = None,
    extent_nm: float = 150.0,
    bin_nm: float = 5.0,
    frame_column: str = "frame",
    angle_bin_deg: float = 0.5,
) -> xr.Dataset:
    """Free-energy map of neighbours in the body frame of a reference particle.

    For every ordered pair (reference i, neighbour j) in a frame, the
    separation ``j - i`` is rotated into i's body frame: ``u`` along i's
    reference axis (orientation modulo ``symmetry_deg``; for prisms a vertex
    direction), ``v`` 90 degrees counter-clockwise on screen. The 2-D
    histogram is divided by the ideal-gas expectation for the same references
    in the same window, ``sum_i (n_f - 1) gamma(R(theta_i) d) / (W H)^2 dA``,
    so ``g(u, v) = 1`` without interactions.

    Parameters
    ----------
    tracks : pandas.DataFrame
        ``frame_column``, ``y_nm``, ``x_nm``, ``orientation_column`` (deg, CCW on screen).
    orientation_column : str
    symmetry_deg : float
        120 for prisms, 90 cubes, 180 rods.
    window_nm : (y0, x0, height, width), optional
    extent_nm, bin_nm : float
        Map covers ``[-extent, extent]^2`` nm.
    frame_column : str
    angle_bin_deg : float
        Reference orientations are binned this finely for the expectation.

    Returns
    -------
    xarray.Dataset
        On (u, v) nm: ``counts``, ``expected``, ``g``, ``free_energy`` (kT,
        NaN where no pair was seen).
    """
    if symmetry_deg <= 0:
        raise InputError(f"`symmetry_deg` must be > 0, got {symmetry_deg}")
    vals, frames = frame_arrays(
        tracks, columns=("y_nm", "x_nm", orientation_column), frame_column=frame_column
    )
    win = _window(tracks, window_nm)
    y0, x0, H, W = win
    inside = _inside(vals, win) & np.isfinite(vals[..., 2])
    vals = np.where(inside[..., None], vals, np.nan)
    n_f = inside.sum(axis=1)
    edges = np.arange(-extent_nm, extent_nm + 0.5 * bin_nm, bin_nm)
    centres = 0.5 * (edges[1:] + edges[:-1])
    nbin = centres.size
    counts = np.zeros((nbin, nbin))
    P = vals.shape[1]
    ii, jj = np.nonzero(~np.eye(P, dtype=bool))
    chunk = max(1, 2_000_000 // max(ii.size, 1))
    for a in range(0, len(frames), chunk):
        v = vals[a : a + chunk]
        dy = v[:, jj, 0] - v[:, ii, 0]
        dx = v[:, jj, 1] - v[:, ii, 1]
        th = np.deg2rad(np.mod(v[:, ii, 2], symmetry_deg))
        ok = np.isfinite(dy) & np.isfinite(th)
        alpha = np.arctan2(-dy[ok], dx[ok])
        r = np.hypot(dy[ok], dx[ok])
        phi = alpha - th[ok]
        u, w = r * np.cos(phi), r * np.sin(phi)
        h, _, _ = np.histogram2d(u, w, bins=[edges, edges])
        counts += h
    # expectation: references binned by orientation, weighted by (n_f - 1)
    ref_th = np.mod(vals[..., 2], symmetry_deg)
    weight = np.broadcast_to((n_f - 1)[:, None], ref_th.shape)
    okr = np.isfinite(ref_th)
    nab = max(int(np.ceil(symmetry_deg / angle_bin_deg)), 1)
    th_edges = np.linspace(0.0, symmetry_deg, nab + 1)
    wt, _ = np.histogram(ref_th[okr], bins=th_edges, weights=weight[okr])
    th_c = np.deg2rad(0.5 * (th_edges[1:] + th_edges[:-1]))
    U, V = np.meshgrid(centres, centres, indexing="ij")
    R, PHI = np.hypot(U, V), np.arctan2(V, U)
    expected = np.zeros((nbin, nbin))
    for k in np.nonzero(wt)[0]:
        al = PHI + th_c[k]
        expected += wt[k] * set_covariance(-R * np.sin(al), R * np.cos(al), width_nm=W, height_nm=H)
    expected *= bin_nm * bin_nm / (W * H) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(expected > 0, counts / expected, np.nan)
        F = np.where(counts > 0, -np.log(g), np.nan)
    return xr.Dataset(
        {
            "counts": (("u", "v"), counts, {"units": "pairs"}),
            "expected": (("u", "v"), expected, {"units": "pairs"}),
            "g": (("u", "v"), g, {"units": "1"}),
            "free_energy": (("u", "v"), F, {"units": "kT"}),
        },
        coords={"u": ("u", centres, {"units": "nm"}), "v": ("v", centres, {"units": "nm"})},
        attrs={
            "symmetry_deg": float(symmetry_deg),
            "window_nm": [y0, x0, H, W],
            "n_frames": int(len(frames)),
        },
    )


def landscape_minimum(landscape: xr.Dataset, *, min_counts: float = 5.0) -> dict[str, float]:
    """Deepest bin of a body-frame free-energy map (bins with at least ``min_counts`` pairs).

    Returns
    -------
    dict
        ``u_nm``, ``v_nm``, ``r_nm``, ``angle_deg`` (CCW from the reference
        axis, in [0, 360)), ``angle_mod_symmetry_deg`` and ``free_energy_kT``.
    """
    F = np.where(landscape["counts"].values >= min_counts, landscape["free_energy"].values, np.nan)
    if not np.isfinite(F).any():
        raise InputError(f"no bin of the landscape holds >= {min_counts} pairs; use more frames")
    i, j = np.unravel_index(np.nanargmin(F), F.shape)
    u, v = float(landscape.u[i]), float(landscape.v[j])
    ang = float(np.mod(np.rad2deg(np.arctan2(v, u)), 360.0))
    sym = float(landscape.attrs.get("symmetry_deg", 360.0))
    return {
        "u_nm": u,
        "v_nm": v,
        "r_nm": float(np.hypot(u, v)),
        "angle_deg": ang,
        "angle_mod_symmetry_deg": float(np.mod(ang, sym)),
        "free_energy_kT": float(F[i, j]),
    }


def angular_profile(
    landscape: xr.Dataset, *, r_range_nm: tuple[float, float], n_bins: int = 24
) -> xr.Dataset:
    """g and free energy versus body-frame angle within a shell, folded modulo the symmetry."""
    sym = float(landscape.attrs.get("symmetry_deg", 360.0))
    U, V = np.meshgrid(landscape.u.values, landscape.v.values, indexing="ij")
    R = np.hypot(U, V)
    A = np.mod(np.rad2deg(np.arctan2(V, U)), sym)
    sel = (R >= r_range_nm[0]) & (R <= r_range_nm[1])
    edges = np.linspace(0, sym, n_bins + 1)
    c = np.histogram(A[sel], bins=edges, weights=landscape["counts"].values[sel])[0]
    e = np.histogram(A[sel], bins=edges, weights=landscape["expected"].values[sel])[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        g = c / e
        F = np.where(c > 0, -np.log(g), np.nan)
    return xr.Dataset(
        {"g": ("angle", g), "free_energy": ("angle", F, {"units": "kT"}), "counts": ("angle", c)},
        coords={"angle": ("angle", 0.5 * (edges[1:] + edges[:-1]), {"units": "deg"})},
    )


# ----------------------------------------------------------------------------- pipeline
def interaction_analysis(
    tracks: pd.DataFrame,
    *,
    window_nm: tuple[float, float, float, float] | None = None,
    orientation_column: str | None = None,
    symmetry_deg: float = 120.0,
    r_max_nm: float | None = None,
    bin_nm: float | None = None,
    tail_range_nm: tuple[float, float] | None = None,
    extent_nm: float | None = None,
    landscape_bin_nm: float | None = None,
    block_frames: int = 50,
    n_boot: int = 200,
    frame_column: str = "frame",
    seed: int = 0,
) -> tuple[dict[str, Any], xr.Dataset, xr.Dataset | None]:
    """g(r), PMF, well and (with orientations) the body-frame landscape of one tracks table.

    ``orientation_column`` defaults to ``prism_orientation_deg`` when present,
    else ``orientation_deg`` when present, else no landscape. The well is
    searched beyond the first bin holding a pair.

    Returns
    -------
    summary : dict (JSON-ready), radial : xarray.Dataset, landscape : xarray.Dataset or None
    """
    rad = radial_distribution(
        tracks,
        window_nm=window_nm,
        r_max_nm=r_max_nm,
        bin_nm=bin_nm,
        tail_range_nm=tail_range_nm,
        block_frames=block_frames,
        n_boot=n_boot,
        frame_column=frame_column,
        seed=seed,
    )
    r = rad.r.values
    seen = r[rad["counts"].values > 0]
    search = (float(seen.min()), float(r.max())) if seen.size else None
    well = well_estimate(rad, search_range_nm=search, tail_range_nm=tail_range_nm)
    summary: dict[str, Any] = {
        "window_nm": rad.attrs["window_nm"],
        "n_frames": rad.attrs["n_frames"],
        "n_pairs": rad.attrs["n_pairs"],
        "well": well,
        "units": {"depth_kT": "kT", "position_nm": "nm"},
    }
    if orientation_column is None:
        for c in ("prism_orientation_deg", "orientation_deg"):
            if c in tracks.columns and tracks[c].notna().any():
                orientation_column = c
                break
    land = None
    if orientation_column is not None:
        ext = extent_nm if extent_nm is not None else float(r.max())
        lb = landscape_bin_nm if landscape_bin_nm is not None else ext / 30.0
        land = body_frame_landscape(
            tracks,
            orientation_column=orientation_column,
            symmetry_deg=symmetry_deg,
            window_nm=window_nm,
            extent_nm=ext,
            bin_nm=lb,
            frame_column=frame_column,
        )
        try:
            summary["landscape_minimum"] = landscape_minimum(land)
        except InputError:
            summary["landscape_minimum"] = None
        summary["orientation_column"] = orientation_column
        summary["symmetry_deg"] = symmetry_deg
    return summary, rad, land


def _store_window(store: Path) -> tuple[float, float, float, float] | None:
    """(0, 0, height, width) nm of the store's image, or None without a calibrated image."""
    from ..results import open_arrays

    try:
        ds = open_arrays(store)
    except LptemError:
        return None
    for name in ("image", "labels", "probability"):
        if name in ds:
            da_ = ds[name]
            ps = da_.attrs.get("pixel_size_nm")
            if ps is None or da_.attrs.get("pixel_size_known") is False:
                return None
            return (0.0, 0.0, da_.sizes["y"] * float(ps), da_.sizes["x"] * float(ps))
    return None


def run_interaction(
    store: str | os.PathLike,
    *,
    window_nm: tuple[float, float, float, float] | None = None,
    symmetry_deg: float = 120.0,
    r_max_nm: float | None = None,
    bin_nm: float | None = None,
    tail_range_nm: tuple[float, float] | None = None,
    n_boot: int = 200,
    overwrite: bool = True,
    figures: bool = True,
) -> dict[str, Any]:
    """Interaction analysis of a store's tracks, saved under ``STORE/results/interaction/``.

    Writes ``interaction.json`` (well depth and position with errors,
    landscape minimum), ``radial.nc`` (g, PMF with bootstrap errors) and
    ``landscape.nc`` (body-frame map), and with ``figures`` ``pmf.png`` and
    ``landscape.png``. The field of view is the store image's extent (from its
    ``pixel_size_nm``) unless ``window_nm`` is given, else the bounding box of
    the positions.
    """
    from ..store import RESULTS, atomic_path
    from .diffusion import read_tracks

    store = Path(store)
    tracks = read_tracks(store)
    win = window_nm if window_nm is not None else _store_window(store)
    summary, rad, land = interaction_analysis(
        tracks,
        window_nm=win,
        symmetry_deg=symmetry_deg,
        r_max_nm=r_max_nm,
        bin_nm=bin_nm,
        tail_range_nm=tail_range_nm,
        n_boot=n_boot,
    )
    summary["window_source"] = (
        "given" if window_nm is not None else ("store image" if win else "positions")
    )
    final = store / RESULTS / "interaction"
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "interaction.json").write_text(json.dumps(summary, indent=2, default=float))
        rad.drop_vars(["g_boot", "pmf_boot"]).to_netcdf(tmp / "radial.nc", engine="scipy")
        if land is not None:
            land.to_netcdf(tmp / "landscape.nc", engine="scipy")
        if figures:
            from ._figures import plot_landscape, plot_pmf

            plot_pmf(rad, summary, tmp / "pmf.png")
            if land is not None:
                plot_landscape(land, tmp / "landscape.png")
    logger.info("interaction results written to %s", final)
    return summary
