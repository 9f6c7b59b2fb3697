"""The simulator against closed-form physics (shapes, Beer-Lambert, noise, MTF, blur)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lptem_dask.simulate import (
    SimulationConfig,
    brownian_path,
    measure_cnr,
    mtf_from_noise,
    render_frame,
    simulate_images,
    simulate_one,
)
from lptem_dask.simulate.optics import (
    apply_mtf,
    disk_kernel,
    mtf_2d,
    mtf_radial,
    path_kernel,
)

PS = 1.0  # nm per px in these tests
N_E = 100.0 * 100.0 * PS**2 * 0.1  # dose 100 e/A2/s, 1 nm px, 0.1 s -> 1000 e/px


def cfg(
    *,
    size=128,
    shapes=({"shape": "sphere", "size_nm": 40.0, "size_dispersity": 0.0},),
    count=1,
    optics=None,
    particles=None,
    **top,
) -> SimulationConfig:
    """A quiet configuration: no MTF, no noise, no motion, 1 nm/px."""
    o = {
        "image_size_px": size,
        "pixel_size_nm": PS,
        "mtf": "none",
        "shot_noise": False,
        "gain_counts_per_e": 1.0,
        "quantisation": "none",
    }
    o.update(optics or {})
    p = {
        "shapes": list(shapes),
        "count": count,
        "diffusion_nm2_s": 0.0,
        "border_padding": 0.0,
    }
    p.update(particles or {})
    return SimulationConfig.model_validate({"optics": o, "particles": p, **top})


def background_expected(liquid=100.0, lam_liq=185.0, sin=50.0, lam_sin=144.0) -> float:
    return N_E * np.exp(-(liquid / lam_liq + 2 * sin / lam_sin))


def one_particle(shape: str, size_nm: float, **kw) -> pd.DataFrame:
    row = {"y": 63.3, "x": 64.2, "shape": shape, "size_nm": size_nm, "lambda_nm": 50.0}
    row.update(kw)
    return pd.DataFrame([row])


def thickness_from_image(img, bg, lam_p=50.0, lam_liq=185.0):
    """Invert Beer-Lambert with displaced liquid: t = -ln(I/I_bg) / (1/lam_p - 1/lam_liq)."""
    return -np.log(img / bg) / (1.0 / lam_p - 1.0 / lam_liq)


def test_noise_free_background_level():
    ds = simulate_images(2, cfg(count=0), seed=0, chunk_size=1, truth=False)
    img = ds["image"].values
    assert img.shape == (2, 128, 128)
    np.testing.assert_allclose(img, background_expected(), rtol=5e-3)


def test_particle_background_ratio_beer_lambert():
    c = cfg(
        shapes=(
            {
                "shape": "prism",
                "size_nm": 60.0,
                "thickness_nm": 12.0,
                "size_dispersity": 0,
                "mfp_nm": 40.0,
            },
        )
    )
    ds = simulate_images(3, c, seed=1, chunk_size=2)
    img, mask = ds["image"].values, ds["mask"].values
    bg = background_expected()
    want = np.exp(-12.0 * (1 / 40.0 - 1 / 185.0))
    for k in range(3):
        inside = mask[k]
        # pixels of the (single, flat) prism away from overlaps: thickness is exactly 12 nm
        np.testing.assert_allclose(img[k][inside] / bg, want, rtol=1e-6)
        assert inside.sum() > 100


def test_prism_projected_area():
    """Pixel counts of the exact outline average to sqrt(3)/4 L^2 (pixel-centre sampling)."""
    for L in (40.0, 90.0):
        c = cfg(size=256, shapes=({"shape": "prism", "size_nm": L, "size_dispersity": 0.0},))
        ds = simulate_images(16, c, seed=2, chunk_size=4)
        side = ds["truth_size_px"].values
        labels = ds["labels"].values
        ys, xs = ds["truth_y"].values, ds["truth_x"].values
        ratios = []
        rb = L / np.sqrt(3) + 1
        for k in range(16):
            if not (rb < ys[k] < 255 - rb and rb < xs[k] < 255 - rb):
                continue  # cut by the border
            ratios.append((labels[k] == 1).sum() / (np.sqrt(3) / 4 * side[k] ** 2))
        assert len(ratios) >= 4
        assert abs(np.mean(ratios) - 1) < 0.02, ratios
        assert np.all(np.abs(np.array(ratios) - 1) < (0.07 if L < 50 else 0.035))


def test_truncated_prism_area():
    L, tr = 90.0, 0.2
    out = render_frame(
        one_particle("prism", L, truncation=tr, orientation_deg=17.0), cfg(size=128), seed=0
    )
    want = np.sqrt(3) / 4 * L**2 - 3 * np.sqrt(3) / 4 * (2 * tr * L / 3) ** 2
    assert abs(out["mask"].sum() / want - 1) < 0.02


def test_sphere_thickness_profile():
    D = 60.0
    out = render_frame(one_particle("sphere", D), cfg(size=128), seed=0)
    t = thickness_from_image(out["image"].astype(np.float64), background_expected())
    yy, xx = np.mgrid[0:128, 0:128]
    r = np.hypot(yy - 63.3, xx - 64.2)
    R = D / 2
    sel = r < 0.95 * R
    want = 2 * np.sqrt(R**2 - r[sel] ** 2)
    np.testing.assert_allclose(t[sel], want, rtol=0.03)
    assert np.all(out["mask"] == (r < R))


def test_concave_cube_centre_and_corners():
    L = 80.0
    out = render_frame(
        one_particle("cube", L, orientation_deg=0.0, recess_depth=0.15),
        cfg(size=128),
        seed=0,
        return_maps=True,
    )
    img = out["image"].astype(np.float64)
    t = thickness_from_image(img, background_expected())
    cy, cx = 63.3, 64.2
    iy, ix = int(round(cy)), int(round(cx))
    assert abs(t[iy, ix] / L - 0.70) < 0.02
    # just inside the four corners: about L
    h = L / 2 - 1.0
    for sy in (-1, 1):
        for sx in (-1, 1):
            py, px = int(np.floor(cy + sy * h)), int(np.floor(cx + sx * h))
            if abs(py - cy) > L / 2 or abs(px - cx) > L / 2:
                continue
            assert t[py, px] / L > 0.93, t[py, px] / L
    # the mask is the square outline
    assert abs(out["mask"].sum() / L**2 - 1) < 0.03


def test_rod_spherocylinder_profile():
    Lr, D = 80.0, 20.0
    out = render_frame(
        one_particle("rod", Lr, diameter_nm=D, orientation_deg=0.0), cfg(size=128), seed=0
    )
    t = thickness_from_image(out["image"].astype(np.float64), background_expected())
    # across the cylindrical part at the centre column: 2 sqrt(R^2 - v^2)
    ix = 64
    v = np.arange(128) - 63.3
    sel = np.abs(v) < 0.9 * D / 2
    np.testing.assert_allclose(t[sel, ix], 2 * np.sqrt((D / 2) ** 2 - v[sel] ** 2), rtol=0.03)
    # projected area of a spherocylinder: 2R (L - 2R) + pi R^2
    R = D / 2
    assert abs(out["mask"].sum() / (2 * R * (Lr - 2 * R) + np.pi * R**2) - 1) < 0.03


def test_poisson_in_electron_units():
    c = cfg(size=128, count=0, optics={"shot_noise": True})
    ds = simulate_images(4, c, seed=3, chunk_size=2, truth=False)
    img = ds["image"].values.astype(np.float64)
    ratio = img.var(axis=(1, 2)).mean() / img.mean()
    assert abs(ratio - 1) < 0.03
    assert abs(img.mean() / background_expected() - 1) < 0.005


@pytest.mark.parametrize("kind", ["camera512", "parametric", "camera1024"])
def test_mtf_scales_noise_std(kind):
    base = {"shot_noise": True, "gain_counts_per_e": 3.47}
    c0 = cfg(size=128, count=0, optics=base)
    c1 = cfg(size=128, count=0, optics={**base, "mtf": kind})
    a = simulate_images(4, c0, seed=4, truth=False)["image"].values.astype(np.float64)
    b = simulate_images(4, c1, seed=4, truth=False)["image"].values.astype(np.float64)
    # closed form: sqrt(<MTF^2>) over the frequency grid, computed here from the radial table
    fy = np.fft.fftfreq(128)[:, None]
    fx = np.fft.fftfreq(128)[None, :]
    f = np.hypot(fy, fx)
    if kind == "parametric":
        m = np.where(f <= 0.5, 1 / (1 + (f / 0.25) ** 2), 0.0)
    else:
        tab = {"camera512": [1, 0.90, 0.82, 0.52, 0.28], "camera1024": [1, 0.75, 0.50, 0.17, 0.09]}
        m = np.where(f <= 0.5, np.interp(f, [0, 0.05, 0.1, 0.25, 0.5], tab[kind]), 0.0)
    factor = np.sqrt(np.mean(m**2))
    assert abs(b.std() / a.std() / factor - 1) < 0.03
    # the mean is untouched
    assert abs(b.mean() / a.mean() - 1) < 1e-3


def test_seed_mtf_noise_factor_near_table():
    """PHYSICS.md lists sqrt(<MTF^2>) = 0.42 for the 512-px camera."""
    m = mtf_2d((512, 512), "camera512", rfft=False)
    assert abs(np.sqrt(np.mean(m**2)) - 0.42) < 0.02


@pytest.mark.parametrize("kind", ["camera512", "rods", "parametric"])
def test_mtf_from_noise_recovers_known_mtf(kind):
    rng = np.random.default_rng(0)
    white = rng.standard_normal((4, 256, 256)) * 7.0 + 100.0
    m = mtf_2d((256, 256), kind)
    frames = np.stack([apply_mtf(w, m) for w in white])
    f, est = mtf_from_noise(frames)
    sel = (f >= 0.05) & (f <= 0.5)
    if kind == "parametric":
        truth = np.where(f <= 0.5, 1 / (1 + (f / 0.25) ** 2), 0.0)
    else:
        truth = mtf_radial(f, kind)
    rmse = np.sqrt(np.mean((est[sel] - truth[sel]) ** 2))
    assert rmse < 0.05, rmse
    assert est[0] == pytest.approx(1.0)


def test_mtf_from_noise_detects_a_wrong_mtf():
    rng = np.random.default_rng(1)
    frames = np.stack(
        [apply_mtf(w, mtf_2d((128, 128), "camera1024")) for w in rng.standard_normal((2, 128, 128))]
    )
    f, est = mtf_from_noise(frames)
    sel = (f >= 0.05) & (f <= 0.5)
    assert np.sqrt(np.mean((est[sel] - mtf_radial(f[sel], "camera512")) ** 2)) > 0.1


def test_brownian_path_msd():
    rng = np.random.default_rng(5)
    D, tau_total, ps, n = 20.0, 0.1, 0.5, 400
    paths = np.stack(
        [
            brownian_path(
                n, diffusion_nm2_s=D, exposure_s=tau_total, pixel_size_nm=ps, rng=rng, centre=False
            )
            for _ in range(400)
        ]
    )
    dt = tau_total / n
    for lag in (10, 50, 200):
        d = paths[:, lag:] - paths[:, :-lag]
        msd_nm2 = (d**2).sum(-1).mean() * ps**2
        assert abs(msd_nm2 / (4 * D * lag * dt) - 1) < 0.10


def test_motion_blur_spreads_the_particle_along_its_path():
    """A straight path of length 20 px smears a small sphere into a streak."""
    path = np.c_[np.zeros(200), np.linspace(-10, 10, 200)]
    p = one_particle("sphere", 6.0)
    p["path"] = [path]
    out = render_frame(p, cfg(size=128), seed=0, return_maps=True)
    t = out["thickness_nm"]
    row = t[int(round(63.3))]
    assert (row > 0.01).sum() >= 24  # streak >= path length + diameter - edges
    # thickness is conserved by the averaging
    still = render_frame(one_particle("sphere", 6.0), cfg(size=128), seed=0, return_maps=True)
    assert abs(t.sum() / still["thickness_nm"].sum() - 1) < 1e-3
    # the mask is the outline at the mean position, not the streak
    assert out["mask"].sum() == still["mask"].sum()


def test_path_and_disk_kernels_are_normalised():
    k = path_kernel(np.array([[0.3, -1.2], [2.5, 0.7]]))
    assert k.sum() == pytest.approx(1.0)
    d = disk_kernel(3.5)
    assert d.sum() == pytest.approx(1.0)
    assert d.shape == (9, 9)
    # area of the support ~ pi r^2
    assert abs((d > 0).sum() - np.pi * 3.5**2) < 12


def test_ghosts_never_in_mask():
    c = cfg(
        size=128,
        count=3,
        particles={"ghost_count": 6, "ghost_blur_px": [3.0, 10.0]},
        optics={"shot_noise": True},
    )
    for i in range(4):
        out = simulate_one(i, c, seed=7)
        truth = out["truth"]
        assert truth["ghost"].sum() == 6
        assert (truth.loc[truth["ghost"], "label"] == 0).all()
        # the mask equals the one rendered from the labelled particles alone
        alone = render_frame(truth[~truth["ghost"]].drop(columns=["area_px"]), c, seed=0)
        assert np.array_equal(out["mask"], alone["mask"])
        assert np.array_equal(out["labels"], alone["labels"])
        assert out["ghost"].any()
    only_ghosts = cfg(size=64, count=0, particles={"ghost_count": 4})
    out = simulate_one(0, only_ghosts, seed=0)
    assert not out["mask"].any() and out["ghost"].any()
    # ghosts darken the image
    assert out["image"][out["ghost"]].mean() < background_expected()


def test_measure_cnr_closed_form():
    rng = np.random.default_rng(0)
    img = 100.0 + 4.0 * rng.standard_normal((256, 256))
    mask = np.zeros_like(img, dtype=bool)
    mask[100:150, 100:150] = True
    img[mask] -= 6.0
    assert measure_cnr(img, mask) == pytest.approx(1.5, rel=0.03)


def test_boundary_band_is_inner_and_thin():
    out = render_frame(one_particle("sphere", 40.0), cfg(size=96), seed=0)
    b, m = out["boundary"], out["mask"]
    assert not (b & ~m).any()
    # exactly the mask pixels at chessboard distance 1 from the outside
    d = ndimage.distance_transform_cdt(m, metric="chessboard")
    assert np.array_equal(b, d == 1)
    two = render_frame(
        pd.DataFrame(
            [
                {"y": 40.0, "x": 30.0, "shape": "sphere", "size_nm": 30.0},
                {"y": 40.0, "x": 58.0, "shape": "sphere", "size_nm": 30.0},
            ]
        ),
        cfg(size=96),
        seed=0,
    )
    # touching instances: the band separates them
    lab, bb = two["labels"], two["boundary"]
    assert lab.max() == 2
    assert bb[40, 43:45].all() and lab[40, 43] == 1 and lab[40, 44] == 2


def test_etched_rod_radius_profile_is_a_body_of_revolution():
    """A rod with a radius profile R(u): chord 2 sqrt(R(u)^2 - v^2) (closed form here)."""
    Lr = 80.0
    u = np.linspace(-Lr / 2, Lr / 2, 81)
    prof = 8.0 + 3.0 * np.cos(2 * np.pi * u / 40.0)  # a wavy (etched) rod, radius 5-11 nm
    p = one_particle("rod", Lr, diameter_nm=22.0, orientation_deg=0.0)
    p["radius_profile_nm"] = [prof]
    out = render_frame(p, cfg(size=128), seed=0)
    t = thickness_from_image(out["image"].astype(np.float64), background_expected())
    cy, cx = 63.3, 64.2
    for col in (50, 60, 64, 75):
        uu = col - cx
        R = 8.0 + 3.0 * np.cos(2 * np.pi * uu / 40.0)
        v = np.arange(128) - cy
        sel = np.abs(v) < 0.9 * R
        np.testing.assert_allclose(t[sel, col], 2 * np.sqrt(R**2 - v[sel] ** 2), rtol=0.03)
        # the outline follows the profile: mask width = pixels with |v| < R(u)
        assert out["mask"][:, col].sum() == (np.abs(v) < R).sum()
