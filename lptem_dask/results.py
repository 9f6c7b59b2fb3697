"""A processed video's results as one lazy ``xr.Dataset``, and CSV export.

:func:`open_results` gathers a store's arrays (``image``, ``probability``,
``labels``; lazy, from Zarr) and its tracks table as ``(particle, frame)``
variables built lazily from the Parquet parts, one Dask block per part, so
memory stays bounded by one part whatever the video length::

    ds = lp.open_results("video.zarr")
    ds.x_nm.sel(particle=3).plot()              # one trajectory
    ds.sel(frame=slice(100, 200)).area_nm2       # a time window

:func:`export_csv` streams any table of a store to a CSV file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from . import schema
from .errors import FormatError, StoreError
from .measure import column_units, part_files
from .store import IMAGE, atomic_path, open_store_dataset, table_path

__all__ = ["open_results", "open_image", "open_arrays", "tracks_dataset", "export_csv"]

logger = logging.getLogger(__name__)

_DIMS = ("frame", "y", "x")


def _check_store(store: str | os.PathLike) -> Path:
    p = Path(store)
    if not p.is_dir():
        raise StoreError(
            f"store {str(p)!r} does not exist or is not a directory; give the path of a "
            "processed video (NAME.zarr), e.g. from `lptem ingest`"
        )
    return p


def open_arrays(store: str | os.PathLike) -> xr.Dataset:
    """The store's (frame, y, x) arrays (``image``, ``probability``, ``labels``...), lazily.

    Uses :func:`lptem_dask.store.open_store_dataset` (labels live at
    ``labels/particles/0``); a directory without ``zarr.json`` (only tables) gives an
    empty Dataset.
    """
    p = _check_store(store)
    if not (p / "zarr.json").exists():
        return xr.Dataset()
    try:
        ds = open_store_dataset(p)
    except StoreError:
        raise
    except Exception as exc:
        raise FormatError(f"cannot open the Zarr store {str(p)!r}: {exc}") from exc
    keep = [n for n in ds.data_vars if tuple(ds[n].dims) == _DIMS]
    return ds[keep]


def open_image(store: str | os.PathLike) -> xr.DataArray:
    """The store's ``image`` array, lazily (dims frame, y, x)."""
    ds = open_arrays(store)
    if IMAGE not in ds:
        raise StoreError(f"store {str(store)!r} has no `image` array; ingest the video first")
    return ds[IMAGE]


def _part_frames(path: Path) -> tuple[int, int] | None:
    """(first, last) frame of a part, from its metadata or its row-group statistics."""
    md = schema.decode_metadata(pq.read_schema(path).metadata)
    if "frame_min" in md:
        return int(md["frame_min"]), int(md["frame_max"])
    meta = pq.ParquetFile(path).metadata
    if meta.num_rows == 0:
        return None
    lo, hi = None, None
    j = meta.schema.to_arrow_schema().get_field_index("frame")
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(j).statistics
        if st is None or not st.has_min_max:
            fr = pq.read_table(path, columns=["frame"]).column(0).to_numpy()
            return int(fr.min()), int(fr.max())
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    if lo is None or hi is None:
        return None
    return int(lo), int(hi)


def _read_columns(path: str, columns: list[str]) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas()


def _pivot(
    df: pd.DataFrame, column: str, particles: np.ndarray, first: int, n_frames: int
) -> np.ndarray:
    out = np.full((len(particles), n_frames), np.nan)
    if len(df):
        pi = np.searchsorted(particles, df["particle"].to_numpy())
        fi = df["frame"].to_numpy() - first
        out[pi, fi] = df[column].to_numpy(np.float64)
    return out


