"""Dataset layer: laziness, determinism, chunk invariance, truth, Zarr, presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import lptem_dask.simulate.dataset as dataset_mod
from lptem_dask.errors import ConfigError, OutputExistsError
from lptem_dask.simulate import (
    PRESET_NAMES,
    SimulationConfig,
    cnr_level,
    cnr_levels,
    load_simulation_config,
    simulate_images,
    simulate_one,
    simulate_truth,
    write_training_set,
)

REPO = Path(__file__).resolve().parents[1]


def small(name: str = "mixed", size: int = 64) -> SimulationConfig:
    c = load_simulation_config(name)
    return c.model_copy(update={"optics": c.optics.model_copy(update={"image_size_px": size})})


def test_building_the_dataset_computes_nothing(monkeypatch):
    calls = []
    real = dataset_mod.simulate_one

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(dataset_mod, "simulate_one", counting)
    ds = simulate_images(6, small(), seed=0, chunk_size=4)
    assert calls == []
    assert ds["image"].chunks[0] == (4, 2)
    ds["image"][:1].compute()
    assert 0 < len(calls) <= 4


def test_chunk_invariance_and_determinism():
    c = small()
    ref = simulate_images(7, c, seed=3, chunk_size=7, truth=False).compute()
    for cs in (1, 3):
        ds = simulate_images(7, c, seed=3, chunk_size=cs, truth=False).compute()
        for v in ("image", "mask", "labels", "boundary", "cnr"):
            assert ds[v].values.tobytes() == ref[v].values.tobytes(), (v, cs)
    # the numpy kernel gives the same bytes
    one = simulate_one(5, c, seed=3)
    assert one["image"].tobytes() == ref["image"].values[5].tobytes()
    # another seed gives other images
    other = simulate_images(2, c, seed=4, truth=False)["image"].values
    assert not np.array_equal(other[0], ref["image"].values[0])


def test_dataset_dtypes_and_dims():
    ds = simulate_images(3, small("prisms"), seed=0)
    assert ds["image"].dims == ("index", "y", "x")
    assert ds["image"].dtype == np.float32
    assert ds["mask"].dtype == bool and ds["boundary"].dtype == bool
    assert ds["labels"].dtype == np.int32
    assert ds["truth_index"].dims == ("particle",)
    mask, labels = ds["mask"].values, ds["labels"].values
    assert np.array_equal(mask, labels > 0)
    assert not (ds["boundary"].values & ~mask).any()


def test_truth_matches_rendered_instances():
    c = small("mixed", 96)
    truth = simulate_truth(4, c, seed=9)
    for i in range(4):
        out = simulate_one(i, c, seed=9)
        t = truth[truth["index"] == i].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            t, out["truth"][list(t.columns)].reset_index(drop=True), check_dtype=False
        )
        lab = out["labels"]
        labelled = t[t["labelled"]]
        # every label in the image belongs to a labelled truth row
        assert set(np.unique(lab)) - {0} <= set(labelled["label"])
        # labels are 1..n_labelled
        assert list(labelled["label"]) == list(range(1, len(labelled) + 1))


def test_write_training_set_round_trip(tmp_path):
    c = small("spheres")
    path = write_training_set(tmp_path / "t.zarr", 5, c, seed=2, chunk_size=2, progress=False)
    z = xr.open_zarr(path, consolidated=False)
    ds = simulate_images(5, c, seed=2, truth=False)
    assert np.array_equal(z["image"].values, ds["image"].values)
    assert np.array_equal(z["labels"].values, ds["labels"].values)
    assert z.attrs["seed"] == 2
    tab = pd.read_parquet(path / "tables" / "truth.parquet")
    assert len(tab) == len(simulate_truth(5, c, seed=2))
    assert "area_px" in tab.columns
    with pytest.raises(OutputExistsError):
        write_training_set(path, 2, c, progress=False)
    write_training_set(path, 2, c, progress=False, overwrite=True)
    assert xr.open_zarr(path, consolidated=False).sizes["index"] == 2


def test_presets_load_and_match_configs_dir():
    for name in PRESET_NAMES:
        cfg = load_simulation_config(name)
        assert isinstance(cfg, SimulationConfig)
        pkg = Path(dataset_mod.__file__).parent / "presets" / f"{name}.yaml"
        repo = REPO / "configs" / "simulate" / f"{name}.yaml"
        assert pkg.read_bytes() == repo.read_bytes(), name
        assert load_simulation_config(repo) == cfg
    pkg = Path(dataset_mod.__file__).parent / "presets" / "cnr_levels.yaml"
    assert pkg.read_bytes() == (REPO / "configs" / "simulate" / "cnr_levels.yaml").read_bytes()
    assert cnr_level("seed_default") == 1.7
    assert len(cnr_levels()) >= 6
    with pytest.raises(ConfigError, match="unknown CNR level"):
        cnr_level("nope")


def test_mixed_preset_spans_sizes_shapes_and_cnr():
    c = load_simulation_config("mixed")
    truth = simulate_truth(200, c, seed=0)
    lab = truth[truth["labelled"]]
    assert set(lab["shape"]) == {"prism", "rod", "cube", "sphere"}
    assert lab["size_px"].min() < 12 and lab["size_px"].max() > 130
    counts = lab.groupby("index").size()
    assert counts.max() >= 50 and counts.min() <= 10
    assert truth["ghost"].any()


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optics:\n  pixel_size: 2\n")
    with pytest.raises(ConfigError, match="pixel_size"):
        load_simulation_config(bad)
    with pytest.raises(ConfigError, match="preset"):
        load_simulation_config("prismz")
    rev = tmp_path / "t.yaml"
    rev.write_text("target_cnr: [5.0, 1.0]\n")
    with pytest.raises(ConfigError, match="target_cnr"):
        load_simulation_config(rev)
