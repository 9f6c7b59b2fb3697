"""Training: a tiny U-Net learns discs on noise; config validation; checkpoints; fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lptem_dask.config import config_hash, load_config
from lptem_dask.errors import ConfigError, InputError, OutputExistsError
from lptem_dask.segment._data import ArraySource, AugmentedDataset, boundary_from_labels
from lptem_dask.segment._metrics import match_counts, object_f1
from lptem_dask.segment.metrics import pixel_iou
from lptem_dask.segment.train import (
    AugmentConfig,
    DataConfig,
    TrainConfig,
    evaluate_module,
    train,
    train_command,
)
from lptem_dask.segment.unet import build_unet


def disc_source(n, size=64, diam=12.0, *, cnr=2.5, seed=0):
    """Separate dark discs (diameter ``diam`` +-15 %) on Gaussian noise, with instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks, labels = [], [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.int32)
        for k in range(1, 6):
            d = diam * rng.uniform(0.85, 1.15)
            cy, cx = rng.uniform(0, size, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (d / 2) ** 2
            lab[disc & (lab == 0)] = k
        img = 200.0 - cnr * 10 * (lab > 0) + rng.normal(0, 10, lab.shape)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(lab > 0)
        labels.append(lab)
    return ArraySource(imgs, masks, labels)


def tiny_config(**kw):
    base = dict(
        preset="fast",
        architecture={"depth": 2, "base_width": 8},
        augment=AugmentConfig(
            crop_px=64,
            scale_range=(1.0, 1.0),
            gamma_range=(0.8, 1.25),
            noise_max=0.2,
            gradient_max=0.1,
        ),
        batch_size=8,
        epochs=5,
        steps_per_epoch=10,
        lr=3e-3,
        patience=6,
        device="cpu",
        max_time_s=None,
        seed=0,
        torch_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_training_run_learns_discs(tmp_path):
    train_src, val_src = disc_source(24, seed=1), disc_source(6, seed=2)
    cfg = tiny_config()
    torch.manual_seed(cfg.seed)
    before = evaluate_module(build_unet(cfg.unet_config()).eval(), val_src)
    path = train(cfg, tmp_path, progress=False, sources=(train_src, val_src))
    card = json.loads(path.with_suffix(".json").read_text())
    from lptem_dask.models import load_model

    module, _ = load_model(path)
    after = evaluate_module(module, val_src)
    coverage = np.mean([val_src[i]["mask"].mean() for i in range(len(val_src))])
    # chance level: calling every pixel a particle scores IoU = coverage (~0.15)
    assert after["pixel_iou"] > 0.7, (before, after)
    assert after["pixel_iou"] > max(before["pixel_iou"], coverage) + 0.3
    assert after["object_f1"] > 0.4 > before["object_f1"]
    # the card records what the brief asks for
    assert card["training_config_hash"] == config_hash(cfg)
    assert card["metrics"]["best"]["pixel_iou"] == pytest.approx(after["pixel_iou"], abs=1e-6)
    assert card["package_version"] and card["hardware"]["device"] == "cpu"
    assert card["training_time_s"] > 0
    assert card["particle_size_px"]["median"] == pytest.approx(12.0, rel=0.15)
    assert card["architecture"]["depth"] == 2 and card["heads"] == ["probability", "boundary"]
    assert card["normalization"]["method"] == "percentile"
    with pytest.raises(OutputExistsError):
        train(cfg, tmp_path, progress=False, sources=(train_src, val_src))


def test_cosine_schedule_anneals_the_learning_rate_to_zero(tmp_path):
    cfg = tiny_config(epochs=3, steps_per_epoch=4, lr=2e-3, lr_schedule="cosine")
    path = train(
        cfg, tmp_path, progress=False, sources=(disc_source(8, seed=1), disc_source(2, seed=2))
    )
    history = json.loads(path.with_suffix(".json").read_text())["metrics"]["history"]
    lrs = [h["lr"] for h in history]
    # after epoch e the rate is lr (1 + cos(pi (e+1)/3)) / 2: 1.5e-3, 0.5e-3, then 0
    assert lrs == pytest.approx([1.5e-3, 0.5e-3, 0.0], abs=1e-9)
    # the default halves the rate only when the validation loss stalls
    assert tiny_config().lr_schedule == "plateau"
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_config(lr_schedule="linear")


def test_finetune_on_a_folder_of_labelled_frames(tmp_path):
    import imageio.v3 as iio

    base = train(
        tiny_config(epochs=1, steps_per_epoch=2),
        tmp_path / "base",
        progress=False,
        sources=(disc_source(4, seed=3), disc_source(2, seed=4)),
    )
    folder = tmp_path / "lab"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    src = disc_source(5, seed=5)
    for i in range(5):
        iio.imwrite(folder / "images" / f"f{i}.png", src[i]["image"])
        iio.imwrite(folder / "masks" / f"f{i}.png", (src[i]["mask"] * 255).astype(np.uint8))
    cfg = tiny_config(epochs=1, steps_per_epoch=2, init_model=str(base))
    path = train(cfg, tmp_path / "ft", finetune=folder, progress=False)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["finetuned_from"] == str(base)
    assert card["data"]["val_stems"] == ["f4"] and len(card["data"]["train_stems"]) == 4
    # the card carries the stages of the weights it started from, then its own
    base_card = json.loads(base.with_suffix(".json").read_text())
    stages = card["training_stages"]
    assert [st["stage"] for st in stages] == [1, 2]
    assert stages[0]["weights_sha256"] == base_card["weights_sha256"]
    assert stages[0]["training_config_hash"] == base_card["training_config_hash"]
    assert stages[1]["weights_sha256"] == card["weights_sha256"]
    assert stages[1]["init"] == str(base)
    assert card["total_training_time_s"] == pytest.approx(
        base_card["training_time_s"] + card["training_time_s"]
    )
    (folder / "masks" / "f4.png").unlink()
    with pytest.raises(InputError, match="f4"):
        train(cfg, tmp_path / "ft2", finetune=folder, progress=False)


def test_train_config_validation(tmp_path):
    with pytest.raises(ValueError, match="val_seed"):
        DataConfig(train_seed=3, val_seed=3)
    extra = {"simulation": "rods", "n_train": 4, "train_seed": 11}
    with pytest.raises(ValueError, match="rods"):  # an extra preset's seed that validates
        DataConfig(train_seed=1, val_seed=2, extra=[{**extra, "train_seed": 2}])
    with pytest.raises(ValueError, match="val_seed"):
        DataConfig(extra=[{**extra, "n_val": 2}])
    with pytest.raises(ValueError, match="simulate"):
        DataConfig(source="zarr", train_path="a", val_path="b", extra=[extra])
    p = tmp_path / "c.yaml"
    p.write_text("preset: fast\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(p, TrainConfig)
    p.write_text("preset: giant\n")
    with pytest.raises(ConfigError, match="giant"):
        train_command(p, out_dir=tmp_path / "o")
    for name in ("default_stage1", "default", "rods", "paper"):
        cfg = load_config(f"configs/train/{name}.yaml", TrainConfig)
        assert cfg.data.train_seed != cfg.data.val_seed
        for e in cfg.data.extra:  # never a seed of a held-out test set (1000 up)
            assert e.train_seed < 1000 and (e.val_seed or 0) < 1000


def test_training_set_of_two_presets_holds_the_images_of_each():
    from lptem_dask.segment._data import ConcatSource, SimulatedSource
    from lptem_dask.segment.train import _sources

    cfg = TrainConfig(
        data=DataConfig(
            simulation="spheres",
            n_train=2,
            n_val=1,
            extra=[
                {"simulation": "cubes", "n_train": 3, "train_seed": 11, "n_val": 1, "val_seed": 12}
            ],
        )
    )
    tr, va, seeds = _sources(cfg, None)
    assert isinstance(tr, ConcatSource) and len(tr) == 5 and len(va) == 2
    cubes = SimulatedSource("cubes", 3, seed=11)
    np.testing.assert_array_equal(tr[3]["labels"], cubes[1]["labels"])
    np.testing.assert_array_equal(
        tr[1]["labels"], SimulatedSource("spheres", 2, seed=1)[1]["labels"]
    )
    np.testing.assert_array_equal(
        va[1]["labels"], SimulatedSource("cubes", 1, seed=12)[0]["labels"]
    )
    assert seeds["extra"][0]["simulation"] == "cubes"
    with pytest.raises(IndexError):
        tr[5]


def test_augmented_samples_are_reproducible_and_consistent():
    src = disc_source(3, size=80, seed=7)
    ds = AugmentedDataset(
        src,
        heads=("probability", "boundary"),
        crop_px=48,
        samples_per_epoch=4,
        seed=1,
        scale_range=(0.7, 1.4),
        gamma_range=(0.7, 1.4),
        noise_max=0.3,
        gradient_max=0.2,
    )
    x1, y1 = ds[2]
    x2, y2 = ds[2]
    assert x1.shape == (1, 48, 48) and y1.shape == (2, 48, 48)
    torch.testing.assert_close(x1, x2)
    ds.set_epoch(1)
    x3, _ = ds[2]
    assert not torch.equal(x1, x3)
    # boundary pixels lie on particles; particles are darker than background
    assert bool(((y1[1] > 0) <= (y1[0] > 0)).all())
    if 0 < y1[0].mean() < 1:
        assert x1[0][y1[0] > 0].mean() < x1[0][y1[0] == 0].mean()


def test_metrics_on_known_labels():
    t = np.zeros((10, 10), int)
    t[1:4, 1:4] = 1
    t[6:9, 6:9] = 2
    p = np.zeros_like(t)
    p[1:4, 1:5] = 5  # IoU 9/12 with object 1
    p[0, 9] = 7  # a false positive
    assert match_counts(p, t) == (1, 1, 1)
    assert object_f1(1, 1, 1) == pytest.approx(0.5)
    assert pixel_iou(p > 0, t > 0) == pytest.approx(9 / 22)
    b = boundary_from_labels(t)
    assert b[2, 2] == 0 and b[1, 1] == 1 and b.sum() == 16
