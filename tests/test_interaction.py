"""Pair distribution, PMF and body-frame landscape against exact answers and simulator truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.io
import xarray as xr
from conftest import shared_data
from scipy.spatial import cKDTree

from lptem_dask.analysis.interaction import (
    angular_profile,
    body_frame_landscape,
    first_peak,
    ideal_pair_density,
    interaction_analysis,
    landscape_minimum,
    radial_distribution,
    run_interaction,
    well_estimate,
)
from lptem_dask.errors import InputError
from lptem_dask.simulate.dynamics import load_dynamics_config, radial_pmf_kT, simulate_trajectories

PX = 2.09  # nm per pixel of the simulated videos


def _uniform(n_frames: int, n: int, H: float, W: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "frame": np.repeat(np.arange(n_frames), n),
            "y_nm": rng.uniform(0, H, n_frames * n),
            "x_nm": rng.uniform(0, W, n_frames * n),
            "orientation_deg": rng.uniform(0, 360, n_frames * n),
        }
    )


def test_ideal_pair_density_matches_monte_carlo():
    W, H = 300.0, 120.0
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(400_000, 2)) * [H, W]
    b = rng.uniform(size=(400_000, 2)) * [H, W]
    r = np.hypot(*(a - b).T)
    edges = np.linspace(0, np.hypot(W, H), 41)
    h = np.histogram(r, bins=edges)[0] / r.size
    x = np.linspace(0, np.hypot(W, H), 4001)
    p = ideal_pair_density(x, width_nm=W, height_nm=H)
    expected = np.array(
        [
            np.trapezoid(p[(x >= lo) & (x <= hi)], x[(x >= lo) & (x <= hi)])
            for lo, hi in zip(edges[:-1], edges[1:], strict=False)
        ]
    )
    se = np.sqrt(expected / r.size)
    assert np.all(np.abs(h - expected) < 5 * se + 1e-6)
    # continuity where the closed form hands over to the quadrature
    e = 1e-6
    lo, hi = ideal_pair_density(np.array([H - e, H + e]), width_nm=W, height_nm=H)
    assert abs(lo - hi) < 1e-6 * lo


def test_ideal_gas_gives_g_equal_one_including_large_r():
    H, W = 200.0, 320.0
    t = _uniform(3000, 8, H, W)
    rad = radial_distribution(t, window_nm=(0, 0, H, W), r_max_nm=300.0, bin_nm=10.0, n_boot=100)
    g, err = rad["g"].values, rad["g_err"].values
    assert np.all(np.abs(g - 1) < 4.5 * err + 1e-3), (g, err)
    # the naive 2 pi r dr normalisation would be far off at large r (edge effects)
    r = rad.r.values
    naive = rad["counts"].values / (2 * np.pi * r * 10.0 / (W * H) * 3000 * 8 * 7 / 2)
    assert naive[r > 150].max() < 0.6
    land = body_frame_landscape(t, window_nm=(0, 0, H, W), extent_nm=150.0, bin_nm=15.0)
    gl = land["g"].values[land["counts"].values > 200]
    assert abs(gl.mean() - 1) < 0.02 and np.abs(gl - 1).max() < 0.25


def test_radial_errors():
    t = _uniform(10, 3, 100.0, 100.0)
    with pytest.raises(InputError):
        radial_distribution(t, window_nm=(0, 0, -1, 100))
    with pytest.raises(InputError):
        radial_distribution(t.drop(columns=["x_nm"]))
    with pytest.raises(InputError):
        radial_distribution(t, r_max_nm=40, tail_range_nm=(80, 90))


def _pmf_run(n_replicas: int, n_frames: int, seed: int):
    c = load_dynamics_config("interacting_prisms")
    tr = simulate_trajectories(config=c, n_frames=n_frames, n_replicas=n_replicas, seed=seed)
    tr["snapshot"] = tr["replica"] * n_frames + tr["frame"]
    L, tail = c.box_nm, (125.0, 145.0)
    rad = radial_distribution(
        tr,
        window_nm=(0, 0, L, L),
        r_max_nm=150.0,
        bin_nm=1.0,
        tail_range_nm=tail,
        block_frames=n_frames,
        n_boot=100,
        frame_column="snapshot",
        seed=seed,
    )
    well = well_estimate(rad, search_range_nm=(55.0, 100.0), tail_range_nm=tail)
    r = np.linspace(55, 100, 4501)
    w = radial_pmf_kT(r, config=c)
    truth_depth = float(radial_pmf_kT(np.linspace(*tail, 41), config=c).mean() - w.min())
    land = body_frame_landscape(
        tr,
        window_nm=(0, 0, L, L),
        extent_nm=120.0,
        bin_nm=6.0,
        frame_column="snapshot",
        orientation_column="orientation_deg",
    )
    return well, truth_depth, float(r[np.argmin(w)]), land


def _check_pmf(well, truth_depth, truth_pos, land):
    assert truth_depth >= 2.0
    assert abs(well["depth_kT"] - truth_depth) < 0.3, (well, truth_depth)
    assert abs(well["position_nm"] - truth_pos) < 1.0 * PX, (well, truth_pos)
    assert well["depth_err_kT"] is not None and 0 < well["depth_err_kT"] < 0.3
    m = landscape_minimum(land)
    assert abs(m["angle_mod_symmetry_deg"] - 60.0) < 15.0, m  # edge normal, not a vertex (0)
    prof = angular_profile(land, r_range_nm=(60.0, 72.0), n_bins=12)
    f = prof["free_energy"].values
    assert np.nanargmin(f) in (4, 5, 6, 7)  # 40-80 deg
    assert not np.isfinite(f[0]) or f[0] > np.nanmin(f) + 3  # vertex direction is repulsive


def test_pmf_well_and_landscape_direction_from_mc():
    _check_pmf(*_pmf_run(400, 100, seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_pmf_well_and_landscape_direction_from_mc_long(seed):
    _check_pmf(*_pmf_run(1500, 300, seed=seed))


def test_interaction_analysis_and_run_interaction(tmp_path):
    from lptem_dask.measure import write_table

    c = load_dynamics_config("interacting_prisms")
    tr = simulate_trajectories(config=c, n_frames=60, seed=5, n_particles=6, image_size_px=200)
    s, rad, land = interaction_analysis(tr.drop(columns=["shape"]), n_boot=20)
    assert land is not None and s["orientation_column"] == "orientation_deg"
    store = tmp_path / "v.zarr"
    write_table(tr.drop(columns=["shape", "y_unwrapped_nm", "x_unwrapped_nm"]), store, "tracks")
    L = c.box_nm * 200 / 144
    out = run_interaction(store, window_nm=(0, 0, L, L), n_boot=20)
    d = store / "results" / "interaction"
    for name in ("interaction.json", "radial.nc", "landscape.nc", "pmf.png", "landscape.png"):
        assert (d / name).exists(), name
    js = json.loads((d / "interaction.json").read_text())
    assert js["window_source"] == "given" and js["well"]["depth_kT"] == out["well"]["depth_kT"]
    with xr.open_dataset(d / "radial.nc", engine="scipy") as ds:
        assert ds["pmf"].attrs["units"] == "kT"


def _lattice(name: str):
    pos = scipy.io.loadmat(shared_data(f"real/lptem-lattice-trajectories/{name}.mat"))["pos"]
    n, _, T = pos.shape
    t = pd.DataFrame(
        {
            "particle": np.repeat(np.arange(n), T),
            "frame": np.tile(np.arange(T), n),
            "x_nm": pos[:, 0, :].ravel(),
            "y_nm": pos[:, 1, :].ravel(),
        }
    )
    d = np.concatenate([cKDTree(pos[:, :, k]).query(pos[:, :, k], k=7)[0][:, 1:] for k in range(T)])
    return t, d


@pytest.mark.parametrize(
    "name",
    [
        "Cube_110mM_raw",
        "Cube_22mM_raw",
        "Rod_raw",
        pytest.param(
            "Prism_raw",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the prism lattice is distorted: its first shell spans 108-125 nm (median "
                "1st..6th neighbour), so the g(r) peak (114.4 nm) lies 5.5% above the median "
                "nearest-neighbour distance (108.4 nm); see test_real_prism_lattice_peak_in_first_shell",
            ),
        ),
    ],
)
def test_real_lattice_first_peak_at_nearest_neighbour_distance(name):
    t, d = _lattice(name)
    nn = float(np.median(d[:, 0]))
    rad = radial_distribution(t, r_max_nm=2.5 * nn, bin_nm=nn / 50, n_boot=0)
    peak = first_peak(rad, r_max_nm=1.5 * nn)
    assert peak["g"] > 3
    assert abs(peak["position_nm"] / nn - 1) < 0.05, (peak, nn)


def test_real_prism_lattice_peak_in_first_shell():
    t, d = _lattice("Prism_raw")
    rad = radial_distribution(t, r_max_nm=300.0, bin_nm=2.0, n_boot=0)
    peak = first_peak(rad, r_max_nm=160.0)
    shell = np.median(d, axis=0)  # median distance of the 1st..6th neighbours
    assert shell[0] <= peak["position_nm"] <= shell[-1]
    assert abs(peak["position_nm"] / np.median(d) - 1) < 0.03  # median first-shell distance


# ----------------------------------------------------------------------------- end to end
# simulated noisy video -> U-Net -> measure_regions -> g(r), PMF and body-frame landscape.
# Two prisms (edge 100.5 nm, 48 px) in a periodic 144-px box under the anisotropic pair
# potential; 5 independent videos of 4000 frames at the moderate named CNR. Bound pairs sit
# edge to edge 8 nm (4 px) apart, which the U-Net's maps do not separate: the segmentation
# is told the area of one particle (`particle_area_px`, from a first pass over 300 frames)
# and splits regions of two particle areas.
E2E_INTERACTION = {"seeds": (1, 2, 3, 4, 5), "n_frames": 4000}


def _segmented_pair_table(seed: int, n_frames: int) -> pd.DataFrame:
    import lptem_dask as lp
    from lptem_dask.measure import measure_regions
    from lptem_dask.simulate.dynamics import simulate_video

    c = load_dynamics_config("interacting_prisms")
    video, _ = simulate_video(config=c, seed=seed, n_frames=n_frames, frames_per_chunk=250)
    size_px = float(np.sqrt(np.sqrt(3) / np.pi) * c.size_nm / c.pixel_size_nm)  # equal-area disc
    first = video.isel(frame=slice(0, 300))
    probe = measure_regions(lp.segment(first, model="default", particle_size_px=size_px), first)
    probe = probe.compute()
    area = float(probe.loc[~probe["touches_border"], "area_px"].median())
    labels = lp.segment(video, model="default", particle_size_px=size_px, particle_area_px=area)
    return measure_regions(labels, video, shape="prism").compute()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 13 min on 2 cores
def test_end_to_end_unet_well_and_landscape():
    """Issue 6: a well >= 2 kT deep, recovered through the U-Net: depth within 0.3 kT,
    position within 1 px, and the landscape's minimum along the prism's edge normal."""
    from lptem_dask.models import default_model_paths

    if not default_model_paths()[0].exists():
        pytest.skip("the default U-Net does not exist yet; train it with `make model`")
    c = load_dynamics_config("interacting_prisms")
    n_frames = E2E_INTERACTION["n_frames"]
    parts = []
    for k, seed in enumerate(E2E_INTERACTION["seeds"]):
        t = _segmented_pair_table(seed, n_frames)
        t["frame"] = t["frame"] + k * n_frames  # independent videos, one frame axis
        parts.append(t)
    tab = pd.concat(parts, ignore_index=True)
    # a prism whose centre lies a circumradius (+1 px) inside the frame never touches its
    # border, whatever its orientation: inside that window every particle is observed
    L = c.image_size_px * c.pixel_size_nm
    R = c.size_nm / np.sqrt(3) + c.pixel_size_nm
    t = tab[~tab["touches_border"]]
    t = t[t["y_nm"].between(R, L - R) & t["x_nm"].between(R, L - R)]
    win = (R, R, L - 2 * R, L - 2 * R)
    tail = (120.0, 140.0)  # beyond contact in every orientation (2 circumradii = 116 nm)
    rad = radial_distribution(
        t,
        window_nm=win,
        r_max_nm=145.0,
        bin_nm=1.0,
        tail_range_nm=tail,
        block_frames=200,
        n_boot=100,
    )
    well = well_estimate(rad, search_range_nm=(55.0, 100.0), tail_range_nm=tail)
    r = np.linspace(55, 100, 4501)
    w = radial_pmf_kT(r, config=c)
    truth_depth = float(radial_pmf_kT(np.linspace(*tail, 41), config=c).mean() - w.min())
    truth_pos = float(r[np.argmin(w)])
    print(f"E2E well: {well}; truth depth {truth_depth:.3f} kT at {truth_pos:.2f} nm")
    assert truth_depth >= 2.0
    assert abs(well["depth_kT"] - truth_depth) < 0.3, (well, truth_depth)
    assert abs(well["position_nm"] - truth_pos) < 1.0 * PX, (well, truth_pos)
    land = body_frame_landscape(
        t, window_nm=win, extent_nm=120.0, bin_nm=6.0, orientation_column="prism_orientation_deg"
    )
    m = landscape_minimum(land)
    print(f"E2E landscape minimum: {m}")
    assert abs(m["angle_mod_symmetry_deg"] - 60.0) < 15.0, m  # edge normal, not a vertex (0)
