"""Ground-truth dynamics: determinism, Brownian statistics, Metropolis sampling of exp(-U/kT)."""

from __future__ import annotations

import numpy as np
import pytest

from lptem_dask.errors import ConfigError, InputError
from lptem_dask.simulate.dynamics import (
    DynamicsConfig,
    _initial_positions,
    body_frame_pmf_kT,
    load_dynamics_config,
    metropolis_sweeps,
    pair_potential_kT,
    radial_pmf_kT,
    simulate_trajectories,
    simulate_video,
)


def test_trajectories_deterministic_and_columns():
    a = simulate_trajectories("brownian", n_frames=20, n_particles=3, seed=5)
    b = simulate_trajectories("brownian", n_frames=20, n_particles=3, seed=5)
    c = simulate_trajectories("brownian", n_frames=20, n_particles=3, seed=6)
    assert a.equals(b) and not a.equals(c)
    for col in ("frame", "particle", "y", "x", "y_nm", "x_nm", "orientation_deg"):
        assert col in a.columns
    ps = a.attrs["pixel_size_nm"]
    np.testing.assert_allclose(a["x_nm"], (a["x"] + 0.5) * ps)
    box = DynamicsConfig().box_nm
    assert a["x_nm"].between(0, box).all() and a["y_nm"].between(0, box).all()
    assert a["orientation_deg"].between(0, 120).all()  # prisms: modulo 120


def test_brownian_increments_have_the_right_variance():
    """Exposure-averaged positions: Var(step) = 2 D (dt - t_E/3) per axis (Savin & Doyle)."""
    D, Dr, dt, te = 1500.0, 0.8, 0.1, 0.06
    t = simulate_trajectories(
        "brownian",
        n_frames=400,
        n_particles=50,
        seed=2,
        diffusion_nm2_s=D,
        rotational_diffusion_rad2_s=Dr,
        frame_interval_s=dt,
        exposure_s=te,
        motion_substeps=64,
        image_size_px=2000,
    ).sort_values(["particle", "frame"])
    dx = t.groupby("particle")["x_unwrapped_nm"].diff().dropna().to_numpy()
    dth = np.deg2rad(t.groupby("particle")["orientation_unwrapped_deg"].diff().dropna().to_numpy())
    expect = 2 * D * (dt - te / 3)
    assert abs(dx.var() / expect - 1) < 0.05
    assert abs(dth.var() / (2 * Dr * (dt - te / 3)) - 1) < 0.05
    # and the blur term is really there: without it the variance would be 2 D dt
    assert dx.var() < 0.9 * 2 * D * dt


def test_drift_and_reflecting_boundary():
    t = simulate_trajectories(
        "brownian",
        n_frames=50,
        n_particles=20,
        seed=1,
        diffusion_nm2_s=10.0,
        drift_x_nm_s=100.0,
        image_size_px=1000,
    )
    v = t.groupby("particle").apply(lambda g: np.polyfit(g.time_s, g.x_unwrapped_nm, 1)[0])
    assert abs(v.mean() - 100.0) < 5.0
    r = simulate_trajectories(
        "brownian",
        n_frames=200,
        n_particles=5,
        seed=1,
        diffusion_nm2_s=1e5,
        boundary="reflecting",
        size_nm=10.0,
        image_size_px=64,
    )
    box = 64 * 2.09
    assert r["x_nm"].between(0, box).all() and r["y_nm"].between(0, box).all()
    assert r["x_nm"].max() > 0.8 * box and r["x_nm"].min() < 0.2 * box


def test_config_errors():
    with pytest.raises(ValueError):
        DynamicsConfig(exposure_s=0.2, frame_interval_s=0.1)
    with pytest.raises(ValueError):
        DynamicsConfig(kind="interacting", shape="rod")
    with pytest.raises(ConfigError):
        load_dynamics_config("no_such_config")
    with pytest.raises(InputError):
        simulate_trajectories("bogus")
    with pytest.raises(InputError):
        simulate_trajectories("brownian", no_such_field=1)
    assert load_dynamics_config("brownian_prisms").kind == "brownian"
    assert load_dynamics_config("interacting_prisms").kind == "interacting"


def test_potential_is_anisotropic_and_pmf_well():
    c = load_dynamics_config("interacting_prisms")
    r = c.well_distance
    edge, tip = np.deg2rad(60.0), 0.0
    assert pair_potential_kT(r, edge, edge, config=c) < -3.0  # edge to edge: attraction
    assert pair_potential_kT(r, tip, tip, config=c) > 1.0  # tip to tip: repulsion
    rr = np.linspace(55, 110, 551)
    w = radial_pmf_kT(rr, config=c)
    assert 2.0 < -w.min() < 5.0 and abs(rr[np.argmin(w)] - r) < 2.0
    b = body_frame_pmf_kT(r, np.deg2rad([0.0, 60.0, 180.0]), config=c)
    assert b[1] < b[0] - 2 and abs(b[1] - b[2]) < 1e-9  # 3-fold symmetric, minimum at edge normal


