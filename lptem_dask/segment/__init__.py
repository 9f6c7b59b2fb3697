"""Segmentation: the U-Net, its training, Dask inference, post-processing, baselines."""

from __future__ import annotations

import importlib
import sys
import types
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


class _CallableModule(types.ModuleType):
    """``lptem_dask.segment`` is both this subpackage and the public function.

    Importing any ``lptem_dask.segment.*`` submodule makes Python bind the
    package object to ``lptem_dask.segment``, shadowing the function
    ``lp.segment``; calling the package forwards to
    :func:`lptem_dask.segment.infer.segment` so ``lp.segment(video, ...)``
    works whatever was imported first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .infer import segment

        return segment(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