def tracks_dataset(
    store: str | os.PathLike,
    *,
    name: str = "tracks",
    variables: list[str] | None = None,
) -> xr.Dataset:
    """A tracks table as lazy ``(particle, frame)`` variables (float64, NaN where absent).

    Parameters
    ----------
    store : path
        The store holding ``tables/NAME.parquet``.
    name : str
        Table name.
    variables : list of str, optional
        Columns to expose; default every numeric or boolean column except
        ``frame`` and ``particle`` (booleans become 1.0/0.0).

    Returns
    -------
    xr.Dataset with dims (particle, frame); one Dask block per Parquet part
    (only the ``particle`` column and the part footers are read here).
    """
    files = part_files(store, name)
    if not files:
        raise StoreError(f"table {str(table_path(store, name))!r} has no part files")
    sch = pq.read_schema(files[0])
    if "particle" not in sch.names:
        raise StoreError(f"table {str(table_path(store, name))!r} has no `particle` column")
    if variables is None:
        empty = sch.empty_table().to_pandas()
        variables = [
            c
            for c in empty.columns
            if c not in ("frame", "particle") and empty[c].dtype.kind in "iufb"
        ]
    col_units = column_units(store, name)
    ranges = []
    uniq = []
    for f in files:
        r = _part_frames(f)
        if r is None:
            continue
        ranges.append((f, r))
        uniq.append(np.unique(pq.read_table(f, columns=["particle"]).column(0).to_numpy()))
    particles = np.unique(np.concatenate(uniq)) if uniq else np.zeros(0, np.int64)
    ranges.sort(key=lambda t: t[1][0])
    for (_, (_, b)), (f2, (a2, _)) in zip(ranges[:-1], ranges[1:], strict=True):
        if a2 <= b:
            raise StoreError(
                f"parts of {str(table_path(store, name))!r} overlap in frames at {str(f2)!r}; "
                "rewrite the table with one part per frame range"
            )
    P = len(particles)
    blocks: dict[str, list[da.Array]] = {v: [] for v in variables}
    frame_index: list[np.ndarray] = []
    nxt = ranges[0][1][0] if ranges else 0
    for f, (a, b) in ranges:
        if a > nxt:  # frames with no rows between parts
            for v in variables:
                blocks[v].append(da.full((P, a - nxt), np.nan, chunks=(P, a - nxt)))
            frame_index.append(np.arange(nxt, a))
        n = b - a + 1
        table = dask.delayed(_read_columns, pure=True)(str(f), ["particle", "frame", *variables])
        for v in variables:
            arr = dask.delayed(_pivot, pure=True)(table, v, particles, a, n)
            blocks[v].append(da.from_delayed(arr, shape=(P, n), dtype=np.float64))
        frame_index.append(np.arange(a, b + 1))
        nxt = b + 1
    frames = np.concatenate(frame_index) if frame_index else np.zeros(0, np.int64)
    data_vars = {}
    for v in variables:
        data = (
            da.concatenate(blocks[v], axis=1) if blocks[v] else da.zeros((P, 0), dtype=np.float64)
        )
        data_vars[v] = (("particle", "frame"), data, {"units": col_units.get(v, "")})
    return xr.Dataset(
        data_vars,
        coords={"particle": particles.astype(np.int64), "frame": frames.astype(np.int64)},
    )


def open_results(store: str | os.PathLike, *, tracks: str = "tracks") -> xr.Dataset:
    """Open a processed video's results as one lazy ``xr.Dataset``.

    Parameters
    ----------
    store : path
        The video's store (``NAME.zarr``).
    tracks : str
        Name of the tracks table (``tables/TRACKS.parquet``).

    Returns
    -------
    xr.Dataset
        ``image``/``probability``/``labels`` (frame, y, x) where present, and every
        numeric column of the tracks table as a (particle, frame) variable, aligned
        on the video's frames when the video is present. Everything is lazy; units
        are in each variable's ``attrs["units"]``.

    Examples
    --------
    >>> ds = open_results(store)                        # doctest: +SKIP
    >>> ds.x_nm.sel(particle=3).plot()                  # doctest: +SKIP
    """
    p = _check_store(store)
    ds = open_arrays(p)
    if table_path(p, tracks).exists():
        tr = tracks_dataset(p, name=tracks)
        if "frame" in ds.dims:
            frames = ds["frame"].values
            if not np.isin(tr["frame"].values, frames).all():
                raise StoreError(
                    f"tracks of {str(p)!r} hold frames the video lacks; re-run `lptem track`"
                )
            tr = tr.reindex(frame=frames)
            ds = ds.assign_coords(particle=tr["particle"]).assign(dict(tr.data_vars))
        else:
            ds = tr
    elif not ds.data_vars:
        raise StoreError(
            f"store {str(p)!r} holds neither arrays nor a {tracks!r} table; run the pipeline first"
        )
    return ds


def export_csv(
    store: str | os.PathLike,
    name: str,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the table ``name`` of a store to one CSV file, one part at a time (atomic).

    The first line holds the column names; units are in :func:`lptem_dask.measure.column_units`
    (and the column names where they carry them, e.g. ``x_nm``).
    """
    files = part_files(store, name)
    out = Path(path)
    with atomic_path(out, overwrite=overwrite) as tmp:
        header = True
        with open(tmp, "w", newline="") as fh:
            for f in files:
                df = pq.read_table(f).to_pandas()
                if header or len(df):
                    df.to_csv(fh, index=False, header=header)
                    header = False
    return out
