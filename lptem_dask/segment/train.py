"""Training and fine-tuning of the U-Net on simulated (or user-labelled) images.

:func:`train` builds the network from a preset, streams augmented crops from
a data source (simulated on the fly, a Zarr training set, or a folder of
labelled frames for fine-tuning), minimises BCE + Dice on the particle
probability (plus BCE on the boundary head, MSE on a distance head) with
AdamW, validates each epoch on a held-out simulated set drawn with a seed
disjoint from the training seed (loss, pixel IoU, object F1 at IoU >= 0.5),
stops early when the validation loss stops improving, and writes the best
weights as a checkpoint (``NAME.safetensors`` + ``NAME.json`` model card; see
:mod:`lptem_dask.segment._checkpoint`).

The CLI calls :func:`train_command`.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from .._version import __version__
from ..config import StageConfig, config_hash, dump_config, load_config
from ..errors import ConfigError, InputError
from ._data import (
    AugmentedDataset,
    ConcatSource,
    FolderSource,
    SimulatedSource,
    ZarrSource,
    _Subset,
    prepare_eval_item,
)
from ._metrics import maps_to_labels, match_counts, object_f1, pixel_counts
from ._normalize import NORMALIZATION
from .unet import PRESETS, UNet, UNetConfig, build_unet, count_parameters

__all__ = [
    "DataConfig",
    "AugmentConfig",
    "TrainConfig",
    "train",
    "train_command",
    "evaluate_module",
    "particle_size_stats",
]

logger = logging.getLogger(__name__)


class ExtraSimulation(StageConfig):
    """A further simulator preset whose images join the training set.

    Its images are ``simulate_one(i, simulation, seed=train_seed)`` for ``i < n_train``;
    the ``train_seed`` must differ from the main set's seeds and from any seed a test
    set uses. ``n_val`` of its images (``seed=val_seed``) join the validation set.
    """

    simulation: str = Field(description="simulator preset name or YAML path")
    n_train: int = Field(ge=1)
    train_seed: int = Field(ge=0)
    n_val: int = Field(default=0, ge=0)
    val_seed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ExtraSimulation:
        if self.n_val > 0 and self.val_seed is None:
            raise ValueError(f"{self.simulation}: n_val > 0 needs a val_seed")
        if self.val_seed is not None and self.val_seed == self.train_seed:
            raise ValueError(
                f"{self.simulation}: train_seed and val_seed must differ (both "
                f"{self.train_seed}); validation images must never be training images"
            )
        return self


class DataConfig(StageConfig):
    """Where training and validation images come from.

    ``source="simulate"``: images ``simulate_one(i, simulation, seed=train_seed)``
    for ``i < n_train`` (validation: ``seed=val_seed``, ``i < n_val``), simulated
    on demand and cached in memory, plus the images of each entry of ``extra``
    (other presets, e.g. the ``rods`` preset's heavy motion blur, which the
    ``mixed`` preset does not reach). ``source="zarr"``: training sets written by
    ``lptem simulate`` at ``train_path`` / ``val_path``.
    """

    source: Literal["simulate", "zarr"] = "simulate"
    simulation: str = Field(default="mixed", description="simulator preset name or YAML path")
    train_path: str | None = None
    val_path: str | None = None
    n_train: int = Field(default=800, ge=1)
    n_val: int = Field(default=32, ge=1)
    train_seed: int = Field(default=1, ge=0)
    val_seed: int = Field(default=2, ge=0)
    cache: bool = True
    extra: list[ExtraSimulation] = Field(
        default_factory=list, description="further simulator presets in the training set"
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.source == "simulate" and self.train_seed == self.val_seed:
            raise ValueError(
                f"train_seed and val_seed must differ (both {self.train_seed}); validation "
                "images must never be training images"
            )
        if self.extra and self.source != "simulate":
            raise ValueError("extra simulator presets need source 'simulate'")
        for e in self.extra:
            if e.train_seed == self.val_seed or e.val_seed == self.train_seed:
                raise ValueError(
                    f"extra preset {e.simulation}: its seeds must not be the main set's "
                    "other seed (validation images must never be training images)"
                )
        if self.source == "zarr" and (self.train_path is None or self.val_path is None):
            raise ValueError("source 'zarr' needs train_path and val_path")
        return self


class AugmentConfig(StageConfig):
    """Random augmentation of training crops.

    Affine intensity changes (contrast, offset) are undone by the per-image
    normalisation, so intensity augmentation is a gamma curve, a linear
    illumination gradient (amplitude in units of the crop's 1-99 % range) and
    extra Gaussian noise (std in units of the crop's robust std).
    """

    crop_px: int = Field(default=256, ge=16)
    flips: bool = True
    scale_range: tuple[float, float] = (0.75, 1.33)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    gradient_max: float = Field(default=0.3, ge=0)
    noise_max: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        for name in ("scale_range", "gamma_range"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ValueError(f"{name} must be 0 < low <= high, got {(lo, hi)}")
        return self


class TrainConfig(StageConfig):
    """Training of a U-Net (``lptem train CONFIG``)."""

    preset: str = Field(default="fast", description="U-Net preset: fast/default or paper")
    architecture: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the preset's UNetConfig fields"
    )
    init_model: str | None = Field(
        default=None, description="start from these weights ('default' or a checkpoint path)"
    )
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    batch_size: int = Field(default=8, ge=1)
    epochs: int = Field(default=200, ge=1)
    steps_per_epoch: int = Field(default=50, ge=1)
    max_time_s: float | None = Field(default=3600.0, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    lr_schedule: Literal["plateau", "cosine"] = Field(
        default="plateau",
        description=(
            "'plateau': halve the learning rate when the validation loss stalls; "
            "'cosine': anneal it from lr to 0 over epochs x steps_per_epoch steps"
        ),
    )
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=10, ge=1, description="epochs without val-loss improvement")
    min_delta: float = Field(default=1e-4, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    boundary_weight: float = Field(default=1.0, ge=0)
    boundary_pos_weight: float = Field(default=3.0, gt=0)
    distance_weight: float = Field(default=1.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(default=None, ge=1)
    num_workers: int = Field(default=0, ge=0)
    seed: int = Field(default=0, ge=0, description="initialisation and augmentation")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; available: {sorted(PRESETS)}")
        return self

    def unet_config(self) -> UNetConfig:
        base = PRESETS[self.preset].model_dump()
        base.update(self.architecture)
        return UNetConfig.model_validate(base)


# --------------------------------------------------------------------------- helpers


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("`device` is 'cuda' but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return torch.device(name)


def _hardware(device: torch.device) -> dict[str, Any]:
    hw: dict[str, Any] = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def particle_size_stats(source: Any, n_max: int = 64) -> dict[str, float] | None:
    """Equivalent diameters (px) of the labelled particles of up to ``n_max`` images."""
    d = []
    for i in range(min(len(source), n_max)):
        lab = source[i]["labels"]
        area = np.bincount(lab.ravel())[1:]
        area = area[area >= 4]
        d.append(np.sqrt(4 * area / np.pi))
    if not d or sum(len(x) for x in d) == 0:
        return None
    dd = np.concatenate(d)
    return {
        "median": float(np.median(dd)),
        "p5": float(np.percentile(dd, 5)),
        "p95": float(np.percentile(dd, 95)),
        "n_particles": int(dd.size),
    }


def _loss(
    logits: torch.Tensor, target: torch.Tensor, heads: tuple[str, ...], cfg: TrainConfig
) -> torch.Tensor:
    total = logits.new_zeros(())
    for c, h in enumerate(heads):
        lg, tg = logits[:, c].float(), target[:, c]
        if h == "probability":
            total = total + F.binary_cross_entropy_with_logits(lg, tg)
            if cfg.dice_weight > 0:
                p = torch.sigmoid(lg)
                inter = (p * tg).sum(dim=(1, 2))
                denom = p.sum(dim=(1, 2)) + tg.sum(dim=(1, 2))
                dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
                total = total + cfg.dice_weight * dice.mean()
        elif h == "boundary" and cfg.boundary_weight > 0:
            pw = torch.tensor(cfg.boundary_pos_weight, device=lg.device)
            total = total + cfg.boundary_weight * F.binary_cross_entropy_with_logits(
                lg, tg, pos_weight=pw
            )
        elif h == "distance" and cfg.distance_weight > 0:
            total = total + cfg.distance_weight * F.mse_loss(torch.sigmoid(lg), tg)
    return total


@torch.inference_mode()
def evaluate_module(
    module: torch.nn.Module,
    source: Any,
    *,
    cfg: TrainConfig | None = None,
    device: torch.device | str = "cpu",
    dist_scale_px: float = 10.0,
) -> dict[str, float]:
    """Validation scores of ``module`` on every image of ``source`` (whole frames).

    Returns ``loss`` (if ``cfg``), ``pixel_iou`` (pooled over all pixels),
    ``object_f1`` (IoU >= 0.5 matching, pooled counts), ``precision``, ``recall``.
    """
    device = torch.device(device)
    module.eval()
    heads = tuple(getattr(module, "heads", ("probability",)))
    multiple = getattr(module, "multiple", 16)
    inter = union = tp = fp = fn = 0
    losses = []
    for i in range(len(source)):
        item = source[i]
        xp, tgt, (h, w) = prepare_eval_item(item, heads, multiple, dist_scale_px)
        x = torch.from_numpy(xp)[None, None].to(device)
        logits = module(x)[..., :h, :w].float()
        if cfg is not None:
            losses.append(float(_loss(logits, torch.from_numpy(tgt)[None].to(device), heads, cfg)))
        maps = torch.sigmoid(logits)[0].cpu().numpy()
        prob = maps[0]
        bnd = maps[heads.index("boundary")] if "boundary" in heads else None
        a, b = pixel_counts(prob > 0.5, item["mask"])
        inter, union = inter + a, union + b
        t, p_, n_ = match_counts(maps_to_labels(prob, bnd), item["labels"])
        tp, fp, fn = tp + t, fp + p_, fn + n_
    out = {
        "pixel_iou": 1.0 if union == 0 else inter / union,
        "object_f1": object_f1(tp, fp, fn),
        "precision": 1.0 if tp + fp == 0 else tp / (tp + fp),
        "recall": 1.0 if tp + fn == 0 else tp / (tp + fn),
    }
    if losses:
        out["loss"] = float(np.mean(losses))
    return out


def _sources(config: TrainConfig, finetune: str | Path | None) -> tuple[Any, Any, dict[str, Any]]:
    d = config.data
    seeds: dict[str, Any]
    if finetune is not None:
        full = FolderSource(finetune)
        n = len(full)
        val_idx = [i for i in range(n) if i % 5 == 4] if n >= 5 else list(range(n))
        train_idx = [i for i in range(n) if i not in val_idx] if n >= 5 else list(range(n))
        if n < 5:
            logger.warning("fewer than 5 labelled frames: validating on the training frames")
        seeds = {
            "finetune_folder": str(finetune),
            "train_stems": [full.stems[i] for i in train_idx],
            "val_stems": [full.stems[i] for i in val_idx],
        }
        return _Subset(full, train_idx), _Subset(full, val_idx), seeds
    if d.source == "simulate":
        tr: Any = SimulatedSource(d.simulation, d.n_train, seed=d.train_seed, cache=d.cache)
        va: Any = SimulatedSource(d.simulation, d.n_val, seed=d.val_seed, cache=True)
        seeds = {
            "simulation": d.simulation,
            "train_seed": d.train_seed,
            "n_train": d.n_train,
            "val_seed": d.val_seed,
            "n_val": d.n_val,
        }
        if d.extra:
            tr = ConcatSource(
                [tr]
                + [
                    SimulatedSource(e.simulation, e.n_train, seed=e.train_seed, cache=d.cache)
                    for e in d.extra
                ]
            )
            va_extra = [
                SimulatedSource(e.simulation, e.n_val, seed=e.val_seed, cache=True)  # type: ignore[arg-type]
                for e in d.extra
                if e.n_val > 0
            ]
            if va_extra:
                va = ConcatSource([va] + va_extra)
            seeds["extra"] = [e.model_dump() for e in d.extra]
        return tr, va, seeds
    tr2, va2 = ZarrSource(d.train_path), ZarrSource(d.val_path)  # type: ignore[arg-type]
    seeds = {"train_path": d.train_path, "val_path": d.val_path}
    for name, path in (("train", d.train_path), ("val", d.val_path)):
        try:
            import json

            attrs = json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})  # type: ignore[arg-type]
            seeds[f"{name}_seed"] = attrs.get("seed")
        except (OSError, ValueError):
            pass
    return tr2, va2, seeds


# --------------------------------------------------------------------------- train


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    name: str = "model",
    finetune: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    sources: tuple[Any, Any] | None = None,
) -> Path:
    """Train a U-Net and write its checkpoint.

    Parameters
    ----------
    config : TrainConfig
    out_dir : path
        Directory of the checkpoint (created if needed).
    name : str
        Checkpoint name: ``out_dir/NAME.safetensors`` + ``NAME.json``.
    finetune : path, optional
        Folder of labelled frames (``images/``, ``masks/``) to fine-tune on;
        starts from ``config.init_model`` (default: the shipped model).
    progress : bool
        Show a tqdm progress bar with live loss and validation metrics.
    overwrite : bool
        Replace an existing checkpoint of that name.
    sources : (train, val), optional
        Data sources to use instead of the configured ones (see
        :mod:`lptem_dask.segment._data`), e.g. in tests.

    Returns
    -------
    Path
        The weights file.
    """
    from tqdm.auto import tqdm

    from ..store import check_output_path
    from ._checkpoint import save_checkpoint

    out_dir = Path(out_dir)
    weights_path = out_dir / f"{name}.safetensors"
    check_output_path(weights_path, overwrite=overwrite, what="checkpoint")
    check_output_path(weights_path.with_suffix(".json"), overwrite=overwrite, what="model card")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = _resolve_device(config.device)
    torch.manual_seed(config.seed)

    init = config.init_model or ("default" if finetune is not None else None)
    if init is not None:
        from ..models import load_model

        module, init_card = load_model(init)
        if not isinstance(module, UNet):
            raise ConfigError(f"`init_model` {init!r} is not a U-Net of this package")
    else:
        module, init_card = build_unet(config.unet_config()), None
    heads = tuple(module.config.heads)
    module.to(device)

    if sources is not None:
        train_src, val_src = sources
        seeds: dict[str, Any] = {"sources": [type(s).__name__ for s in sources]}
    else:
        train_src, val_src, seeds = _sources(config, finetune)
    sizes = particle_size_stats(train_src)
    if finetune is None and init_card is not None and init_card.get("particle_size_px"):
        sizes = init_card["particle_size_px"]
    dist_scale = 0.5 * sizes["median"] if sizes else 10.0
    aug = config.augment
    dataset = AugmentedDataset(
        train_src,
        heads=heads,
        crop_px=aug.crop_px,
        samples_per_epoch=config.steps_per_epoch * config.batch_size,
        seed=config.seed,
        scale_range=aug.scale_range,
        flips=aug.flips,
        gamma_range=aug.gamma_range,
        noise_max=aug.noise_max,
        gradient_max=aug.gradient_max,
        dist_scale_px=dist_scale,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=config.num_workers > 0,
    )
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched: Any
    if config.lr_schedule == "cosine":
        # stepped once per batch: the rate reaches 0 at the last step of the last epoch
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=config.epochs * config.steps_per_epoch
        )
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=max(1, config.patience // 3)
        )
    use_amp = device.type == "cuda"

    t0 = time.perf_counter()
    best: dict[str, Any] = {"loss": math.inf}
    best_state = None
    history = []
    bad_epochs = 0
    stop_reason = "epochs"
    bar = tqdm(total=config.epochs, disable=not progress, desc="train", unit="epoch")
    for epoch in range(config.epochs):
        dataset.set_epoch(epoch)
        module.train()
        run_loss, n_b = 0.0, 0
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = module(x)
            loss = _loss(logits, y, heads, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if config.lr_schedule == "cosine":
                sched.step()
            run_loss += loss.item()
            n_b += 1
            if progress:
                bar.set_postfix(loss=f"{run_loss / n_b:.4f}", refresh=False)
            if config.max_time_s and time.perf_counter() - t0 > config.max_time_s:
                break
        metrics = evaluate_module(
            module, val_src, cfg=config, device=device, dist_scale_px=dist_scale
        )
        metrics["train_loss"] = run_loss / max(n_b, 1)
        metrics["epoch"] = epoch
        metrics["time_s"] = time.perf_counter() - t0
        history.append(metrics)
        metrics["lr"] = float(opt.param_groups[0]["lr"])
        if config.lr_schedule == "plateau":
            sched.step(metrics["loss"])
        logger.info("epoch %d: %s", epoch, metrics)
        if metrics["loss"] < best["loss"] - config.min_delta:
            best = dict(metrics)
            best_state = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        bar.set_postfix(
            loss=f"{metrics['train_loss']:.4f}",
            val_loss=f"{metrics['loss']:.4f}",
            iou=f"{metrics['pixel_iou']:.3f}",
            f1=f"{metrics['object_f1']:.3f}",
        )
        bar.update(1)
        if bad_epochs >= config.patience:
            stop_reason = "early_stopping"
            break
        if config.max_time_s and time.perf_counter() - t0 > config.max_time_s:
            stop_reason = "max_time_s"
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    for src_name, src in (("train", train_src), ("val", val_src)):
        fails = getattr(src, "failures", None)
        if fails:
            seeds[f"{src_name}_simulator_failures"] = fails
    if best_state is not None:
        module.load_state_dict(best_state)
    module.to("cpu").eval()

    card = {
        "name": name,
        "package_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preset": config.preset,
        "n_parameters": count_parameters(module),
        "training_config": dump_config(config),
        "training_config_hash": config_hash(config),
        "data": seeds,
        "finetuned_from": init if init is not None else None,
        "normalization": dict(NORMALIZATION),
        "polarity": "dark",
        "particle_size_px": sizes,
        "scale_augmentation": list(config.augment.scale_range),
        "metrics": {"best": best, "history": history, "stop_reason": stop_reason},
        "training_time_s": elapsed,
        "hardware": _hardware(device),
    }
    stages = training_stages(init_card, card)
    card["training_stages"] = stages
    card["total_training_time_s"] = float(
        sum(float(st.get("training_time_s") or 0.0) for st in stages)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(module, card, weights_path, overwrite=overwrite)
    logger.info("wrote checkpoint %s (best val loss %.4f)", path, best["loss"])
    return path


def stage_record(card: dict[str, Any], *, init: str | None) -> dict[str, Any]:
    """One training stage as the model card's ``training_stages`` lists it."""
    cfg = card.get("training_config") or {}
    return {
        "stage": 1,
        "init": init,
        "training_config_hash": card.get("training_config_hash"),
        "data": card.get("data"),
        "training_time_s": card.get("training_time_s"),
        "best": (card.get("metrics") or {}).get("best"),
        "stop_reason": (card.get("metrics") or {}).get("stop_reason"),
        "max_time_s": cfg.get("max_time_s"),
        "hardware": card.get("hardware"),
        "created_utc": card.get("created_utc"),
        "weights_sha256": card.get("weights_sha256"),
    }


def training_stages(init_card: dict[str, Any] | None, card: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages that made a checkpoint: those of the model it started from, then its own.

    A model trained from another (``init_model``, ``--finetune``) carries the history
    of its initial weights, so its card says how long the whole model took to train.
    The new stage's ``weights_sha256`` is filled in when the checkpoint is written.
    """
    stages: list[dict[str, Any]] = []
    if init_card is not None:
        prev = init_card.get("training_stages")
        stages = [dict(st) for st in prev] if prev else [stage_record(init_card, init=None)]
    own = stage_record(card, init=card.get("finetuned_from"))
    own["stage"] = len(stages) + 1
    own["weights_sha256"] = None
    return stages + [own]


def train_command(
    config_path: str | Path,
    *,
    out_dir: str | Path,
    name: str = "model",
    finetune: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """``lptem train CONFIG [--finetune FOLDER] --out DIR [--name NAME] [--overwrite]``.

    Loads the YAML ``config_path`` as :class:`TrainConfig` and calls :func:`train`.
    Returns the path of the weights written.
    """
    config = load_config(config_path, TrainConfig)
    return train(
        config, out_dir, name=name, finetune=finetune, overwrite=overwrite, progress=progress
    )
