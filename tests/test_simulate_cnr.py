"""A requested CNR is met on the final image, across shapes and the named levels."""

from __future__ import annotations

import numpy as np
import pytest

from lptem_dask.simulate import SimulationConfig, cnr_levels, load_simulation_config, simulate_one

SHAPES = {
    "prism": {"shape": "prism", "size_nm": 60.0, "thickness_nm": 7.5},
    "rod": {"shape": "rod", "size_nm": 60.0, "diameter_nm": 16.0},
    "cube": {"shape": "cube", "size_nm": 30.0},
    "sphere": {"shape": "sphere", "size_nm": 30.0},
}


def cnr_config(shape: str, target: float, *, correlated: float = 0.0) -> SimulationConfig:
    return SimulationConfig.model_validate(
        {
            "optics": {
                "image_size_px": 256,
                "pixel_size_nm": 1.0,
                "mtf": "camera512",
                "read_noise_e": 2.0,
                "correlated_noise_rel": correlated,
                "quantisation": "uint16",
                "offset_counts": 100.0,  # a detector offset keeps low doses off the clip at 0
            },
            "particles": {
                "shapes": [{**SHAPES[shape], "mfp_nm": [30.0, 80.0]}],
                "count": 24,
                "diffusion_nm2_s": 20.0,
                "ghost_count": 1,
            },
            "target_cnr": target,
        }
    )


def _check_levels(shape: str, names, n_frames: int, correlated: float = 0.0) -> None:
    levels = cnr_levels()
    for name in names:
        target = levels[name]
        c = cnr_config(shape, target, correlated=correlated)
        outs = [simulate_one(i, c, seed=11) for i in range(n_frames)]
        for o in outs:
            assert o["cnr_expected"] == pytest.approx(target, rel=1e-3)
        measured = np.mean([o["cnr"] for o in outs])
        assert abs(measured / target - 1) < 0.05, (shape, name, target, measured)


def test_cnr_levels_span_clean_to_extreme():
    levels = cnr_levels()
    assert len(levels) >= 6
    assert levels["clean"] == 10.0 and levels["extreme"] == 0.5
    assert list(levels.values()) == sorted(levels.values(), reverse=True)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_target_cnr_met_within_5_percent(shape):
    _check_levels(shape, ["clean", "seed_default", "extreme"], n_frames=8)


def test_target_cnr_with_correlated_noise():
    _check_levels("prism", ["moderate"], n_frames=8, correlated=0.4)


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_target_cnr_all_levels(shape):
    _check_levels(shape, list(cnr_levels()), n_frames=16, correlated=0.2)


def test_target_cnr_with_background_structure():
    """The background's low-frequency structure counts in the std (global CNR)."""
    base = load_simulation_config("mixed")
    c = base.model_copy(
        update={
            "optics": base.optics.model_copy(update={"image_size_px": 256}),
            "target_cnr": 1.7,
        }
    )
    ratios = []
    for i in range(8):
        o = simulate_one(i, c, seed=5)
        if np.isfinite(o["cnr"]):
            ratios.append(o["cnr"] / o["cnr_expected"])
            assert o["cnr_expected"] <= 1.7 * 1.001
    assert abs(np.mean(ratios) - 1) < 0.05


def test_physical_dose_reproduces_seed_default_contrast():
    """Seed defaults (PHYSICS.md): ~4,400 e/px, background ~1,270 e, 7.5 nm prism ~4.7% contrast,
    per-pixel CNR ~1.7 before the MTF."""
    c = SimulationConfig.model_validate(
        {
            "optics": {"image_size_px": 256, "mtf": "none", "gain_counts_per_e": 1.0},
            "particles": {"count": 6, "diffusion_nm2_s": 0.0},
        }
    )
    outs = [simulate_one(i, c, seed=0) for i in range(3)]
    assert outs[0]["electrons_per_px"] == pytest.approx(4368.1, rel=1e-4)
    cnr = np.mean([o["cnr"] for o in outs])
    bg = 4368.1 * np.exp(-(100 / 185 + 100 / 144))
    contrast = 1 - np.exp(-7.5 * (1 / 85 - 1 / 185))
    assert contrast == pytest.approx(0.047, abs=0.002)
    assert cnr == pytest.approx(contrast * bg / np.sqrt(bg), rel=0.05)
    assert cnr == pytest.approx(1.7, abs=0.1)
