"""Particle layout: labelled particles in a random layout never overlap (hard-core exclusion)."""

from __future__ import annotations

import numpy as np
import pytest

from lptem_dask.config import config_from_mapping, dump_config
from lptem_dask.simulate import (
    SimulationConfig,
    load_simulation_config,
    sample_image_params,
    sample_particles,
)
from lptem_dask.simulate.scene import _footprint


def _crowded(min_gap_px):
    d = dump_config(load_simulation_config("mixed"))
    d["particles"].update(count=[60, 60], lattice_fraction=0.0, min_gap_px=min_gap_px)
    return config_from_mapping(SimulationConfig, d, source="test")


def _coverage(df, ps, n_px, grow=0):
    m0 = 200
    cov = np.zeros((n_px + 2 * m0, n_px + 2 * m0), np.int32)
    for row in df[df["labelled"]].to_dict("records"):
        y0, x0, m = _footprint(row, row["y"], row["x"], ps, grow)
        cov[y0 + m0 : y0 + m0 + m.shape[0], x0 + m0 : x0 + m0 + m.shape[1]] += m
    return cov


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_layout_has_no_overlaps(seed):
    cfg = _crowded(0.0)
    rng = np.random.default_rng(seed)
    params = sample_image_params(rng, cfg)
    df = sample_particles(rng, cfg, params)
    cov = _coverage(df, params["pixel_size_nm"], cfg.optics.image_size_px)
    assert cov.max() == 1
    assert df["labelled"].sum() >= 5


def test_gap_is_respected():
    cfg = _crowded(3.0)
    rng = np.random.default_rng(5)
    params = sample_image_params(rng, cfg)
    df = sample_particles(rng, cfg, params)
    ps = params["pixel_size_nm"]
    lab = df[df["labelled"]].to_dict("records")
    # every footprint grown by the gap misses every other bare footprint
    for i, a in enumerate(lab):
        ya, xa, ma = _footprint(a, a["y"], a["x"], ps, 3)
        for b in lab[i + 1 :]:
            yb, xb, mb = _footprint(b, b["y"], b["x"], ps, 0)
            y0, x0 = max(ya, yb), max(xa, xb)
            y1 = min(ya + ma.shape[0], yb + mb.shape[0])
            x1 = min(xa + ma.shape[1], xb + mb.shape[1])
            if y1 <= y0 or x1 <= x0:
                continue
            sa = ma[y0 - ya : y1 - ya, x0 - xa : x1 - xa]
            sb = mb[y0 - yb : y1 - yb, x0 - xb : x1 - xb]
            assert not (sa & sb).any()


def test_overlaps_allowed_when_gap_is_null():
    cfg = _crowded(None)
    rng = np.random.default_rng(0)
    params = sample_image_params(rng, cfg)
    df = sample_particles(rng, cfg, params)
    assert int(df["labelled"].sum()) == 60
    assert _coverage(df, params["pixel_size_nm"], cfg.optics.image_size_px).max() > 1


def test_thin_liquid_regions_brighten_part_of_the_field():
    from lptem_dask.simulate import make_background

    d = dump_config(load_simulation_config("mixed"))
    d["background"].update(
        thin_region_probability=1.0,
        thin_region_fraction=0.3,
        thin_region_depth=0.8,
        liquid_variation_nm=0.0,
    )
    cfg = config_from_mapping(SimulationConfig, d, source="test")
    rng = np.random.default_rng(3)
    params = sample_image_params(rng, cfg)
    bg = make_background(cfg, rng=rng, params=params)
    t = np.asarray(bg["liquid_nm"])
    t0 = params["liquid_thickness_nm"]
    thin = t < 0.5 * t0
    # about 30 % of the field lost about 80 % of its liquid; the rest is untouched
    assert 0.15 < thin.mean() < 0.35
    assert np.isclose(t.min(), 0.2 * t0, rtol=0.05)
    assert np.isclose(np.median(t[t > 0.99 * t0]), t0)
