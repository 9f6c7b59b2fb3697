"""calibrate_to recovers known settings from simulated frames; runs on the real frame."""

from __future__ import annotations

import numpy as np
import pytest

from lptem_dask.errors import InputError
from lptem_dask.simulate import (
    SimulationConfig,
    calibrate_to,
    mtf_from_noise,
    simulate_images,
)
from lptem_dask.simulate.optics import apply_mtf, mtf_2d, mtf_radial

GAIN = 3.47
N_E = 100.0 * 100.0 * 2.09**2 * 0.1 * np.exp(-(100 / 185 + 100 / 144))  # e per bg pixel


def known(mtf: str, **background) -> SimulationConfig:
    return SimulationConfig.model_validate(
        {
            "optics": {"image_size_px": 512, "mtf": mtf, "gain_counts_per_e": GAIN},
            "background": background,
            "particles": {
                "shapes": [{"shape": "sphere", "size_nm": 50.0, "mfp_nm": 60.0}],
                "count": 30,
            },
        }
    )


def factor(kind: str) -> float:
    return float(np.sqrt(np.mean(mtf_2d((512, 512), kind, rfft=False) ** 2)))


@pytest.mark.parametrize(
    ("kind", "low"),
    [
        ("camera512", "linear"),
        pytest.param("camera1024", "linear", marks=pytest.mark.slow),
        pytest.param("parametric", "quadratic", marks=pytest.mark.slow),
    ],
)
def test_calibrate_recovers_noise_and_mtf(kind, low):
    frames = simulate_images(8, known(kind), seed=1, truth=False)["image"].values
    res = calibrate_to(frames, base=known(kind), low_frequency=low)
    want_std = GAIN * np.sqrt(N_E) * factor(kind)  # closed form: Poisson through the MTF
    assert abs(res.noise_std_counts / want_std - 1) < 0.05
    assert abs(res.noise_std_factor / factor(kind) - 1) < 0.05
    f = res.mtf_freq
    sel = (f >= 0.05) & (f <= 0.5)
    if kind == "parametric":
        truth = np.where(f <= 0.5, 1 / (1 + (f / 0.25) ** 2), 0.0)
    else:
        truth = mtf_radial(f, kind)
    assert np.sqrt(np.mean((res.mtf[sel] - truth[sel]) ** 2)) < 0.05
    # averaged over 0.05-wide bands (single 1-px rings are noisy at low frequency)
    for lo in np.arange(0.05, 0.45, 0.05):
        band = (f >= lo) & (f < lo + 0.05)
        assert abs(res.mtf[band].mean() - truth[band].mean()) < 0.05, lo
    assert abs(res.mean_counts / (GAIN * N_E) - 1) < 0.01
    assert abs(res.gain_counts_per_e / GAIN - 1) < 0.10  # gain ~ 1/factor^2
    # the calibrated configuration reproduces the noise level
    again = simulate_images(2, res.config, seed=2, truth=False)["image"].values
    res2 = calibrate_to(again, base=res.config, low_frequency=low)
    assert abs(res2.noise_std_counts / res.noise_std_counts - 1) < 0.05


def test_calibrate_recovers_illumination_gradient():
    cfg = known("camera512", illumination_gradient=0.06)
    frames = simulate_images(2, cfg, seed=4, truth=False)["image"].values
    res = calibrate_to(frames, base=cfg)
    assert abs(res.illumination_gradient - 0.06) < 0.01
    flat = calibrate_to(simulate_images(2, known("camera512"), seed=4)["image"].values)
    assert flat.illumination_gradient < 0.01


def test_calibrate_rejects_bad_input():
    with pytest.raises(InputError, match="frames"):
        calibrate_to(np.zeros((10, 10)))
    with pytest.raises(InputError, match="offset"):
        rng = np.random.default_rng(0)
        calibrate_to(rng.standard_normal((64, 64)) - 5.0)


def test_quadratic_extrapolation_is_less_biased_for_smooth_mtf():
    rng = np.random.default_rng(3)
    frames = np.stack(
        [apply_mtf(w, mtf_2d((256, 256), "parametric")) for w in rng.standard_normal((4, 256, 256))]
    )
    f, lin = mtf_from_noise(frames)
    _, quad = mtf_from_noise(frames, low_frequency="quadratic")
    truth = 1 / (1 + (f / 0.25) ** 2)
    sel = (f >= 0.05) & (f <= 0.45)
    assert np.abs(quad[sel] - truth[sel]).mean() < np.abs(lin[sel] - truth[sel]).mean()


def test_calibrate_runs_on_the_real_frame():
    from conftest import shared_data

    tifffile = pytest.importorskip("tifffile")
    path = shared_data("real/lptem-supracrystal-frame/SAMPLE_0001.tif")
    frame = tifffile.imread(path).astype(np.float64)[:256, :256] - 32768.0
    res = calibrate_to(frame)
    assert 0 < res.noise_std_factor <= 1
    assert res.mean_counts > 0 and res.noise_std_counts > 0
    assert res.config.optics.mtf == "table"
