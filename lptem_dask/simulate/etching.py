"""Etching of gold nanorods with a curvature-dependent, staged normal velocity.

Each rod's projected outline (a closed curve in the image plane) recedes with
the local normal velocity

    v_n = a + b * kappa        (nm/s; a in nm/s, b in nm^2/s, kappa in 1/nm)

where ``kappa`` is the signed curvature of the outline (positive where convex)
and ``(a, b)`` change at given times (stages). The 3-D rod is the body of
revolution of the outline about its long axis (the radius profile ``r(z)`` is
the half width of the outline), which is how the image simulator draws it.

Integration: front tracking. The outline is a periodic polyline of markers
(spacing ``marker_spacing_nm``), moved along its normal with curvature from
periodic spectral derivatives, explicit Euler steps with
``dt <= 0.2 ds^2 / b`` (diffusive limit) and ``dt <= 0.2 ds / |v_n|``; every
few steps the markers are redistributed at uniform arc length by periodic
cubic splines (fourth-order accurate, so resampling does not shrink the
outline) and a weak spectral filter removes grid-scale noise.

References
----------
Yao, L. et al. ACS Cent. Sci. 6, 1421 (2020), staged, curvature-dependent etching of Au rods.
Sethian, J. A. Level Set Methods and Fast Marching Methods (1999), v_n = a + b kappa fronts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from scipy.interpolate import CubicSpline

from ..config import StageConfig, load_config
from ..errors import ConfigError

__all__ = [
    "EtchStage",
    "EtchingConfig",
    "EtchingTruth",
    "load_etching_config",
    "spherocylinder_outline",
    "outline_curvature",
    "evolve_outline",
    "radius_profile",
    "simulate_etching",
    "simulate_etching_video",
    "etching_particles",
    "truth_contours",
]

logger = logging.getLogger(__name__)


class EtchStage(StageConfig):
    """One stage: from ``start_s`` on, ``v_n = a_nm_per_s + b_nm2_per_s * kappa``."""

    start_s: float = Field(ge=0)
    a_nm_per_s: float
    b_nm2_per_s: float = Field(ge=0)


def _default_stages() -> tuple[EtchStage, ...]:
    return (
        EtchStage(start_s=0.0, a_nm_per_s=0.05, b_nm2_per_s=0.8),
        EtchStage(start_s=30.0, a_nm_per_s=0.12, b_nm2_per_s=0.2),
    )


class EtchingConfig(StageConfig):
    """A simulated etching video: rods, stages and imaging."""

    n_rods: int = Field(default=3, ge=1, le=100)
    length_nm: float = Field(default=50.0, gt=0, description="initial tip-to-tip length")
    diameter_nm: float = Field(default=20.0, gt=0, description="initial diameter")
    size_dispersity: float = Field(default=0.05, ge=0, le=0.3, description="relative std")
    stages: tuple[EtchStage, ...] = Field(default_factory=_default_stages, min_length=1)
    n_frames: int = Field(default=31, ge=2)
    frame_interval_s: float = Field(default=2.0, gt=0)
    marker_spacing_nm: float = Field(default=0.4, gt=0)
    pixel_size_nm: float = Field(default=0.2, gt=0)
    gap_nm: float = Field(default=8.0, ge=0, description="space between rods in the layout")
    margin_nm: float = Field(default=6.0, ge=0)
    lambda_nm: float = Field(default=50.0, gt=0, description="inelastic mean free path of Au")
    simulation: str = Field(default="rods", description="simulator preset or YAML (optics)")
    target_cnr: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self):
        starts = [s.start_s for s in self.stages]
        if starts[0] != 0.0 or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError(
                f"`stages` must start at start_s=0 and increase strictly, got start_s={starts}"
            )
        if min(self.diameter_nm, self.length_nm) < 4 * self.marker_spacing_nm:
            raise ValueError("`marker_spacing_nm` must be < diameter_nm / 4")
        return self

    def stage_at(self, t_s: float) -> EtchStage:
        """The stage in force at time ``t_s``."""
        cur = self.stages[0]
        for s in self.stages:
            if t_s >= s.start_s:
                cur = s
        return cur


def load_etching_config(path_or_name: str | Path | EtchingConfig | None) -> EtchingConfig:
    """Load an :class:`EtchingConfig` from YAML (``configs/etching/*.yaml``), or the defaults."""
    if path_or_name is None:
        return EtchingConfig()
    if isinstance(path_or_name, EtchingConfig):
        return path_or_name
    p = Path(path_or_name)
    if not p.exists():
        raise ConfigError(
            f"`config` must be an EtchingConfig or a YAML path, got {str(p)!r}, which does "
            "not exist; see configs/etching/*.yaml"
        )
    return load_config(p, EtchingConfig)


# ------------------------------------------------------------------------ geometry
def spherocylinder_outline(
    length_nm: float, diameter_nm: float, *, spacing_nm: float
) -> np.ndarray:
    """Outline of a spherocylinder in its body frame (u along the axis, v across), nm.

    Counter-clockwise in (u, v) (v up), uniform arc length, first point at the
    +u tip. Shape (n, 2) float64 columns (u, v).
    """
    R = 0.5 * diameter_nm
    a = max(0.5 * length_nm - R, 0.0)
    perim = 4 * a + 2 * np.pi * R
    n = max(int(round(perim / spacing_nm)), 16)
    s = np.arange(n) * perim / n
    out = np.empty((n, 2))
    # pieces: right cap (-pi/2..pi/2 shifted to start at tip), top side, left cap, bottom side
    q = np.pi * R / 2
    for i, si in enumerate(s):
        if si < q:  # right cap, upper half: angle 0..pi/2
            th = si / R
            out[i] = (a + R * np.cos(th), R * np.sin(th))
        elif si < q + 2 * a:  # top side, right to left
            out[i] = (a - (si - q), R)
        elif si < 3 * q + 2 * a:  # left cap: angle pi/2..3pi/2
            th = np.pi / 2 + (si - q - 2 * a) / R
            out[i] = (-a + R * np.cos(th), R * np.sin(th))
        elif si < 3 * q + 4 * a:  # bottom side, left to right
            out[i] = (-a + (si - 3 * q - 2 * a), -R)
        else:  # right cap, lower half
            th = -np.pi / 2 + (si - 3 * q - 4 * a) / R
            out[i] = (a + R * np.cos(th), R * np.sin(th))
    return out


def _spectral_derivatives(p: np.ndarray, filt: bool = True):
    n = len(p)
    k = np.fft.fftfreq(n, d=1.0 / n)  # integer wavenumbers
    F = np.fft.fft(p, axis=0)
    if filt:
        F *= np.exp(-36.0 * (np.abs(k) / (n / 2)) ** 16)[:, None]
    k1 = k.copy()
    if n % 2 == 0:
        k1[n // 2] = 0
    d1 = np.fft.ifft(1j * k1[:, None] * F, axis=0).real
    d2 = np.fft.ifft(-(k**2)[:, None] * F, axis=0).real
    return d1, d2


def outline_curvature(points: np.ndarray) -> np.ndarray:
    """Signed curvature (1/unit) of a closed curve, counter-clockwise in (u, v), positive convex.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        (u, v), roughly uniform in arc length, last point not repeating the first.
    """
    d1, d2 = _spectral_derivatives(np.asarray(points, np.float64), filt=False)
    sp = np.hypot(d1[:, 0], d1[:, 1])
    return (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / sp**3


def _resample(p: np.ndarray, spacing: float) -> np.ndarray:
    closed = np.vstack([p, p[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    perim = s[-1]
    n = max(int(round(perim / spacing)), 16)
    cs = CubicSpline(s, closed, bc_type="periodic", axis=0)
    return cs(np.arange(n) * perim / n)


def _area(p: np.ndarray) -> float:
    u, v = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(u * np.roll(v, -1) - np.roll(u, -1) * v))


def evolve_outline(
    points: np.ndarray,
    *,
    a_nm_per_s: float,
    b_nm2_per_s: float,
    duration_s: float,
    spacing_nm: float,
) -> np.ndarray:
    """Move a closed outline inward with ``v_n = a + b kappa`` for ``duration_s``.

    Parameters
    ----------
    points : ndarray, shape (n, 2)
        (u, v) nm, counter-clockwise, uniform arc length.
    a_nm_per_s, b_nm2_per_s : float
    duration_s : float
    spacing_nm : float
        Marker spacing kept by resampling.

    Returns
    -------
    ndarray, shape (m, 2)
        The outline after ``duration_s`` (resampled at ``spacing_nm``); an
        empty (0, 2) array once it has vanished.

    Examples
    --------
    A circle of radius 5 nm under ``v_n = b kappa`` (curve-shortening flow)
    keeps its shape with ``R^2 = R0^2 - 2 b t``:

    >>> t = np.linspace(0, 2 * np.pi, 126, endpoint=False)
    >>> c = evolve_outline(5 * np.c_[np.cos(t), np.sin(t)], a_nm_per_s=0.0,
    ...                    b_nm2_per_s=1.0, duration_s=4.0, spacing_nm=0.25)
    >>> round(float(np.hypot(*c.T).mean()), 2), round(float(np.sqrt(25 - 8)), 2)
    (4.12, 4.12)
    """
    p = np.asarray(points, np.float64)
    t = 0.0
    step = 0
    while t < duration_s - 1e-12:
        if len(p) < 16 or _area(p) <= 2 * spacing_nm**2:
            return np.zeros((0, 2))
        d1, d2 = _spectral_derivatives(p)
        sp = np.hypot(d1[:, 0], d1[:, 1])
        kappa = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / sp**3
        n_out = np.column_stack([d1[:, 1], -d1[:, 0]]) / sp[:, None]
        v = a_nm_per_s + b_nm2_per_s * kappa
        ds = float(np.mean(sp)) * 2 * np.pi / len(p)
        dt = duration_s - t
        if b_nm2_per_s > 0:
            dt = min(dt, 0.2 * ds * ds / b_nm2_per_s)
        vmax = float(np.max(np.abs(v)))
        if vmax > 0:
            dt = min(dt, 0.2 * ds / vmax)
        p = p - dt * v[:, None] * n_out
        t += dt
        step += 1
        if step % 10 == 0:
            p = _resample(p, spacing_nm)
    if len(p) < 16 or _area(p) <= 2 * spacing_nm**2:
        return np.zeros((0, 2))
    return _resample(p, spacing_nm)


def radius_profile(outline_uv: np.ndarray, *, n: int = 257) -> tuple[float, float, np.ndarray]:
    """Radius profile of the body of revolution of an outline about the u axis.

    Returns
    -------
    length_nm : float
        Tip-to-tip extent along u.
    centre_u_nm : float
        Middle of the tips (the profile is centred there).
    radius_nm : ndarray, shape (n,)
        Half width ``(v_max(u) - v_min(u)) / 2`` sampled uniformly from tip to tip.
    """
    p = np.asarray(outline_uv, np.float64)
    u0, u1 = float(p[:, 0].min()), float(p[:, 0].max())
    grid = np.linspace(u0, u1, n)
    closed = np.vstack([p, p[:1]])
    hi = np.full(n, -np.inf)
    lo = np.full(n, np.inf)
    for (ua, va), (ub, vb) in zip(closed[:-1], closed[1:], strict=True):
        lo_u, hi_u = min(ua, ub), max(ua, ub)
        sel = (grid >= lo_u) & (grid <= hi_u)
        if not sel.any():
            continue
        if hi_u - lo_u < 1e-12:
            vv = np.full(sel.sum(), max(va, vb))
            hi[sel] = np.maximum(hi[sel], vv)
            lo[sel] = np.minimum(lo[sel], min(va, vb))
            continue
        vv = va + (grid[sel] - ua) * (vb - va) / (ub - ua)
        hi[sel] = np.maximum(hi[sel], vv)
        lo[sel] = np.minimum(lo[sel], vv)
    r = np.where(np.isfinite(hi) & np.isfinite(lo), 0.5 * (hi - lo), 0.0)
    r[0] = r[-1] = 0.0
    return u1 - u0, 0.5 * (u0 + u1), np.maximum(r, 0.0)


# -------------------------------------------------------------------------- truth
@dataclass
class EtchingTruth:
    """Ground truth of a simulated etching video.

    Attributes
    ----------
    outlines : dict[(frame, rod), ndarray (n, 2)]
        Exact outline of each rod at each frame, (y_nm, x_nm) in the field
        (y down), counter-clockwise on screen.
    rods : pandas.DataFrame
        One row per rod per frame: ``frame``, ``time_s``, ``rod``, ``y_nm``,
        ``x_nm`` (centre), ``orientation_deg``, ``length_nm``, ``width_nm``
        (largest diameter), ``area_nm2``, ``volume_nm3``, ``a_nm_per_s``,
        ``b_nm2_per_s`` (stage in force at that time), ``stage``.
    profiles : dict[(frame, rod), ndarray]
        Radius profiles (nm) tip to tip.
    config : EtchingConfig
    image_size_px : tuple of int
        (ny, nx) of the field.
    labels : ndarray of int32 (frame, y, x) or None
        Labels of the rendered video (rod + 1).
    """

    outlines: dict[tuple[int, int], np.ndarray]
    rods: pd.DataFrame
    profiles: dict[tuple[int, int], np.ndarray]
    config: EtchingConfig
    image_size_px: int
    labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stage_change_times_s(self) -> list[float]:
        """Start times of every stage after the first (s)."""
        return [s.start_s for s in self.config.stages[1:]]


def _to_screen(uv: np.ndarray, cy: float, cx: float, th_deg: float) -> np.ndarray:
    th = np.radians(th_deg)
    c, s = np.cos(th), np.sin(th)
    x = cx + uv[:, 0] * c - uv[:, 1] * s
    y = cy - (uv[:, 0] * s + uv[:, 1] * c)
    return np.column_stack([y, x])


def simulate_etching(
    config: EtchingConfig | str | Path | None = None, *, seed: int = 0
) -> EtchingTruth:
    """Evolve the rods' outlines through every frame (fast truth path, no rendering).

    Parameters
    ----------
    config : EtchingConfig, YAML path or None
    seed : int
        Fixes the rods' initial sizes, orientations and positions.

    Returns
    -------
    EtchingTruth
    """
    cfg = load_etching_config(config)
    rng = np.random.default_rng([int(seed), 11])
    n = cfg.n_rods
    L = cfg.length_nm * (1 + cfg.size_dispersity * rng.standard_normal(n))
    D = cfg.diameter_nm * (1 + cfg.size_dispersity * rng.standard_normal(n))
    L = np.maximum(L, D * 1.05)
    # layout: rods stacked in a column, each tilted by up to +-20 deg
    th = rng.uniform(-20, 20, n)
    ext_h = np.abs(L * np.sin(np.radians(th))) + D
    ext_w = np.abs(L * np.cos(np.radians(th))) + D
    height = ext_h.sum() + cfg.gap_nm * (n - 1) + 2 * cfg.margin_nm
    width = ext_w.max() + 2 * cfg.margin_nm
    side_nm = max(height, width)
    size_px = int(np.ceil(side_nm / cfg.pixel_size_nm / 8.0) * 8)
    side_nm = size_px * cfg.pixel_size_nm
    cy = (
        0.5 * (side_nm - height)
        + cfg.margin_nm
        + np.cumsum(ext_h + cfg.gap_nm)
        - cfg.gap_nm
        - 0.5 * ext_h
    )
    cx = np.full(n, 0.5 * side_nm)
    times = np.arange(cfg.n_frames) * cfg.frame_interval_s
    outlines: dict[tuple[int, int], np.ndarray] = {}
    profiles: dict[tuple[int, int], np.ndarray] = {}
    rows = []
    for r in range(n):
        p = spherocylinder_outline(L[r], D[r], spacing_nm=cfg.marker_spacing_nm)
        for f, tf in enumerate(times):
            if f > 0 and len(p):
                t0 = times[f - 1]
                # integrate stage by stage inside the frame interval
                bounds = [t0] + [s.start_s for s in cfg.stages if t0 < s.start_s < tf] + [tf]
                for ta, tb in zip(bounds[:-1], bounds[1:], strict=True):
                    st = cfg.stage_at(ta)
                    p = evolve_outline(
                        p,
                        a_nm_per_s=st.a_nm_per_s,
                        b_nm2_per_s=st.b_nm2_per_s,
                        duration_s=tb - ta,
                        spacing_nm=cfg.marker_spacing_nm,
                    )
                    if not len(p):
                        break
            st = cfg.stage_at(tf)
            stage = [s.start_s for s in cfg.stages].index(st.start_s)
            if not len(p):
                continue
            length, cu, prof = radius_profile(p)
            # re-centre so the rendered body of revolution matches the outline
            uv = p - np.array([cu, 0.0])
            ccx = cx[r] + cu * np.cos(np.radians(th[r]))
            ccy = cy[r] - cu * np.sin(np.radians(th[r]))
            outlines[(f, r)] = _to_screen(uv, ccy, ccx, th[r])
            profiles[(f, r)] = prof
            du = length / (len(prof) - 1)
            rows.append(
                {
                    "frame": f,
                    "time_s": float(tf),
                    "rod": r,
                    "y_nm": ccy,
                    "x_nm": ccx,
                    "orientation_deg": float(th[r]),
                    "length_nm": float(length),
                    "width_nm": float(2 * prof.max()),
                    "area_nm2": _area(p),
                    "volume_nm3": float(np.pi * np.sum(prof**2) * du),
                    "a_nm_per_s": st.a_nm_per_s,
                    "b_nm2_per_s": st.b_nm2_per_s,
                    "stage": stage,
                }
            )
    rods = pd.DataFrame(rows)
    logger.info("etching: %d rods, %d frames", n, cfg.n_frames)
    return EtchingTruth(outlines, rods, profiles, cfg, size_px)


def truth_contours(truth: EtchingTruth) -> pd.DataFrame:
    """The exact outlines as a contours table (``schema.CONTOURS`` columns).

    ``label`` is rod + 1; points counter-clockwise on screen; ``y``, ``x`` px;
    curvature from the exact outline (1/nm, positive convex).
    """
    ps = truth.config.pixel_size_nm
    parts = []
    for (f, r), yx in sorted(truth.outlines.items()):
        uv = np.column_stack([yx[:, 1], -yx[:, 0]])  # screen axes, y up: CCW
        kappa = outline_curvature(uv)
        seg = np.hypot(*np.diff(np.vstack([yx, yx[:1]]), axis=0).T)
        m = len(yx)
        parts.append(
            pd.DataFrame(
                {
                    "frame": np.full(m, f, np.int64),
                    "label": np.full(m, r + 1, np.int32),
                    "point": np.arange(m, dtype=np.int32),
                    "y": yx[:, 0] / ps - 0.5,
                    "x": yx[:, 1] / ps - 0.5,
                    "y_nm": yx[:, 0],
                    "x_nm": yx[:, 1],
                    "arc_length_nm": np.concatenate([[0.0], np.cumsum(seg)[:-1]]),
                    "curvature_per_nm": kappa,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def etching_particles(truth: EtchingTruth, frame: int) -> pd.DataFrame:
    """Particle list of one frame for the image simulator (rods with radius profiles)."""
    cfg = truth.config
    ps = cfg.pixel_size_nm
    r = truth.rods[truth.rods["frame"] == frame]
    df = pd.DataFrame(
        {
            "particle": r["rod"].to_numpy(),
            "y": r["y_nm"].to_numpy() / ps - 0.5,
            "x": r["x_nm"].to_numpy() / ps - 0.5,
            "shape": "rod",
            "size_nm": r["length_nm"].to_numpy(),
            "diameter_nm": r["width_nm"].to_numpy(),
            "orientation_deg": r["orientation_deg"].to_numpy(),
            "lambda_nm": cfg.lambda_nm,
            "labelled": True,
        }
    )
    df["radius_profile_nm"] = pd.Series(
        [truth.profiles[(frame, int(k))] for k in r["rod"]], index=df.index, dtype=object
    )
    return df


def simulate_etching_video(config: EtchingConfig | str | Path | None = None, *, seed: int = 0):
    """Render a simulated etching video through the LPTEM image simulator.

    Parameters
    ----------
    config : EtchingConfig, YAML path or None
    seed : int

    Returns
    -------
    video : xr.DataArray, dims (frame, y, x)
    truth : EtchingTruth
        With ``labels`` (int32, rod + 1) of every frame.
    """
    from .assembly import _render_video

    truth = simulate_etching(config, seed=seed)
    cfg = truth.config
    frames = [etching_particles(truth, f) for f in range(cfg.n_frames)]
    video, labels = _render_video(
        frames,
        simulation=cfg.simulation,
        image_size_px=truth.image_size_px,
        pixel_size_nm=cfg.pixel_size_nm,
        frame_interval_s=cfg.frame_interval_s,
        target_cnr=cfg.target_cnr,
        seed=seed,
        source=f"simulate_etching_video(seed={seed})",
    )
    truth.labels = labels
    return video, truth
