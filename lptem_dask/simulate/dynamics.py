"""Ground-truth dynamics: Brownian and interacting particles, rendered as LPTEM videos.

Two kinds of motion, both pure numpy and deterministic given a seed:

``"brownian"``
    Free translational diffusion (coefficient ``D``, nm²/s) and rotational
    diffusion (``D_r``, rad²/s) of prisms, rods or spheres, with an optional
    constant drift, in a periodic or reflecting box equal to the field of
    view. Every frame's exposure (``exposure_s``, starting at the frame time)
    is sampled by ``motion_substeps`` points of the continuous path; the image
    is the particle averaged along that path (motion blur) and the truth
    position is the same time average, which is what a perfect measurement of
    a blurred image returns.
``"interacting"``
    Nanoprisms under the anisotropic pair potential of :func:`pair_potential_kT`
    (soft core, edge-to-edge attraction, tip repulsion), sampled by Metropolis
    Monte Carlo of single-particle translation and rotation moves. The
    equilibrium distribution of every configuration is ``exp(-U/kT)`` by
    construction (detailed balance), so at low density the pair distribution
    is ``exp(-w(r)/kT)`` with the orientation-averaged potential of mean
    force of :func:`radial_pmf_kT`. Frames are taken every
    ``mc_sweeps_per_frame`` sweeps; MC "time" is not physical time.

Angles follow the project's convention (:mod:`lptem_dask.schema`): degrees
counter-clockwise from +x as displayed (image y points down); a prism's
reference axis points from its centroid to a vertex.

:func:`simulate_trajectories` returns the truth table alone (fast; for analysis
tests); :func:`simulate_video` also renders the frames lazily with
:func:`lptem_dask.simulate.scene.render_frame`, one Dask task per frame chunk,
each frame seeded from ``(seed, frame)``.

References
----------
Savin, T. & Doyle, P. S. Static and dynamic errors in particle tracking
microrheology. Biophys. J. 88, 623-638 (2005).
Metropolis, N. et al. Equation of state calculations by fast computing
machines. J. Chem. Phys. 21, 1087 (1953).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from pydantic import Field, model_validator

from ..config import StageConfig, load_config
from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "DynamicsConfig",
    "load_dynamics_config",
    "pair_potential_kT",
    "radial_pmf_kT",
    "body_frame_pmf_kT",
    "brownian_paths",
    "metropolis_sweeps",
    "interacting_paths",
    "simulate_trajectories",
    "simulate_video",
    "TRUTH_UNITS",
]

_SQRT3 = float(np.sqrt(3.0))
_SYMMETRY_DEG = {"prism": 120.0, "rod": 180.0, "sphere": 360.0}

#: Units of the columns of the truth table.
TRUTH_UNITS: dict[str, str] = {
    "frame": "",
    "time_s": "s",
    "particle": "",
    "y": "px",
    "x": "px",
    "y_nm": "nm",
    "x_nm": "nm",
    "orientation_deg": "deg",
    "orientation_unwrapped_deg": "deg",
    "y_unwrapped_nm": "nm",
    "x_unwrapped_nm": "nm",
    "shape": "",
    "size_nm": "nm",
}

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs" / "dynamics"


class DynamicsConfig(StageConfig):
    """Parameters of a ground-truth dynamics video.

    Energies are in units of kT; lengths in nm; the box is the field of view,
    ``image_size_px * pixel_size_nm`` on a side. ``well_distance_nm`` and
    ``core_diameter_nm`` default to edge-to-edge contact of two prisms,
    ``2 r_in = size_nm / sqrt(3)``, plus a small gap; ``tip_distance_nm``
    defaults to tip-to-edge contact, ``r_in + r_vertex = size_nm * sqrt(3) / 2``.
    """

    kind: Literal["brownian", "interacting"] = "brownian"
    # scene
    shape: Literal["prism", "rod", "sphere"] = "prism"
    size_nm: float = Field(default=100.5, gt=0, description="prism edge | rod length | sphere d")
    thickness_nm: float = Field(default=7.5, gt=0, description="prism plate thickness")
    diameter_nm: float = Field(default=15.0, gt=0, description="rod diameter")
    lambda_nm: float = Field(default=85.0, gt=0, description="particle inelastic mean free path")
    n_particles: int = Field(default=8, ge=1, le=10000)
    image_size_px: int = Field(default=128, ge=8, le=8192)
    pixel_size_nm: float = Field(default=2.09, gt=0)
    frame_interval_s: float = Field(default=0.1, gt=0)
    exposure_s: float = Field(default=0.05, ge=0, description="exposure per frame, <= interval")
    motion_substeps: int = Field(default=32, ge=1, le=4096, description="path samples/exposure")
    boundary: Literal["periodic", "reflecting"] = "periodic"
    min_separation_nm: float | None = Field(
        default=None,
        ge=0,
        description="initial placement; default size_nm (brownian), core (interacting)",
    )
    # brownian
    diffusion_nm2_s: float = Field(default=2000.0, ge=0, description="translational D")
    rotational_diffusion_rad2_s: float = Field(default=0.5, ge=0, description="rotational D_r")
    drift_y_nm_s: float = 0.0
    drift_x_nm_s: float = 0.0
    # interacting (kT units)
    well_depth_kT: float = Field(default=8.0, ge=0, description="edge-to-edge attraction")
    well_distance_nm: float | None = Field(default=None, gt=0, description="centre distance")
    well_width_nm: float = Field(default=4.0, gt=0, description="Gaussian width of the well")
    core_strength_kT: float = Field(default=1.0, gt=0)
    core_diameter_nm: float | None = Field(default=None, gt=0)
    tip_repulsion_kT: float = Field(default=2.0, ge=0)
    tip_distance_nm: float | None = Field(default=None, gt=0)
    mc_step_nm: float = Field(default=4.0, gt=0, description="max translation per MC move")
    mc_rotation_deg: float = Field(default=6.0, gt=0, description="max rotation per MC move")
    mc_sweeps_per_frame: int = Field(default=4, ge=1)
    mc_equilibration_sweeps: int = Field(default=200, ge=0)
    # rendering
    simulation: str = Field(default="prisms", description="simulator preset name or YAML path")
    target_cnr: float | str | None = Field(
        default="moderate", description="named CNR level, a number, or None (physical dose)"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.exposure_s > self.frame_interval_s:
            raise ValueError(
                f"`exposure_s` ({self.exposure_s}) must not exceed `frame_interval_s` "
                f"({self.frame_interval_s})"
            )
        if self.kind == "interacting" and self.shape != "prism":
            raise ValueError("kind='interacting' is defined for shape='prism' only")
        if isinstance(self.target_cnr, str):
            from .config import cnr_levels

            if self.target_cnr not in cnr_levels():
                raise ValueError(
                    f"`target_cnr` {self.target_cnr!r} is not a named level; "
                    f"choose from {list(cnr_levels())} or give a number"
                )
        return self

    # derived geometry ------------------------------------------------------
    @property
    def box_nm(self) -> float:
        """Side of the square box (= field of view), nm."""
        return self.image_size_px * self.pixel_size_nm

    @property
    def inradius_nm(self) -> float:
        """Prism inradius ``L / (2 sqrt 3)``, nm."""
        return self.size_nm / (2.0 * _SQRT3)

    @property
    def well_distance(self) -> float:
        """Centre distance of the well, nm (edge-to-edge contact + 0.08 L by default)."""
        if self.well_distance_nm is not None:
            return self.well_distance_nm
        return 2.0 * self.inradius_nm + 0.08 * self.size_nm

    @property
    def core_diameter(self) -> float:
        """Soft-core diameter, nm (edge-to-edge contact by default)."""
        return self.core_diameter_nm if self.core_diameter_nm is not None else 2 * self.inradius_nm

    @property
    def tip_distance(self) -> float:
        """Range of the tip repulsion, nm (tip-to-edge contact by default)."""
        if self.tip_distance_nm is not None:
            return self.tip_distance_nm
        return 1.5 * 2.0 * self.inradius_nm

    @property
    def symmetry_deg(self) -> float:
        """Rotation that leaves the particle unchanged, deg."""
        return _SYMMETRY_DEG[self.shape]


def load_dynamics_config(path_or_name: str | Path | DynamicsConfig | None) -> DynamicsConfig:
    """Load a :class:`DynamicsConfig` from YAML, a name in ``configs/dynamics/``, or defaults.

    Raises
    ------
    ConfigError
        Unknown name, missing file, unknown keys or bad values.
    """
    if path_or_name is None:
        return DynamicsConfig()
    if isinstance(path_or_name, DynamicsConfig):
        return path_or_name
    p = Path(path_or_name)
    if not p.suffix and (CONFIGS_DIR / f"{p.name}.yaml").exists():
        p = CONFIGS_DIR / f"{p.name}.yaml"
    if not p.exists():
        names = sorted(q.stem for q in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.exists() else []
        raise ConfigError(
            f"`config` {str(path_or_name)!r} is neither a YAML file nor a name in "
            f"{str(CONFIGS_DIR)!r} (available: {names})"
        )
    return load_config(p, DynamicsConfig)


# ----------------------------------------------------------------------------- potential
def _face(phi: np.ndarray) -> np.ndarray:
    """1 where the direction ``phi`` (rad, body frame) is an edge normal, 0 at a vertex."""
    return 0.5 * (1.0 - np.cos(3.0 * phi))


def pair_potential_kT(
    r_nm: np.ndarray,
    phi1_rad: np.ndarray,
    phi2_rad: np.ndarray,
    *,
    config: DynamicsConfig | None = None,
) -> np.ndarray:
    """Anisotropic pair potential of two nanoprisms, in kT.

    ``U = e_c (s_c/r)^12 + e_t (t1 + t2)/2 (s_t/r)^12 - e_w f1 f2 exp(-(r - r_w)^2 / (2 w^2))``

    with ``f = (1 - cos 3 phi)/2`` (1 when the direction to the partner is an
    edge normal of the prism, 0 at a vertex) and ``t = ((1 + cos 3 phi)/2)^2``
    (1 at a vertex). ``phi1`` is the direction from particle 1 to particle 2
    measured in particle 1's body frame (from its vertex axis, CCW), ``phi2``
    the direction from 2 to 1 in particle 2's frame. Edge-to-edge contact is
    attractive; tips pointing at the partner are pushed out to ``s_t``.

    Parameters
    ----------
    r_nm : array_like of float
        Centre-to-centre distance, nm.
    phi1_rad, phi2_rad : array_like of float
        Body-frame directions, rad; broadcast with ``r_nm``.
    config : DynamicsConfig, optional
        ``well_depth_kT`` (e_w), ``well_distance`` (r_w), ``well_width_nm`` (w),
        ``core_strength_kT`` (e_c), ``core_diameter`` (s_c), ``tip_repulsion_kT``
        (e_t), ``tip_distance`` (s_t).

    Returns
    -------
    ndarray of float64
        ``U/kT``.
    """
    c = config or DynamicsConfig(kind="interacting")
    r = np.maximum(np.asarray(r_nm, dtype=np.float64), 1e-6)
    f1, f2 = _face(np.asarray(phi1_rad)), _face(np.asarray(phi2_rad))
    t1, t2 = (1.0 - f1) ** 2, (1.0 - f2) ** 2
    core = c.core_strength_kT * (c.core_diameter / r) ** 12
    tip = c.tip_repulsion_kT * 0.5 * (t1 + t2) * (c.tip_distance / r) ** 12
    well = (
        c.well_depth_kT * f1 * f2 * np.exp(-((r - c.well_distance) ** 2) / (2 * c.well_width_nm**2))
    )
    return core + tip - well


def _phi_grid(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) * (2.0 * np.pi / n)


def radial_pmf_kT(r_nm: np.ndarray, *, config: DynamicsConfig | None = None, n_phi: int = 120):
    """Orientation-averaged potential of mean force ``w(r) = -ln <exp(-U/kT)>``, kT.

    The average runs over both body-frame directions, uniform and independent
    (exact quadrature on ``n_phi`` points each; the integrand is a smooth
    trigonometric polynomial). At infinite dilution ``g(r) = exp(-w(r))``.
    """
    r = np.asarray(r_nm, dtype=np.float64)
    flat = r.reshape(-1)
    p = _phi_grid(n_phi)
    w = np.empty(flat.size)
    step = max(1, 2_000_000 // (n_phi * n_phi))  # bounded memory
    for a in range(0, flat.size, step):
        rr = flat[a : a + step]
        u = pair_potential_kT(rr[:, None, None], p[None, :, None], p[None, None, :], config=config)
        w[a : a + step] = np.exp(-u).mean(axis=(1, 2))
    with np.errstate(divide="ignore"):
        return -np.log(w).reshape(r.shape)


def body_frame_pmf_kT(
    r_nm: np.ndarray,
    phi1_rad: np.ndarray,
    *,
    config: DynamicsConfig | None = None,
    n_phi: int = 120,
) -> np.ndarray:
    """PMF of a neighbour at distance ``r`` and body-frame direction ``phi1``, kT.

    ``-ln <exp(-U(r, phi1, phi2)/kT)>_phi2``: the free-energy landscape around
    a reference prism at infinite dilution (``r`` and ``phi1`` broadcast).
    """
    r, ph = np.broadcast_arrays(np.asarray(r_nm, float), np.asarray(phi1_rad, float))
    rf, pf = r.reshape(-1), ph.reshape(-1)
    p2 = _phi_grid(n_phi)
    out = np.empty(rf.size)
    step = max(1, 4_000_000 // n_phi)
    for a in range(0, rf.size, step):
        u = pair_potential_kT(rf[a : a + step, None], pf[a : a + step, None], p2, config=config)
        out[a : a + step] = np.exp(-u).mean(axis=-1)
    with np.errstate(divide="ignore"):
        return -np.log(out).reshape(r.shape)


# ----------------------------------------------------------------------------- brownian
def _sample_times(n_frames: int, c: DynamicsConfig) -> np.ndarray:
    """Times (s) of the path samples, shape (frame, substep): exposure midpoints."""
    s = c.motion_substeps
    h = c.exposure_s / s
    t0 = np.arange(n_frames) * c.frame_interval_s
    return t0[:, None] + (np.arange(s) + 0.5)[None, :] * h


def _initial_positions(
    rng: np.random.Generator, n: int, box: float, min_sep: float, *, max_tries: int = 20000
) -> np.ndarray:
    """Random sequential placement with a minimum (periodic) separation, (n, 2) nm."""
    pos = np.empty((n, 2))
    k = 0
    tries = 0
    while k < n:
        cand = rng.uniform(0.0, box, size=2)
        if k:
            d = pos[:k] - cand
            d -= box * np.round(d / box)
            if np.min(np.hypot(d[:, 0], d[:, 1])) < min_sep:
                tries += 1
                if tries > max_tries:
                    raise InputError(
                        f"cannot place {n} particles {min_sep:.1f} nm apart in a {box:.0f} nm "
                        f"box; lower `n_particles` or `min_separation_nm`, or enlarge the field"
                    )
                continue
        pos[k] = cand
        k += 1
    return pos


def _fold(x: np.ndarray, box: float) -> np.ndarray:
    """Reflecting boundaries at 0 and ``box``: fold a free path (exact for Brownian motion)."""
    m = np.mod(x, 2.0 * box)
    return box - np.abs(m - box)


def brownian_paths(
    n_particles: int,
    n_frames: int,
    *,
    config: DynamicsConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Continuous Brownian paths sampled inside every exposure.

    Parameters
    ----------
    n_particles, n_frames : int
    config : DynamicsConfig
        ``diffusion_nm2_s``, ``rotational_diffusion_rad2_s``, drift, exposure,
        ``motion_substeps``, ``boundary``.
    rng : numpy.random.Generator

    Returns
    -------
    dict of ndarray
        ``pos_nm`` (frame, substep, particle, 2 [y, x]) free (unwrapped) path, nm;
        ``theta_rad`` (frame, substep, particle) unwrapped orientation, rad;
        ``t_s`` (frame, substep) sample times, s.
    """
    c = config
    t = _sample_times(n_frames, c)
    tf = t.reshape(-1)
    dt = np.diff(tf, prepend=tf[0])  # first increment 0: start at the initial position
    box = c.box_nm
    sep = c.min_separation_nm if c.min_separation_nm is not None else c.size_nm
    start = _initial_positions(rng, n_particles, box, sep)
    th0 = rng.uniform(0.0, 2.0 * np.pi, size=n_particles)
    sd = np.sqrt(2.0 * c.diffusion_nm2_s * dt)[:, None, None]
    steps = rng.standard_normal((tf.size, n_particles, 2)) * sd
    steps[..., 0] += c.drift_y_nm_s * dt[:, None]
    steps[..., 1] += c.drift_x_nm_s * dt[:, None]
    pos = start[None] + np.cumsum(steps, axis=0)
    sdr = np.sqrt(2.0 * c.rotational_diffusion_rad2_s * dt)[:, None]
    theta = th0[None] + np.cumsum(rng.standard_normal((tf.size, n_particles)) * sdr, axis=0)
    s = c.motion_substeps
    return {
        "pos_nm": pos.reshape(n_frames, s, n_particles, 2),
        "theta_rad": theta.reshape(n_frames, s, n_particles),
        "t_s": t,
    }


