"""Translational and rotational diffusion from linked trajectories.

Mean squared displacements (ensemble and per particle) at lags of whole
frames, fits of the diffusion coefficient with the corrections for static
localisation error and for motion blur during a finite exposure, bootstrap
confidence intervals over particles, van Hove distributions, the non-Gaussian
parameter and drift correction.

For a particle diffusing in ``n`` dimensions with coefficient ``D``, observed
through positions averaged over an exposure ``t_E`` (motion blur) with a static
localisation error of standard deviation ``sigma`` per axis, the apparent MSD
at lag ``tau >= t_E`` is (Savin & Doyle 2005, eq. 15; Michalet 2010)::

    MSD(tau) = 2 n D (tau - t_E / 3) + 2 n sigma^2

:func:`fit_diffusion` fits this line over the first lags, returning ``D`` and
``sigma``; for rotation ``n = 1`` and the angle is the unwrapped orientation in
radians.

Rotational diffusion is by default fitted from the orientational correlation
``C_m(tau) = <cos m (theta(t + tau) - theta(t))>`` of particles with m-fold
symmetry (:func:`fit_rotational_correlation`): ``ln C_m = a - m^2 D_r (tau -
t_E/3)``. Orientations known only modulo ``360/m`` degrees must be unwrapped for
an MSD, and one wrong unwrapping step adds a whole period to every later lag;
``C_m`` does not see whole periods, and wild orientations and Gaussian noise only
lower its intercept ``a``.

References
----------
Savin, T. & Doyle, P. S. Static and dynamic errors in particle tracking
microrheology. Biophys. J. 88, 623-638 (2005).
Michalet, X. Mean square displacement analysis of single-particle trajectories
with localization error: Brownian motion in an isotropic medium. Phys. Rev. E
82, 041914 (2010).
Rahman, A. Correlations in the motion of atoms in liquid argon. Phys. Rev. 136,
A405 (1964) (non-Gaussian parameter).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InputError, StoreError

logger = logging.getLogger(__name__)

__all__ = [
    "DiffusionFit",
    "displacement_array",
    "msd_sums",
    "ensemble_msd",
    "particle_msd",
    "fit_diffusion",
    "bootstrap_diffusion",
    "rotation_period_deg",
    "orientation_correlation",
    "fit_rotational_correlation",
    "correct_drift",
    "van_hove",
    "non_gaussian_parameter",
    "diffusion_analysis",
    "run_diffusion",
]

DriftMode = Literal["none", "constant", "per_frame"]
RotationMethod = Literal["auto", "correlation", "msd"]
_MAX_WEIGHT = 10.0


# ----------------------------------------------------------------------------- arrays
def _check(tracks: pd.DataFrame, columns: list[str]) -> None:
    need = ["particle", "frame", *columns]
    missing = [c for c in need if c not in tracks.columns]
    if missing:
        raise InputError(
            f"`tracks` lacks columns {missing}; it has {list(tracks.columns)}. Link a regions "
            f"table with lptem_dask.link to get `particle` (and `orientation_unwrapped_deg`)"
        )


def displacement_array(
    tracks: pd.DataFrame, columns: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (particle, frame, column) array of ``columns``, NaN where a particle is absent.

    Returns
    -------
    values : ndarray, shape (particle, frame, len(columns)), float64
    particles : ndarray (particle,) ids
    frames : ndarray (frame,) frame numbers from the first to the last frame
    """
    _check(tracks, columns)
    if len(tracks) == 0:
        return np.zeros((0, 0, len(columns))), np.zeros(0, np.int64), np.zeros(0, np.int64)
    p, pi = np.unique(tracks["particle"].to_numpy(), return_inverse=True)
    f = tracks["frame"].to_numpy(np.int64)
    f0, f1 = int(f.min()), int(f.max())
    out = np.full((p.size, f1 - f0 + 1, len(columns)), np.nan)
    out[pi, f - f0, :] = tracks[columns].to_numpy(np.float64)
    return out, p, np.arange(f0, f1 + 1)


