"""Training sets of simulated LPTEM images: lazy (Dask) and written to Zarr.

:func:`simulate_images` maps :func:`~lptem_dask.simulate.scene.simulate_one`
over chunks of the image index with Dask; image ``i`` depends only on
``(seed, i)``, so the bytes never depend on ``chunk_size`` or on the workers.
:func:`write_training_set` writes the same images to a chunked Zarr store
(the backend of ``lptem simulate``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from .._version import __version__
from ..config import config_hash, dump_config
from ..errors import InputError
from ..store import TABLES, atomic_path, aux_dir
from .config import SimulationConfig, load_simulation_config
from .scene import TRUTH_COLUMNS, sample_image_params, sample_particles, simulate_one

logger = logging.getLogger(__name__)

__all__ = ["simulate_images", "simulate_truth", "write_training_set", "SCALARS"]

#: Per-image scalar variables of a simulated dataset (dim ``index``), float64.
SCALARS = ("cnr", "snr", "cnr_expected", "electrons_per_px", "pixel_size_nm")


def _check_n(n: int, seed: int, chunk_size: int) -> None:
    if int(n) < 1:
        raise InputError(f"`n` must be >= 1 images, got {n}")
    if int(seed) < 0:
        raise InputError(f"`seed` must be >= 0, got {seed}")
    if int(chunk_size) < 1:
        raise InputError(f"`chunk_size` must be >= 1, got {chunk_size}")


def _simulate_chunk(
    start: int, stop: int, config: SimulationConfig, seed: int
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Kernel: images ``start .. stop-1`` stacked along a leading axis, and their truth."""
    outs = [simulate_one(i, config, seed=seed) for i in range(start, stop)]
    arrays = {
        "image": np.stack([o["image"] for o in outs]),
        "mask": np.stack([o["mask"] for o in outs]),
        "labels": np.stack([o["labels"] for o in outs]),
        "boundary": np.stack([o["boundary"] for o in outs]),
    }
    for k in SCALARS:
        arrays[k] = np.array([o[k] for o in outs], dtype=np.float64)
    truth = pd.concat([o["truth"] for o in outs], ignore_index=True)
    return arrays, truth


def _chunk_arrays(start: int, stop: int, config: SimulationConfig, seed: int):
    return _simulate_chunk(start, stop, config, seed)[0]