# ----------------------------------------------------------------------------- Monte Carlo
def _particle_energy(
    pos: np.ndarray, theta: np.ndarray, i: int, yx: np.ndarray, th: np.ndarray, c: DynamicsConfig
) -> np.ndarray:
    """Energy (kT) of particle ``i`` placed at ``yx`` (R, 2) with angle ``th`` (R,) vs the others."""
    box = c.box_nm
    d = np.delete(pos, i, axis=1) - yx[:, None, :]  # (R, N-1, 2): from i to j
    if c.boundary == "periodic":
        d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])
    alpha = np.arctan2(-d[..., 0], d[..., 1])  # screen CCW (y down)
    phi1 = alpha - th[:, None]
    phi2 = alpha + np.pi - np.delete(theta, i, axis=1)
    return pair_potential_kT(r, phi1, phi2, config=c).sum(axis=1)


def metropolis_sweeps(
    pos: np.ndarray,
    theta: np.ndarray,
    n_sweeps: int,
    *,
    config: DynamicsConfig,
    rng: np.random.Generator,
    record: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Metropolis Monte Carlo sweeps of independent replicas, in place.

    One sweep tries one move per particle, in order: a uniform translation in
    ``[-mc_step_nm, mc_step_nm]^2`` together with a uniform rotation in
    ``[-mc_rotation_deg, mc_rotation_deg]``, accepted with probability
    ``min(1, exp(-dU/kT))``. Moves are symmetric, so the chain samples
    ``exp(-U/kT)`` (U from :func:`pair_potential_kT` summed over pairs, minimum
    image in a periodic box; a reflecting box rejects moves out of it).

    Parameters
    ----------
    pos : ndarray, shape (replica, particle, 2 [y, x]), float64, nm
        Positions inside ``[0, box)``; updated in place.
    theta : ndarray, shape (replica, particle), float64, rad
        Orientations; updated in place.
    n_sweeps : int
    config : DynamicsConfig
    rng : numpy.random.Generator
    record : bool
        Return the state after every sweep.

    Returns
    -------
    pos_hist : ndarray (sweep, replica, particle, 2) wrapped positions (empty if not ``record``)
    unwrapped_disp : ndarray (sweep, replica, particle, 2) accepted displacement per sweep, nm
    theta_hist : ndarray (sweep, replica, particle)
    accepted : ndarray (replica,) accepted moves
    acceptance : float
        Fraction of accepted moves.
    """
    c = config
    R, N, _ = pos.shape
    box = c.box_nm
    step, rot = c.mc_step_nm, np.deg2rad(c.mc_rotation_deg)
    shape_h = (n_sweeps if record else 0, R, N)
    pos_hist = np.empty((*shape_h, 2))
    disp_hist = np.zeros((*shape_h, 2))
    th_hist = np.empty(shape_h)
    acc = np.zeros(R, dtype=np.int64)
    for s in range(n_sweeps):
        for i in range(N):
            dyx = rng.uniform(-step, step, size=(R, 2))
            dth = rng.uniform(-rot, rot, size=R)
            u = rng.random(R)
            old, new = pos[:, i, :], pos[:, i, :] + dyx
            inside = np.ones(R, dtype=bool)
            if c.boundary == "periodic":
                new = np.mod(new, box)
            else:
                inside = np.all((new >= 0) & (new < box), axis=1)
            e_old = _particle_energy(pos, theta, i, old, theta[:, i], c) if N > 1 else 0.0
            e_new = _particle_energy(pos, theta, i, new, theta[:, i] + dth, c) if N > 1 else 0.0
            with np.errstate(over="ignore"):
                ok = inside & (u < np.exp(np.minimum(-(e_new - e_old), 0.0)))
            pos[ok, i, :] = new[ok]
            theta[ok, i] += dth[ok]
            acc += ok
            if record:
                disp_hist[s, ok, i, :] = dyx[ok]
        if record:
            pos_hist[s] = pos
            th_hist[s] = theta
    rate = float(acc.sum()) / max(R * N * n_sweeps, 1)
    return pos_hist, disp_hist, th_hist, acc, rate


def interacting_paths(
    n_particles: int,
    n_frames: int,
    *,
    config: DynamicsConfig,
    rng: np.random.Generator,
    n_replicas: int = 1,
) -> dict[str, np.ndarray]:
    """Metropolis Monte Carlo paths of interacting prisms.

    Each frame is ``mc_sweeps_per_frame`` sweeps; the last
    ``round(mc_sweeps_per_frame * exposure_s / frame_interval_s)`` (at least
    one) form the frame's exposure path.

    Returns
    -------
    dict of ndarray
        ``pos_nm`` (frame, substep, replica*particle, 2) unwrapped path, nm;
        ``theta_rad`` (frame, substep, replica*particle); ``t_s`` (frame, substep);
        ``acceptance`` (scalar array).
    """
    c = config
    box = c.box_nm
    sep = c.min_separation_nm if c.min_separation_nm is not None else c.core_diameter
    pos = np.stack([_initial_positions(rng, n_particles, box, sep) for _ in range(n_replicas)])
    theta = rng.uniform(0.0, 2.0 * np.pi, size=(n_replicas, n_particles))
    if c.mc_equilibration_sweeps:
        metropolis_sweeps(pos, theta, c.mc_equilibration_sweeps, config=c, rng=rng, record=False)
    start = pos.copy()
    spf = c.mc_sweeps_per_frame
    hist, disp, th, _, rate = metropolis_sweeps(pos, theta, n_frames * spf, config=c, rng=rng)
    unwrapped = start[None] + np.cumsum(disp, axis=0)
    k = int(min(spf, max(1, round(spf * c.exposure_s / c.frame_interval_s))))
    sel = unwrapped.reshape(n_frames, spf, n_replicas * n_particles, 2)[:, spf - k :]
    ths = th.reshape(n_frames, spf, n_replicas * n_particles)[:, spf - k :]
    t = np.arange(n_frames)[:, None] * c.frame_interval_s + np.linspace(0, c.exposure_s, k)[None]
    logger.info("Metropolis acceptance %.2f over %d sweeps", rate, n_frames * spf)
    return {"pos_nm": sel, "theta_rad": ths, "t_s": t, "acceptance": np.asarray(rate)}


# ----------------------------------------------------------------------------- truth
def _wrap_positions(p: np.ndarray, c: DynamicsConfig) -> np.ndarray:
    if c.boundary == "periodic":
        return np.mod(p, c.box_nm)
    return _fold(p, c.box_nm)


def _truth_table(paths: dict[str, np.ndarray], c: DynamicsConfig) -> pd.DataFrame:
    pos, th = paths["pos_nm"], paths["theta_rad"]
    n_frames, _, n = th.shape
    if c.boundary == "reflecting" and c.kind == "brownian":
        # the physical path is the folded one; average it, not the free path
        mean_pos = _fold(pos, c.box_nm).mean(axis=1)
        unwrapped = mean_pos
    else:
        unwrapped = pos.mean(axis=1)
        mean_pos = _wrap_positions(unwrapped, c)
    th_deg = np.rad2deg(th.mean(axis=1))
    sym = c.symmetry_deg
    if c.shape == "rod":
        wrapped = 90.0 - np.mod(90.0 - th_deg, 180.0)  # (-90, 90]
    else:
        wrapped = np.mod(th_deg, sym)
    ps = c.pixel_size_nm
    frame = np.repeat(np.arange(n_frames, dtype=np.int64), n)
    df = pd.DataFrame(
        {
            "frame": frame,
            "time_s": frame * c.frame_interval_s,
            "particle": np.tile(np.arange(n, dtype=np.int64), n_frames),
            "y": mean_pos[..., 0].ravel() / ps - 0.5,
            "x": mean_pos[..., 1].ravel() / ps - 0.5,
            "y_nm": mean_pos[..., 0].ravel(),
            "x_nm": mean_pos[..., 1].ravel(),
            "orientation_deg": wrapped.ravel(),
            "orientation_unwrapped_deg": th_deg.ravel(),
            "y_unwrapped_nm": unwrapped[..., 0].ravel(),
            "x_unwrapped_nm": unwrapped[..., 1].ravel(),
            "shape": c.shape,
            "size_nm": c.size_nm,
        }
    )
    df.attrs["units"] = dict(TRUTH_UNITS)
    return df


def _resolve(config, overrides: dict[str, Any], kind: str | None) -> DynamicsConfig:
    c = load_dynamics_config(config)
    upd = {k: v for k, v in overrides.items() if v is not None}
    if kind is not None:
        if kind not in ("brownian", "interacting"):
            raise InputError(f"`kind` must be 'brownian' or 'interacting', got {kind!r}")
        upd["kind"] = kind
    if upd:
        bad = [k for k in upd if k not in DynamicsConfig.model_fields]
        if bad:
            raise InputError(
                f"unknown dynamics parameters {bad}; known: {sorted(DynamicsConfig.model_fields)}"
            )
        c = DynamicsConfig.model_validate({**c.model_dump(), **upd})
    return c


def _paths(c: DynamicsConfig, n_frames: int, seed: int, n_replicas: int = 1):
    if n_frames < 1:
        raise InputError(f"`n_frames` must be >= 1, got {n_frames}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0D1]))
    if c.kind == "brownian":
        return brownian_paths(c.n_particles * n_replicas, n_frames, config=c, rng=rng)
    return interacting_paths(c.n_particles, n_frames, config=c, rng=rng, n_replicas=n_replicas)


def simulate_trajectories(
    kind: str | None = None,
    config: DynamicsConfig | str | Path | None = None,
    *,
    seed: int = 0,
    n_frames: int = 100,
    n_replicas: int = 1,
    **overrides: Any,
) -> pd.DataFrame:
    """Ground-truth trajectories without rendering (fast path).

    Parameters
    ----------
    kind : {"brownian", "interacting"}, optional
        Overrides ``config.kind``.
    config : DynamicsConfig, name in ``configs/dynamics``, YAML path or None
    seed : int
        Fixes every random number.
    n_frames : int
    n_replicas : int
        Independent copies of the system, simulated together (vectorised);
        their particles get distinct ids and a ``replica`` column (a
        low-density pair distribution from many two-particle systems is
        exact, free of three-body terms).
    **overrides
        Any :class:`DynamicsConfig` field, e.g. ``diffusion_nm2_s=500``.

    Returns
    -------
    pandas.DataFrame
        One row per particle per frame: ``frame``, ``time_s``, ``particle``,
        ``y``, ``x`` (px, pixel centres at integers), ``y_nm``, ``x_nm`` (in the
        field of view; exposure-averaged), ``orientation_deg`` (modulo the
        particle's symmetry: prisms [0, 120), rods (-90, 90]),
        ``orientation_unwrapped_deg`` (continuous), ``y_unwrapped_nm``,
        ``x_unwrapped_nm`` (continuous through periodic wraps), ``shape``,
        ``size_nm``. ``attrs["units"]`` and ``attrs["config"]`` describe it.

    Examples
    --------
    >>> t = simulate_trajectories("brownian", n_frames=5, n_particles=3, seed=1)
    >>> t.shape[0], t.particle.unique().tolist()
    (15, [0, 1, 2])
    """
    c = _resolve(config, overrides, kind)
    if n_replicas < 1:
        raise InputError(f"`n_replicas` must be >= 1, got {n_replicas}")
    df = _truth_table(_paths(c, n_frames, seed, n_replicas), c)
    if n_replicas > 1:
        df.insert(3, "replica", df["particle"].to_numpy() // c.n_particles)
    df.attrs["config"] = c.model_dump(mode="json")
    df.attrs["frame_interval_s"] = c.frame_interval_s
    df.attrs["exposure_s"] = c.exposure_s
    df.attrs["pixel_size_nm"] = c.pixel_size_nm
    return df


# ----------------------------------------------------------------------------- rendering
def _simulation_config(c: DynamicsConfig):
    from .config import cnr_level, load_simulation_config

    sim = load_simulation_config(c.simulation)
    optics = sim.optics.model_copy(
        update={
            "image_size_px": c.image_size_px,
            "pixel_size_nm": c.pixel_size_nm,
            "exposure_s": max(c.exposure_s, 1e-6),
        }
    )
    tgt = c.target_cnr
    if isinstance(tgt, str):
        tgt = cnr_level(tgt)
    return sim.model_copy(update={"optics": optics, "target_cnr": tgt})


def _frame_particles(
    mean_px: np.ndarray, path_px: np.ndarray, orient_deg: np.ndarray, c: DynamicsConfig
) -> pd.DataFrame:
    """Particle table of one frame for ``render_frame``: centres, orientation, blur path."""
    n = mean_px.shape[0]
    df = pd.DataFrame(
        {
            "y": mean_px[:, 0],
            "x": mean_px[:, 1],
            "orientation_deg": orient_deg,
            "shape": c.shape,
            "size_nm": c.size_nm,
            "thickness_nm": c.thickness_nm,
            "diameter_nm": c.diameter_nm,
            "lambda_nm": c.lambda_nm,
            "labelled": True,
            "label": np.arange(1, n + 1, dtype=np.int32),
        }
    )
    df["path"] = pd.Series([path_px[:, k, :] for k in range(n)], dtype=object)
    return df


def _render_block(
    frames: np.ndarray,
    mean_px: np.ndarray,
    path_px: np.ndarray,
    orient_deg: np.ndarray,
    c_json: dict,
    seed: int,
    params: dict,
    background: dict,
    electrons_per_px: float,
) -> np.ndarray:
    """Render frames ``frames`` (kernel of one chunk); seeds come from ``(seed, frame)``."""
    from .scene import render_frame

    c = DynamicsConfig.model_validate(c_json)
    sim = _simulation_config(c)
    out = np.empty((len(frames), c.image_size_px, c.image_size_px), dtype=np.float32)
    for k, f in enumerate(frames):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF4A, int(f)]))
        parts = _frame_particles(mean_px[k], path_px[k], orient_deg[k], c)
        res = render_frame(
            parts,
            sim,
            rng=rng,
            params=params,
            background=background,
            electrons_per_px=electrons_per_px,
        )
        out[k] = res["image"]
    return out


def simulate_video(
    kind: str | None = None,
    config: DynamicsConfig | str | Path | None = None,
    *,
    seed: int = 0,
    n_frames: int = 50,
    frames_per_chunk: int = 8,
    **overrides: Any,
) -> tuple[xr.DataArray, pd.DataFrame]:
    """A noisy LPTEM video of particles with known dynamics, and its truth.

    Parameters
    ----------
    kind : {"brownian", "interacting"}, optional
        Overrides ``config.kind``.
    config : DynamicsConfig, name in ``configs/dynamics``, YAML path or None
        Dynamics and scene; ``simulation`` names the simulator preset for the
        optics and ``target_cnr`` the difficulty (a named CNR level by default).
    seed : int
        Fixes the trajectories, the background and every frame's noise (frame
        ``f`` is seeded from ``(seed, f)``, so chunking never changes a byte).
    n_frames : int
    frames_per_chunk : int
        Frames per Dask chunk (one render task each).
    **overrides
        Any :class:`DynamicsConfig` field.

    Returns
    -------
    video : xarray.DataArray, dims (frame, y, x), float32, dask-backed (lazy)
        As :func:`lptem_dask.io.from_array` builds it; ``attrs`` add
        ``exposure_s``, ``cnr_expected`` and the resolved ``dynamics`` config.
    truth : pandas.DataFrame
        As :func:`simulate_trajectories`.

    Notes
    -----
    The static background, per-image optics and the electron dose (chosen for
    the target CNR on frame 0) are fixed for the whole video; shot noise is
    drawn per frame. Each particle is drawn at its exposure-averaged position
    and orientation, blurred along its translation path during the exposure
    (rotation during the exposure is not blurred).
    """
    from ..io import from_array
    from .scene import make_background, render_frame, sample_image_params

    c = _resolve(config, overrides, kind)
    if frames_per_chunk < 1:
        raise InputError(f"`frames_per_chunk` must be >= 1, got {frames_per_chunk}")
    paths = _paths(c, n_frames, seed)
    truth = _truth_table(paths, c)
    truth.attrs["config"] = c.model_dump(mode="json")
    truth.attrs["frame_interval_s"] = c.frame_interval_s
    truth.attrs["exposure_s"] = c.exposure_s
    truth.attrs["pixel_size_nm"] = c.pixel_size_nm
    n = paths["theta_rad"].shape[2]
    ps = c.pixel_size_nm
    mean_nm = truth[["y_nm", "x_nm"]].to_numpy().reshape(n_frames, n, 2)
    mean_px = mean_nm / ps - 0.5
    free_mean = paths["pos_nm"].mean(axis=1)  # (frame, particle, 2)
    if c.boundary == "reflecting" and c.kind == "brownian":
        folded = _fold(paths["pos_nm"], c.box_nm)
        path_px = (folded - folded.mean(axis=1, keepdims=True)) / ps
    else:
        path_px = (paths["pos_nm"] - free_mean[:, None]) / ps  # (frame, sub, particle, 2)
    orient = truth["orientation_unwrapped_deg"].to_numpy().reshape(n_frames, n)

    sim = _simulation_config(c)
    rng0 = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB6]))
    params = sample_image_params(rng0, sim)
    params["pixel_size_nm"] = ps
    background = make_background(sim, rng=rng0, params=params)
    first = render_frame(
        _frame_particles(mean_px[0], path_px[0], orient[0], c),
        sim,
        rng=np.random.default_rng(np.random.SeedSequence([int(seed), 0xF4A, 0])),
        params=params,
        background=background,
    )
    n_e = float(first["electrons_per_px"])
    c_json = c.model_dump(mode="json")
    blocks = []
    size = c.image_size_px
    for a in range(0, n_frames, frames_per_chunk):
        b = min(a + frames_per_chunk, n_frames)
        d = dask.delayed(_render_block, pure=True)(
            np.arange(a, b),
            mean_px[a:b],
            path_px[a:b],
            orient[a:b],
            c_json,
            int(seed),
            params,
            background,
            n_e,
        )
        blocks.append(da.from_delayed(d, shape=(b - a, size, size), dtype=np.float32))
    arr = da.concatenate(blocks, axis=0)
    video = from_array(
        arr,
        pixel_size_nm=ps,
        frame_interval_s=c.frame_interval_s,
        source=f"lptem_dask.simulate.dynamics.simulate_video(kind={c.kind!r}, seed={seed})",
    )
    video.attrs["exposure_s"] = c.exposure_s
    video.attrs["cnr_expected"] = float(first["cnr_expected"])
    video.attrs["electrons_per_px"] = n_e
    video.attrs["dynamics"] = c_json
    return video, truth