def msd_sums(
    values: np.ndarray, max_lag: int, *, window_nm: tuple[float, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-particle sums of squared displacements, fourth powers and counts per lag.

    Parameters
    ----------
    values : ndarray (particle, frame, dim)
    max_lag : int
    window_nm : (y0, x0, height, width), optional
        Field of view in which positions were observed (2-D positions only).
        A displacement ``d`` is observed only when both of its ends lie in the
        window, which for uniformly spread particles happens with probability
        ``gamma(d) / (H W)``, ``gamma(d) = (W - |d_x|)(H - |d_y|)``: long
        displacements are under-represented and the MSD is biased low. Each
        displacement is weighted by ``H W / gamma(d)`` (Horvitz-Thompson), which
        removes that bias. Displacements whose weight would exceed 10 (spanning
        most of the field) are dropped.

    Returns
    -------
    s2, s4, n : ndarrays (particle, lag) for lags 1..max_lag: (weighted) sum of
        |dr|^2, sum of |dr|^4, and the (weighted) number of displacements.
    """
    P, T, dim = values.shape
    L = max(0, min(int(max_lag), T - 1))
    if window_nm is not None:
        if dim != 2:
            raise InputError(f"`window_nm` needs 2-D positions (y, x), got {dim} column(s)")
        H, W = float(window_nm[2]), float(window_nm[3])
        if H <= 0 or W <= 0:
            raise InputError(
                f"`window_nm` must be (y0, x0, height, width) with sizes > 0, got {window_nm}"
            )
    s2 = np.zeros((P, L))
    s4 = np.zeros((P, L))
    n = np.zeros((P, L))
    for k in range(1, L + 1):
        d = values[:, k:, :] - values[:, :-k, :]
        r2 = np.sum(d * d, axis=-1)
        ok = np.isfinite(r2)
        w = ok.astype(np.float64)
        if window_nm is not None:
            with np.errstate(invalid="ignore"):
                gam = np.maximum(W - np.abs(d[..., 1]), 0.0) * np.maximum(
                    H - np.abs(d[..., 0]), 0.0
                )
                w = H * W / np.where(gam > 0, gam, np.inf)
                # a displacement spanning most of the field (weight > 10) is almost surely
                # a linking error; it is dropped rather than allowed to dominate
                w = np.where(ok & (w <= _MAX_WEIGHT), w, 0.0)
        r2 = np.where(w > 0, r2, 0.0)
        s2[:, k - 1] = (w * r2).sum(axis=1)
        s4[:, k - 1] = (w * r2 * r2).sum(axis=1)
        n[:, k - 1] = w.sum(axis=1)
    return s2, s4, n


def _columns(kind: str, tracks: pd.DataFrame | None = None) -> tuple[list[str], float]:
    if kind == "translation":
        cols = ["y_nm", "x_nm"]
        if tracks is not None and "y_unwrapped_nm" in tracks.columns:
            cols = ["y_unwrapped_nm", "x_unwrapped_nm"]
        return cols, 1.0
    if kind == "rotation":
        return ["orientation_unwrapped_deg"], float(np.deg2rad(1.0))
    raise InputError(f"`kind` must be 'translation' or 'rotation', got {kind!r}")


def _values(tracks: pd.DataFrame, kind: str, columns: list[str] | None):
    cols, scale = _columns(kind, tracks)
    if columns is not None:
        cols = list(columns)
    v, p, f = displacement_array(tracks, cols)
    return v * scale, p, f, cols


def ensemble_msd(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    max_lag: int = 100,
    kind: str = "translation",
    columns: list[str] | None = None,
    window_nm: tuple[float, float, float, float] | None = None,
) -> pd.DataFrame:
    """Ensemble MSD: all displacements of all particles pooled per lag.

    Equal to :func:`trackpy.emsd` on the same columns when every trajectory
    spans the same frames (with gaps or unequal lengths trackpy weights each
    particle by Qian's effective number of independent displacements, this
    function by the number of displacements).

    Parameters
    ----------
    tracks : pandas.DataFrame
        Columns ``particle``, ``frame`` and the positions: ``y_nm``, ``x_nm``
        (translation; ``y_unwrapped_nm``/``x_unwrapped_nm`` when present) or
        ``orientation_unwrapped_deg`` (rotation, analysed in radians).
    frame_interval_s : float
        Time between frames, s.
    max_lag : int
        Largest lag, frames.
    kind : {"translation", "rotation"}
    columns : list of str, optional
        Override the position columns.
    window_nm : (y0, x0, height, width), optional
        Field of view (nm): corrects translation for displacements lost at its
        edges (see :func:`msd_sums`); ignored for rotation.

    Returns
    -------
    pandas.DataFrame
        Index ``lag`` (frames); columns ``lag_s``, ``msd`` (nm² or rad²),
        ``n`` (displacements, weighted), ``msd4`` (mean |dr|^4).
    """
    v, _, _, _ = _values(tracks, kind, columns)
    s2, s4, n = msd_sums(v, max_lag, window_nm=window_nm if kind == "translation" else None)
    tot = n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        msd = s2.sum(axis=0) / tot
        m4 = s4.sum(axis=0) / tot
    lag = np.arange(1, msd.size + 1)
    return pd.DataFrame(
        {"lag_s": lag * frame_interval_s, "msd": msd, "n": tot, "msd4": m4},
        index=pd.Index(lag, name="lag"),
    )


def particle_msd(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    max_lag: int = 100,
    kind: str = "translation",
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Per-particle MSD (as :func:`trackpy.imsd`): index lag (frames), one column per particle."""
    v, p, _, _ = _values(tracks, kind, columns)
    s2, _, n = msd_sums(v, max_lag)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = (s2 / n).T
    lag = np.arange(1, m.shape[0] + 1)
    out = pd.DataFrame(m, index=pd.Index(lag, name="lag"), columns=p)
    out.insert(0, "lag_s", lag * frame_interval_s)
    return out


# ----------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class DiffusionFit:
    """Result of a diffusion fit.

    Attributes
    ----------
    D : float
        Diffusion coefficient (nm²/s for translation, rad²/s for rotation).
    sigma : float
        Static localisation error per axis (nm or rad); NaN when the intercept
        makes it imaginary (``sigma2`` is then negative).
    sigma2 : float
        Its square as fitted (may be slightly negative from noise).
    n_dim : int
    exposure_s, frame_interval_s : float
    fit_lags : int
        Lags 1..fit_lags used.
    ci_low, ci_high : float
        Bootstrap confidence interval of ``D`` (NaN until bootstrapped).
    ci_level : float
    n_particles, n_displacements : int
    """

    D: float
    sigma: float
    sigma2: float
    n_dim: int
    exposure_s: float
    frame_interval_s: float
    fit_lags: int
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    ci_level: float = 0.95
    n_particles: int = 0
    n_displacements: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def _fit_line(
    lag_s: np.ndarray, msd: np.ndarray, weights: np.ndarray, n_dim: int, exposure_s: float
) -> tuple[float, float]:
    """Weighted LS of ``msd = a + b tau``; returns (D, sigma^2)."""
    ok = np.isfinite(msd) & (weights > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    x, y, w = lag_s[ok], msd[ok], weights[ok]
    W = w.sum()
    xm, ym = (w * x).sum() / W, (w * y).sum() / W
    b = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    a = ym - b * xm
    D = b / (2.0 * n_dim)
    sigma2 = a / (2.0 * n_dim) + D * exposure_s / 3.0
    return float(D), float(sigma2)


def _fit_weights(n: np.ndarray, lags: np.ndarray) -> np.ndarray:
    # variance of the MSD estimate grows ~ lag / n_displacements (Qian et al. 1991)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, n / lags, 0.0)


def fit_diffusion(
    msd: pd.DataFrame,
    *,
    n_dim: int = 2,
    exposure_s: float = 0.0,
    fit_lags: int = 4,
) -> DiffusionFit:
    """Fit ``MSD = 2 n D (tau - t_E/3) + 2 n sigma^2`` to the first lags of an MSD.

    Parameters
    ----------
    msd : pandas.DataFrame
        From :func:`ensemble_msd` (columns ``lag_s``, ``msd``, ``n``).
    n_dim : int
        2 for translation in the image plane, 1 for rotation.
    exposure_s : float
        Exposure per frame, s (0: no motion-blur correction). The blur term
        only shifts the intercept, so ``D`` does not depend on it; ``sigma``
        does.
    fit_lags : int
        Number of lags (1..fit_lags) in the weighted least-squares fit (weights
        ``n / lag``). Few lags are best when localisation error is small
        (Michalet 2010).

    Returns
    -------
    DiffusionFit

    Examples
    --------
    >>> lag = np.arange(1, 6)
    >>> m = pd.DataFrame({"lag_s": 0.1 * lag, "msd": 4 * 50.0 * (0.1 * lag - 0.02) + 4 * 9.0,
    ...                   "n": 100.0}, index=lag)
    >>> f = fit_diffusion(m, n_dim=2, exposure_s=0.06)
    >>> round(f.D, 6), round(f.sigma, 6)
    (50.0, 3.0)
    """
    if n_dim < 1:
        raise InputError(f"`n_dim` must be >= 1, got {n_dim}")
    if fit_lags < 2:
        raise InputError(f"`fit_lags` must be >= 2, got {fit_lags}")
    m = msd.iloc[:fit_lags]
    lag_s = m["lag_s"].to_numpy(float)
    if len(m) and not (pd.api.types.is_numeric_dtype(m.index.dtype) and float(m.index[0]) >= 1):
        raise InputError(
            "`msd` must be indexed by the lag in frames (1, 2, ...), as ensemble_msd returns it; "
            f"got index starting at {m.index[0]!r}"
        )
    dt = float(lag_s[0]) / float(m.index[0]) if len(m) else float("nan")
    if exposure_s < 0 or (np.isfinite(dt) and exposure_s > dt * (1 + 1e-9)):
        raise InputError(f"`exposure_s` must lie in [0, frame interval {dt}], got {exposure_s}")
    n = m["n"].to_numpy(float)
    D, s2 = _fit_line(
        lag_s, m["msd"].to_numpy(float), _fit_weights(n, m.index.to_numpy(float)), n_dim, exposure_s
    )
    return DiffusionFit(
        D=D,
        sigma=float(np.sqrt(s2)) if s2 >= 0 else float("nan"),
        sigma2=s2,
        n_dim=n_dim,
        exposure_s=float(exposure_s),
        frame_interval_s=dt,
        fit_lags=int(len(m)),
        n_displacements=int(n[0]) if len(n) else 0,
    )


def bootstrap_diffusion(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    exposure_s: float = 0.0,
    kind: str = "translation",
    fit_lags: int = 4,
    n_boot: int = 500,
    ci_level: float = 0.95,
    seed: int = 0,
    columns: list[str] | None = None,
    window_nm: tuple[float, float, float, float] | None = None,
) -> DiffusionFit:
    """Fit ``D`` on the ensemble MSD, with a bootstrap confidence interval over particles.

    Whole trajectories are resampled with replacement (``n_boot`` times), so
    the interval includes particle-to-particle variation and the correlation
    of overlapping displacements within a trajectory.

    Parameters
    ----------
    tracks : pandas.DataFrame
        See :func:`ensemble_msd`.
    frame_interval_s, exposure_s : float
        s.
    kind : {"translation", "rotation"}
    fit_lags, n_boot : int
    ci_level : float
        e.g. 0.95 for the 2.5-97.5 percentile interval.
    seed : int
    columns : list of str, optional
    window_nm : (y0, x0, height, width), optional
        Field-of-view edge correction of translation (:func:`msd_sums`).

    Returns
    -------
    DiffusionFit
        With ``ci_low``/``ci_high`` and ``extra["D_boot_std"]``.
    """
    if not 0 < ci_level < 1:
        raise InputError(f"`ci_level` must lie in (0, 1), got {ci_level}")
    n_dim = 2 if kind == "translation" else 1
    v, p, _, _ = _values(tracks, kind, columns)
    s2, _, n = msd_sums(v, fit_lags, window_nm=window_nm if kind == "translation" else None)
    lag = np.arange(1, s2.shape[1] + 1)
    if lag.size < 2:
        raise InputError(f"need at least 3 frames to fit diffusion, got {v.shape[1]}")

    def fit(idx: Any) -> float:
        a, c = (s2, n) if idx is None else (s2[idx], n[idx])
        tot = c.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            msd = a.sum(axis=0) / tot
        return _fit_line(lag * frame_interval_s, msd, _fit_weights(tot, lag), n_dim, exposure_s)[0]

    m = pd.DataFrame(
        {
            "lag_s": lag * frame_interval_s,
            "msd": s2.sum(0) / np.maximum(n.sum(0), 1),
            "n": n.sum(0),
        },
        index=pd.Index(lag, name="lag"),
    )
    base = fit_diffusion(m, n_dim=n_dim, exposure_s=exposure_s, fit_lags=fit_lags)
    rng = np.random.default_rng(seed)
    P = s2.shape[0]
    boots = np.array([fit(rng.integers(0, P, P)) for _ in range(n_boot)]) if P > 1 else np.array([])
    boots = boots[np.isfinite(boots)]
    lo, hi = (
        np.quantile(boots, [(1 - ci_level) / 2, (1 + ci_level) / 2])
        if boots.size
        else (np.nan, np.nan)
    )
    return DiffusionFit(
        **{
            **asdict(base),
            "ci_low": float(lo),
            "ci_high": float(hi),
            "ci_level": ci_level,
            "n_particles": int(P),
            "extra": {
                "D_boot_std": float(boots.std()) if boots.size else float("nan"),
                "n_boot": n_boot,
            },
        }
    )


# ----------------------------------------------------------------------------- rotation
_PERIOD_COLUMNS = (
    ("prism_orientation_deg", 120.0),
    ("cube_orientation_deg", 90.0),
    ("orientation_deg", 180.0),
)


def rotation_period_deg(tracks: pd.DataFrame) -> float | None:
    """The symmetry period (degrees) with which ``orientation_unwrapped_deg`` was unwrapped.

    :func:`lptem_dask.link` unwraps a measured orientation column modulo the
    particle's symmetry, so the unwrapped angle differs from that column by whole
    periods: 120° from ``prism_orientation_deg``, 90° from ``cube_orientation_deg``
    or 180° from ``orientation_deg``. The first of these that holds on every row is
    returned; None when none does (the table was unwrapped some other way).
    """
    if "orientation_unwrapped_deg" not in tracks.columns:
        return None
    u = tracks["orientation_unwrapped_deg"].to_numpy(np.float64)
    for col, period in _PERIOD_COLUMNS:
        if col not in tracks.columns:
            continue
        r = (u - tracks[col].to_numpy(np.float64)) / period
        ok = np.isfinite(r)
        if ok.any() and np.allclose(r[ok], np.round(r[ok]), atol=1e-6):
            return period
    return None


def orientation_correlation(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    symmetry_deg: float,
    max_lag: int = 50,
    column: str = "orientation_unwrapped_deg",
) -> pd.DataFrame:
    """Ensemble orientational correlation ``C_m(tau) = <cos m (theta(t + tau) - theta(t))>``.

    ``m = 360 / symmetry_deg`` is the order of the particle's rotational symmetry
    (3 for a prism), so ``C_m`` does not change when an orientation is off by whole
    symmetry periods: it needs no unwrapping, and a wrong unwrapping step (a branch
    change) does not corrupt it. For planar rotational diffusion ``C_m(tau) =
    exp(-m^2 D_r tau)``; Gaussian orientation noise and a fraction of wild
    orientations (errors uniform over the period) multiply it by a constant.

    Returns
    -------
    pandas.DataFrame
        Index ``lag`` (frames); columns ``lag_s``, ``corr`` (C_m, 1), ``var``
        (variance of ``cos``) and ``n`` (pairs).
    """
    s1, s2, n = _correlation_sums(tracks, symmetry_deg, max_lag, column)
    tot = n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = s1.sum(axis=0) / tot
        var = s2.sum(axis=0) / tot - c * c
    lag = np.arange(1, c.size + 1)
    return pd.DataFrame(
        {"lag_s": lag * frame_interval_s, "corr": c, "var": var, "n": tot},
        index=pd.Index(lag, name="lag"),
    )


def _correlation_sums(
    tracks: pd.DataFrame, symmetry_deg: float, max_lag: int, column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-particle sums of cos(m dtheta), cos^2 and counts per lag, shapes (particle, lag)."""
    if not symmetry_deg > 0:
        raise InputError(f"`symmetry_deg` must be > 0, got {symmetry_deg}")
    v, _, _ = displacement_array(tracks, [column])
    th = np.deg2rad(v[..., 0]) * (360.0 / symmetry_deg)
    P, T = th.shape
    L = max(0, min(int(max_lag), T - 1))
    s1, s2, n = np.zeros((P, L)), np.zeros((P, L)), np.zeros((P, L))
    for k in range(1, L + 1):
        c = np.cos(th[:, k:] - th[:, :-k])
        ok = np.isfinite(c)
        c = np.where(ok, c, 0.0)
        s1[:, k - 1], s2[:, k - 1], n[:, k - 1] = c.sum(1), (c * c).sum(1), ok.sum(1)
    return s1, s2, n


def _fit_log_correlation(
    lag: np.ndarray,
    corr: np.ndarray,
    var: np.ndarray,
    n: np.ndarray,
    *,
    frame_interval_s: float,
    order: float,
    exposure_s: float,
) -> tuple[float, float]:
    """Weighted LS of ``ln C = a - m^2 D (tau - t_E/3)``; returns (D, a).

    Weights: inverse variance of ``ln C`` (``var / (n_eff C^2)``, delta method, with
    ``n_eff = n / lag`` for overlapping pairs as in :func:`_fit_weights`); lags whose
    correlation is not clearly above its noise (C < 3 standard errors) are left out.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.maximum(var, 1e-12) * lag / np.maximum(n, 1))
        ok = np.isfinite(corr) & (n > 0) & (corr > 3 * se)
        if ok.sum() < 2:
            return float("nan"), float("nan")
        x = lag[ok] * frame_interval_s - exposure_s / 3.0
        y = np.log(corr[ok])
        w = (corr[ok] / se[ok]) ** 2
    W = w.sum()
    xm, ym = (w * x).sum() / W, (w * y).sum() / W
    b = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    a = ym - b * xm
    return float(-b / order**2), float(a)


def fit_rotational_correlation(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    symmetry_deg: float,
    exposure_s: float = 0.0,
    fit_lags: int = 4,
    n_boot: int = 300,
    ci_level: float = 0.95,
    seed: int = 0,
    column: str = "orientation_unwrapped_deg",
) -> DiffusionFit:
    """Rotational diffusion coefficient from the orientational correlation function.

    Fits ``ln C_m(tau) = a - m^2 D_r (tau - t_E/3)`` over lags 1..``fit_lags``
    (:func:`orientation_correlation`), with a bootstrap interval over whole
    trajectories. Unlike the MSD of unwrapped angles, the estimate is unaffected by
    orientations that are wrong by whole symmetry periods, and orientation outliers
    (a measurement fit to the wrong corner of a noisy prism) only lower the
    intercept ``a``. Motion blur during the exposure ``t_E`` shifts the time axis by
    ``t_E / 3`` for Gaussian increments, as for the MSD.

    Parameters
    ----------
    tracks : pandas.DataFrame
        ``particle``, ``frame`` and ``column`` (degrees).
    frame_interval_s, exposure_s : float
        s.
    symmetry_deg : float
        Rotational symmetry period of the particle (120 prism, 90 cube, 180 rod).
    fit_lags, n_boot, ci_level, seed
        As :func:`bootstrap_diffusion`.

    Returns
    -------
    DiffusionFit
        ``D`` in rad²/s; ``sigma`` (rad) is the orientation noise that the
        intercept implies when every error is Gaussian (outliers raise it);
        ``extra`` holds the method, the order ``m``, the intercept and the
        bootstrap spread.
    """
    if not 0 < ci_level < 1:
        raise InputError(f"`ci_level` must lie in (0, 1), got {ci_level}")
    if fit_lags < 2:
        raise InputError(f"`fit_lags` must be >= 2, got {fit_lags}")
    m = 360.0 / symmetry_deg
    s1, s2, n = _correlation_sums(tracks, symmetry_deg, fit_lags, column)
    lag = np.arange(1, s1.shape[1] + 1, dtype=np.float64)
    if lag.size < 2:
        raise InputError("need at least 3 frames to fit rotational diffusion")

    def fit(idx: Any) -> tuple[float, float]:
        a1, a2, c = (s1, s2, n) if idx is None else (s1[idx], s2[idx], n[idx])
        tot = c.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = a1.sum(axis=0) / tot
            var = a2.sum(axis=0) / tot - corr * corr
        return _fit_log_correlation(
            lag, corr, var, tot, frame_interval_s=frame_interval_s, order=m, exposure_s=exposure_s
        )

    D, a = fit(None)
    rng = np.random.default_rng(seed)
    P = s1.shape[0]
    boots = np.array(
        [fit(rng.integers(0, P, P))[0] for _ in range(n_boot if P > 1 else 0)], np.float64
    )
    boots = boots[np.isfinite(boots)]
    lo, hi = (
        np.quantile(boots, [(1 - ci_level) / 2, (1 + ci_level) / 2])
        if boots.size
        else (np.nan, np.nan)
    )
    s2_eff = -a / m**2 if np.isfinite(a) else float("nan")
    return DiffusionFit(
        D=D,
        sigma=float(np.sqrt(s2_eff)) if s2_eff >= 0 else float("nan"),
        sigma2=float(s2_eff),
        n_dim=1,
        exposure_s=float(exposure_s),
        frame_interval_s=float(frame_interval_s),
        fit_lags=int(lag.size),
        ci_low=float(lo),
        ci_high=float(hi),
        ci_level=ci_level,
        n_particles=int(P),
        n_displacements=int(n[:, 0].sum()) if n.size else 0,
        extra={
            "method": "correlation",
            "model": "ln <cos m dtheta> = a - m^2 D_r (tau - t_E/3)",
            "order_m": m,
            "symmetry_deg": float(symmetry_deg),
            "intercept": a,
            "D_boot_std": float(boots.std()) if boots.size else float("nan"),
            "n_boot": n_boot,
        },
    )


# ----------------------------------------------------------------------------- drift
def correct_drift(
    tracks: pd.DataFrame,
    *,
    mode: DriftMode = "constant",
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Remove collective drift from positions.

    Parameters
    ----------
    tracks : pandas.DataFrame
        ``particle``, ``frame`` and position columns (default ``y_nm``/``x_nm``,
        or the ``*_unwrapped_nm`` pair when present).
    mode : {"none", "constant", "per_frame"}
        ``"constant"``: a constant velocity, the mean of all one-frame
        displacements, is subtracted (costs one degree of freedom in total;
        ``D`` is unbiased). ``"per_frame"``: the mean displacement of the
        particles present in consecutive frames is subtracted frame by frame
        (:func:`trackpy.compute_drift`); it also removes any collective motion,
        and lowers the MSD of N independent particles by a factor ``1 - 1/N``.

    Returns
    -------
    pandas.DataFrame
        A copy with drift-corrected position columns; ``attrs["drift"]`` holds
        the drift (nm) per frame.
    """
    import trackpy

    cols = list(columns) if columns is not None else _columns("translation", tracks)[0]
    _check(tracks, cols)
    out = tracks.copy()
    if mode == "none" or len(tracks) == 0:
        return out
    if mode == "constant":
        v, _, frames = displacement_array(tracks, cols)
        d = v[:, 1:, :] - v[:, :-1, :]
        vel = (
            np.nanmean(d.reshape(-1, len(cols)), axis=0)
            if np.isfinite(d).any()
            else np.zeros(len(cols))
        )
        shift = (tracks["frame"].to_numpy() - frames[0])[:, None] * vel[None, :]
        out[cols] = tracks[cols].to_numpy(float) - shift
        out.attrs["drift"] = {"velocity_per_frame": dict(zip(cols, map(float, vel), strict=True))}
        return out
    if mode == "per_frame":
        drift = trackpy.compute_drift(tracks, pos_columns=cols)
        out = trackpy.subtract_drift(tracks.copy(), drift, inplace=False)
        out = out.reset_index(drop=True) if "frame" in out.columns else out.reset_index()
        out.attrs["drift"] = {c: drift[c].to_dict() for c in cols}
        return out
    raise InputError(f"`mode` must be 'none', 'constant' or 'per_frame', got {mode!r}")


# ----------------------------------------------------------------------------- van Hove
def van_hove(
    tracks: pd.DataFrame,
    *,
    lags: list[int] | tuple[int, ...] = (1, 4, 16),
    bins: int | np.ndarray = 61,
    kind: str = "translation",
    columns: list[str] | None = None,
) -> xr.Dataset:
    """Self part of the van Hove function: distribution of 1-D displacements per lag.

    Displacements along every axis are pooled (isotropy assumed). A Gaussian
    with the same variance is returned alongside for comparison.

    Returns
    -------
    xarray.Dataset
        ``density`` (lag, displacement) in 1/nm (1/rad for rotation),
        ``gaussian`` (lag, displacement), ``alpha2`` (lag) and ``n`` (lag);
        coordinate ``displacement`` (bin centres, nm or rad), ``lag`` (frames).
    """
    v, _, _, cols = _values(tracks, kind, columns)
    lags = [int(k) for k in lags if 0 < int(k) < v.shape[1]]
    if not lags:
        raise InputError(f"`lags` must hold lags in 1..{v.shape[1] - 1} frames")
    disp = []
    for k in lags:
        d = (v[:, k:, :] - v[:, :-k, :]).reshape(-1)
        disp.append(d[np.isfinite(d)])
    if isinstance(bins, int):
        span = max(float(np.max(np.abs(d))) if d.size else 1.0 for d in disp)
        edges = np.linspace(-span, span, bins + 1)
    else:
        edges = np.asarray(bins, float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = np.zeros((len(lags), centres.size))
    gauss = np.zeros_like(dens)
    for i, d in enumerate(disp):
        if d.size:
            dens[i] = np.histogram(d, bins=edges, density=True)[0]
            s2 = float(np.mean(d * d))
            gauss[i] = np.exp(-(centres**2) / (2 * s2)) / np.sqrt(2 * np.pi * s2)
    alpha = non_gaussian_parameter(tracks, lags=lags, kind=kind, columns=columns)
    unit = "rad" if kind == "rotation" else "nm"
    return xr.Dataset(
        {
            "density": (("lag", "displacement"), dens, {"units": f"1/{unit}"}),
            "gaussian": (("lag", "displacement"), gauss, {"units": f"1/{unit}"}),
            "alpha2": ("lag", alpha, {"units": "1"}),
            "n": ("lag", np.array([d.size for d in disp], np.int64), {"units": "1"}),
        },
        coords={
            "lag": ("lag", np.array(lags, np.int64), {"units": "frame"}),
            "displacement": ("displacement", centres, {"units": unit}),
        },
    )


def non_gaussian_parameter(
    tracks: pd.DataFrame,
    *,
    lags: list[int] | tuple[int, ...] = (1,),
    kind: str = "translation",
    columns: list[str] | None = None,
) -> np.ndarray:
    """Non-Gaussian parameter ``alpha2 = d <dr^4> / ((d + 2) <dr^2>^2) - 1`` per lag.

    Zero for Gaussian displacements in ``d`` dimensions (Rahman 1964).
    """
    v, _, _, _ = _values(tracks, kind, columns)
    d = v.shape[2]
    L = max([int(k) for k in lags] + [1])
    s2, s4, n = msd_sums(v, L)
    out = []
    for k in lags:
        tot = n[:, k - 1].sum()
        if tot == 0:
            out.append(np.nan)
            continue
        m2, m4 = s2[:, k - 1].sum() / tot, s4[:, k - 1].sum() / tot
        out.append(d * m4 / ((d + 2) * m2 * m2) - 1.0)
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------- pipeline
def diffusion_analysis(
    tracks: pd.DataFrame,
    *,
    frame_interval_s: float,
    exposure_s: float = 0.0,
    drift: DriftMode = "constant",
    fit_lags: int = 4,
    max_lag: int = 50,
    n_boot: int = 300,
    rotation: bool | None = None,
    van_hove_lags: tuple[int, ...] = (1, 4, 16),
    seed: int = 0,
    window_nm: tuple[float, float, float, float] | None = None,
    symmetry_deg: float | None = None,
    rotation_method: RotationMethod = "auto",
) -> tuple[dict[str, Any], xr.Dataset]:
    """The whole diffusion analysis of one tracks table.

    Parameters
    ----------
    tracks : pandas.DataFrame
        Linked tracks (``particle``, ``frame``, ``y_nm``, ``x_nm``, optional
        ``orientation_unwrapped_deg``).
    frame_interval_s, exposure_s : float
        s.
    drift : {"none", "constant", "per_frame"}
        See :func:`correct_drift`.
    fit_lags, max_lag, n_boot : int
    rotation : bool, optional
        Analyse rotation; default when ``orientation_unwrapped_deg`` has data.
    van_hove_lags : tuple of int
    seed : int
    window_nm : (y0, x0, height, width), optional
        Field of view (nm) in which the tracks were observed. Displacements
        that leave it are never observed, which biases the MSD low by a few
        per cent for steps of a few per cent of the field; given the window,
        each displacement is re-weighted to remove that bias (:func:`msd_sums`).
        The van Hove distributions are not re-weighted.
    symmetry_deg : float, optional
        Rotational symmetry period of the particles (120 prism, 90 cube, 180
        rod); default: the period with which the tracks' orientations were
        unwrapped (:func:`rotation_period_deg`).
    rotation_method : {"auto", "correlation", "msd"}
        How ``D_r`` is fitted. ``"correlation"``: from the orientational
        correlation ``<cos m dtheta>`` (:func:`fit_rotational_correlation`),
        which a wrongly unwrapped step or a wild orientation cannot bias;
        ``"msd"``: from the MSD of the unwrapped angle, which one wrong 120°
        step inflates for the rest of the trajectory. ``"auto"``: correlation
        when the symmetry is known, else MSD. Both fits are reported
        (``rotation`` is the chosen one, ``rotation_msd`` and
        ``rotation_correlation`` each).

    Returns
    -------
    summary : dict
        JSON-ready: ``translation`` and ``rotation`` fits (:class:`DiffusionFit`
        dicts, D in nm²/s and rad²/s), ``alpha2``, parameters and units.
    data : xarray.Dataset
        ``msd`` (lag) nm², ``msd_rot`` (lag) rad², ``n`` and van Hove variables.
    """
    t = correct_drift(tracks, mode=drift)
    msd = ensemble_msd(t, frame_interval_s=frame_interval_s, max_lag=max_lag, window_nm=window_nm)
    tr = bootstrap_diffusion(
        t,
        window_nm=window_nm,
        frame_interval_s=frame_interval_s,
        exposure_s=exposure_s,
        fit_lags=fit_lags,
        n_boot=n_boot,
        seed=seed,
    )
    summary: dict[str, Any] = {
        "frame_interval_s": frame_interval_s,
        "exposure_s": exposure_s,
        "drift": drift,
        "window_nm": list(window_nm) if window_nm is not None else None,
        "n_particles": int(t["particle"].nunique()),
        "n_frames": int(t["frame"].nunique()),
        "translation": {**tr.to_dict(), "units": {"D": "nm^2/s", "sigma": "nm"}},
        "model": "MSD = 2 n D (tau - t_E/3) + 2 n sigma^2 (Savin & Doyle 2005)",
    }
    data = xr.Dataset(
        {
            "msd": ("lag", msd["msd"].to_numpy(), {"units": "nm^2"}),
            "n": ("lag", msd["n"].to_numpy().astype(np.int32), {"units": "1"}),
        },
        coords={
            "lag": ("lag", msd.index.to_numpy().astype(np.int32), {"units": "frame"}),
            "lag_s": ("lag", msd["lag_s"].to_numpy(), {"units": "s"}),
        },
    )
    has_rot = (
        "orientation_unwrapped_deg" in t.columns and t["orientation_unwrapped_deg"].notna().any()
    )
    if rotation is None:
        rotation = bool(has_rot)
    if rotation:
        if not has_rot:
            raise InputError("`rotation=True` needs a column `orientation_unwrapped_deg` with data")
        if rotation_method not in ("auto", "correlation", "msd"):
            raise InputError(
                f"`rotation_method` must be 'auto', 'correlation' or 'msd', got {rotation_method!r}"
            )
        period = symmetry_deg if symmetry_deg is not None else rotation_period_deg(t)
        if rotation_method == "correlation" and period is None:
            raise InputError(
                "`rotation_method='correlation'` needs the particles' symmetry: pass "
                "`symmetry_deg` (120 prism, 90 cube, 180 rod)"
            )
        units = {"D": "rad^2/s", "sigma": "rad"}
        mr = ensemble_msd(t, frame_interval_s=frame_interval_s, max_lag=max_lag, kind="rotation")
        rf = bootstrap_diffusion(
            t,
            frame_interval_s=frame_interval_s,
            exposure_s=exposure_s,
            kind="rotation",
            fit_lags=fit_lags,
            n_boot=n_boot,
            seed=seed,
        )
        fits = {"msd": {**rf.to_dict(), "method": "msd", "units": units}}
        data["msd_rot"] = ("lag", mr["msd"].reindex(data.lag.values).to_numpy(), {"units": "rad^2"})
        if period is not None:
            cf = fit_rotational_correlation(
                t,
                frame_interval_s=frame_interval_s,
                symmetry_deg=period,
                exposure_s=exposure_s,
                fit_lags=fit_lags,
                n_boot=n_boot,
                seed=seed,
            )
            fits["correlation"] = {**cf.to_dict(), "method": "correlation", "units": units}
            cr = orientation_correlation(
                t, frame_interval_s=frame_interval_s, symmetry_deg=period, max_lag=max_lag
            )
            data["corr_rot"] = (
                "lag",
                cr["corr"].reindex(data.lag.values).to_numpy(),
                {"units": "1", "long_name": f"<cos {360 / period:g} dtheta>"},
            )
        chosen = "msd" if rotation_method == "msd" or period is None else "correlation"
        summary["rotation"] = fits[chosen]
        summary["rotation_msd"] = fits["msd"]
        if "correlation" in fits:
            summary["rotation_correlation"] = fits["correlation"]
        summary["rotation_symmetry_deg"] = period
    lags = tuple(k for k in van_hove_lags if k < t["frame"].nunique())
    if lags:
        vh = van_hove(t, lags=lags)
        data["van_hove"] = (("vh_lag", "displacement"), vh["density"].values, {"units": "1/nm"})
        data["van_hove_gaussian"] = (
            ("vh_lag", "displacement"),
            vh["gaussian"].values,
            {"units": "1/nm"},
        )
        data = data.assign_coords(
            vh_lag=("vh_lag", vh.lag.values.astype(np.int32), {"units": "frame"}),
            displacement=("displacement", vh.displacement.values, {"units": "nm"}),
        )
        data["alpha2"] = ("vh_lag", vh["alpha2"].values, {"units": "1"})
        summary["alpha2"] = {
            int(k): float(a) for k, a in zip(vh.lag.values, vh["alpha2"].values, strict=True)
        }
    data.attrs.update(frame_interval_s=frame_interval_s, exposure_s=exposure_s, drift=drift)
    return summary, data


def _frame_interval(tracks: pd.DataFrame, given: float | None) -> float:
    if given is not None:
        if given <= 0:
            raise InputError(f"`frame_interval_s` must be > 0, got {given}")
        return float(given)
    if "time_s" in tracks.columns:
        ft = tracks.groupby("frame")["time_s"].first().sort_index()
        df, dt = np.diff(ft.index.to_numpy()), np.diff(ft.to_numpy())
        ok = df > 0
        if ok.any():
            val = float(np.median(dt[ok] / df[ok]))
            if val > 0 and np.isfinite(val):
                return val
    raise InputError(
        "cannot tell the frame interval: the tracks have no usable `time_s`; pass `frame_interval_s`"
    )


def read_tracks(store: str | os.PathLike) -> pd.DataFrame:
    """The tracks table of a store as pandas (``STORE/tables/tracks.parquet``)."""
    from ..measure import read_table
    from ..store import table_path

    path = table_path(store, "tracks")
    if not path.exists():
        raise StoreError(
            f"{str(path)!r} does not exist; link the regions first (lptem track STORE or lp.link_store)"
        )
    return read_table(path).compute().reset_index(drop=True)


def run_diffusion(
    store: str | os.PathLike,
    *,
    frame_interval_s: float | None = None,
    exposure_s: float = 0.0,
    drift: DriftMode = "constant",
    window_nm: tuple[float, float, float, float] | str | None = "store",
    fit_lags: int = 4,
    max_lag: int = 50,
    n_boot: int = 300,
    overwrite: bool = True,
    figures: bool = True,
) -> dict[str, Any]:
    """Diffusion analysis of a store's tracks, saved under ``STORE/results/diffusion/``.

    Writes ``diffusion.json`` (fits with confidence intervals and units),
    ``diffusion.nc`` (MSD, van Hove; xarray/netCDF) and, with ``figures``,
    ``msd.png`` and ``van_hove.png``. The directory appears whole or not at all.

    Parameters
    ----------
    store : path
        A store with ``tables/tracks.parquet``.
    frame_interval_s : float, optional
        Default: from the tracks' ``time_s``.
    exposure_s : float
        Exposure per frame for the motion-blur correction, s (0: none).
    drift, fit_lags, max_lag, n_boot
        See :func:`diffusion_analysis`.
    window_nm : (y0, x0, height, width), "store" or None
        Field-of-view edge correction: "store" uses the extent of the store's
        calibrated image (none when it has no image); None switches it off.
    overwrite : bool
        Replace an existing result.
    figures : bool

    Returns
    -------
    dict
        The summary written to ``diffusion.json``.
    """
    from ..store import RESULTS, atomic_path

    tracks = read_tracks(store)
    dt = _frame_interval(tracks, frame_interval_s)
    if isinstance(window_nm, str):
        if window_nm != "store":
            raise InputError(f"`window_nm` must be a 4-tuple, 'store' or None, got {window_nm!r}")
        from .interaction import _store_window

        window_nm = _store_window(Path(store))
    summary, data = diffusion_analysis(
        tracks,
        frame_interval_s=dt,
        exposure_s=exposure_s,
        drift=drift,
        window_nm=window_nm,
        fit_lags=fit_lags,
        max_lag=max_lag,
        n_boot=n_boot,
    )
    final = Path(store) / RESULTS / "diffusion"
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "diffusion.json").write_text(json.dumps(summary, indent=2, default=float))
        data.to_netcdf(tmp / "diffusion.nc", engine="scipy")
        if figures:
            from ._figures import plot_msd, plot_van_hove

            plot_msd(data, summary, tmp / "msd.png")
            if "van_hove" in data:
                plot_van_hove(data, tmp / "van_hove.png")
    logger.info("diffusion results written to %s", final)
    return summary
