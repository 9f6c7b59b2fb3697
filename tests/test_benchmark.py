"""The segmentation benchmark: quick mode writes its CSV, figures and table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from lptem_dask.benchmark import (
    LevelUnattainableError,
    SegmentationBenchmarkConfig,
    benchmark_segmentation,
    load_benchmark_config,
    quick_config,
    simulated_test_set,
)
from lptem_dask.errors import ConfigError, InputError

EXPECTED = {
    "method",
    "dataset",
    "level",
    "cnr_target",
    "cnr",
    "snr",
    "pixel_iou",
    "dice",
    "object_precision",
    "object_recall",
    "object_f1",
    "centroid_error_px",
    "boundary_p95_px",
    "time_per_frame_s",
    "detection_precision",
    "detection_recall",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from lptem_dask.segment._checkpoint import save_checkpoint
    from lptem_dask.segment.unet import build_unet

    torch.manual_seed(0)
    module = build_unet({"preset": "fast", "depth": 2, "base_width": 4})
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    card = {"data": {"simulation": "mixed", "train_seed": 1, "val_seed": 2}}
    save_checkpoint(module, card, path)
    return path


def _folders(root):
    import tifffile
    from PIL import Image

    tiles = root / "tiles"
    (tiles / "images").mkdir(parents=True)
    (tiles / "labels").mkdir()
    yy, xx = np.mgrid[:48, :48]
    for k in range(2):
        m = (yy - 20 - 4 * k) ** 2 + (xx - 24) ** 2 <= 9**2
        img = np.where(m, 60, 200).astype(np.uint8)
        Image.fromarray(np.stack([img] * 3, -1)).save(tiles / "images" / f"image_{k}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(tiles / "labels" / f"label_{k}.png")
    pts = root / "points"
    pts.mkdir()
    img = np.full((48, 48), 32768 + 200, np.uint16)
    img[(yy - 12) ** 2 + (xx - 30) ** 2 <= 16] = 32768 + 50
    tifffile.imwrite(pts / "frame.tif", img)
    (pts / "frame.txt").write_text("1 31 13\n")  # 1-based x, y
    return tiles, pts


def test_quick_benchmark_writes_outputs(tmp_path, tiny_model):
    tiles, pts = _folders(tmp_path)
    cfg = SegmentationBenchmarkConfig(
        model=str(tiny_model),
        labelled_folders=[
            {"name": "tiles", "path": str(tiles), "particle_size_px": 18},
            {
                "name": "pts",
                "path": str(pts),
                "kind": "points",
                "particle_size_px": 4,
                "offset": -32768,
            },
            {"name": "absent", "path": str(tmp_path / "nope"), "optional": True},
        ],
    )
    out = tmp_path / "out"
    benchmark_segmentation(cfg, out, quick=True, progress=False)
    for name in (
        "metrics.csv",
        "tuning.csv",
        "tuned_params.json",
        "metrics_vs_cnr.png",
        "metrics_vs_snr.png",
        "examples.png",
        "table.md",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    csv = pd.read_csv(out / "metrics.csv")
    assert EXPECTED <= set(csv.columns)
    methods = set(quick_config(cfg).methods)
    assert set(csv["method"]) == methods
    sim = csv[csv["dataset"] == "all"]
    # at least six named levels, every method at each
    assert sim["level"].nunique() >= 6
    assert (sim.groupby("level")["method"].nunique() == len(methods)).all()
    assert sim["pixel_iou"].between(0, 1).all() and sim["object_f1"].between(0, 1).all()
    assert (sim["time_per_frame_s"] > 0).all()
    real = csv[csv["dataset"] == "tiles"]
    assert len(real) == len(methods)
    otsu = real[real["method"] == "otsu"].iloc[0]
    assert otsu["pixel_iou"] > 0.9 and otsu["object_f1"] == 1.0
    p = csv[(csv["dataset"] == "pts") & (csv["method"] == "otsu")].iloc[0]
    assert p["detection_precision"] == 1.0 and p["detection_recall"] == 1.0
    tuning = pd.read_csv(out / "tuning.csv")
    assert set(tuning["method"]) == methods - {"unet"}
    table = (out / "table.md").read_text()
    assert "best baseline" in table and "Tuned baseline settings" in table


def test_config_file_and_errors(tmp_path):
    cfg = load_benchmark_config("configs/benchmark/segmentation.yaml")
    assert cfg.shapes == ("prisms", "rods", "cubes", "spheres")
    assert "unet" in cfg.methods and "random_forest" in cfg.methods
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"methods": ["otsu"], "levels": ["nope"]}))
    with pytest.raises(ConfigError, match="levels"):
        benchmark_segmentation(bad, tmp_path / "o", progress=False)
    with pytest.raises(ConfigError):
        benchmark_segmentation(
            SegmentationBenchmarkConfig(methods=("magic",)), tmp_path / "o", progress=False
        )
    missing = SegmentationBenchmarkConfig(
        methods=("otsu",),
        levels=("clean",),
        shapes=("spheres",),
        frames_per_set=1,
        image_size_px=48,
        tune=False,
        labelled_folders=[{"name": "x", "path": str(tmp_path / "no")}],
    )
    with pytest.raises(InputError, match="does not exist"):
        benchmark_segmentation(missing, tmp_path / "o", progress=False)


def test_simulated_test_set_hits_the_target_cnr():
    ts = simulated_test_set("spheres", target_cnr=2.5, n=2, image_size_px=128, seed=1000)
    assert ts["images"].shape == (2, 128, 128) and ts["labels"].dtype == np.int32
    assert ts["labels"].max() > 0
    assert np.allclose(ts["cnr"], 2.5, rtol=0.25)
    assert ts["size_px"] > 3


def test_simulated_test_set_holds_only_frames_at_the_level():
    # rods at CNR 10: the background structure (ghost rods, thin liquid) keeps some
    # frames below the level whatever the dose; those are skipped, not scored
    ts = simulated_test_set("rods", target_cnr=10.0, n=2, image_size_px=128, seed=1000)
    assert ts["skipped"]  # this seed has frames off the level
    assert np.allclose(ts["cnr"], 10.0, rtol=0.1)
    everything = simulated_test_set(
        "rods", target_cnr=10.0, n=2, image_size_px=128, seed=1000, level_tolerance=None
    )
    assert everything["skipped"] == []
    assert (everything["cnr"] < 9.0).any()  # what the old sets held
    with pytest.raises(LevelUnattainableError, match="fewer than 2 frames at CNR 10.0 in 2 draws"):
        simulated_test_set("rods", target_cnr=10.0, n=2, image_size_px=128, seed=1000, max_draws=2)


def test_reuses_tuned_params(tmp_path):
    import json

    earlier = tmp_path / "tuned_params.json"
    earlier.write_text(json.dumps({"params": {"otsu": {"sigma_rel": 0.0, "min_area_rel": 0.3}}}))
    cfg = SegmentationBenchmarkConfig(
        methods=("otsu",),
        levels=("clean",),
        shapes=("spheres",),
        frames_per_set=1,
        image_size_px=96,
        tuned_params=str(earlier),
        n_examples=1,
    )
    df = benchmark_segmentation(cfg, tmp_path / "o", progress=False)
    written = json.loads((tmp_path / "o" / "tuned_params.json").read_text())
    assert written["params"]["otsu"]["min_area_rel"] == 0.3
    assert written["reused_from"] == str(earlier)
    assert not (tmp_path / "o" / "tuning.csv").exists()
    row = df[(df["dataset"] == "spheres")].iloc[0]
    assert row["pixel_iou"] > 0.5  # clean spheres are easy for Otsu
    # the shapes' mean is the mean of per-shape rows
    assert df[df["dataset"] == "all"].iloc[0]["pixel_iou"] == pytest.approx(row["pixel_iou"])
    bad = cfg.model_copy(update={"methods": ("otsu", "li")})
    with pytest.raises(ConfigError, match="no settings"):
        benchmark_segmentation(bad, tmp_path / "o2", progress=False)


def test_a_shape_that_cannot_reach_a_level_is_left_out_of_its_mean(tmp_path):
    # rods at CNR 10, seed 1000, 96 px: only the first of the first three frames is at
    # the level (the background keeps the others below it); spheres are at it
    cfg = SegmentationBenchmarkConfig(
        methods=("otsu",),
        levels=("clean",),
        shapes=("spheres", "rods"),
        frames_per_set=2,
        max_draws_per_set=3,
        image_size_px=96,
        tuned_params=None,
        tune=False,
        extend_cnr=(),
        n_examples=1,
    )
    df = benchmark_segmentation(cfg, tmp_path / "o", progress=False)
    assert set(df.loc[df["level"] == "clean", "dataset"]) == {"spheres", "all"}
    row = df[df["dataset"] == "all"].iloc[0]
    assert row["n_shapes"] == 1
    sph = df[df["dataset"] == "spheres"].iloc[0]
    assert row["pixel_iou"] == pytest.approx(sph["pixel_iou"])
    assert df.attrs["unattainable"][0]["dataset"] == "rods"
    table = (tmp_path / "o" / "table.md").read_text()
    assert "- level clean: rods: fewer than 2 frames at CNR 10.0 in 3 draws" in table
