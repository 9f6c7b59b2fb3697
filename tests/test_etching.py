"""Etching: front tracking against closed forms, and recovery of a, b and stages.

Truth outlines (fast path) run by default; rendering + measurement of the
truth labels with one rod runs by default, the full configs are ``slow``;
the U-Net end-to-end test needs the shipped default model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.integrate import solve_ivp

from lptem_dask.analysis.etching import (
    analyze_etching,
    assign_particles,
    detect_stages,
    detect_stages_cumulative,
    fit_stage_velocity_law,
    fit_velocity_law,
    huber_fit,
    normal_velocities,
    run_etching,
    stage_displacements,
)
from lptem_dask.errors import ConfigError, InputError, OutputExistsError
from lptem_dask.simulate.etching import (
    EtchingConfig,
    evolve_outline,
    load_etching_config,
    radius_profile,
    simulate_etching,
    simulate_etching_video,
    spherocylinder_outline,
    truth_contours,
)

CONFIGS = Path(__file__).parents[1] / "configs" / "etching"
MODEL = Path(__file__).parents[1] / "lptem_dask" / "models" / "default.safetensors"


def _circle(R: float, n: int = 160) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return R * np.column_stack([np.cos(t), np.sin(t)])


@pytest.mark.parametrize("a,b", [(0.3, 0.0), (0.0, 1.0), (0.1, 0.7)])
def test_circle_radius_follows_ode(a, b):
    # a circle stays a circle: dR/dt = -(a + b / R)
    out = evolve_outline(_circle(6.0), a_nm_per_s=a, b_nm2_per_s=b, duration_s=5.0, spacing_nm=0.25)
    ref = solve_ivp(lambda t, R: -(a + b / R), (0, 5), [6.0], rtol=1e-10).y[0, -1]
    r = np.hypot(*out.T)
    assert abs(r.mean() - ref) < 2e-3
    assert r.std() < 1e-3


def test_straight_sides_recede_at_a_and_profile():
    p = spherocylinder_outline(40.0, 10.0, spacing_nm=0.25)
    length, centre, prof = radius_profile(p)
    assert length == pytest.approx(40.0, abs=0.01) and centre == pytest.approx(0.0, abs=1e-6)
    assert prof.max() == pytest.approx(5.0, abs=0.01)
    q = evolve_outline(p, a_nm_per_s=0.2, b_nm2_per_s=0.5, duration_s=4.0, spacing_nm=0.25)
    _, _, prof2 = radius_profile(q)
    # the middle of the sides has zero curvature: recedes by a * t only
    assert prof2[len(prof2) // 2] == pytest.approx(5.0 - 0.8, abs=0.01)


def test_vanishing_outline_is_empty():
    out = evolve_outline(
        _circle(1.0, 32), a_nm_per_s=1.0, b_nm2_per_s=0.0, duration_s=2.0, spacing_nm=0.2
    )
    assert out.shape == (0, 2)


def test_config_validation():
    with pytest.raises(ValueError, match="start_s=0"):
        EtchingConfig(stages=[{"start_s": 5.0, "a_nm_per_s": 0.1, "b_nm2_per_s": 0.0}])
    with pytest.raises(ConfigError):
        load_etching_config("no/such/etching.yaml")
    assert load_etching_config(CONFIGS / "staged.yaml").stages[1].start_s == 25.0


def test_huber_and_stage_detection_basics():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.3, 500)
    y = 0.1 + 0.5 * x + 0.002 * rng.standard_normal(500)
    y[:20] += 5.0  # gross outliers
    a, b = huber_fit(x, y)
    assert a == pytest.approx(0.1, abs=2e-3) and b == pytest.approx(0.5, abs=0.02)
    z = np.r_[np.full(12, 1.0), np.full(10, 2.0), np.full(8, 0.5)] + 0.02 * rng.standard_normal(30)
    # the first interval of a stage may hold the change (left out of the cost): +-1
    bp = detect_stages(z)["breakpoints"]
    assert len(bp) == 2 and abs(bp[0] - 12) <= 1 and abs(bp[1] - 22) <= 1
    assert detect_stages(1 + 0.02 * rng.standard_normal(30))["breakpoints"] == []
    old = detect_stages(z, method="piecewise_constant")["breakpoints"]
    assert len(old) == 2 and abs(old[0] - 12) <= 1 and abs(old[1] - 22) <= 1
    with pytest.raises(InputError, match="method"):
        detect_stages(z, method="bogus")


def _staged_rates_with_outline_jitter(rng, n=30, jitter=0.25, rate_noise=0.0):
    """Per-interval rates of two series whose rates change at two random times.

    The positions (cumulative sums) carry white jitter, as a frame's whole outline
    measured a little off does; the rates are their differences, so successive
    rates' noise is anti-correlated.
    """
    tc = np.sort(rng.uniform([6.0, 17.0], [13.0, 24.0]))
    t = np.arange(n + 1, dtype=float)
    levels = np.array([[1.0, 0.8], [2.2, 0.3], [1.2, 0.6]])
    pos = (
        levels[0] * np.minimum(t, tc[0])[:, None]
        + levels[1] * np.clip(t - tc[0], 0, tc[1] - tc[0])[:, None]
        + levels[2] * np.maximum(t - tc[1], 0)[:, None]
    )
    rates = np.diff(pos + jitter * rng.standard_normal(pos.shape), axis=0)
    return rates + rate_noise * rng.standard_normal(rates.shape), np.floor(tc).astype(int)


@pytest.mark.slow  # 45 s; the default run keeps the cumulative method's other tests
def test_cumulative_stage_detection_handles_outline_jitter():
    # both methods on the same 40 simulated rate series (figures in the README)
    rng = np.random.default_rng(7)
    hits = {"cumulative": 0, "piecewise_constant": 0}
    for _ in range(40):
        rates, truth = _staged_rates_with_outline_jitter(rng)
        for method in hits:
            bp = detect_stages(rates, method=method)["breakpoints"]
            hits[method] += len(bp) == 2 and all(
                abs(b - f) <= 1 for b, f in zip(bp, truth, strict=True)
            )
    print(f"changes found within +-1 interval in 40 videos: {hits}")
    assert hits["cumulative"] >= 32  # >= 80%
    assert hits["cumulative"] >= hits["piecewise_constant"] + 5
    # no change: none found in pure jitter
    flat = [
        detect_stages(1 + np.diff(0.02 * rng.standard_normal(31)))["n_breakpoints"]
        for _ in range(20)
    ]
    print(f"changes found in 20 series without any: {sum(flat)}")
    assert sum(flat) <= 1


def test_cumulative_stage_detection_greedy_matches_exhaustive():
    rng = np.random.default_rng(11)
    for _ in range(5):
        rates, _ = _staged_rates_with_outline_jitter(rng, rate_noise=0.1)
        full = detect_stages_cumulative(rates)
        greedy = detect_stages_cumulative(rates, max_combinations=0)
        assert greedy["breakpoints"] == full["breakpoints"]
        assert set(full) >= {"change_positions", "rate_noise_sd", "position_noise_sd"}


def _truth_analysis(name: str, n_rods: int = 2, rate_fit: str = "interval"):
    cfg = load_etching_config(CONFIGS / f"{name}.yaml").model_copy(update={"n_rods": n_rods})
    truth = simulate_etching(cfg, seed=3)
    an = analyze_etching(
        truth_contours(truth), frame_interval_s=cfg.frame_interval_s, n_boot=40, rate_fit=rate_fit
    )
    return cfg, an["result"]


def _check_stages(cfg: EtchingConfig, res: dict, *, ci_zero: bool = False) -> None:
    true_frames = [s.start_s / cfg.frame_interval_s for s in cfg.stages[1:]]
    found = res["stage_change_frames"]
    assert len(found) == len(true_frames), (found, true_frames)
    for f, t in zip(found, true_frames, strict=True):
        assert abs(f - t) <= 3
    for st, truth in zip(res["stages"], cfg.stages, strict=True):
        fit = st["population"]
        assert fit["a_nm_per_s"] == pytest.approx(truth.a_nm_per_s, rel=0.10)
        if truth.b_nm2_per_s > 0:
            assert fit["b_nm2_per_s"] == pytest.approx(truth.b_nm2_per_s, rel=0.10)
        else:
            assert abs(fit["b_nm2_per_s"]) < 0.02
            if ci_zero:
                lo, hi = fit["b_ci95"]
                assert lo <= 0.0 <= hi, fit["b_ci95"]


def test_truth_staged_rates_and_stage_times():
    cfg, res = _truth_analysis("staged")
    _check_stages(cfg, res)
    # nearly straight sides recede at a: the width's piecewise-linear slopes are about -2a
    # (later stages: the widest section is slightly convex and recedes a little faster)
    for part in res["particles"]:
        slopes = np.array(part["width_nm_slopes_per_s"])
        two_a = np.array([2 * s.a_nm_per_s for s in cfg.stages])
        assert slopes[:2] == pytest.approx(-two_a[:2], rel=0.06)
        assert np.all(-slopes >= 0.95 * two_a) and np.all(-slopes <= 1.2 * two_a)


def test_truth_b_zero():
    cfg, res = _truth_analysis("b_zero")
    _check_stages(cfg, res)


@pytest.mark.parametrize("name", ["staged", pytest.param("b_zero", marks=pytest.mark.slow)])
def test_truth_rates_by_long_baseline_fit(name):
    cfg, res = _truth_analysis(name, rate_fit="baseline")
    assert res["rate_fit"] == "baseline"
    _check_stages(cfg, res)
    for st, truth in zip(res["stages"], cfg.stages, strict=True):
        fit = st["population"]
        assert fit["method"] == "baseline" and fit["n_frames"] >= 3
        # exact outlines: a and b to a few per cent, and the jackknife intervals hold them
        assert fit["a_nm_per_s"] == pytest.approx(truth.a_nm_per_s, rel=0.03)
        assert abs(fit["b_nm2_per_s"] - truth.b_nm2_per_s) < 0.03 * max(truth.b_nm2_per_s, 0.5)
        assert fit["a_ci95"][0] < fit["a_nm_per_s"] < fit["a_ci95"][1]
        assert set(st["particles"]) == {"0", "1"}


def _shrinking_circles(radii) -> pd.DataFrame:
    rows = []
    for f, R in enumerate(radii):
        p = _circle(R, 200)
        rows.append(
            pd.DataFrame(
                {"frame": f, "point": np.arange(200), "x_nm": p[:, 0] + 20, "y_nm": -p[:, 1] + 20}
            ).assign(particle=0, label=1)
        )
    return pd.concat(rows, ignore_index=True)


def test_stage_displacements_of_concentric_circles():
    # circles shrinking by 0.3 nm per frame: displacements to the middle outline are
    # 0.3 (f - ref) inward, the curvature that of each frame's circle
    radii = [8.0, 7.7, 7.4, 7.1, 6.8, 6.5]
    c = _shrinking_circles(radii)
    d = stage_displacements(c, first_frame=0, last_frame=4, frame_interval_s=1.0, smooth_nm=0.0)
    assert (d["ref_frame"] == 2).all() and d["frame"].nunique() == 5
    for f, R in enumerate(radii[:5]):
        g = d[d["frame"] == f]
        assert np.allclose(g["displacement_nm"], 0.3 * (f - 2), atol=1e-4)
        assert np.allclose(g["curvature_per_nm"], 1 / R, rtol=2e-3)
    fit = fit_stage_velocity_law(d)
    assert fit["a_nm_per_s"] + fit["b_nm2_per_s"] / 7.4 == pytest.approx(0.3, abs=1e-3)
    # windows: 6 outlines cut into windows of at most 3, each with its own reference
    w = stage_displacements(c, first_frame=0, last_frame=5, frame_interval_s=1.0, window_frames=3)
    assert w.groupby("window")["ref_frame"].unique().map(list).tolist() == [[1], [4]]
    # a long stage: the jackknife leaves out 20 blocks of frames, not every frame
    long = stage_displacements(
        _shrinking_circles(np.linspace(12.0, 4.8, 25)),
        first_frame=0,
        last_frame=24,
        frame_interval_s=1.0,
        smooth_nm=0.0,
    )
    fit = fit_stage_velocity_law(long)
    assert fit["n_frames"] == 25 and fit["n_clusters"] == 20
    assert long["window"].nunique() == 2
    with pytest.raises(InputError, match="window_frames"):
        stage_displacements(c, first_frame=0, last_frame=4, frame_interval_s=1.0, window_frames=2)
    with pytest.raises(InputError, match="rate_fit"):
        analyze_etching(c, frame_interval_s=1.0, rate_fit="lines")


def _one_stage_truth(n_frames: int):
    """Two rods etched at a = 0.05 nm/s, b = 0.8 nm^2/s in one stage (seed 0)."""
    cfg = EtchingConfig(
        n_rods=2,
        n_frames=n_frames,
        stages=({"start_s": 0.0, "a_nm_per_s": 0.05, "b_nm2_per_s": 0.8},),
    )
    return cfg, simulate_etching(cfg, seed=0)


def test_long_baseline_fit_averages_frame_jitter():
    # every outline displaced by its own smooth noise (independent between frames): the
    # long-baseline fit of one stage is more precise than the fit of the velocities
    # between consecutive frames (at 0.06 nm of jitter its standard error 0.012 against
    # 0.024; the same at 0.03 nm), and its jackknife interval holds the truth
    cfg, truth = _one_stage_truth(n_frames=13)
    noisy = assign_particles(_noisy_outlines(truth_contours(truth), 0.06, seed=2))
    last = int(noisy["frame"].max())
    base = fit_stage_velocity_law(
        stage_displacements(
            noisy, first_frame=0, last_frame=last, frame_interval_s=cfg.frame_interval_s
        )
    )
    inter = fit_velocity_law(
        normal_velocities(noisy, frame_interval_s=cfg.frame_interval_s), n_boot=60
    )
    assert base["b_se"] < 0.7 * inter["b_se"], (base["b_se"], inter["b_se"])
    assert base["b_ci95"][0] < 0.8 < base["b_ci95"][1]
    assert base["a_ci95"][0] < 0.05 < base["a_ci95"][1]
    assert base["b_nm2_per_s"] == pytest.approx(0.8, rel=0.05)
    assert base["curvature_reliability"] > inter["curvature_reliability"]


def test_velocity_sign_and_scale_on_known_offset():
    # two concentric circles 0.3 nm apart, 1 s: v_n = 0.3 everywhere, kappa = 1/R

    rows = []
    for f, R in enumerate([8.0, 7.7]):
        p = _circle(R, 200)
        rows.append(
            pd.DataFrame(
                {
                    "frame": f,
                    "label": 1,
                    "point": np.arange(200),
                    "x_nm": p[:, 0] + 20,
                    "y_nm": -p[:, 1] + 20,
                    "curvature_per_nm": 1 / R,
                    "particle": 0,
                }
            )
        )
    v = normal_velocities(pd.concat(rows), frame_interval_s=1.0, smooth_nm=0.0)
    assert np.allclose(v["v_nm_per_s"], 0.3, atol=1e-4)
    assert np.allclose(v["curvature_per_nm"], 0.5 * (1 / 8 + 1 / 7.7), rtol=1e-3)
    with pytest.raises(InputError):
        fit_velocity_law(v.iloc[:2])


def _rendered(name: str, n_rods: int, seed: int):
    from lptem_dask.measure import measure_contours

    cfg = load_etching_config(CONFIGS / f"{name}.yaml").model_copy(update={"n_rods": n_rods})
    video, truth = simulate_etching_video(cfg, seed=seed)
    assert video.dims == ("frame", "y", "x") and video.shape[0] == cfg.n_frames
    lab = xr.DataArray(
        truth.labels, dims=("frame", "y", "x"), attrs={"pixel_size_nm": cfg.pixel_size_nm}
    )
    contours = measure_contours(lab).compute()
    return cfg, truth, contours


def test_rendered_truth_labels_one_rod():
    cfg, truth, contours = _rendered("staged", 1, seed=0)
    # the rendered masks are the truth outlines to within a pixel
    an = analyze_etching(contours, frame_interval_s=cfg.frame_interval_s, n_boot=40)
    sizes = an["sizes"].set_index("frame")
    rods = truth.rods.set_index("frame")
    assert np.allclose(sizes["length_nm"], rods["length_nm"], atol=2 * cfg.pixel_size_nm)
    assert np.allclose(sizes["width_nm"], rods["width_nm"], atol=2 * cfg.pixel_size_nm)
    _check_stages(cfg, an["result"])
    # the series stages are found from: the velocity at each interval's mean curvature
    r = an["rates"]
    assert np.allclose(
        r["v_mean_nm_per_s"], r["a_nm_per_s"] + r["b_nm2_per_s"] * r["mean_curvature_per_nm"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_rendered_truth_labels_staged(seed):
    cfg, _, contours = _rendered("staged", 3, seed)
    _check_stages(cfg, analyze_etching(contours, frame_interval_s=cfg.frame_interval_s)["result"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_rendered_truth_labels_b_zero_ci(seed):
    cfg, _, contours = _rendered("b_zero", 3, seed)
    res = analyze_etching(contours, frame_interval_s=cfg.frame_interval_s)["result"]
    _check_stages(cfg, res, ci_zero=True)


@pytest.mark.slow
@pytest.mark.skipif(not MODEL.exists(), reason=f"default U-Net model {MODEL} not trained yet")
@pytest.mark.xfail(
    strict=True,
    reason="the #7 etching rates are not met through the shipped U-Net: with the "
    "errors-in-variables correction stage 1 is met, but not stages 2 and 3 (stage 2's b 11-60% high) in the "
    "seeds whose stages are found (benchmarks/eval_etching.py, results/etching_e2e_cumulative.json); "
    "on the truth labels the same analysis passes (test_rendered_truth_*)",
)
def test_end_to_end_unet_staged():  # pragma: no cover - needs the trained model
    import lptem_dask as lp
    from lptem_dask.measure import measure_contours

    cfg = load_etching_config(CONFIGS / "staged.yaml")
    video, _ = simulate_etching_video(cfg, seed=0)
    # what lp.segment does (all the model's maps: probability and boundary), keeping the
    # probability for sub-pixel outlines. The probability-only watershed split each
    # 100-px-wide rod into several pieces (20 particle identities for 3 rods).
    maps = lp.predict_maps(
        video, model="default", particle_size_px=cfg.diameter_nm / cfg.pixel_size_nm
    )
    prob = maps["probability"]
    labels = lp.label_frames(maps)
    contours = measure_contours(labels, probability=prob, pixel_size_nm=cfg.pixel_size_nm).compute()
    _check_stages(cfg, analyze_etching(contours, frame_interval_s=cfg.frame_interval_s)["result"])


def test_run_etching_store(tmp_path):
    from lptem_dask.measure import write_table

    cfg = load_etching_config(CONFIGS / "staged.yaml").model_copy(
        update={"n_rods": 1, "n_frames": 16}
    )
    truth = simulate_etching(cfg, seed=0)
    store = tmp_path / "v.zarr"
    write_table(truth_contours(truth), store, "contours")
    res = run_etching(store, frame_interval_s=cfg.frame_interval_s, n_boot=20)
    out = store / "results" / "etching"
    assert (out / "etching.png").stat().st_size > 0
    saved = json.loads((out / "etching.json").read_text())
    assert saved["stage_change_frames"] == res["stage_change_frames"]
    assert abs(res["stage_change_frames"][0] - 12.5) <= 3
    with pytest.raises(OutputExistsError):
        run_etching(store, frame_interval_s=cfg.frame_interval_s)


def _noisy_outlines(contours, amp_nm: float, seed: int):
    """Each outline displaced along its normal by smooth noise of ~3-8 nm wavelength."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, g in contours.groupby(["frame", "label"], sort=True):
        g = g.sort_values("point").copy()
        P = g[["y_nm", "x_nm"]].to_numpy()
        T = np.roll(P, -1, axis=0) - np.roll(P, 1, axis=0)
        N = np.column_stack([T[:, 1], -T[:, 0]]) / np.hypot(*T.T)[:, None]
        s = g["arc_length_nm"].to_numpy()
        perim = s[-1] + np.hypot(*(P[0] - P[-1]))
        d = np.zeros(len(g))
        for k in range(int(perim / 8.0), int(perim / 3.0) + 1):
            d += rng.normal() * np.cos(2 * np.pi * k * s / perim + rng.uniform(0, 2 * np.pi))
        d *= amp_nm / np.std(d)
        g[["y_nm", "x_nm"]] = P + d[:, None] * N
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def test_curvature_noise_attenuation_is_corrected():
    # errors in variables: noise in the outlines' curvature biases a plain (Huber) fit of
    # v_n = a + b kappa (b towards 0, a up); the correction estimates the noise from
    # neighbouring frames and removes the bias
    cfg, truth = _one_stage_truth(n_frames=16)
    clean = normal_velocities(
        assign_particles(truth_contours(truth)), frame_interval_s=cfg.frame_interval_s
    )
    noisy_c = assign_particles(_noisy_outlines(truth_contours(truth), 0.06, seed=1))
    noisy = normal_velocities(noisy_c, frame_interval_s=cfg.frame_interval_s)
    # the residuals measure the injected noise, not the exact outlines' change in time
    rc = clean["curvature_residual_per_nm"].dropna()
    rn = noisy["curvature_residual_per_nm"].dropna()
    assert len(rn) > 1000 and np.std(rc) < 0.2 * np.std(rn)
    plain = fit_velocity_law(noisy, n_boot=30, errors_in_variables=False)
    fixed = fit_velocity_law(noisy, n_boot=30)
    exact = fit_velocity_law(clean, n_boot=30)
    assert plain["b_nm2_per_s"] < 0.85 * 0.8  # attenuated
    assert fixed["curvature_reliability"] < 0.85
    assert fixed["b_nm2_per_s"] == pytest.approx(0.8, rel=0.06)
    assert fixed["a_nm_per_s"] == pytest.approx(0.05, rel=0.1)
    assert fixed["b_ci95"][0] < 0.8 < fixed["b_ci95"][1]
    assert fixed["b_uncorrected_nm2_per_s"] == pytest.approx(plain["b_nm2_per_s"])
    # on exact outlines the correction changes next to nothing
    assert exact["curvature_reliability"] > 0.97
    assert exact["b_nm2_per_s"] == pytest.approx(0.8, rel=0.03)


def test_cumulative_stage_detection_of_long_records_in_blocks():
    rng = np.random.default_rng(3)
    z = np.r_[np.full(100, 1.0), np.full(100, 2.0), np.full(100, 0.5)] + 0.3 * rng.standard_normal(
        300
    )
    res = detect_stages_cumulative(z, max_intervals=100)
    assert res["block_intervals"] == 3
    assert len(res["breakpoints"]) == 2
    assert all(abs(b - f) <= 3 for b, f in zip(res["breakpoints"], (100, 200), strict=True))