def _min_image_density(r: np.ndarray, L: float, c) -> np.ndarray:
    """Density of the minimum-image distance of two particles in a periodic L x L box."""
    ell = np.where(
        r <= L / 2, 2 * np.pi * r, r * (2 * np.pi - 8 * np.arccos(np.minimum(L / (2 * r), 1)))
    )
    return ell * np.exp(-radial_pmf_kT(r, config=c))


def test_metropolis_samples_boltzmann_distribution():
    """Two prisms in a periodic box: the sampled distance distribution is exp(-w(r)/kT) x geometry.

    Independent replicas give honest standard errors; every bin must agree within 4.5 sigma,
    and a sampler at the wrong temperature (U/2) must be caught.
    """
    c = DynamicsConfig(
        kind="interacting",
        n_particles=2,
        image_size_px=110,
        well_depth_kT=6.0,
        mc_step_nm=12,
        mc_rotation_deg=25,
    )
    R, L = 1200, c.box_nm
    rng = np.random.default_rng(11)
    pos = np.stack([_initial_positions(rng, 2, L, c.core_diameter) for _ in range(R)])
    th = rng.uniform(0, 2 * np.pi, (R, 2))
    metropolis_sweeps(pos, th, 300, config=c, rng=rng, record=False)
    hist, _, th_hist, _, rate = metropolis_sweeps(pos, th, 600, config=c, rng=rng)
    assert 0.2 < rate < 0.95
    d = hist[::3, :, 1] - hist[::3, :, 0]
    d -= L * np.round(d / L)
    r = np.hypot(d[..., 0], d[..., 1])
    edges = np.array([50, 60, 63, 66, 69, 72, 80, 95, 110, 130, 150, L / np.sqrt(2)])
    per = np.stack([np.histogram(r[:, k], bins=edges)[0] for k in range(R)]) / r.shape[0]
    m, se = per.mean(0), per.std(0) / np.sqrt(R)
    rr = np.linspace(1, L / np.sqrt(2), 2000)

    def expected(cfg):
        dens = _min_image_density(rr, L, cfg)
        z = np.trapezoid(dens, rr)
        return (
            np.array(
                [
                    np.trapezoid(dens[(rr >= a) & (rr < b)], rr[(rr >= a) & (rr < b)])
                    for a, b in zip(edges[:-1], edges[1:], strict=False)
                ]
            )
            / z
        )

    z = (m - expected(c)) / np.maximum(se, 1e-12)
    assert np.all(np.abs(z) < 4.5), z
    hot = c.model_copy(
        update={"well_depth_kT": 3.0, "core_strength_kT": 0.5, "tip_repulsion_kT": 1.0}
    )
    assert np.max(np.abs((m - expected(hot)) / np.maximum(se, 1e-12))) > 10
    # direction of the partner in the body frame within the well: edge normals (60 deg mod 120)
    alpha = np.arctan2(-d[..., 0], d[..., 1])
    phi = np.rad2deg(np.mod(alpha - th_hist[::3, :, 0], 2 * np.pi / 3))
    inwell = (r > 62) & (r < 70)
    h = np.histogram(phi[inwell], bins=6, range=(0, 120))[0]
    assert np.argmax(h) in (2, 3)  # bins 40-60 and 60-80 deg


def test_simulate_video_small_and_chunk_invariant():
    kw = dict(n_frames=4, n_particles=2, image_size_px=48, size_nm=30.0, seed=3)
    v, truth = simulate_video("brownian", frames_per_chunk=3, **kw)
    assert v.dims == ("frame", "y", "x") and v.sizes["frame"] == 4 and v.dtype == np.float32
    assert v.attrs["frame_interval_s"] == 0.1 and v.attrs["pixel_size_nm"] == 2.09
    assert v.chunks[0] == (3, 1)
    a = v.values
    b, _ = simulate_video("brownian", frames_per_chunk=1, **kw)
    np.testing.assert_array_equal(a, b.values)
    assert len(truth) == 8 and set(truth.frame) == {0, 1, 2, 3}
    # particles are darker than the background at their truth positions
    f0 = truth[truth.frame == 0]
    vals = a[0][np.round(f0.y).astype(int).clip(0, 47), np.round(f0.x).astype(int).clip(0, 47)]
    assert vals.mean() < np.median(a[0])
