"""Segmentation: the U-Net, its training, Dask inference, post-processing, baselines."""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "build_unet": "lptem_dask.segment.unet",
    "predict_probability": "lptem_dask.segment.infer",
    "predict_maps": "lptem_dask.segment.infer",
    "segment": "lptem_dask.segment.infer",
    "label_frames": "lptem_dask.segment.postprocess",
    "train": "lptem_dask.segment.train",
    "TrainConfig": "lptem_dask.segment.train",
    "load_model": "lptem_dask.models",
    "segment_baseline": "lptem_dask.segment.baselines",
    "tune_baseline": "lptem_dask.segment.baselines",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lptem_dask.segment' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
