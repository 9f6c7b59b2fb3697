"""lptem-dask: liquid-phase TEM videos to physics, scaled with Dask.

Reimplements and scales Yao, Ou, Luo, Xu & Chen, "Machine Learning to Reveal
Nanoparticle Dynamics from Liquid-Phase TEM Videos", ACS Cent. Sci. 6, 1421
(2020): simulate LPTEM images with exact ground truth, train a U-Net on them,
segment every frame of long noisy videos, measure and link every particle, and
fit the physics.

The public API is imported lazily, so ``import lptem_dask`` stays fast and does
not import PyTorch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import LptemError

# public name -> module that defines it
_API = {
    "open_video": "lptem_dask.io",
    "from_array": "lptem_dask.io",
    "ingest": "lptem_dask.io",
    "predict_probability": "lptem_dask.segment.infer",
    "predict_maps": "lptem_dask.segment.infer",
    "segment": "lptem_dask.segment.infer",
    "label_frames": "lptem_dask.segment.postprocess",
    "measure_regions": "lptem_dask.measure",
    "link": "lptem_dask.track",
    "link_store": "lptem_dask.track",
    "open_results": "lptem_dask.results",
    "simulate_images": "lptem_dask.simulate",
    "simulate_video": "lptem_dask.simulate.dynamics",
    "make_client": "lptem_dask.cluster",
    "label_events": "lptem_dask.events",
    "load_config": "lptem_dask.config",
}

__all__ = ["__version__", "LptemError", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lptem_dask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
