"""Physics from tracks and outlines: diffusion, interactions, etching, assembly.

Each analysis has a ``run_<name>(store, *, overwrite)`` entry point that reads the
store's tables and writes JSON, xarray and figures under ``STORE/results/<name>/``;
``lptem analyze NAME STORE`` calls it. The submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "run_diffusion": "lptem_dask.analysis.diffusion",
    "run_interaction": "lptem_dask.analysis.interaction",
    "run_etching": "lptem_dask.analysis.etching",
    "run_assembly": "lptem_dask.analysis.assembly",
}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lptem_dask.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