def simulate_truth(
    n: int, config: SimulationConfig | str | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """Ground-truth particle table of images ``0 .. n-1`` (no rendering).

    The same draws as :func:`simulate_one`, so the rows equal its ``truth``
    (without the rendered ``area_px``). Columns: :data:`TRUTH_COLUMNS`
    (``index``, ``label``, ``y``, ``x`` px, ``orientation_deg``, ``shape``,
    size parameters in nm, ``lambda_nm``, ``labelled``, ``ghost``, ...).
    """
    cfg = load_simulation_config(config)
    _check_n(n, seed, 1)
    parts = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        params = sample_image_params(rng, cfg)
        parts.append(sample_particles(rng, cfg, params, index=i))
    df = pd.concat(parts, ignore_index=True)
    return df[list(TRUTH_COLUMNS)]


def simulate_images(
    n: int,
    config: SimulationConfig | str | None = None,
    *,
    seed: int = 0,
    chunk_size: int = 8,
    truth: bool = True,
) -> xr.Dataset:
    """``n`` simulated images with exact ground truth, lazily (Dask).

    Parameters
    ----------
    n : int
        Number of images.
    config : SimulationConfig, preset name or YAML path, optional
        Default: the seed method's prisms (:class:`SimulationConfig()`).
    seed : int
        Image ``i`` is drawn from ``np.random.default_rng([seed, i])``.
    chunk_size : int
        Images per Dask chunk (only affects scheduling, never values).
    truth : bool
        Attach the truth table as ``truth_*`` variables on dim ``particle``
        (drawn eagerly; cheap, no rendering). Use :func:`simulate_truth` for
        a DataFrame.

    Returns
    -------
    xr.Dataset
        ``image`` (index, y, x) float32 (counts, or 0-255 for uint8
        quantisation); ``mask`` (index, y, x) bool, the exact outline of every
        labelled particle; ``labels`` (index, y, x) int32 instances;
        ``boundary`` (index, y, x) bool inner 1-px boundary band of each
        instance; per-image (index) float64 ``cnr``, ``snr`` (measured),
        ``cnr_expected``, ``electrons_per_px``, ``pixel_size_nm``; with
        ``truth``, variables ``truth_<column>`` on dim ``particle``. Coords
        ``index`` (int64), ``y`` and ``x`` (pixel indices). Attrs ``seed``,
        ``config`` (JSON), ``config_hash``.

    Examples
    --------
    >>> ds = simulate_images(2, "spheres", seed=0, chunk_size=1)
    >>> ds["image"].dims, ds["image"].dtype.name
    (('index', 'y', 'x'), 'float32')
    """
    cfg = load_simulation_config(config)
    _check_n(n, seed, chunk_size)
    n, chunk_size = int(n), int(chunk_size)
    N = cfg.optics.image_size_px
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    fields = {
        "image": ((N, N), np.float32),
        "mask": ((N, N), np.bool_),
        "labels": ((N, N), np.int32),
        "boundary": ((N, N), np.bool_),
        **{k: ((), np.float64) for k in SCALARS},
    }
    pieces: dict[str, list] = {k: [] for k in fields}
    for s, e in bounds:
        d = dask.delayed(_chunk_arrays, pure=False)(s, e, cfg, int(seed))
        for k, (shp, dt) in fields.items():
            pieces[k].append(
                da.from_delayed(
                    d[k], shape=(e - s, *shp), dtype=dt, meta=np.empty((0,) * (1 + len(shp)), dt)
                )
            )
    data_vars: dict[str, Any] = {}
    for k, (shp, _) in fields.items():
        arr = da.concatenate(pieces[k], axis=0)
        dims = ("index", "y", "x") if shp else ("index",)
        data_vars[k] = (dims, arr)
    coords = {
        "index": ("index", np.arange(n, dtype=np.int64)),
        "y": ("y", np.arange(N, dtype=np.int64), {"units": "px"}),
        "x": ("x", np.arange(N, dtype=np.int64), {"units": "px"}),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds["pixel_size_nm"].attrs["units"] = "nm"
    ds["electrons_per_px"].attrs["units"] = "electrons per pixel before attenuation"
    if truth:
        t = simulate_truth(n, cfg, seed=seed)
        for c in TRUTH_COLUMNS:
            vals = t[c].to_numpy()
            if c == "shape":
                vals = vals.astype(str)
            ds[f"truth_{c}"] = ("particle", vals)
    ds.attrs.update(
        {
            "seed": int(seed),
            "config": json.dumps(dump_config(cfg)),
            "config_hash": config_hash(cfg),
            "source": "lptem_dask.simulate",
            "version": __version__,
        }
    )
    return ds


def write_training_set(
    path: str | os.PathLike,
    n: int,
    config: SimulationConfig | str | None = None,
    *,
    seed: int = 0,
    chunk_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``n`` simulated images to a chunked Zarr v3 store, atomically.

    Layout: arrays ``image``, ``mask``, ``labels``, ``boundary`` (index, y, x)
    chunked ``(chunk_size, N, N)`` plus the per-image scalars (see
    :func:`simulate_images`, readable with ``xr.open_zarr(path)``), and the
    truth table at ``tables/truth.parquet/part-0.parquet`` (with the rendered
    ``area_px``). The resolved configuration and seed are in the group attrs
    (``config``, ``seed``). The store appears only when complete.

    Parameters
    ----------
    path : path
        Output store, conventionally ``NAME.zarr``.
    n, config, seed, chunk_size
        As :func:`simulate_images`.
    overwrite : bool
        Replace an existing store.
    progress : bool
        Show a tqdm progress bar (one step per chunk).

    Returns
    -------
    Path of the store.
    """
    from tqdm.auto import tqdm

    cfg = load_simulation_config(config)
    _check_n(n, seed, chunk_size)
    final = Path(path)
    template = simulate_images(int(n), cfg, seed=seed, chunk_size=chunk_size, truth=False)
    truths = []
    with atomic_path(final, overwrite=overwrite) as tmp:
        template.to_zarr(tmp, compute=False, mode="w", zarr_format=3, consolidated=False)
        bounds = [(s, min(s + chunk_size, int(n))) for s in range(0, int(n), chunk_size)]
        for s, e in tqdm(bounds, disable=not progress, desc="simulate", unit="chunk"):
            arrays, truth = _simulate_chunk(s, e, cfg, int(seed))
            sub = xr.Dataset(
                {
                    k: (("index", "y", "x") if v.ndim == 3 else ("index",), v)
                    for k, v in arrays.items()
                }
            )
            sub.to_zarr(tmp, region={"index": slice(s, e)}, zarr_format=3, consolidated=False)
            truths.append(truth)
        table = pd.concat(truths, ignore_index=True)
        table["radius_profile_nm"] = [
            None if p is None else np.asarray(p, dtype=np.float64).tolist()
            for p in table["radius_profile_nm"]
        ]
        tdir = aux_dir(tmp, TABLES) / "truth.parquet"
        tdir.mkdir()
        table.to_parquet(tdir / "part-0.parquet", index=False)
    logger.info("wrote %d simulated images to %s", n, final)
    return final
