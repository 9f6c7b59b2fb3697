"""Linking particles into trajectories with trackpy.

:func:`link` links a regions table held in memory (pandas, or a dask DataFrame
that it computes) with :func:`trackpy.link`; :func:`link_store` links the
regions table of a store into its tracks table frame by frame with trackpy's
iterative linker (:func:`trackpy.link_df_iter`), so memory stays bounded by one
window of frames whatever the video length, and the result equals
whole-video linking.

Positions are linked in nanometres (``y_nm``, ``x_nm``), so ``search_range_nm``
and ``adaptive_stop_nm`` are physical. Optional drift correction: ``"tracks"``
(link, :func:`trackpy.compute_drift` from the tracks, subtract, link again),
``"registration"`` (phase cross-correlation of consecutive frames of the video,
:func:`skimage.registration.phase_cross_correlation`), or a precomputed drift
table. The drift subtracted at each frame is kept in ``drift_y_nm``/``drift_x_nm``;
``y_nm``/``x_nm`` stay as measured.

Orientation unwrapping: a particle with n-fold symmetry looks the same after a
rotation by ``symmetry_deg`` (120 for prisms, 90 for cubes, 180 for rods), so its
measured orientation jumps by that period; ``orientation_unwrapped_deg`` is the
continuous angle along each trajectory (each step taken as the smallest rotation
compatible with the symmetry).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import trackpy
import xarray as xr

from . import schema
from .errors import InputError, StoreError
from .measure import _write_part, part_files
from .store import atomic_path, table_path

__all__ = [
    "link",
    "link_store",
    "unwrap_orientation",
    "registration_drift",
    "tracks_drift",
]

logger = logging.getLogger(__name__)

_POS = ["y_nm", "x_nm"]
_LINK_POS = ["_y_link_nm", "_x_link_nm"]
DriftSpec: TypeAlias = Literal["tracks", "registration"] | pd.DataFrame | None


# ------------------------------------------------------------------------ orientation
def unwrap_orientation(
    tracks: pd.DataFrame,
    *,
    symmetry_deg: float,
    column: str = "orientation_deg",
) -> np.ndarray:
    """Continuous orientation along each trajectory, given the particle's symmetry.

    Parameters
    ----------
    tracks : pandas.DataFrame
        Columns ``particle``, ``frame`` and ``column`` (deg).
    symmetry_deg : float
        Rotation that leaves the particle unchanged: 120 (prism), 90 (cube), 180 (rod axis).
    column : str
        Orientation column to unwrap.

    Returns
    -------
    ndarray of float64, aligned with the rows of ``tracks``
        Orientation (deg): the first value of each trajectory as measured, then
        each step wrapped into [-symmetry_deg/2, symmetry_deg/2).

    Examples
    --------
    >>> t = pd.DataFrame({"particle": [0, 0, 0], "frame": [0, 1, 2],
    ...                   "orientation_deg": [115.0, 5.0, 15.0]})
    >>> unwrap_orientation(t, symmetry_deg=120).tolist()
    [115.0, 125.0, 135.0]
    """
    if symmetry_deg <= 0:
        raise InputError(f"`symmetry_deg` must be > 0, got {symmetry_deg}")
    if column not in tracks.columns:
        raise InputError(
            f"cannot unwrap orientation: column {column!r} is not in the table "
            f"(columns: {list(tracks.columns)}); measure with the matching `shape=`"
        )
    n = len(tracks)
    if n == 0:
        return np.zeros(0)
    part = tracks["particle"].to_numpy()
    order = np.lexsort((tracks["frame"].to_numpy(), part))
    a = tracks[column].to_numpy(np.float64)[order]
    p = part[order]
    # steps between consecutive *measured* orientations of a trajectory: a row
    # without an orientation (NaN) is skipped, the rotation across it is kept
    valid = np.flatnonzero(np.isfinite(a))
    out_sorted = np.full(n, np.nan)
    if valid.size:
        av, pv = a[valid], p[valid]
        d = np.diff(av, prepend=np.nan)
        half = symmetry_deg / 2.0
        d = np.mod(d + half, symmetry_deg) - half
        start = np.ones(valid.size, bool)
        start[1:] = pv[1:] != pv[:-1]
        d[start] = av[start]
        out_sorted[valid] = pd.Series(d).groupby(pv).cumsum().to_numpy()
    out = np.empty(n)
    out[order] = out_sorted
    return out


def _orientation_column(table: pd.DataFrame, symmetry_deg: float | None) -> str | None:
    if symmetry_deg is None:
        return "orientation_deg" if "orientation_deg" in table.columns else None
    if np.isclose(symmetry_deg, 120) and "prism_orientation_deg" in table.columns:
        return "prism_orientation_deg"
    if np.isclose(symmetry_deg, 90) and "cube_orientation_deg" in table.columns:
        return "cube_orientation_deg"
    return "orientation_deg"


# ----------------------------------------------------------------------------- drift
def tracks_drift(
    tracks: pd.DataFrame, frames: Sequence[int] | np.ndarray | None = None
) -> pd.DataFrame:
    """Drift (nm) per frame from linked tracks, with :func:`trackpy.compute_drift`.

    Frames without any particle present in the previous frame keep the drift of
    the frame before (trackpy would reset them to zero).

    Returns
    -------
    pandas.DataFrame indexed by ``frame`` with columns ``drift_y_nm``, ``drift_x_nm``.
    """
    if len(tracks) == 0:
        d = pd.DataFrame({"drift_y_nm": [], "drift_x_nm": []}, dtype=np.float64)
    else:
        d = trackpy.compute_drift(tracks, pos_columns=_POS)
        d = d.rename(columns={"y_nm": "drift_y_nm", "x_nm": "drift_x_nm"})
    return _fill_drift(d[["drift_y_nm", "drift_x_nm"]], frames)


def _fill_drift(d: pd.DataFrame, frames: Sequence[int] | np.ndarray | None) -> pd.DataFrame:
    if frames is not None:
        idx = pd.Index(np.unique(np.asarray(frames, np.int64)), name="frame")
        d = d.reindex(d.index.union(idx)).sort_index().ffill().fillna(0.0).reindex(idx)
    d.index.name = "frame"
    return d.astype(np.float64)


def _pcc_block(frames: np.ndarray, upsample_factor: int) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    out = np.zeros((max(len(frames) - 1, 0), 2))
    for i in range(1, len(frames)):
        shift, _, _ = phase_cross_correlation(
            np.asarray(frames[i - 1], np.float64),
            np.asarray(frames[i], np.float64),
            upsample_factor=upsample_factor,
            normalization=None,
        )
        out[i - 1] = -np.asarray(shift)  # content displacement from frame i-1 to i
    return out


def registration_drift(video: xr.DataArray, *, upsample_factor: int = 10) -> pd.DataFrame:
    """Drift (nm) per frame by phase cross-correlation of consecutive frames.

    Parameters
    ----------
    video : xr.DataArray, dims (frame, y, x)
        The frames, with ``attrs["pixel_size_nm"]``.
    upsample_factor : int
        Sub-pixel precision of the registration (1/upsample_factor px).

    Returns
    -------
    pandas.DataFrame indexed by ``frame`` with ``drift_y_nm``, ``drift_x_nm``:
    the cumulative displacement of the image content since the first frame.
    Computed here (one task per frame chunk, each overlapping the previous
    chunk by one frame).
    """
    if not isinstance(video, xr.DataArray) or tuple(video.dims) != ("frame", "y", "x"):
        raise InputError(
            "drift='registration' needs `video`, an xr.DataArray with dims "
            f"('frame', 'y', 'x'); got {type(video).__name__}"
        )
    ps = video.attrs.get("pixel_size_nm")
    if ps is None:
        raise InputError("`video` has no attrs['pixel_size_nm']; set it to register frames in nm")
    data = video.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=("auto", -1, -1))
    n = data.shape[0]
    bounds = np.cumsum((0,) + data.chunks[0])
    tasks = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        block = data[max(s - 1, 0) : e].rechunk({0: -1, 1: -1, 2: -1}).to_delayed().ravel()[0]
        tasks.append(dask.delayed(_pcc_block)(block, upsample_factor))
    steps = [np.zeros((1, 2))] + [np.asarray(b) for b in dask.compute(*tasks)]
    cum = np.cumsum(np.concatenate(steps)[:n], axis=0) * float(ps)
    frames = (
        np.asarray(video["frame"].values, np.int64) if "frame" in video.coords else np.arange(n)
    )
    return pd.DataFrame(
        {"drift_y_nm": cum[:, 0], "drift_x_nm": cum[:, 1]}, index=pd.Index(frames, name="frame")
    )


# ------------------------------------------------------------------------------ link
def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in ("frame", *_POS) if c not in table.columns]
    if missing:
        raise InputError(
            f"`table` lacks the columns {missing} (it has {list(table.columns)}); "
            "give a regions table from lp.measure_regions"
        )


def _adaptive_alias(adaptive_stop_nm: float | None, adaptive_stop: float | None) -> float | None:
    if adaptive_stop is not None and adaptive_stop_nm is not None:
        raise InputError("give `adaptive_stop_nm` or its alias `adaptive_stop`, not both")
    return adaptive_stop_nm if adaptive_stop is None else adaptive_stop


def _link_kwargs(
    search_range_nm: float,
    memory: int,
    adaptive_stop_nm: float | None,
    adaptive_step: float,
    link_strategy: str | None,
) -> dict:
    if not search_range_nm > 0:
        raise InputError(f"`search_range_nm` must be > 0, got {search_range_nm}")
    if memory < 0:
        raise InputError(f"`memory` must be >= 0 frames, got {memory}")
    kw: dict = {"memory": int(memory), "pos_columns": _LINK_POS, "t_column": "frame"}
    if adaptive_stop_nm is not None:
        if not 0 < adaptive_stop_nm < search_range_nm:
            raise InputError(
                f"`adaptive_stop_nm` must lie in (0, search_range_nm={search_range_nm}), "
                f"got {adaptive_stop_nm}"
            )
        if not 0 < adaptive_step < 1:
            raise InputError(f"`adaptive_step` must lie in (0, 1), got {adaptive_step}")
        kw.update(adaptive_stop=float(adaptive_stop_nm), adaptive_step=float(adaptive_step))
    if link_strategy is not None:
        kw["link_strategy"] = link_strategy
    return kw


def _with_drift(df: pd.DataFrame, drift: pd.DataFrame | None) -> pd.DataFrame:
    if drift is None:
        df["drift_y_nm"] = 0.0
        df["drift_x_nm"] = 0.0
    else:
        d = _fill_drift(drift[["drift_y_nm", "drift_x_nm"]].copy(), df["frame"].to_numpy())
        idx = d.index.get_indexer(pd.Index(df["frame"].to_numpy()))
        df["drift_y_nm"] = d["drift_y_nm"].to_numpy()[idx]
        df["drift_x_nm"] = d["drift_x_nm"].to_numpy()[idx]
    df[_LINK_POS[0]] = df["y_nm"].to_numpy() - df["drift_y_nm"].to_numpy()
    df[_LINK_POS[1]] = df["x_nm"].to_numpy() - df["drift_x_nm"].to_numpy()
    return df


def _finish(
    tracks: pd.DataFrame,
    *,
    columns: list[str],
    symmetry_deg: float | None,
    orientation_column: str | None,
) -> pd.DataFrame:
    col = orientation_column or _orientation_column(tracks, symmetry_deg)
    period = symmetry_deg if symmetry_deg is not None else 180.0
    if col is not None and col in tracks.columns:
        tracks["orientation_unwrapped_deg"] = unwrap_orientation(
            tracks, symmetry_deg=period, column=col
        )
    else:
        tracks["orientation_unwrapped_deg"] = np.nan
    tracks = tracks.drop(columns=_LINK_POS)
    spec = {c: (str(tracks[c].dtype), "") for c in columns}
    spec = schema.tracks_columns(spec)
    spec = {k: (str(tracks[k].dtype) if k in columns else v[0], v[1]) for k, v in spec.items()}
    spec["particle"] = ("int64", "")
    return schema.conform(tracks, spec)


def link(
    table: pd.DataFrame | dd.DataFrame,
    *,
    search_range_nm: float,
    memory: int = 3,
    adaptive_stop_nm: float | None = None,
    adaptive_step: float = 0.95,
    drift: DriftSpec = None,
    symmetry_deg: float | None = None,
    orientation_column: str | None = None,
    min_length: int = 1,
    video: xr.DataArray | None = None,
    link_strategy: str | None = None,
    drift_iterations: int = 2,
    adaptive_stop: float | None = None,
) -> pd.DataFrame:
    """Link per-frame regions into trajectories with :func:`trackpy.link`.

    Parameters
    ----------
    table : pandas or dask DataFrame
        Regions table (columns ``frame``, ``y_nm``, ``x_nm``, ...); a dask table is computed.
    search_range_nm : float
        Largest displacement (nm) between linked positions (after drift subtraction).
    memory : int
        Frames a particle may vanish and still keep its identity.
    adaptive_stop_nm : float, optional
        Enables trackpy's adaptive search: where the search is ambiguous the range
        shrinks by ``adaptive_step`` down to this value (nm).
    adaptive_step : float
        Factor of each adaptive reduction, in (0, 1).
    drift : {None, "tracks", "registration"} or DataFrame
        Drift to subtract before linking (see module doc). A DataFrame must be
        indexed by frame with ``drift_y_nm``, ``drift_x_nm`` (nm).
    symmetry_deg : float, optional
        Rotational symmetry used to unwrap orientations: 120 (prism: unwraps
        ``prism_orientation_deg`` if present), 90 (cube), 180 (rod). None unwraps
        ``orientation_deg`` with its 180 deg axis period.
    orientation_column : str, optional
        Column to unwrap, overriding the choice above.
    min_length : int
        Trajectories with fewer rows are dropped (:func:`trackpy.filter_stubs`).
    video : xr.DataArray, optional
        Needed for ``drift="registration"``.
    link_strategy : str, optional
        Passed to trackpy (e.g. ``"numba"``, ``"recursive"``, ``"hybrid"``).
    drift_iterations : int
        With ``drift="tracks"``: rounds of (measure drift from the tracks, subtract
        it, link again); the first linking is done without drift correction.
    adaptive_stop : float, optional
        Same as ``adaptive_stop_nm`` (the name ``LinkConfig`` and trackpy use).

    Returns
    -------
    pandas.DataFrame
        The input columns plus ``particle`` (int64), ``drift_y_nm``, ``drift_x_nm`` and
        ``orientation_unwrapped_deg``; sorted by frame, then label.

    Examples
    --------
    >>> t = pd.DataFrame({"frame": [0, 0, 1, 1], "y_nm": [0.0, 50, 1, 51],
    ...                   "x_nm": [0.0, 50, 1, 49], "orientation_deg": [0.0, 10, 1, 12]})
    >>> link(t, search_range_nm=5).particle.tolist()
    [0, 1, 0, 1]
    """
    if isinstance(table, dd.DataFrame):
        table = table.compute()
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"`table` must be a pandas or dask DataFrame, got {type(table).__name__}")
    _check_table(table)
    adaptive_stop_nm = _adaptive_alias(adaptive_stop_nm, adaptive_stop)
    kw = _link_kwargs(search_range_nm, memory, adaptive_stop_nm, adaptive_step, link_strategy)
    if min_length < 1:
        raise InputError(f"`min_length` must be >= 1, got {min_length}")
    columns = list(table.columns)
    sort = ["frame", "label"] if "label" in table.columns else ["frame"]
    df = table.sort_values(sort, kind="stable").reset_index(drop=True)
    frames = df["frame"].to_numpy()
    if isinstance(drift, pd.DataFrame):
        d = drift
    elif drift is None or drift == "tracks":
        d = None
    elif drift == "registration":
        if video is None:
            raise InputError("`drift='registration'` needs `video=` (the frames to register)")
        d = registration_drift(video)
    else:
        raise InputError(
            f"`drift` must be None, 'tracks', 'registration' or a DataFrame, got {drift!r}"
        )
    df = _with_drift(df, d)
    if len(df) == 0:
        tracks = df.assign(particle=np.zeros(0, np.int64))
    else:
        tracks = trackpy.link(df, search_range_nm, **kw)
        if isinstance(drift, str) and drift == "tracks":
            for _ in range(drift_iterations):
                d = tracks_drift(tracks, frames)
                df = _with_drift(df.drop(columns=["drift_y_nm", "drift_x_nm"]), d)
                tracks = trackpy.link(df, search_range_nm, **kw)
        tracks = tracks.reset_index(drop=True)
    if min_length > 1 and len(tracks):
        tracks = trackpy.filter_stubs(tracks, threshold=min_length).reset_index(drop=True)
    tracks = tracks.sort_values(sort, kind="stable").reset_index(drop=True)
    return _finish(
        tracks, columns=columns, symmetry_deg=symmetry_deg, orientation_column=orientation_column
    )


# -------------------------------------------------------------------- windowed linking
def _iter_frames(
    files: list[Path], batch_rows: int, prepare: Callable[[pd.DataFrame], pd.DataFrame]
) -> Iterator[pd.DataFrame]:
    """Yield one DataFrame per frame, reading ``files`` in batches (frames non-decreasing);
    ``prepare`` is applied to each batch."""
    buf: pd.DataFrame | None = None
    last = None
    for path in files:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows):
            df = batch.to_pandas()
            if len(df) == 0:
                continue
            fr = df["frame"].to_numpy()
            if (np.diff(fr) < 0).any() or (last is not None and fr[0] < last):
                raise StoreError(
                    f"regions in {str(path)!r} are not ordered by frame; rewrite the table "
                    "with lp.measure_regions / write_table (one part per frame chunk)"
                )
            last = fr[-1]
            df = prepare(df)
            if buf is not None:
                df = pd.concat([buf, df], ignore_index=True)
                fr = df["frame"].to_numpy()
            cut = np.flatnonzero(np.diff(fr)) + 1
            starts = np.r_[0, cut]
            stops = np.r_[cut, len(df)]
            # the last frame may continue in the next batch
            for s, e in zip(starts[:-1], stops[:-1], strict=True):
                yield df.iloc[s:e].reset_index(drop=True)
            buf = df.iloc[starts[-1] :].reset_index(drop=True)
    if buf is not None and len(buf):
        yield buf


def _frames_with_drift(
    files: list[Path], batch_rows: int, drift: pd.DataFrame | None
) -> Iterator[pd.DataFrame]:
    """Frames of the regions parts with the drift of each frame (that of the last frame
    before it where it is not given, 0 before any) and the drift-corrected link positions."""
    dfill = None if drift is None else drift[["drift_y_nm", "drift_x_nm"]].sort_index()

    def prepare(df: pd.DataFrame) -> pd.DataFrame:
        fr = df["frame"].to_numpy()
        if dfill is None:
            dy = dx = np.zeros(len(df))
        else:
            i = dfill.index.searchsorted(fr, side="right") - 1
            ok = i >= 0
            dy = np.where(ok, dfill["drift_y_nm"].to_numpy()[np.maximum(i, 0)], 0.0)
            dx = np.where(ok, dfill["drift_x_nm"].to_numpy()[np.maximum(i, 0)], 0.0)
        return df.assign(
            drift_y_nm=dy,
            drift_x_nm=dx,
            **{_LINK_POS[0]: df["y_nm"].to_numpy() - dy, _LINK_POS[1]: df["x_nm"].to_numpy() - dx},
        )

    yield from _iter_frames(files, batch_rows, prepare)


def _streaming_drift(
    files: list[Path],
    kw: dict,
    search_range_nm: float,
    batch_rows: int,
    prior: pd.DataFrame | None,
) -> pd.DataFrame:
    """Per-frame drift equal to ``tracks_drift`` of the tracks linked with drift ``prior``
    subtracted, computed frame by frame (memory: two frames)."""
    prev: pd.DataFrame | None = None
    prev_frame = None
    rows = []
    frames = _frames_with_drift(files, batch_rows, prior)
    for linked in trackpy.link_df_iter(frames, search_range_nm, **kw):
        fr = int(linked["frame"].iloc[0])
        cur = linked.set_index("particle")[_POS]
        if prev is not None and prev_frame == fr - 1:
            common = cur.index.intersection(prev.index)
            if len(common):
                step = (cur.loc[common] - prev.loc[common]).mean()
                rows.append((fr, float(step["y_nm"]), float(step["x_nm"])))
        prev, prev_frame = cur, fr
    d = pd.DataFrame(rows, columns=["frame", "drift_y_nm", "drift_x_nm"]).set_index("frame")
    return d.cumsum()


def link_store(
    store: str | os.PathLike,
    *,
    search_range_nm: float,
    memory: int = 3,
    window_frames: int = 1000,
    adaptive_stop_nm: float | None = None,
    adaptive_step: float = 0.95,
    drift: DriftSpec = None,
    symmetry_deg: float | None = None,
    orientation_column: str | None = None,
    min_length: int = 1,
    regions: str = "regions",
    tracks: str = "tracks",
    overwrite: bool = False,
    batch_rows: int = 65536,
    link_strategy: str | None = None,
    drift_iterations: int = 2,
    adaptive_stop: float | None = None,
) -> Path:
    """Link a store's regions table into its tracks table with bounded memory.

    Regions are read from ``store/tables/REGIONS.parquet`` in batches of
    ``batch_rows`` rows, fed frame by frame to :func:`trackpy.link_df_iter`
    (which keeps only the last ``memory`` frames of state) and written to
    ``store/tables/TRACKS.parquet`` one part per window of ``window_frames``
    frames. The result equals :func:`link` on the whole table.

    Parameters
    ----------
    store : path
        The video's store.
    search_range_nm, memory, adaptive_stop_nm, adaptive_step, symmetry_deg,
    orientation_column, min_length, link_strategy, drift_iterations
        As in :func:`link`.
    window_frames : int
        Frames per written part of the tracks table (memory scales with it).
    drift : {None, "tracks", "registration"} or DataFrame
        ``"tracks"`` makes a first streaming linking pass to measure the drift;
        ``"registration"`` registers the store's ``image`` array.
    regions, tracks : str
        Table names to read and to write.
    overwrite : bool
        Replace an existing tracks table.
    batch_rows : int
        Rows read at a time from Parquet.

    Returns
    -------
    Path of the tracks table.
    """
    if window_frames < 1:
        raise InputError(f"`window_frames` must be >= 1, got {window_frames}")
    if min_length < 1:
        raise InputError(f"`min_length` must be >= 1, got {min_length}")
    adaptive_stop_nm = _adaptive_alias(adaptive_stop_nm, adaptive_stop)
    kw = _link_kwargs(search_range_nm, memory, adaptive_stop_nm, adaptive_step, link_strategy)
    files = part_files(store, regions)
    if not files:
        raise StoreError(f"table {str(table_path(store, regions))!r} has no part files")
    src_schema = pq.read_schema(files[0])
    columns = list(src_schema.names)
    _check_table(src_schema.empty_table().to_pandas())
    out_path = table_path(store, tracks)
    if isinstance(drift, pd.DataFrame):
        d = drift
    elif drift is None:
        d = None
    elif drift == "tracks":
        d = None
        for _ in range(drift_iterations):
            d = _streaming_drift(files, kw, search_range_nm, batch_rows, d)
    elif drift == "registration":
        from .results import open_image

        d = registration_drift(open_image(store))
    else:
        raise InputError(
            f"`drift` must be None, 'tracks', 'registration' or a DataFrame, got {drift!r}"
        )
    sort = ["frame", "label"] if "label" in columns else ["frame"]
    n_rows = 0
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        part = 0
        pending: list[pd.DataFrame] = []

        def flush() -> None:
            nonlocal part, n_rows
            if not pending:
                return
            df = pd.concat(pending, ignore_index=True).sort_values(sort, kind="stable")
            df = _finish(
                df.reset_index(drop=True),
                columns=columns,
                symmetry_deg=None,
                orientation_column="__none__",
            )
            _write_part(df, str(tmp / f"part.{part:05d}.parquet"), tracks, schema.units(df))
            part += 1
            n_rows += len(df)
            pending.clear()

        frames = _frames_with_drift(files, batch_rows, d)
        for linked in trackpy.link_df_iter(frames, search_range_nm, **kw):
            pending.append(linked)
            if len(pending) >= window_frames:
                flush()
        flush()
        if part == 0:  # no regions at all: a typed zero-row tracks table
            pending.append(
                _with_drift(src_schema.empty_table().to_pandas(), None).assign(
                    particle=np.zeros(0, np.int64)
                )
            )
            flush()
        _postprocess_tracks(
            tmp,
            min_length=min_length,
            symmetry_deg=symmetry_deg,
            orientation_column=orientation_column,
            name=tracks,
        )
    logger.info("linked %d rows of %s into %s", n_rows, regions, out_path)
    return out_path


def _postprocess_tracks(
    tmp: Path,
    *,
    min_length: int,
    symmetry_deg: float | None,
    orientation_column: str | None,
    name: str,
) -> None:
    """Stub filtering and orientation unwrapping across parts, one part in memory at a time."""
    files = sorted(tmp.glob("part.*.parquet"))
    if not files:
        return
    # pass 1: trajectory lengths (one integer per particle)
    counts: pd.Series | None = None
    for f in files:
        c = pq.read_table(f, columns=["particle"]).to_pandas()["particle"].value_counts()
        counts = c if counts is None else counts.add(c, fill_value=0)
    assert counts is not None
    keep = set(counts.index[counts >= min_length]) if min_length > 1 else None
    probe = pq.read_schema(files[0]).empty_table().to_pandas()
    col = orientation_column or _orientation_column(probe, symmetry_deg)
    period = symmetry_deg if symmetry_deg is not None else 180.0
    # pass 2: unwrap with the last unwrapped angle of each particle carried across parts
    last: dict[int, tuple[float, float]] = {}  # particle -> (raw, unwrapped) at its last row
    for f in files:
        t = pq.read_table(f)
        df = t.to_pandas()
        if keep is not None:
            df = df[df["particle"].isin(keep)].reset_index(drop=True)
        if col is not None and col in df.columns and len(df):
            un = unwrap_orientation(df, symmetry_deg=period, column=col)
            # continue each trajectory from its unwrapped angle in earlier parts
            order = np.lexsort((df["frame"].to_numpy(), df["particle"].to_numpy()))
            p_sorted = df["particle"].to_numpy()[order]
            starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
            lengths = np.diff(np.r_[starts, len(order)])
            raw = df[col].to_numpy(np.float64)
            half = period / 2
            seg = np.zeros(len(starts))
            for k, j in enumerate(starts):
                prev = last.get(int(p_sorted[j]))
                if prev is None:
                    continue
                row = order[j]
                step = np.mod(raw[row] - prev[0] + half, period) - half
                if np.isfinite(step):
                    seg[k] = prev[1] + step - un[row]
            offsets = np.empty(len(order))
            offsets[order] = np.repeat(seg, lengths)
            un = un + offsets
            df["orientation_unwrapped_deg"] = un
            # remember each particle's last finite row
            srt = df.iloc[order]
            fin = srt[np.isfinite(srt[col].to_numpy(np.float64))]
            lastrows = fin.groupby("particle").tail(1)
            for pid, r, u in zip(
                lastrows["particle"].to_numpy(),
                lastrows[col].to_numpy(np.float64),
                lastrows["orientation_unwrapped_deg"].to_numpy(),
                strict=True,
            ):
                last[int(pid)] = (float(r), float(u))
        md = t.schema.metadata
        out = pa.Table.from_pandas(df, schema=t.schema, preserve_index=False)
        pq.write_table(out.replace_schema_metadata(md), f)
